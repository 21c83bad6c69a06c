"""The long-running service: what it readies while its channels start."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.exc import OperationalError

from bot.app import Steward
from bot.scheduler import DigestTime, Scheduler
from bot.service import Service, configured_channels
from bot.settings import Settings, load_settings
from graph.messages import Reply
from memory.longterm import Query
from memory.longterm.embedded import EmbeddedMemory
from tests.fakes.bot_api import FakeBotAPI
from tests.fakes.embeddings import HashingEmbedder
from tests.waiting import until

TOKEN = "4242:steward-test-token"


class SlowToLoad(HashingEmbedder):
    """A model that loads until the test lets it: however slow the machine, it is still
    loading when the test looks."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = asyncio.Event()
        self.may_load = asyncio.Event()
        self.loaded = asyncio.Event()
        self.tried = asyncio.Event()

    async def warm_up(self) -> None:
        self.loading.set()
        try:
            await self.may_load.wait()
            await super().warm_up()
            self.loaded.set()
        finally:
            self.tried.set()


def telegram_settings(tmp_path: Path, api: FakeBotAPI) -> Settings:
    """A home whose Telegram channel is the fake Bot API, with one operator."""
    return load_settings(
        home=tmp_path / "home",
        telegram_bot_token=TOKEN,
        telegram_api_url=api.root,
        operators="telegram:1001",
    )


@pytest.mark.parametrize("loads", [True, False], ids=["model loads", "model fails to load"])
async def test_the_embedding_model_is_readied_while_the_channels_start(
    tmp_path: Path, loads: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBotAPI(token=TOKEN) as api:
        settings = telegram_settings(tmp_path, api)
        async with Steward.open(settings) as steward:
            embedder = SlowToLoad()
            embedder.failing = not loads
            steward.history.embedder = embedder
            with caplog.at_level(logging.WARNING, logger="bot.service"):
                async with Service(steward, configured_channels(steward)):
                    await api.wait_for(lambda a: a.polls_waiting > 0, timeout=10)
                    assert embedder.loading.is_set() and not embedder.loaded.is_set()
                    embedder.may_load.set()  # polling went on meanwhile
                    await asyncio.wait_for(embedder.tried.wait(), 10)
    assert embedder.loaded.is_set() is loads
    if loads:
        assert "not ready" not in caplog.text
    else:  # steward runs all the same; the records wait for the model
        assert "embedding model not ready, records wait for it" in caplog.text


async def test_the_embedded_store_holds_its_vectors_bits_once_the_service_runs(
    tmp_path: Path,
) -> None:
    """A long-running process scans the bits in memory; a shell command does not read
    them at all (memory/longterm/embedded.py)."""
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        store = steward.history.store
        assert isinstance(store, EmbeddedMemory)
        await store.search(Query("acme"))
        assert not store._hold_bits
        async with Service(steward, []):
            for _ in range(100):
                if store._hold_bits:
                    break
                await asyncio.sleep(0.02)
            assert store._hold_bits


async def test_a_terminal_leaves_the_timers_and_the_daily_list_to_a_service_while_it_lives(
    tmp_path: Path,
) -> None:
    """``steward chat`` beside a ``steward run`` serving Telegram or Slack: their news is
    for that one's chats. The terminal decided once, at its start: one started first went
    on firing them into the terminal, their cards then never announced in the chats."""
    settings = load_settings(home=tmp_path / "home", telegram_bot_token=TOKEN)
    async with Steward.open(settings) as steward, Steward.open(settings) as beside:
        shown: list[Reply] = []

        async def news(reply: Reply, reply_to: object) -> None:
            shown.append(reply)

        async def fired() -> bool:
            timer = await steward.ledger.get_timer("digest:2026-10-24")
            return timer is not None and timer.status == "fired"

        service = Service(steward, [], tick_seconds=0.05, fallback=news, defers_to_platforms=True)
        async with service:
            await beside.ledger.register_worker("host:4242", serves_platforms=True)
            due = datetime.now(UTC) - timedelta(minutes=1)
            await steward.ledger.plan_timer("digest:2026-10-24", "digest", due)
            await asyncio.sleep(0.5)
            assert not await fired() and not shown
            await beside.ledger.retire_worker()  # it stops: the terminal is alone
            for _ in range(100):
                if await fired():
                    break
                await asyncio.sleep(0.05)
            assert await fired() and shown


async def test_two_terminals_on_one_ledger_show_the_daily_list_once(tmp_path: Path) -> None:
    """Each terminal alone takes the timers. The day's timer is claimed only once the list
    is handed over (a crash in between must not lose it), and the terminal showed what it
    was handed whatever it was: two terminals due at once both showed the list, as a
    terminal stopped between showing it and the claim showed it again at its next start."""
    settings = load_settings(home=tmp_path / "home")
    due = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    async with Steward.open(settings) as one, Steward.open(settings) as other:
        await one.ledger.plan_timer("digest:2026-10-24", "digest", due)
        shown: list[Reply] = []
        both_due = asyncio.Barrier(2)

        async def news(reply: Reply, reply_to: object) -> None:
            shown.append(reply)

        def terminal(steward: Steward) -> Scheduler:
            service = Service(steward, [], fallback=news, defers_to_platforms=True)

            async def notify(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
                await both_due.wait()  # neither has claimed the day's timer yet
                return await service.notify(reply, reply_to)

            return Scheduler(
                steward.ledger,
                steward.engine,
                steward.coordinator,
                notify,
                digest=DigestTime(time(8, 0), ZoneInfo("UTC")),
                clock=lambda: due + timedelta(seconds=1),
            )

        await asyncio.wait_for(asyncio.gather(terminal(one).tick(), terminal(other).tick()), 10)
        assert len(shown) == 1 and "Saturday 24 October" in shown[0].texts[0]


def loops_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the scheduler's and the service's loops logged."""
    return [r for r in caplog.records if r.name in ("bot.scheduler", "bot.service")]


async def ledger_refuses(*args: object, **kwargs: object) -> None:
    """The ledger's database, down: in place of ``db.run``."""
    raise OperationalError("SELECT 1", {}, Exception("connection refused"))


@pytest.mark.slow
async def test_telegram_takes_updates_again_within_a_second_of_the_ledger_s_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polling backed off as for Telegram's own failures, doubling to 30 s: after an
    outage of the ledger, updates waited at Telegram up to that long once it was back."""
    async with FakeBotAPI(token=TOKEN) as api:
        settings = telegram_settings(tmp_path, api)
        async with Steward.open(settings) as steward:
            db = steward.ledger.db
            run = db.run

            async with Service(steward, configured_channels(steward)):
                await api.wait_for(lambda a: a.polls_waiting > 0, timeout=10)
                monkeypatch.setattr(db, "run", ledger_refuses)
                api.send_text(1001, "/help")  # it waits at Telegram meanwhile
                await asyncio.sleep(3.5)  # backing off 1, 2 and then 4 s, it slept on
                monkeypatch.setattr(db, "run", run)
                back = asyncio.get_running_loop().time()
                await api.wait_for(lambda a: len(a.sent(1001)) > 0, timeout=10)
                assert asyncio.get_running_loop().time() - back < 2.0


async def test_the_ledger_going_down_is_logged_once_by_each_loop_and_its_return(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler and the watcher of cards decided elsewhere each logged a traceback
    every tick while the database was away: some fifty lines a second on PostgreSQL."""
    async with FakeBotAPI(token=TOKEN) as api:
        settings = telegram_settings(tmp_path, api)
        async with Steward.open(settings) as steward:
            db = steward.ledger.db
            run = db.run

            refused = 0

            async def refuses(*args: object, **kwargs: object) -> None:
                nonlocal refused
                refused += 1
                await ledger_refuses(*args, **kwargs)

            def logged(words: str) -> int:
                return sum(words in r.getMessage() for r in loops_of(caplog))

            async with Service(steward, configured_channels(steward), tick_seconds=0.02):
                await api.wait_for(lambda a: a.polls_waiting > 0, timeout=10)
                with caplog.at_level(logging.WARNING):
                    monkeypatch.setattr(db, "run", refuses)
                    # Some twenty ticks, however long the machine takes for them.
                    await until(lambda: refused >= 20 and logged("the ledger is down") >= 2)
                    monkeypatch.setattr(db, "run", run)
                    await until(lambda: logged("works again") >= 2)
    loops = loops_of(caplog)
    assert not [r for r in loops if r.exc_info]
    down = [r.getMessage() for r in loops if "the ledger is down" in r.getMessage()]
    assert sorted(down) == [
        "scheduler tick: the ledger is down, trying again: connection refused",
        "settling the cards decided elsewhere: the ledger is down, trying again: "
        "connection refused",
    ]
    back = sorted(r.getMessage() for r in loops if "works again" in r.getMessage())
    assert back == [
        "scheduler tick works again",
        "settling the cards decided elsewhere works again",
    ]
