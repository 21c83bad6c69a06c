"""Feeding long-term memory from the ledger's journal: nothing lost while the store or
the embedder is down, nothing written twice, everything rebuilt from the ledger."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from memory.ledger import Ledger, NewAuditEvent
from memory.longterm import Filters, MemoryRecord, MemoryUnavailable, Query, RecordKind
from memory.longterm.embedded import EmbeddedMemory
from memory.longterm.store import Vector
from memory.longterm.sync import MemorySync
from tests.fakes.embeddings import HashingEmbedder, hashed
from tests.waiting import until

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


class Flaky(EmbeddedMemory):
    """The embedded store, made to be down on demand like a Weaviate that went away."""

    down = False
    refused = 0

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        if self.down:
            self.refused += 1
            raise MemoryUnavailable("cannot reach the store: connection refused")
        await super().upsert(records, vectors)


def journaled(n: int, text: str) -> dict[str, object]:
    at = T0 + timedelta(minutes=n)
    return MemoryRecord.create(f"test:{n}", RecordKind.MESSAGE, text, at).to_dict()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Flaky]:
    flaky = Flaky(tmp_path / "memory.db")
    yield flaky
    await flaky.close()


async def test_what_the_ledger_journals_reaches_the_store_once(
    ledger: Ledger, store: Flaky
) -> None:
    sync = MemorySync(ledger, store, HashingEmbedder(), batch=4)
    await ledger.journal([journaled(n, f"note {n} about Acme") for n in range(10)])
    assert await sync.behind() == 10
    assert await sync.catch_up() == 10
    await ledger.journal([journaled(3, "note 3 again")])  # the same source: kept once
    assert await sync.catch_up() == 0
    assert await store.count() == 10 and await sync.behind() == 0
    hits = await store.search(Query("acme", hashed("note 3 about Acme"), alpha=0.5))
    assert hits[0].record.text == "note 3 about Acme"


async def test_a_store_that_is_down_loses_nothing(
    ledger: Ledger, store: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    sync = MemorySync(ledger, store, HashingEmbedder())
    await ledger.journal([journaled(1, "quote sent to Acme")])
    store.down = True
    with pytest.raises(MemoryUnavailable):
        await sync.catch_up()
    await ledger.journal([journaled(2, "Acme accepted the quote")])
    assert await sync.behind() == 2  # both wait in the ledger
    store.down = False
    assert await sync.catch_up() == 2
    assert await store.count() == 2


async def test_the_feeding_loop_logs_an_outage_once_and_its_end(
    ledger: Ledger, store: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    sync = MemorySync(ledger, store, None)
    store.down = True
    await ledger.journal([journaled(1, "quote sent to Acme")])
    task = asyncio.create_task(sync.run(every_seconds=0.01, retry_seconds=0.01))
    with caplog.at_level(logging.WARNING, logger="memory.longterm.sync"):
        await until(lambda: store.refused >= 5)  # tried again, however slow the ledger
        store.down = False
        for _ in range(250):  # the record lands, then the loop finishes its round
            if any("is back" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is down" in m for m in messages) == 1
    assert sum("is back" in m for m in messages) == 1
    assert await store.count() == 1


async def test_the_feeding_loop_logs_the_ledger_down_once_and_its_return(
    ledger: Ledger, store: Flaky, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It logged a traceback each round while the database was away."""
    sync = MemorySync(ledger, store, None)
    await ledger.journal([journaled(1, "quote sent to Acme")])
    run = ledger.db.run
    tries = 0

    async def refused(*args: object, **kwargs: object) -> None:
        nonlocal tries
        tries += 1
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(ledger.db, "run", refused)
    task = asyncio.create_task(sync.run(every_seconds=0.01, retry_seconds=0.01))
    with caplog.at_level(logging.WARNING, logger="memory.longterm.sync"):
        await until(lambda: tries >= 5)  # tried again, however slow the machine
        monkeypatch.setattr(ledger.db, "run", run)
        for _ in range(250):  # the record lands, then the loop finishes its round
            if any("works again" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in caplog.records] == [
        "feeding long-term memory: the ledger is down, trying again: connection refused",
        "feeding long-term memory works again",
    ]
    assert await store.count() == 1


async def test_a_failed_embedding_keeps_the_record_and_embeds_it_later(
    ledger: Ledger, store: Flaky
) -> None:
    embedder = HashingEmbedder()
    sync = MemorySync(ledger, store, embedder)
    embedder.failing = True
    await ledger.journal([journaled(1, "storefront photos delayed")])
    assert await sync.catch_up() == 1
    # Stored, found by its words, waiting for a vector.
    assert [r.text for r in await store.unembedded(10)] == ["storefront photos delayed"]
    assert (await store.search(Query("photos")))[0].record.text == "storefront photos delayed"
    embedder.failing = False
    await sync.catch_up()
    assert await store.unembedded(10) == []
    by_meaning = Query("shop pictures", hashed("storefront photos delayed"), alpha=1)
    assert (await store.search(by_meaning))[0].record.text == "storefront photos delayed"


async def test_rebuild_gives_back_everything_from_the_ledger(ledger: Ledger, store: Flaky) -> None:
    sync = MemorySync(ledger, store, HashingEmbedder())
    await ledger.journal([journaled(n, f"note {n}") for n in range(25)])
    await sync.catch_up()
    await store.delete([(await store.search(Query("note 3")))[0].record.id])
    assert await store.count() == 24
    assert await sync.rebuild() == 25
    assert await store.count() == 25


class Gated(HashingEmbedder):
    """A local model on a busy CPU: a batch waits until it is let through."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()
        self.asked = asyncio.Event()

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.asked.set()
        await self.open.wait()
        return await super().embed(texts)


class HeldUp(EmbeddedMemory):
    """Its writes wait until let through: a big audit log takes a while to feed again."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate, self.writing = asyncio.Event(), asyncio.Event()

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        self.writing.set()
        await self.gate.wait()
        await super().upsert(records, vectors)


async def test_a_rebuild_elsewhere_while_the_service_feeds_a_backlog_loses_nothing(
    ledger: Ledger, store: Flaky, tmp_path: Path
) -> None:
    await ledger.journal([journaled(n, f"note {n}") for n in range(30)])
    embedder = Gated()
    service = MemorySync(ledger, store, embedder, batch=10)
    await service.catch_up()
    await ledger.journal([journaled(n, f"note {n}") for n in range(30, 90)])  # a backlog
    embedder.open.clear()
    embedder.asked.clear()
    serving = asyncio.create_task(service.catch_up())
    await embedder.asked.wait()  # the service read the cursor and embeds a batch

    # `steward memory rebuild` from a shell: the same store, another process's feeder.
    shell_store = HeldUp(tmp_path / "memory.db")
    made = MemoryRecord.create("audit:1", RecordKind.NOTE, "noted", T0).to_dict()
    shell = MemorySync(ledger, shell_store, HashingEmbedder(), lambda tx, event: [made])
    await ledger.audit(NewAuditEvent("telegram:42", "run.noted", "r1", {}))
    rebuilding = asyncio.create_task(shell.rebuild())
    await shell_store.writing.wait()  # emptied and rewound, feeding the audit log again
    embedder.open.set()
    await serving  # the service's moves from its own copy of the cursor are refused
    shell_store.gate.set()
    await rebuilding
    await shell_store.close()
    assert await store.count() == 91
    await ledger.journal([journaled(90, "note 90")])
    assert await service.catch_up() == 1  # and the service reads on from the rebuild's


class Landed(EmbeddedMemory):
    """Its first write lands, then holds before the feeder notes it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.landed, self.go = asyncio.Event(), asyncio.Event()

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        await super().upsert(records, vectors)
        if not self.landed.is_set():
            self.landed.set()
            await self.go.wait()


async def test_a_rebuild_elsewhere_during_the_first_feed_loses_nothing(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The cursor is rewound to where it already was (0): the first feeder's move from
    0 was taken for one from the rebuild's 0, and what the rebuild emptied stayed fed."""
    await ledger.journal([journaled(n, f"note {n}") for n in range(30)])
    store = Landed(tmp_path / "memory.db")
    serving = asyncio.create_task(MemorySync(ledger, store, None, batch=10).catch_up())
    await store.landed.wait()  # notes 0-9 are in the store, not yet noted as fed

    shell_store = HeldUp(tmp_path / "memory.db")
    shell = MemorySync(ledger, shell_store, None, batch=4)
    rebuilding = asyncio.create_task(shell.rebuild())
    await shell_store.writing.wait()  # emptied and rewound to 0, feeding notes 0-3
    store.go.set()
    await serving
    shell_store.gate.set()
    await rebuilding
    await shell.catch_up()
    assert await store.count() == 30
    await shell_store.close()
    await store.close()


async def test_another_embedding_model_feeds_the_store_again(ledger: Ledger, store: Flaky) -> None:
    await ledger.journal([journaled(n, f"note {n}") for n in range(5)])
    await MemorySync(ledger, store, HashingEmbedder("test:a")).catch_up()
    changed = MemorySync(ledger, store, HashingEmbedder("test:b", dims=32))
    assert await changed.behind() == 5
    assert await changed.catch_up() == 5
    assert await store.count(Filters()) == 5 and await store.unembedded(10) == []


async def test_steward_starts_while_weaviate_is_down_and_records_wait_in_the_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.app import Steward
    from bot.settings import load_settings
    from graph.messages import Inbound, Sender

    settings = load_settings(
        home=tmp_path / "home",
        operators="telegram:42",
        weaviate_url="http://127.0.0.1:9",
        weaviate_api_key="wv-secret",
    )
    with caplog.at_level(logging.WARNING):
        async with Steward.open(settings) as steward:
            feeding = asyncio.create_task(steward.history.sync.run(0.01, retry_seconds=0.01))
            me = Sender("telegram", "42")
            started = await steward.door.receive(
                Inbound(
                    me, "c", "1", text="/run onboarding client=Acme email=j@acme.com package=basic"
                )
            )
            assert started is not None and "Started onboarding" in started.texts[0]
            asked = await steward.door.receive(Inbound(me, "c", "2", text="/history acme"))
            assert asked is not None
            assert "not available right now (cannot reach Weaviate at 127.0.0.1:9" in asked.texts[0]
            assert await steward.history.sync.behind() >= 2
            await asyncio.sleep(0.1)  # the feeder tried again, several times
            feeding.cancel()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "records wait in the ledger" in warning and "wv-secret" not in warning


async def test_a_store_that_comes_back_gets_what_waited(ledger: Ledger, tmp_path: Path) -> None:
    """The retry pause is read from a clock the test moves, so a slow ledger cannot pass it."""
    from memory.longterm.reconnecting import Reconnecting

    now = 1000.0
    attempts = 0
    real = EmbeddedMemory(tmp_path / "memory.db")

    async def connect() -> EmbeddedMemory:
        nonlocal attempts
        attempts += 1
        if attempts < 2:
            raise MemoryUnavailable("cannot reach Weaviate at weaviate:8080: refused")
        return real

    store = Reconnecting(
        "weaviate:weaviate:8080/StewardMemory",
        connect,
        MemoryUnavailable("down"),
        10.0,
        clock=lambda: now,
    )
    sync = MemorySync(ledger, store, None)
    await ledger.journal([journaled(n, f"note {n}") for n in range(3)])
    now += 9.9
    with pytest.raises(MemoryUnavailable):
        await sync.catch_up()  # within the retry pause: not even tried
    assert attempts == 0
    now += 0.2
    with pytest.raises(MemoryUnavailable):
        await sync.catch_up()
    assert attempts == 1
    now += 10.1
    assert await sync.catch_up() == 3
    assert attempts == 2 and await real.count() == 3
    await store.close()


@pytest.mark.postgres
def test_journal_writers_on_postgresql_commit_in_the_order_of_their_numbers(
    postgres_database: object,
) -> None:
    """Else a reader could move past an entry that commits after a later one."""
    import threading

    from sqlalchemy import create_engine

    from memory.ledger import LedgerTx

    url = postgres_database.url.set(drivername="postgresql+psycopg")  # type: ignore[attr-defined]
    ledger_setup = Ledger.from_url(postgres_database)  # type: ignore[arg-type]
    asyncio.run(ledger_setup.setup())
    asyncio.run(ledger_setup.close())
    engine = create_engine(url)
    first, second = engine.connect(), engine.connect()
    try:
        first.begin()
        LedgerTx(first).journal([journaled(1, "first")])  # takes seq 1, and the turn
        done = threading.Event()

        def later() -> None:
            with second.begin():
                LedgerTx(second).journal([journaled(2, "second")])
            done.set()

        thread = threading.Thread(target=later)
        thread.start()
        assert not done.wait(0.5)  # waits for the first to commit
        first.commit()
        assert done.wait(5)
        thread.join()
    finally:
        first.close()
        second.close()
        engine.dispose()


class Slow(EmbeddedMemory):
    """A store whose writes take their time, as a remote one's do."""

    started = asyncio.Event()

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        self.started.set()
        await asyncio.sleep(0.2)
        await super().upsert(records, vectors)


async def test_a_stop_lets_the_batch_under_way_be_fed_and_noted(
    ledger: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled between the write and its note, the next start found records it was
    never told of and fed the store all over again, with a warning, after every short
    session."""
    store = Slow(tmp_path / "memory.db")
    store.started = asyncio.Event()
    try:
        sync = MemorySync(ledger, store, None, batch=2)
        await ledger.journal([journaled(n, f"note {n}") for n in range(6)])
        task = asyncio.create_task(sync.run(every_seconds=60))
        await store.started.wait()
        sync.stop()  # mid-write
        await asyncio.wait_for(task, 5)
        assert await store.count() == 2 and await sync.behind() == 4  # fed, and noted
        again = MemorySync(ledger, store, None, batch=2)
        with caplog.at_level(logging.WARNING, logger="memory.longterm.sync"):
            assert await again.catch_up() == 4
        assert caplog.records == []
        await ledger.journal([journaled(n, f"note {n}") for n in range(6, 10)])
        assert await sync.catch_up() == 4  # the stop was the loop's: not every batch after
    finally:
        await store.close()
