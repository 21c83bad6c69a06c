"""Replies on their way out (bot/outbox.py): kept in the ledger until sent, in order per
chat, tried again while the platform cannot take them, never held up by another chat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import Steward
from bot.outbox import GIVE_UP_AFTER, Outbox, SendLater
from bot.settings import load_settings
from graph.messages import (
    Button,
    Card,
    CardOutcome,
    EditPrompt,
    Inbound,
    Owed,
    Reply,
    Sender,
    Verbatim,
)
from memory.ledger import utcnow


@pytest.fixture
async def steward(tmp_path: Path) -> AsyncIterator[Steward]:
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        yield steward


class Platform:
    """Takes each reply's items, one message per item; a chat can be made unreachable."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []  # (chat, item)
        self.down: set[str] = set()
        self.broken: set[str] = set()
        self.tries = 0
        self._tried = asyncio.Event()

    async def send(self, owed: Owed) -> None:
        self.tries += 1
        self._tried.set()
        self._tried = asyncio.Event()
        if owed.chat_id in self.broken:
            raise RuntimeError("a bug in rendering")
        for index in range(owed.sent, len(owed.reply.items)):
            if owed.chat_id in self.down:
                raise SendLater("unreachable")
            self.got.append((owed.chat_id, str(owed.reply.items[index])))
            owed.sent = index + 1
            if owed.reply.items[index] == "and then it goes down":
                self.down.add(owed.chat_id)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Returns once ``condition()`` holds, checked after every try to send."""
        while not condition():
            await asyncio.wait_for(self._tried.wait(), 5)

    def said(self, chat: str) -> list[str]:
        return [item for where, item in self.got if where == chat]


async def owe(steward: Steward, chat: str, *texts: str) -> Owed:
    return await steward.door.owe("telegram", chat, Reply(list(texts)))


def test_a_reply_with_every_kind_of_item_is_kept_as_it_was() -> None:
    card = Card(
        "a1",
        "Approve the welcome email",
        "Send the welcome email to jane@acme.com",
        fields=[("Client", "Acme"), ("Package", "basic")],
        text="Hi Acme team",
        risk="medium",
        footer="Expires in 3 days",
        buttons=[Button("Approve", "approve:a1", "primary"), Button("Reject", "reject:a1")],
    )
    reply = Reply(
        [
            "Started onboarding",
            card,
            CardOutcome("a0", "Approved by Jo"),
            EditPrompt("a1", "Hi", "New text?"),
            Verbatim("Hi Jane, type /help"),
        ],
        notice="Approved",
        private=True,
    )
    kept = Reply.from_payload(reply.to_payload())
    assert kept == reply
    assert [type(item) for item in kept.items] == [type(item) for item in reply.items]


async def test_replies_to_a_chat_go_in_order_and_a_chat_that_is_down_holds_up_no_other(
    steward: Steward,
) -> None:
    platform = Platform()
    platform.down.add("A")
    outbox = Outbox(steward.door, "telegram", platform.send, first_retry=0.05)
    outbox.put(await owe(steward, "A", "a1", "a2"))
    outbox.put(await owe(steward, "A", "a3"))
    for n in range(5):
        outbox.put(await owe(steward, "B", f"b{n}"))
    await platform.until(lambda: len(platform.said("B")) == 5)
    assert platform.said("B") == ["b0", "b1", "b2", "b3", "b4"]
    assert platform.said("A") == []
    assert [o.chat_id for o in await steward.door.owed("telegram")] == ["A", "A"]

    platform.down.clear()  # the platform takes A's messages again
    await asyncio.wait_for(outbox.idle(), 5)
    assert platform.said("A") == ["a1", "a2", "a3"]
    assert await steward.door.owed("telegram") == []


async def test_each_reply_put_says_when_its_way_is_over(steward: Steward) -> None:
    """Sent, or the lane stopped with it unsent (it stays in the ledger): what waits on a
    reply (a handling, on what it sent ahead) goes on then, and not before."""
    platform = Platform()
    outbox = Outbox(steward.door, "telegram", platform.send, first_retry=0.05)
    sent = outbox.put(await owe(steward, "A", "a1"))
    await asyncio.wait_for(sent, 5)
    assert platform.said("A") == ["a1"]

    platform.down.add("A")
    tried = outbox.put(await owe(steward, "A", "a2"))
    queued = outbox.put(await owe(steward, "A", "a3"))
    await platform.until(lambda: platform.tries >= 3)
    assert not tried.done() and not queued.done()
    await outbox.stop()
    assert tried.done() and queued.done()
    assert [o.reply.texts for o in await steward.door.owed("telegram")] == [["a2"], ["a3"]]


async def test_a_lane_begun_inside_a_handling_takes_no_part_in_its_writes(
    steward: Steward,
) -> None:
    """A reply sent ahead starts its chat's lane from inside the handling; the lane's own
    writes (here: giving the reply up) must not carry the writes the handling deferred."""
    platform = Platform()
    platform.broken.add("A")
    outbox = Outbox(steward.door, "telegram", platform.send)
    owed = await owe(steward, "A", "a1")
    written: list[str] = []
    async with steward.ledger.batching():
        steward.ledger.defer(lambda tx: written.append("the handling's"))
        await asyncio.wait_for(outbox.put(owed), 5)
        assert written == []
    assert written == ["the handling's"]


async def test_a_reply_cut_short_goes_on_from_where_it_stopped_after_a_restart(
    steward: Steward,
) -> None:
    platform = Platform()
    outbox = Outbox(steward.door, "telegram", platform.send, first_retry=0.05)
    outbox.put(await owe(steward, "A", "first", "and then it goes down", "third"))
    outbox.put(await owe(steward, "A", "next reply"))
    await platform.until(lambda: platform.tries >= 2)
    await outbox.stop()  # the process stops while the platform is down
    (kept, waiting) = await steward.door.owed("telegram")
    assert kept.sent == 2 and waiting.sent == 0

    platform.down.clear()
    restarted = Outbox(steward.door, "telegram", platform.send)
    await restarted.load()
    await asyncio.wait_for(restarted.idle(), 5)
    assert platform.said("A") == ["first", "and then it goes down", "third", "next reply"]
    assert await steward.door.owed("telegram") == []


async def test_a_stop_mid_reply_notes_what_went_so_the_next_start_sends_only_the_rest(
    steward: Steward,
) -> None:
    got: list[str] = []
    sent_first = asyncio.Event()
    never = asyncio.Event()

    async def send(owed: Owed) -> None:
        for index in range(owed.sent, len(owed.reply.items)):
            if index == 1 and not never.is_set():
                sent_first.set()
                await never.wait()  # waiting out a 429 longer than the stop's drain, say
            got.append(str(owed.reply.items[index]))
            owed.sent = index + 1

    outbox = Outbox(steward.door, "telegram", send)
    outbox.put(await owe(steward, "A", "first", "second"))
    await asyncio.wait_for(sent_first.wait(), 5)
    await outbox.stop(drain_seconds=0.1)
    (kept,) = await steward.door.owed("telegram")
    assert kept.sent == 1

    never.set()
    restarted = Outbox(steward.door, "telegram", send)
    await restarted.load()
    await asyncio.wait_for(restarted.idle(), 5)
    assert got == ["first", "second"]


async def test_a_reply_that_cannot_be_sent_is_given_up_on_the_record(steward: Steward) -> None:
    platform = Platform()
    platform.broken.add("A")
    platform.down.add("B")
    outbox = Outbox(steward.door, "telegram", platform.send, first_retry=0.05)
    outbox.began -= GIVE_UP_AFTER + timedelta(hours=1)  # running for over a day
    outbox.put(await owe(steward, "A", "never renders"))
    old = await owe(steward, "B", "a day old")
    old.created_at = utcnow() - GIVE_UP_AFTER - timedelta(minutes=1)
    outbox.put(old)
    outbox.put(await owe(steward, "A", "after it"))
    await asyncio.wait_for(outbox.idle(), 5)
    assert await steward.door.owed("telegram") == []  # not tried again at every start
    dropped = [e for e in await steward.ledger.audit_events() if e.kind == "reply.dropped"]
    assert [(e.subject, e.data["reason"][:6]) for e in dropped] == [
        ("telegram:A", "failed"),
        ("telegram:B", "undeli"),
        ("telegram:A", "failed"),
    ]


async def test_a_reply_kept_before_a_long_stop_gets_a_day_of_tries_after_the_start(
    steward: Steward,
) -> None:
    """The time steward was stopped is no try: a reply kept over a day before this start
    is not given up at its first failed try."""
    platform = Platform()
    platform.down.add("A")
    outbox = Outbox(steward.door, "telegram", platform.send, first_retry=0.05)
    old = await owe(steward, "A", "kept before a long stop")
    old.created_at = utcnow() - GIVE_UP_AFTER - timedelta(hours=1)
    outbox.put(old)
    await platform.until(lambda: platform.tries >= 2)
    platform.down.clear()  # the platform is back a moment after the start
    await asyncio.wait_for(outbox.idle(), 5)
    assert platform.said("A") == ["kept before a long stop"]
    assert not [e for e in await steward.ledger.audit_events() if e.kind == "reply.dropped"]


async def test_a_reply_answering_a_delivery_is_kept_with_its_handling(steward: Steward) -> None:
    inbound = Inbound(Sender("telegram", "1"), "1", "u1", text="/processes")
    inbox_id = await steward.door.accept(inbound)
    assert inbox_id is not None
    owed = await steward.door.answer(inbox_id, inbound)
    assert await steward.door.stored("telegram") == []
    (kept,) = await steward.door.owed("telegram")
    assert (kept.key, kept.reply, kept.answering) == (owed.key, owed.reply, inbound)


@pytest.mark.parametrize("beat_first", [False, True])
@pytest.mark.parametrize("taken_first", [True, False])
async def test_a_worker_back_from_a_freeze_sends_only_what_is_still_its_own(
    tmp_path: Path, taken_first: bool, beat_first: bool
) -> None:
    """Frozen past its lease, the worker's reply was taken over by another. Back, it asks
    the ledger before it sends each reply it held before it froze, whether its beat or a
    send comes first, and sends only what it still holds."""
    settings = load_settings(home=tmp_path / "home")
    async with Steward.open(settings) as frozen, Steward.open(settings) as other:
        await frozen.ledger.register_worker("frozen")
        await other.ledger.register_worker("other")
        platform = Platform()
        outbox = Outbox(frozen.door, "telegram", platform.send)
        taken = await owe(frozen, "1", "taken while frozen")
        stale = utcnow() - timedelta(minutes=1)
        began, _ = frozen.ledger._last_beat or (0.0, stale)
        frozen.ledger._last_beat = (began - 60, stale)
        await other.ledger.db.run(
            lambda conn: conn.exec_driver_sql(
                "UPDATE workers SET seen_at = ? WHERE id = 'frozen'", (stale,)
            )
        )
        [took] = await other.door.owed("telegram", own=False)
        assert took.key == taken.key
        await other.ledger.heartbeat()

        # Back, its lane holds the reply taken over and one it keeps still (made by a
        # handling it finished on waking), in either order; its beat may come first.
        kept = await owe(frozen, "1", "still its own")
        for owed in (taken, kept) if taken_first else (kept, taken):
            outbox.put(owed)
        if beat_first:
            await frozen.ledger.heartbeat()
        await outbox.idle()
        assert platform.got == [("1", "still its own")]
        assert not frozen.ledger.lease_in_doubt()
