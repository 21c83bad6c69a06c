"""Deliveries already stored, handled one at a time in the order they came.

A channel stores each delivery in the inbox, tells its platform it arrived, and puts it
here; one worker handles them in arrival order. What is still queued when the process
stops stays in the inbox, and the channel queues it again at its next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
CATCH_UP = 0.05  # seconds a channel lets the worker go first; see catch_up


class InOrder(Generic[T]):
    def __init__(self, name: str, handle: Callable[[T], Awaitable[None]]) -> None:
        self.name = name
        self._handle = handle
        self._queue: asyncio.Queue[T] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._unhandled = 0  # put and not yet handled
        self._turn = asyncio.Lock()  # the worker's, or a delivery's answered ahead of it

    def put(self, item: T) -> None:
        self._unhandled += 1
        self._queue.put_nowait(item)

    @asynccontextmanager
    async def ahead(self) -> AsyncIterator[bool]:
        """Where nothing is queued or being handled, holds the worker back while a
        delivery is answered outside the queue, so that what is put meanwhile is handled
        after it: yields True. Yields False, holding nothing, where something is."""
        if self._unhandled or self._turn.locked():
            yield False
            return
        async with self._turn:
            yield True

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"{self.name}-worker")

    async def idle(self) -> None:
        """Returns once everything put so far is handled."""
        await self._queue.join()

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Lets the worker finish what is queued, for up to ``drain_seconds``, then stops."""
        if drain_seconds > 0 and self._worker is not None:
            try:
                await asyncio.wait_for(self._queue.join(), drain_seconds)
            except TimeoutError:
                left = self._queue.qsize()
                log.warning("stopping with %d %s delivery(s) queued", left, self.name)
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                async with self._turn:
                    await self._handle(item)
            except Exception:
                log.exception("handling a %s delivery failed", self.name)
            finally:
                self._unhandled -= 1
                self._queue.task_done()


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
