"""The working-memory contract, run on every backend: in-process always, Redis where
one answers (STEWARD_TEST_REDIS_URL, default redis://localhost:6379/15)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.app import Steward
from bot.settings import load_settings
from memory.ledger import LedgerUnavailable
from memory.working import InProcessWorkingMemory, RedisWorkingMemory, WorkingMemory

REDIS_URL = os.environ.get("STEWARD_TEST_REDIS_URL", "redis://localhost:6379/15")


async def _redis_reason() -> str | None:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"no Redis at {REDIS_URL} ({exc}); set STEWARD_TEST_REDIS_URL to run these"
    finally:
        await client.aclose()
    return None


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
async def memory(request: pytest.FixtureRequest) -> AsyncIterator[WorkingMemory]:
    if request.param == "in-process":
        yield InProcessWorkingMemory()
        return
    reason = await _redis_reason()
    if reason:
        pytest.skip(reason)
    backend = await RedisWorkingMemory.connect(REDIS_URL)
    backend.prefix = f"steward-test-{secrets.token_hex(4)}:"  # a namespace per test
    try:
        yield backend
    finally:
        keys = [k async for k in backend.client.scan_iter(f"{backend.prefix}*")]
        if keys:
            await backend.client.delete(*keys)
        await backend.close()


async def test_values_round_trip_and_expire(memory: WorkingMemory) -> None:
    await memory.set("question:a", {"type": "form", "values": {"n": 1}}, 60)
    assert await memory.get("question:a") == {"type": "form", "values": {"n": 1}}
    await memory.set("short", {"x": 1}, 0.05)
    await asyncio.sleep(0.1)
    assert await memory.get("short") is None
    await memory.delete("question:a")
    assert await memory.get("question:a") is None
    await memory.delete("never-there")


async def test_add_sets_only_once_even_when_raced(memory: WorkingMemory) -> None:
    won = await asyncio.gather(*(memory.add("refused:x", {"n": n}, 60) for n in range(20)))
    assert sum(won) == 1
    assert await memory.get("refused:x") == {"n": won.index(True)}
    await memory.delete("refused:x")
    assert await memory.add("refused:x", {"n": 99}, 60)


async def test_a_lock_lets_one_holder_in_at_a_time(memory: WorkingMemory) -> None:
    inside = 0
    most = 0

    async def hold() -> None:
        nonlocal inside, most
        async with memory.lock("card:a1"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(hold() for _ in range(10)))
    assert most == 1
    async with memory.lock("card:a1"):  # released every time
        pass


@pytest.mark.redis
async def test_a_dead_holders_lock_frees_itself_and_two_processes_share_values() -> None:
    reason = await _redis_reason()
    if reason:
        pytest.skip(reason)
    one = await RedisWorkingMemory.connect(REDIS_URL)
    two = await RedisWorkingMemory.connect(REDIS_URL)  # another steward process
    one.prefix = two.prefix = f"steward-test-{secrets.token_hex(4)}:"
    try:
        await one.set("card:a1", {"messages": [["C1", "1.0"]]}, 60)
        assert await two.get("card:a1") == {"messages": [["C1", "1.0"]]}
        # a holder that died keeps the lock only for its hold time
        await one.client.set(f"{one.prefix}lock:busy", "dead-holder", px=100)
        async with two.lock("busy"):
            assert await two.client.get(f"{two.prefix}lock:busy") != b"dead-holder"
    finally:
        keys = [k async for k in one.client.scan_iter(f"{one.prefix}*")]
        if keys:
            await one.client.delete(*keys)
        await one.close()
        await two.close()


async def test_an_unreachable_redis_stops_the_start_with_one_line(tmp_path: object) -> None:
    settings = load_settings(home=f"{tmp_path}/home", redis_url="redis://:secret@127.0.0.1:1/0")
    with pytest.raises(LedgerUnavailable, match=r"cannot reach Redis at 127.0.0.1:1/0") as raised:
        async with Steward.open(settings):
            pass
    assert "secret" not in str(raised.value)
