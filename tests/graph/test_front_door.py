"""The front door, on either database: what it does with a delivery it cannot store,
and the word it keeps in a reply's place while the handling goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DataError, OperationalError

import graph.front_door
from bot.app import Steward
from bot.settings import load_settings
from graph.front_door import REFUSAL, UNVERIFIED_MOST, cut_off_text
from graph.messages import Inbound, Owed, Sender
from memory.database_url import DatabaseURL
from memory.ledger import LEASE, Ledger, LedgerTx, schema, utcnow

OPERATOR = Sender("telegram", "42", "Olivia")


@pytest.fixture
async def app(database_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(
        home=tmp_path / "home",
        database_url=database_url.setting,
        operators=OPERATOR.key,
    )
    async with Steward.open(settings) as steward:
        yield steward


async def test_a_delivery_the_database_refuses_is_set_aside_and_the_next_one_goes_on(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivered again it would be refused again, and Telegram brings nothing after an
    update it was not told of: so it is audited, and the door answers as for a duplicate."""
    refuse(app, monkeypatch, DataError("INSERT INTO inbox …", {}, Exception("value too long")))
    assert await app.door.accept(Inbound(OPERATOR, "7", "update-1", text="/runs")) is None
    [event] = [e for e in await app.ledger.audit_events() if e.kind == "delivery.unstorable"]
    assert event.subject == "telegram" and event.data["delivery"] == "update-1"
    assert "value too long" in event.data["error"]
    assert await app.ledger.unhandled_inbound() == []

    monkeypatch.undo()
    reply = await app.door.receive(Inbound(OPERATOR, "7", "update-2", text="/runs"))
    assert reply is not None and reply.texts


async def test_a_delivery_the_database_failed_to_store_is_not_set_aside(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Down, locked, a bug: the platform must deliver it again, so the error goes on."""
    for error in (OperationalError("INSERT …", {}, Exception("locked")), TypeError("a bug")):
        refuse(app, monkeypatch, error)
        with pytest.raises(type(error)):
            await app.door.accept(Inbound(OPERATOR, "7", "update-1", text="/runs"))
    assert [e for e in await app.ledger.audit_events() if e.kind == "delivery.unstorable"] == []


def refuse(app: Steward, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    async def refusing(*args: Any) -> None:
        raise error

    monkeypatch.setattr(app.ledger, "accept_inbound", refusing)


async def test_a_delivery_longer_than_its_column_is_set_aside(app: Steward) -> None:
    """PostgreSQL refuses an id longer than its column (SQLite takes it)."""
    long = Inbound(OPERATOR, "7", "u" * 300, text="/runs")
    stored = await app.door.accept(long)
    unstorable = [e for e in await app.ledger.audit_events() if e.kind == "delivery.unstorable"]
    if app.ledger.url.is_sqlite:
        assert stored is not None and unstorable == []
    else:
        assert stored is None and len(unstorable) == 1


START = "/run onboarding client=Acme email=jane@acme.com package=basic"


async def answer(app: Steward, inbound: Inbound) -> Owed:
    """Stores the delivery, then handles it as a chat channel does."""
    inbox_id = await app.door.accept(inbound)
    assert inbox_id is not None
    return await app.door.answer(inbox_id, inbound)


def kept_texts(app: Steward) -> Any:
    """The texts of every reply kept, by key, read without taking any over."""

    def read(tx: Any) -> dict[str, list[str]]:
        rows = tx.conn.execute(select(schema.replies.c.key, schema.replies.c.payload))
        return {
            key: [item["text"] for item in payload["reply"]["items"] if "text" in item]
            for key, payload in rows
        }

    return app.ledger.read(read)


async def test_refused_requests_from_many_addresses_cannot_grow_the_audit_log(
    app: Steward,
) -> None:
    """One event a minute per address and reason, and UNVERIFIED_MOST a minute in all."""
    for n in range(3 * UNVERIFIED_MOST):
        app.door.refuse_unverified("slack", "bad signature", {"remote": f"10.0.0.{n}"})
        app.door.refuse_unverified("slack", "bad signature", {"remote": f"10.0.0.{n}"})
    await app.door.audited()
    refused = [e for e in await app.ledger.audit_events() if e.kind == "request.refused"]
    assert len(refused) == UNVERIFIED_MOST


async def test_a_handling_that_writes_keeps_a_word_in_its_replys_place_until_it_is_over(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the run's start was written would leave the operator that word."""
    seen: list[dict[str, list[str]]] = []
    advance = app.engine._advance

    async def watched(*args: Any) -> Any:
        seen.append(await kept_texts(app))  # the run's start is written by now
        return await advance(*args)

    monkeypatch.setattr(app.engine, "_advance", watched)
    inbound = Inbound(OPERATOR, "7", "update-1", text=START)
    owed = await answer(app, inbound)

    [during] = seen
    assert list(during) == [owed.key]
    assert during[owed.key] == [cut_off_text(inbound)]
    assert cut_off_text(inbound).startswith(f"I was cut off while handling “{START}”")
    after = await kept_texts(app)
    assert list(after) == [owed.key]
    assert after[owed.key][0].startswith("Started onboarding")


async def test_a_handling_that_fails_after_its_first_write_leaves_no_word(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel tells the sender it failed; the word must not follow at a restart."""

    async def failing(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.engine, "_advance", failing)
    inbound = Inbound(OPERATOR, "7", "update-1", text=START)
    with pytest.raises(RuntimeError, match="a bug"):
        await answer(app, inbound)
    assert await kept_texts(app) == {}


async def test_a_stranger_is_never_kept_a_word(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stranger's refusal writes an audit event first; what they may hear is the
    refusal, nothing about steward's work."""
    seen: list[dict[str, list[str]]] = []
    audit = app.ledger.audit

    async def watched(*args: Any, **kwargs: Any) -> Any:
        result = await audit(*args, **kwargs)
        seen.append(await kept_texts(app))
        return result

    monkeypatch.setattr(app.ledger, "audit", watched)
    stranger = Inbound(Sender("telegram", "666"), "666", "update-1", text=START)
    owed = await answer(app, stranger)
    assert seen == [{}]
    assert owed.reply.texts == [REFUSAL]


async def test_a_strangers_flood_is_stored_and_audited_only_up_to_a_days_most(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message a stranger sent was an inbox row and an audit event: a flood, from
    one sender or many, grew the ledger without end. Operators are never counted."""
    monkeypatch.setattr(graph.front_door, "STRANGER_MOST", 3)
    monkeypatch.setattr(graph.front_door, "STRANGERS_MOST", 5)
    stranger = Sender("telegram", "666")
    kept = [await app.door.accept(Inbound(stranger, "666", f"u{n}", text="hi")) for n in range(5)]
    assert [k is not None for k in kept] == [True, True, True, False, False]
    others = [Sender("telegram", str(n)) for n in (1, 2, 3)]
    kept = [
        await app.door.accept(Inbound(s, s.user_id, f"o{s.user_id}", text="hi")) for s in others
    ]
    assert [k is not None for k in kept] == [True, True, False]  # 5 of all strangers
    for n in range(10):
        assert await app.door.accept(Inbound(OPERATOR, "7", f"op{n}", text="/runs")) is not None
    floods = [e for e in await app.ledger.audit_events() if e.kind == "access.flood"]
    assert [e.subject for e in floods] == ["telegram:666", "telegram:3"]


async def test_a_word_taken_over_while_its_handling_went_on_keeps_the_reply_apart(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This worker froze after the handling's first write, and another took over the word
    kept in the reply's place (it sends that). The reply, once made, is kept under a key
    of its own, for this worker to send; the other's word stays as it was."""
    other = Ledger.from_url(app.ledger.url)
    await other.setup()
    try:
        await app.ledger.register_worker("frozen")
        await other.register_worker("other")
        advance = app.engine._advance

        async def frozen_meanwhile(*args: Any) -> Any:
            stale = utcnow() - LEASE * 2
            query = update(schema.workers).values(seen_at=stale)
            await other.db.run(
                lambda conn: conn.execute(query.where(schema.workers.c.id == "frozen"))
            )
            assert len(await other.take_over_replies("telegram", own=False)) == 1
            return await advance(*args)

        monkeypatch.setattr(app.engine, "_advance", frozen_meanwhile)
        inbound = Inbound(OPERATOR, "7", "update-1", text=START)
        owed = await answer(app, inbound)

        kept = await kept_texts(app)
        assert len(kept) == 2 and owed.key in kept
        assert kept[owed.key][0].startswith("Started onboarding")
        [word] = [texts for key, texts in kept.items() if key != owed.key]
        assert word == [cut_off_text(inbound)]
        assert [r.key for r in await app.ledger.take_over_replies("telegram")] == [owed.key]
    finally:
        await other.close()


def kept_in_order(app: Steward) -> Any:
    """The texts of every reply kept, in the order they go out, read without taking any
    over."""

    def read(tx: Any) -> list[tuple[str, list[str]]]:
        query = select(schema.replies.c.key, schema.replies.c.payload)
        rows = tx.conn.execute(query.order_by(schema.replies.c.seq))
        return [
            (key, [item["text"] for item in payload["reply"]["items"] if "text" in item])
            for key, payload in rows
        ]

    return app.ledger.read(read)


async def answer_sending_ahead(
    app: Steward, inbound: Inbound, ahead: Callable[[Owed], asyncio.Future[None]]
) -> Owed:
    inbox_id = await app.door.accept(inbound)
    assert inbox_id is not None
    return await app.door.answer(inbox_id, inbound, ahead)


async def test_a_run_started_is_said_ahead_once_recorded_and_goes_on_once_it_is_sent(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The word that the run started goes to the channel once the write that records the
    run and marks the delivery done has committed — kept with it, before the word that
    stands in for the rest — and the run goes on once the channel has sent it.
    The reply kept at the end is the rest: the card."""
    sending = asyncio.get_running_loop().create_future()
    went: list[Owed] = []

    def ahead(owed: Owed) -> asyncio.Future[None]:
        went.append(owed)
        return sending

    advanced: list[bool] = []
    advance = app.engine._advance

    async def watched(*args: Any) -> Any:
        advanced.append(sending.done())
        return await advance(*args)

    monkeypatch.setattr(app.engine, "_advance", watched)
    inbound = Inbound(OPERATOR, "7", "update-1", text=START)
    handling = asyncio.create_task(answer_sending_ahead(app, inbound, ahead))
    for _ in range(200):
        if went:
            break
        await asyncio.sleep(0.01)
    [early] = went
    [run] = await app.ledger.list_runs(None)
    assert early.reply.texts == [f"Started onboarding as run {run.id}."]
    assert await app.ledger.unhandled_inbound() == []
    assert await kept_in_order(app) == [
        (early.key, early.reply.texts),
        (ANY, [cut_off_text(inbound)]),
    ]

    await asyncio.sleep(0.1)  # the run waits until it is sent
    assert not handling.done() and advanced == []
    sending.set_result(None)
    owed = await asyncio.wait_for(handling, 10)
    assert advanced == [True]
    assert owed.reply.texts == [] and len(owed.reply.cards) == 1
    assert [key for key, _ in await kept_in_order(app)] == [early.key, owed.key]


async def test_a_run_said_ahead_goes_on_after_a_moment_when_sending_it_takes_longer(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform is slow or down: the run does not wait for it."""
    monkeypatch.setattr(graph.front_door, "AHEAD_WAIT", 0.05)
    never = asyncio.get_running_loop().create_future()
    inbound = Inbound(OPERATOR, "7", "update-1", text=START)
    owed = await asyncio.wait_for(answer_sending_ahead(app, inbound, lambda _: never), 10)
    assert len(owed.reply.cards) == 1 and not never.done()


async def test_nothing_goes_ahead_when_the_write_it_rides_fails(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run was not recorded: nothing says it started, then or after a restart."""

    def failing(self: LedgerTx, run: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(LedgerTx, "insert_run", failing)
    went: list[Owed] = []

    def ahead(owed: Owed) -> asyncio.Future[None]:
        went.append(owed)
        return asyncio.get_running_loop().create_future()

    inbound = Inbound(OPERATOR, "7", "update-1", text=START)
    with pytest.raises(RuntimeError, match="a bug"):
        await answer_sending_ahead(app, inbound, ahead)
    assert went == [] and await kept_in_order(app) == []
    assert await app.ledger.list_runs(None) == []
