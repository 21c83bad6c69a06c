"""Working memory on Redis (``STEWARD_REDIS_URL``), and ``Degrading``, which serves it
in-process while Redis is down. The contract is ``memory.working``'s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from memory.working import (
    InProcessWorkingMemory,
    LockTimeout,
    WorkingMemoryUnavailable,
)

log = logging.getLogger(__name__)


# Counts, starting the expiry with the first count only.
_COUNT = """
local n = redis.call('incr', KEYS[1])
if n == 1 then redis.call('pexpire', KEYS[1], ARGV[1]) end
return n
"""

Kept = tuple[dict[str, Any], float]  # a value, and the seconds it has left

# How a key is stored in Redis, by the call that wrote it.
VALUE, LIST, COUNTER = "value", "list", "counter"
_KINDS = {"set": VALUE, "add": VALUE, "delete": VALUE, "push": LIST, "count": COUNTER}

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
        client = _client(url)
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

    async def push(self, key: str, value: dict[str, Any], keep: int, ttl_seconds: float) -> None:
        name = self.prefix + key
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.rpush(name, json.dumps(value))
            pipe.ltrim(name, -keep, -1)
            pipe.pexpire(name, _ms(ttl_seconds))
            await pipe.execute()

    async def recent(self, key: str, count: int) -> list[dict[str, Any]]:
        if count <= 0:
            return []
        return [
            dict(json.loads(raw)) for raw in await self.client.lrange(self.prefix + key, -count, -1)
        ]

    async def count(self, key: str, ttl_seconds: float) -> int:
        return int(await self.client.eval(_COUNT, 1, self.prefix + key, _ms(ttl_seconds)))

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

    async def restore(self, keys: list[tuple[str, str, Kept | None]]) -> None:
        """Makes each key hold what it is given — a value and the seconds it has left;
        None for nothing — stored as its kind is: a value (``set``), a list (``push``)
        or a counter (``count``). One transaction, one round trip."""
        async with self.client.pipeline(transaction=True) as pipe:
            for key, kind, kept in keys:
                name = self.prefix + key
                pipe.delete(name)
                if kept is None:
                    continue
                value, left = kept
                if kind == LIST:
                    if value["items"]:
                        pipe.rpush(name, *(json.dumps(item) for item in value["items"]))
                        pipe.pexpire(name, _ms(left))
                elif kind == COUNTER:
                    pipe.set(name, int(value["n"]), px=_ms(left))
                else:
                    pipe.set(name, json.dumps(value), px=_ms(left))
            await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


def _client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Degrading:
    """Redis while it answers; in-process while it does not.

    Every write goes to in-process memory too, so that it knows what this process kept
    in Redis before Redis went away: a question asked before an outage and answered
    during it is answered. Redis going away is logged once, and its return; in between
    every call is served in-process (so locks hold within this process only), and a
    task of its own tries Redis every ``retry_seconds``: no call waits out a Redis that
    does not answer, but the one that finds it gone. Before Redis serves again, each key
    written meanwhile is written back as in-process memory has it, or deleted there:
    nothing done during the outage is undone by what Redis still held (a question
    answered meanwhile does not come back to take the next message as its answer). For
    those keys this process's writes win over another process's made meanwhile; and
    what another process kept in Redis is unknown here while Redis is down.
    """

    def __init__(self, redis: RedisWorkingMemory, retry_seconds: float = 5.0) -> None:
        self.redis = redis
        self.local = InProcessWorkingMemory()
        self.retry_seconds = retry_seconds
        self._trying_again: asyncio.Task[None] | None = None  # while Redis is down
        # Keys written in-process while Redis was down: each one's kind, and which write.
        self._written: dict[str, tuple[str, int]] = {}
        self._writes = 0
        self._writing_back = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str, retry_seconds: float = 5.0) -> Degrading:
        """Connects to Redis; when it does not answer, starts in-process and says so."""
        try:
            return cls(await RedisWorkingMemory.connect(url), retry_seconds)
        except WorkingMemoryUnavailable as exc:
            degrading = cls(RedisWorkingMemory(_client(url)), retry_seconds)
            degrading._went_down(str(exc))
            return degrading

    @property
    def degraded(self) -> bool:
        return self._trying_again is not None

    async def _call(self, method: str, *args: Any) -> Any:
        if not self.degraded:
            try:
                if await self._written_back(again=False):
                    result = await getattr(self.redis, method)(*args)
                    await self._mirror(method, args, result)
                    return result
            except (RedisError, OSError) as exc:
                self._went_down(str(exc))
        if kind := _KINDS.get(method):
            self._writes += 1
            self._written[args[0]] = (kind, self._writes)
        return await getattr(self.local, method)(*args)

    async def _mirror(self, method: str, args: tuple[Any, ...], result: Any) -> None:
        """Keeps in-process what a write kept in Redis."""
        local = self.local
        if method == "set" or (method == "add" and result):
            await local.set(*args)
        elif method == "delete":
            await local.delete(*args)
        elif method == "push":
            await local.push(*args)
        elif method == "count":
            key, ttl_seconds = args
            local.counted(key, int(result), ttl_seconds)

    async def _written_back(self, again: bool) -> bool:
        """Writes the keys written in-process while Redis was down back to Redis, all in
        one round trip: ``again`` as Redis answers again, or a call's after that, for
        keys written while that write-back ran. False when Redis went down again while
        this call waited for another's write-back: it is served in-process, without
        waiting out a timeout."""
        if not self._written:
            return True
        async with self._writing_back:
            if self.degraded and not again:
                return False
            written = dict(self._written)
            await self.redis.restore(
                [(key, kind, self.local.kept(key)) for key, (kind, _) in written.items()]
            )
            for key, done in written.items():
                if self._written.get(key) == done:  # not written again meanwhile
                    del self._written[key]
        return True

    def _went_down(self, cause: str) -> None:
        if self._trying_again is None:
            log.warning(
                "working memory: Redis is down, working in-process until it is back: %s", cause
            )
            self._trying_again = asyncio.create_task(self._try_again(), name="redis-try-again")

    async def _try_again(self) -> None:
        """Tries Redis every ``retry_seconds`` until it answers and takes back what was
        written meanwhile; then calls are served by Redis again."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            try:
                await self.redis.client.ping()
                await self._written_back(again=True)
            except (RedisError, OSError):
                continue
            log.warning("working memory: Redis is back")
            self._trying_again = None
            return

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._call("get", key)  # type: ignore[no-any-return]

    async def set(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        await self._call("set", key, value, ttl_seconds)

    async def add(self, key: str, value: dict[str, Any], ttl_seconds: float) -> bool:
        return bool(await self._call("add", key, value, ttl_seconds))

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def push(self, key: str, value: dict[str, Any], keep: int, ttl_seconds: float) -> None:
        await self._call("push", key, value, keep, ttl_seconds)

    async def recent(self, key: str, count: int) -> list[dict[str, Any]]:
        return await self._call("recent", key, count)  # type: ignore[no-any-return]

    async def count(self, key: str, ttl_seconds: float) -> int:
        return int(await self._call("count", key, ttl_seconds))

    @asynccontextmanager
    async def lock(self, name: str, hold_seconds: float = 10.0) -> AsyncIterator[None]:
        """This process's lock always, and Redis's too while it answers: a holder that
        took it while Redis was down still keeps out one that comes after it is back."""
        async with self.local.lock(name, hold_seconds):
            held: AbstractAsyncContextManager[None] | None = None
            if not self.degraded:
                held = self.redis.lock(name, hold_seconds)
                try:
                    await held.__aenter__()
                except (RedisError, OSError) as exc:
                    self._went_down(str(exc))
                    held = None
            try:
                yield
            finally:
                if held is not None:
                    with contextlib.suppress(RedisError, OSError):  # it expires by itself
                        await held.__aexit__(None, None, None)

    async def close(self) -> None:
        if self._trying_again is not None:
            self._trying_again.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trying_again
        await self.redis.close()
