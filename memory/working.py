"""Working memory: short-lived state with a time to live — questions in flight, which
messages show a card, who was refused today — and locks.

It may be lost without losing anything that matters: the ledger holds the truth. Two
backends with one contract (``tests/memory/test_working_memory.py``): in-process, the
embedded default, and Redis (``STEWARD_REDIS_URL``), which several steward processes
share and which outlives a restart.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from memory.ledger.errors import LedgerUnavailable


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

    def lock(self, name: str, hold_seconds: float = 10.0) -> AbstractAsyncContextManager[None]:
        """Held by one holder at a time (across processes, where the backend is shared);
        released on exit, or when ``hold_seconds`` pass if its holder died."""
        ...

    async def close(self) -> None: ...


class InProcessWorkingMemory:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._clock = clock

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
        if len(self._items) > 10_000:
            now = self._clock()
            self._items = {k: v for k, v in self._items.items() if v[0] > now}

    async def add(self, key: str, value: dict[str, Any], ttl_seconds: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl_seconds)
        return True

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    @asynccontextmanager
    async def lock(self, name: str, hold_seconds: float = 10.0) -> AsyncIterator[None]:
        async with self._locks[name]:
            yield

    async def close(self) -> None:
        return None


# Deletes the lock only if this holder still holds it.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisWorkingMemory:
    """Values as JSON under ``steward:`` keys with Redis's own expiry; ``add`` is
    SET NX; a lock is SET NX PX with a token, released by a script that checks it."""

    prefix = "steward:"

    def __init__(self, client: Redis, wait_seconds: float = 30.0) -> None:
        self.client = client
        self.wait_seconds = wait_seconds

    @classmethod
    async def connect(cls, url: str) -> RedisWorkingMemory:
        """Connects and checks that Redis answers; WorkingMemoryUnavailable if not."""
        client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            where = url.split("@")[-1]  # no password in the message
            raise WorkingMemoryUnavailable(
                f"cannot reach Redis at {where}: {exc} (check STEWARD_REDIS_URL)"
            ) from exc
        return cls(client)

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.prefix + key)
        return None if raw is None else dict(json.loads(raw))

    async def set(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        await self.client.set(self.prefix + key, json.dumps(value), px=_ms(ttl_seconds))

    async def add(self, key: str, value: dict[str, Any], ttl_seconds: float) -> bool:
        done = await self.client.set(
            self.prefix + key, json.dumps(value), px=_ms(ttl_seconds), nx=True
        )
        return bool(done)

    async def delete(self, key: str) -> None:
        await self.client.delete(self.prefix + key)

    @asynccontextmanager
    async def lock(self, name: str, hold_seconds: float = 10.0) -> AsyncIterator[None]:
        key = f"{self.prefix}lock:{name}"
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.wait_seconds
        pause = 0.005
        while not await self.client.set(key, token, px=_ms(hold_seconds), nx=True):
            if time.monotonic() > deadline:
                raise LockTimeout(f"the lock {name!r} stayed taken for {self.wait_seconds:.0f} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
        try:
            yield
        finally:
            await self.client.eval(_RELEASE, 1, key, token)

    async def close(self) -> None:
        await self.client.aclose()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
