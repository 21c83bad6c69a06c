"""Working memory: short-lived state with a time to live — questions in flight, the
recent turns of each chat, which messages show a card, counters of attempts — and locks.

It may be lost without losing anything that matters: the ledger holds the truth. Two
backends with one contract (``tests/memory/test_working_memory.py``): in-process, the
embedded default, and Redis (``STEWARD_REDIS_URL``), which several steward processes
share and which outlives a restart (``memory.working.redis``, imported only where it is
configured). ``Degrading`` keeps steward working in-process while Redis is down, and goes
back to it when it answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from memory.ledger.errors import LedgerUnavailable

PRUNE_ABOVE = 10_000  # items kept before the expired ones are looked for


class LockTimeout(Exception):
    """A lock stayed taken for longer than its caller would wait."""


class WorkingMemoryUnavailable(LedgerUnavailable):
    """The configured working memory (Redis) does not answer at start."""


class WorkingMemory(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None: ...

    async def add(self, key: str, value: dict[str, Any], ttl_seconds: float) -> bool:
        """Sets ``key`` only if it is not there; True when this call set it. Atomic."""
        ...

    async def delete(self, key: str) -> None: ...

    async def push(self, key: str, value: dict[str, Any], keep: int, ttl_seconds: float) -> None:
        """Appends to the list at ``key``, keeping its last ``keep`` items; the list
        expires ``ttl_seconds`` after its last push."""
        ...

    async def recent(self, key: str, count: int) -> list[dict[str, Any]]:
        """The last ``count`` items pushed to ``key``, oldest first."""
        ...

    async def count(self, key: str, ttl_seconds: float) -> int:
        """Adds one to the counter at ``key`` and returns it; the counter starts at 1 and
        expires ``ttl_seconds`` after it started. Atomic."""
        ...

    def lock(self, name: str, hold_seconds: float = 10.0) -> AbstractAsyncContextManager[None]:
        """Held by one holder at a time (across processes, where the backend is shared);
        released on exit, or when ``hold_seconds`` pass if its holder died."""
        ...

    async def close(self) -> None: ...


class InProcessWorkingMemory:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # each and its users
        self._clock = clock
        self._prune_above = PRUNE_ABOVE

    async def get(self, key: str) -> dict[str, Any] | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._items[key]
            return None
        return value

    async def set(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        self._items[key] = (self._clock() + ttl_seconds, value)
        if len(self._items) > self._prune_above:  # the expired go; then, only at twice as many
            now = self._clock()
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._prune_above = max(PRUNE_ABOVE, 2 * len(self._items))

    async def add(self, key: str, value: dict[str, Any], ttl_seconds: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl_seconds)
        return True

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def push(self, key: str, value: dict[str, Any], keep: int, ttl_seconds: float) -> None:
        items = (await self.get(key) or {"items": []})["items"]
        await self.set(key, {"items": [*items, value][-keep:]}, ttl_seconds)

    async def recent(self, key: str, count: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.get(key) or {"items": []})["items"]
        return items[-count:] if count > 0 else []

    async def count(self, key: str, ttl_seconds: float) -> int:
        item = self._items.get(key)
        if item is None or item[0] <= self._clock():
            self._items[key] = (self._clock() + ttl_seconds, {"n": 1})
            return 1
        item[1]["n"] += 1
        return int(item[1]["n"])

    def counted(self, key: str, n: int, ttl_seconds: float) -> None:
        """Notes a counter at ``n``, as another store counted it: a new one expires
        ``ttl_seconds`` from now, one counted before keeps its expiry."""
        item = self._items.get(key)
        if n == 1 or item is None or item[0] <= self._clock():
            self._items[key] = (self._clock() + ttl_seconds, {"n": n})
        else:
            item[1]["n"] = n

    def kept(self, key: str) -> tuple[dict[str, Any], float] | None:
        """What ``key`` holds and the seconds it has left; None once it is gone."""
        item = self._items.get(key)
        if item is None or item[0] <= self._clock():
            return None
        expires, value = item
        return value, expires - self._clock()

    @asynccontextmanager
    async def lock(self, name: str, hold_seconds: float = 10.0) -> AsyncIterator[None]:
        """Held by one at a time; kept while anyone holds or waits for it, so that a
        long life of locks by new names (a card's, a chat's) does not grow the store."""
        lock, users = self._locks.setdefault(name, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[name]

    async def close(self) -> None:
        return None
