"""Deliveries already stored, handled one at a time in the order they came.

A channel stores each delivery in the inbox, tells its platform it arrived, and puts it
here; one worker handles them in arrival order. What is still queued when the process
stops stays in the inbox, and the channel queues it again at its next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
CATCH_UP = 0.05  # seconds a channel lets the worker go first; see catch_up


class InOrder(Generic[T]):
    def __init__(self, name: str, handle: Callable[[T], Awaitable[None]]) -> None:
        self.name = name
        self._handle = handle
        self._items: deque[T] = deque()
        self._more = asyncio.Event()  # something was put
        self._handled = asyncio.Event()  # everything put is handled
        self._handled.set()
        self._unhandled = 0  # put and not yet handled
        self._arriving = 0  # on their way in: being stored, to be put
        self._turn = asyncio.Lock()  # the worker's, or a delivery's answered ahead of it
        self._worker: asyncio.Task[None] | None = None

    def put(self, item: T) -> None:
        self._items.append(item)
        self._added()

    def put_first(self, item: T) -> None:
        """Puts ``item`` before everything queued: a delivery that came before them."""
        self._items.appendleft(item)
        self._added()

    def _added(self) -> None:
        self._unhandled += 1
        self._handled.clear()
        self._more.set()

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Marks a delivery on its way in (being stored, to be put): none is answered
        ahead of it (``ahead``)."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    @asynccontextmanager
    async def ahead(self) -> AsyncIterator[bool]:
        """Where nothing is queued, being handled or on its way in, holds the worker back
        while a delivery is answered outside the queue, so that what comes meanwhile is
        handled after it: yields True. Yields False, holding nothing, where something is."""
        if self._unhandled or self._arriving or self._turn.locked():
            yield False
            return
        async with self._turn:
            yield True

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"{self.name}-worker")

    async def idle(self) -> None:
        """Returns once everything put so far is handled."""
        await self._handled.wait()

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Lets the worker finish what is queued, for up to ``drain_seconds``, then stops."""
        if drain_seconds > 0 and self._worker is not None:
            try:
                await asyncio.wait_for(self._handled.wait(), drain_seconds)
            except TimeoutError:
                left = len(self._items)
                log.warning("stopping with %d %s delivery(s) queued", left, self.name)
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _work(self) -> None:
        while True:
            while not self._items:
                self._more.clear()
                await self._more.wait()
            async with self._turn:  # then the first: one answered ahead may go first
                item = self._items.popleft()
                try:
                    await self._handle(item)
                except Exception:
                    log.exception("handling a %s delivery failed", self.name)
                finally:
                    self._unhandled -= 1
                    if not self._unhandled:
                        self._handled.set()


async def catch_up(idle: Coroutine[Any, Any, None]) -> None:
    """Gives a channel's worker up to CATCH_UP seconds to handle what is queued and send
    its replies (``idle``, the channel's own).

    A channel waits for this before it syncs the ledger and tells its platform
    "delivered": the reply is what the operator waits for, and the platform gives
    seconds (Slack 3, Telegram more) where the fsync and the next request would
    otherwise compete with the reply for the one loop.
    """
    with suppress(TimeoutError):
        await asyncio.wait_for(idle, CATCH_UP)
