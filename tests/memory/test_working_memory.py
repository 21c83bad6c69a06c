"""The working-memory contract, run on every backend: in-process always, Redis where
one answers (STEWARD_TEST_REDIS_URL, default redis://localhost:6379/15)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.app import Steward
from bot.settings import load_settings
from graph.messages import Inbound, Sender
from memory.working import InProcessWorkingMemory, WorkingMemory
from memory.working.redis import Degrading, RedisWorkingMemory
from tests.waiting import DEADLINE_SECONDS, until

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


class Clock:
    """The in-process backend's clock, moved by the test where Redis's own runs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Shortens a key's time to live by ARGV[1] ms, if it has one; at none left, it is gone.
_AGE = """
local left = redis.call('pttl', KEYS[1])
if left > 0 then redis.call('pexpire', KEYS[1], left - tonumber(ARGV[1])) end
"""


async def later(memory: WorkingMemory, seconds: float) -> None:
    """Lets ``seconds`` pass for ``memory``: its clock is moved in-process; on Redis,
    whose clock is its own, each of the test's keys is aged as much (what it has left to
    live shortened, atomically), where the test would wait them out in real time."""
    clock = getattr(memory, "_clock", None)
    if isinstance(clock, Clock):
        clock.now += seconds
        return
    assert isinstance(memory, RedisWorkingMemory)
    async for key in memory.client.scan_iter(f"{memory.prefix}*"):
        await memory.client.eval(_AGE, 1, key, round(seconds * 1000))


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
async def memory(request: pytest.FixtureRequest) -> AsyncIterator[WorkingMemory]:
    if request.param == "in-process":
        yield InProcessWorkingMemory(Clock())
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
    await later(memory, 0.1)
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


async def test_locks_by_new_names_do_not_pile_up_in_process() -> None:
    """A long life of locks by new names (a card's, a chat's) kept one each, for good."""
    memory = InProcessWorkingMemory()
    for n in range(1_000):
        async with memory.lock(f"card:{n}"):
            pass
    assert memory._locks == {}


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


async def test_recent_turns_keep_the_last_few_in_order(memory: WorkingMemory) -> None:
    for n in range(25):
        await memory.push("turns:telegram:42:c1", {"n": n}, keep=20, ttl_seconds=60)
    assert await memory.recent("turns:telegram:42:c1", 3) == [{"n": 22}, {"n": 23}, {"n": 24}]
    assert len(await memory.recent("turns:telegram:42:c1", 100)) == 20
    assert await memory.recent("turns:nobody", 5) == []
    await memory.push("turns:short", {"n": 1}, keep=5, ttl_seconds=0.05)
    await later(memory, 0.1)
    assert await memory.recent("turns:short", 5) == []


async def test_counters_count_atomically_and_expire_from_their_start(
    memory: WorkingMemory,
) -> None:
    counts = await asyncio.gather(*(memory.count("attempts:x", 60) for _ in range(30)))
    assert sorted(counts) == list(range(1, 31))
    # Redis's clock runs on however slow a machine as well: a minute to live leaves the
    # second count half of it to be made in.
    assert await memory.count("attempts:short", 60) == 1
    await later(memory, 30)
    assert await memory.count("attempts:short", 60) == 2  # a count does not extend it
    await later(memory, 31)
    assert await memory.count("attempts:short", 60) == 1


async def test_an_unreachable_redis_does_not_stop_steward(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        home=f"{tmp_path}/home", redis_url="redis://:secret@127.0.0.1:1/0", operators="telegram:42"
    )
    with caplog.at_level(logging.WARNING, logger="memory.working"):
        async with Steward.open(settings) as steward:
            assert isinstance(steward.coordinator.memory, Degrading)
            # A question in flight is kept in-process: the form still works.
            me = Sender("telegram", "42")
            asked = await steward.door.receive(Inbound(me, "c", "1", text="/run onboarding"))
            assert asked is not None and "Which client" in asked.texts[0]
            named = await steward.door.receive(Inbound(me, "c", "2", text="Acme"))
            assert named is not None and "email" in named.texts[0]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot reach Redis at 127.0.0.1:1/0" in warnings[0]
    assert "secret" not in warnings[0]


@pytest.mark.redis
@pytest.mark.slow
async def test_redis_going_away_and_coming_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis server of the test's own, stopped and started again under steward."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server binary to start a Redis of the test's own")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]

    async def start() -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                return process
            await asyncio.sleep(0.05)
        raise AssertionError("redis-server did not start")

    process = await start()
    memory = await Degrading.connect(f"redis://127.0.0.1:{port}/0", retry_seconds=0.2)
    try:
        with caplog.at_level(logging.WARNING, logger="memory.working"):
            await memory.set("question:a", {"step": 1}, 60)
            assert not memory.degraded
            process.terminate()
            await process.wait()
            for n in range(5):  # every call still answers, from in-process memory
                await memory.set(f"k{n}", {"n": n}, 60)
                assert await memory.get(f"k{n}") == {"n": n}
                async with memory.lock("card:a1"):
                    pass
            assert memory.degraded
            process = await start()
            await until(lambda: not memory.degraded)  # tried again, every 0.2 s
            assert await memory.get("question:a") is None  # a fresh Redis: nothing kept
            assert not memory.degraded
            await memory.set("after", {"ok": True}, 60)
            assert await memory.redis.get("after") == {"ok": True}
        messages = [r.getMessage() for r in caplog.records]
        assert sum("Redis is down" in m for m in messages) == 1
        assert sum("Redis is back" in m for m in messages) == 1
    finally:
        await memory.close()
        process.terminate()
        await process.wait()


class Cable:
    """A TCP proxy to Redis that the test can cut and mend: Redis keeps its data, as
    through a network outage or a failover."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.frozen = False  # what is sent is dropped: Redis seems to hang

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        to_reader, to_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, to_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if not self.frozen:
                        sink.write(data)
                        await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, to_writer), pipe(to_reader, writer))


@pytest.mark.redis
async def test_what_was_done_while_redis_was_away_stands_once_it_is_back() -> None:
    """A question asked before a network outage is known during it, and answered; once
    Redis is back it does not return from Redis to take the next message as its answer.
    What was written meanwhile is in Redis, each kind as its calls keep it there."""
    async with through_a_cable() as (memory, cable):
        redis = memory.redis
        await memory.set("question:42", {"asked": "How much is due?"}, 60)
        await memory.count("tries", 60)
        await cable.cut()
        assert await memory.get("question:42") == {"asked": "How much is due?"}
        assert memory.degraded
        await memory.delete("question:42")  # answered
        await memory.push("turns:42", {"who": "operator", "text": "1200"}, 5, 60)
        await memory.count("tries", 60)
        await memory.set("card:a1", {"message": 7}, 60)
        await cable.mend()
        await until(lambda: not memory.degraded)  # tried again, every 0.1 s
        assert await memory.get("question:42") is None
        assert not memory.degraded
        assert await memory.recent("turns:42", 5) == [{"who": "operator", "text": "1200"}]
        assert await memory.count("tries", 60) == 3
        assert await redis.get("card:a1") == {"message": 7}
        assert 0 < await redis.client.pttl(f"{redis.prefix}card:a1") <= 60_000


@asynccontextmanager
async def through_a_cable() -> AsyncIterator[tuple[Degrading, Cable]]:
    """Degrading working memory on the test Redis, reached through a cable to cut."""
    reason = await _redis_reason()
    if reason:
        pytest.skip(reason)
    direct = Redis.from_url(REDIS_URL)
    where = direct.connection_pool.connection_kwargs
    cable = Cable(where.get("host", "localhost"), int(where.get("port", 6379)))
    await cable.mend()
    memory = await Degrading.connect(
        f"redis://127.0.0.1:{cable.port}/{where.get('db', 0)}", retry_seconds=0.1
    )
    memory.redis.prefix = f"steward-test-{secrets.token_hex(4)}:"
    try:
        yield memory, cable
    finally:
        await memory.close()
        await cable.cut()
        keys = [k async for k in direct.scan_iter(f"{memory.redis.prefix}*")]
        if keys:
            await direct.delete(*keys)
        await direct.aclose()


@pytest.mark.redis
async def test_a_write_made_in_process_while_an_earlier_one_is_written_back_is_not_lost() -> None:
    async with through_a_cable() as (memory, cable):
        await cable.cut()
        await memory.set("question:42", {"v": 1}, 60)
        await cable.mend()
        restore = memory.redis.restore

        async def meanwhile(keys: Any) -> None:
            await memory.set("question:42", {"v": 2}, 60)  # in-process: Redis is not back yet
            await restore(keys)  # what was taken before: {"v": 1}

        memory.redis.restore = meanwhile  # type: ignore[method-assign]
        await until(lambda: not memory.degraded)
        memory.redis.restore = restore  # type: ignore[method-assign]
        assert not memory.degraded
        assert await memory.get("question:42") == {"v": 2}  # the later write, not lost
        assert await memory.redis.get("question:42") == {"v": 2}


@pytest.mark.redis
async def test_calls_made_while_a_write_back_fails_go_on_in_process() -> None:
    async with through_a_cable() as (memory, cable):
        await cable.cut()
        await memory.set("question:42", {"v": 1}, 60)
        await cable.mend()
        tries = 0

        async def failing(keys: Any) -> None:
            nonlocal tries
            tries += 1
            await asyncio.sleep(0.05)
            raise ConnectionError("Redis went away again")

        memory.redis.restore = failing  # type: ignore[method-assign]
        await until(lambda: tries >= 1)
        answers = await asyncio.gather(*(memory.get("question:42") for _ in range(5)))
        assert answers == [{"v": 1}] * 5
        assert tries >= 1 and memory.degraded


@pytest.mark.redis
async def test_no_call_waits_for_a_redis_that_does_not_answer_but_the_one_that_finds_it_so() -> (
    None
):
    """A Redis that stopped answering (frozen, or its packets dropped) is tried again in
    the background: a call that tried it again waited out its timeout, and a turn stalled
    for seconds at each try. Once the first call has found it so, its timeout is made a
    minute: a call that waited for it would be plain on any machine."""
    async with through_a_cable() as (memory, cable):

        def client(timeout: float) -> Redis:
            db = memory.redis.client.connection_pool.connection_kwargs["db"]
            return Redis.from_url(
                f"redis://127.0.0.1:{cable.port}/{db}",
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )

        await memory.redis.client.aclose()
        memory.redis.client = client(0.2)
        await memory.set("question:42", {"asked": "How much is due?"}, 60)
        cable.frozen = True
        assert await memory.get("question:42") == {"asked": "How much is due?"}  # after 0.2 s
        assert memory.degraded
        await memory.redis.client.aclose()
        memory.redis.client = client(60.0)  # Redis is tried again every 0.1 s, hanging
        async with asyncio.timeout(DEADLINE_SECONDS):  # no call waits out a minute
            for _ in range(20):
                assert await memory.get("question:42") == {"asked": "How much is due?"}
                await asyncio.sleep(0.05)
        assert memory.degraded
        cable.frozen = False
        await cable.cut()  # the try under way, its packets dropped, fails at once
        await cable.mend()
        await until(lambda: not memory.degraded)
        assert await memory.redis.get("question:42") == {"asked": "How much is due?"}
