"""The daily action list: what it holds, how it ranks and explains, and when it comes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.app import Steward
from bot.outbox import Outbox
from bot.scheduler import DigestTime, Scheduler
from bot.settings import load_settings
from graph.budget import Budgets
from graph.digest import daily_list, next_digest_at
from graph.messages import Card, Inbound, Owed, Reply, Sender
from memory.ledger import ModelCall, RunStatus, utcnow

FAILING = """
name: broken_sync
title: Broken sync
description: posts to an address that is no address
steps:
  - id: gate
    kind: approval
    summary: Sync it
  - id: act
    kind: action
    gate: gate
    connector: webhook
    action: post
    with: {url: nowhere}
"""
ESCALATING = """
name: quick_check
title: Quick check
description: asks, and asks again when nobody answers
steps:
  - id: gate
    kind: approval
    summary: Check it
    expires_in: 1h
    on_expiry: escalate
"""
INVOICE = {
    "client": "Acme",
    "email": "billing@acme.com",
    "invoice": "INV-7",
    "amount": "$1200",
    "due_date": "2026-11-01",
}
BERLIN = ZoneInfo("Europe/Berlin")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    processes = tmp_path / "processes"
    processes.mkdir()
    (processes / "broken_sync.yaml").write_text(FAILING)
    (processes / "quick_check.yaml").write_text(ESCALATING)
    settings = load_settings(home=tmp_path / "home", processes_dir=processes)
    async with Steward.open(settings) as steward:
        yield steward


def onboarding(client: str) -> dict[str, str]:
    return {"client": client, "email": f"{client.lower()}@example.com", "package": "basic"}


def texts(reply: Reply) -> str:
    return "\n".join(reply.texts)


async def test_an_empty_day_is_one_short_line(app: Steward) -> None:
    reply = await app.coordinator.today_reply()
    assert len(reply.items) == 1 and reply.texts[0].endswith("nothing needs you today.")


async def test_items_are_ranked_by_the_documented_score_and_explained(app: Steward) -> None:
    welcome = await app.engine.start("onboarding", onboarding("Beta"), "cli:shell")
    invoice = await app.engine.start("invoice_followup", INVOICE, "cli:shell")
    broken = await app.engine.start("broken_sync", {}, "cli:shell")
    assert broken.approval is not None
    failed = await app.engine.decide(broken.approval.id, True, "cli:shell")
    assert failed.view is not None and failed.view.run.status.value == "failed"

    later = utcnow() + timedelta(days=2, hours=12)  # every gate expires within a day
    found = await daily_list(app.ledger, app.catalog, later, ZoneInfo("UTC"))
    kinds = [item.kind for item in found.items]
    assert kinds == ["approval", "approval", "failed"]
    first, second, third = found.items
    assert invoice.approval is not None and first.key == invoice.approval.id  # money
    assert welcome.approval is not None and second.key == welcome.approval.id
    assert first.score > second.score > third.score
    expiry = invoice.approval.expires_at  # 12 h after `later`: today or tomorrow by the clock
    day = "today" if expiry.date() == later.date() else "tomorrow"
    assert first.why.startswith(
        f"waiting 2 days · $1,200.00 at stake · expires {day} at {expiry:%H:%M} · "
    )
    assert second.why.startswith("waiting 2 days · expires ")
    assert [b.payload for b in first.buttons] == [
        f"approve:{first.key}",
        f"reject:{first.key}",
        f"details:{first.key}",
    ]
    assert f"Broken sync {broken.run.id} failed (" in third.title
    assert [b.payload for b in third.buttons] == [f"retry:{broken.run.id}"]

    reply = found.reply()
    assert found.total == 3
    assert reply.texts[0].endswith("3 things need you — 2 approvals, 1 failed run.")
    assert reply.cards[0].title.startswith("1. Send a payment reminder")


async def test_expiry_is_told_by_the_calendar_day(app: Steward) -> None:
    started = await app.engine.start("onboarding", onboarding("Beta"), "cli:shell")
    assert started.approval is not None
    expiry = started.approval.expires_at.astimezone(UTC)
    midnight = datetime.combine(expiry.date(), time(), UTC)

    async def told_at(at: datetime) -> str:
        [item] = (await daily_list(app.ledger, app.catalog, at, ZoneInfo("UTC"))).items
        expired = "expired" in item.why
        assert ("Approve" in [b.label for b in item.buttons]) is not expired  # too late then
        return item.why

    assert f"expires tomorrow at {expiry:%H:%M}" in await told_at(midnight - timedelta(minutes=1))
    assert f"expires today at {expiry:%H:%M}" in await told_at(midnight + timedelta(microseconds=1))
    assert "expires in 2 days" in await told_at(midnight - timedelta(days=1, minutes=1))
    assert "expired, waiting for its timer" in await told_at(expiry + timedelta(minutes=1))


async def test_approve_right_on_the_item(app: Steward) -> None:
    view = await app.engine.start("onboarding", onboarding("Beta"), "cli:shell")
    reply = await app.coordinator.today_reply()
    [card] = reply.cards
    approve = next(b for b in card.buttons if b.label == "Approve")
    press = Inbound(Sender("cli", "shell"), "terminal", "press-1", button=approve.payload)
    await app.coordinator.handle(press)
    assert view.approval is not None
    decided = await app.ledger.get_approval(view.approval.id)
    assert decided is not None and not decided.is_pending


async def test_over_twenty_items_show_the_top_ten_and_the_count(app: Steward) -> None:
    for n in range(22):
        await app.engine.start("onboarding", onboarding(f"Client{n}"), "cli:shell")
    short = await app.coordinator.today_reply()
    assert len(short.cards) == 10
    assert "…and 12 more" in texts(short) and "/today all" in texts(short)
    every = await app.coordinator.today_reply(show_all=True)
    assert [c.title.split(".")[0] for c in every.cards] == [str(n) for n in range(1, 21)]
    [rest] = every.texts[1:]  # below the top twenty: lines in one text, not a message each
    assert rest.startswith("21. ") and "\n22. " in rest
    assert rest.count("   /approve ") == rest.count(" · /reject ") == 2  # what buttons do


def test_the_digest_keeps_its_local_time_across_daylight_saving() -> None:
    eight = time(8, 0)
    saturday = datetime(2026, 10, 24, 7, 0, tzinfo=UTC)  # 09:00 in Berlin, summer time
    sunday = next_digest_at(saturday, BERLIN, eight)
    assert sunday == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)  # 08:00 CET, winter time
    before = next_digest_at(datetime(2026, 10, 24, 5, 0, tzinfo=UTC), BERLIN, eight)
    assert before == datetime(2026, 10, 24, 6, 0, tzinfo=UTC)  # 08:00 CEST
    spring = next_digest_at(datetime(2026, 3, 28, 12, 0, tzinfo=UTC), BERLIN, eight)
    assert spring == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)  # 08:00 CEST again


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_the_digest_fires_once_a_day_across_two_schedulers_and_a_dst_change(
    app: Steward,
) -> None:
    await app.engine.start("onboarding", onboarding("Beta"), "cli:shell")
    sent: list[tuple[str, Reply]] = []
    clock = Clock(datetime(2026, 10, 24, 5, 0, tzinfo=UTC))  # 07:00 in Berlin
    digest = DigestTime(time(8, 0), BERLIN)

    def scheduler(name: str) -> Scheduler:
        async def notify(reply: Reply, reply_to: object) -> None:
            sent.append((name, reply))

        return Scheduler(
            app.ledger, app.engine, app.coordinator, notify, digest=digest, clock=clock
        )

    one, two = scheduler("one"), scheduler("two")
    await one.tick()
    await two.tick()
    assert sent == []
    clock.now = datetime(2026, 10, 24, 6, 0, 1, tzinfo=UTC)  # 08:00:01 CEST
    await one.tick()
    await two.tick()
    assert [name for name, _ in sent] == ["one"]
    assert isinstance(sent[0][1].cards[0], Card)
    assert "Saturday 24 October" in sent[0][1].texts[0]

    clock.now = datetime(2026, 10, 25, 6, 30, tzinfo=UTC)  # 07:30 CET: not yet
    await two.tick()
    await one.tick()
    assert len(sent) == 1
    clock.now = datetime(2026, 10, 25, 7, 0, 1, tzinfo=UTC)  # 08:00:01 CET
    await two.tick()
    await one.tick()
    assert [name for name, _ in sent] == ["one", "two"]


async def test_a_digest_missed_while_down_comes_at_start(app: Steward) -> None:
    sent: list[Reply] = []

    async def notify(reply: Reply, reply_to: object) -> None:
        sent.append(reply)

    digest = DigestTime(time(8, 0), BERLIN)
    clock = Clock(datetime(2026, 10, 23, 12, 0, tzinfo=UTC))
    before = Scheduler(app.ledger, app.engine, app.coordinator, notify, digest=digest, clock=clock)
    await before.tick()  # plans the 24th's digest, then steward is down over 08:00
    clock.now = datetime(2026, 10, 24, 9, 30, tzinfo=UTC)
    after = Scheduler(app.ledger, app.engine, app.coordinator, notify, digest=digest, clock=clock)
    await after.tick()
    assert len(sent) == 1 and "Saturday 24 October" in sent[0].texts[0]
    await after.tick()
    assert len(sent) == 1


async def test_a_list_a_stop_cut_off_goes_out_at_the_next_start(app: Steward) -> None:
    digest = DigestTime(time(8, 0), BERLIN)
    clock = Clock(datetime(2026, 10, 24, 5, 0, tzinfo=UTC))
    handing_over = asyncio.Event()
    sent: list[Reply] = []

    async def cut_off(reply: Reply, reply_to: object) -> bool:
        handing_over.set()
        await asyncio.sleep(60)
        return True

    async def notify(reply: Reply, reply_to: object) -> bool:
        sent.append(reply)
        return True

    before = Scheduler(app.ledger, app.engine, app.coordinator, cut_off, digest=digest, clock=clock)
    await before.tick()  # plans the 24th's list
    clock.now = datetime(2026, 10, 24, 6, 0, 1, tzinfo=UTC)  # 08:00:01 in Berlin
    ticking = asyncio.create_task(before.tick())
    await asyncio.wait_for(handing_over.wait(), 5)
    ticking.cancel()  # the service stops
    with pytest.raises(asyncio.CancelledError):
        await ticking
    after = Scheduler(app.ledger, app.engine, app.coordinator, notify, digest=digest, clock=clock)
    await after.tick()
    assert len(sent) == 1 and "Saturday 24 October" in sent[0].texts[0]


async def test_a_list_a_stop_cut_off_between_two_chats_goes_on_to_the_second_alone(
    app: Steward,
) -> None:
    """Released by the stop, the list went again to every chat at the next start: the
    first chat, which had it already, had it twice."""
    sent_to: list[str] = []

    async def send(owed: Owed) -> None:
        sent_to.append(owed.chat_id)

    outbox = Outbox(app.door, "telegram", send)
    second_chat_reached = asyncio.Event()

    async def cut_off(reply: Reply, reply_to: object) -> bool:
        await outbox.owe("1", reply)
        second_chat_reached.set()
        await asyncio.sleep(60)  # the stop comes here
        await outbox.owe("2", reply)
        return True

    async def deliver(reply: Reply, reply_to: object) -> bool:
        for chat in ("1", "2"):
            await outbox.owe(chat, reply)
        return True

    clock = Clock(datetime(2026, 10, 24, 8, 0, 1, tzinfo=UTC))
    await app.ledger.plan_timer("digest:2026-10-24", "digest", clock.now - timedelta(seconds=1))
    ticking = asyncio.create_task(at_clock(app, cut_off, clock).tick())
    await asyncio.wait_for(second_chat_reached.wait(), 5)
    ticking.cancel()  # the service stops
    with pytest.raises(asyncio.CancelledError):
        await ticking
    await at_clock(app, deliver, clock).tick()
    await at_clock(app, deliver, clock).tick()
    await outbox.idle()
    assert sorted(sent_to) == ["1", "2"]


async def back_after_missing_a_list(
    app: Steward, back: datetime
) -> tuple[Scheduler, Clock, list[Reply]]:
    """A steward that planned the 23rd's list at 08:00 in Berlin, was down over it, and
    is back at ``back``, where it sent the list missed: its scheduler, clock and lists."""
    sent: list[Reply] = []

    async def notify(reply: Reply, reply_to: object) -> bool:
        sent.append(reply)
        return True

    digest = DigestTime(time(8, 0), BERLIN)
    clock = Clock(datetime(2026, 10, 23, 4, 0, tzinfo=UTC))
    before = Scheduler(app.ledger, app.engine, app.coordinator, notify, digest=digest, clock=clock)
    await before.tick()  # plans the 23rd's list
    clock.now = back
    after = Scheduler(app.ledger, app.engine, app.coordinator, notify, digest=digest, clock=clock)
    await after.tick()  # the list missed goes out
    assert len(sent) == 1
    return after, clock, sent


async def test_a_list_sent_late_is_the_only_one_that_day(app: Steward) -> None:
    after, clock, sent = await back_after_missing_a_list(app, datetime(2026, 10, 24, 5, tzinfo=UTC))
    clock.now = datetime(2026, 10, 24, 6, 0, 1, tzinfo=UTC)  # 08:00:01, an hour after it
    await after.tick()
    assert len(sent) == 1 and "Saturday 24 October" in sent[0].texts[0]
    clock.now = datetime(2026, 10, 25, 7, 0, 1, tzinfo=UTC)  # the next day's comes as ever
    await after.tick()
    assert len(sent) == 2 and "Sunday 25 October" in sent[1].texts[0]


async def test_a_list_sent_late_in_the_night_leaves_the_morning_its_own(app: Steward) -> None:
    night = datetime(2026, 10, 23, 22, 30, tzinfo=UTC)  # 00:30 on the 24th in Berlin
    after, clock, sent = await back_after_missing_a_list(app, night)
    clock.now = datetime(2026, 10, 24, 6, 0, 1, tzinfo=UTC)  # 08:00:01
    await after.tick()
    assert len(sent) == 2  # the one missed, at 00:30; the morning's own, at 08:00


UTC_ZONE = ZoneInfo("UTC")
SHELL = Sender("cli", "shell")


def at_clock(app: Steward, notify: Any, clock: Clock, at: time = time(8, 0)) -> Scheduler:
    """A scheduler sending the list at ``at`` UTC on ``clock``."""
    return Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        notify,
        digest=DigestTime(at, UTC_ZONE),
        clock=clock,
    )


async def test_a_paused_run_is_one_item_to_resume_not_an_approval_that_expires(
    app: Steward,
) -> None:
    view = await app.engine.start("onboarding", onboarding("Beta"), "cli:shell")
    await app.engine.pause(view.run.id, "cli:shell")
    later = utcnow() + timedelta(days=4)  # past the gate's deadline, which waits too
    [item] = (await daily_list(app.ledger, app.catalog, later, UTC_ZONE)).items
    assert item.kind == "paused"
    assert item.title == f"Client onboarding {view.run.id} is paused at approve_welcome"
    assert "expire" not in item.why and "since 4 days" in item.why
    assert [b.payload for b in item.buttons] == [f"resume:{view.run.id}"]
    press = Inbound(SHELL, "terminal", "press-resume", button=item.buttons[0].payload)
    resumed = await app.coordinator.handle(press)
    run = await app.ledger.get_run(view.run.id)
    assert resumed.cards and run is not None and run.status is RunStatus.WAITING


async def test_an_escalated_approval_says_nobody_answered_and_no_timer_is_coming(
    app: Steward,
) -> None:
    view = await app.engine.start("quick_check", {}, "cli:shell")
    assert view.approval is not None
    await app.engine.expire(view.approval.id)  # asked again, its buttons intact
    at = view.approval.expires_at.astimezone(UTC)
    later = at + timedelta(hours=2)
    [item] = (await daily_list(app.ledger, app.catalog, later, UTC_ZONE)).items
    when = f"{at:%H:%M}" if at.date() == later.date() else f"{at:%a} {at.day} {at:%b %H:%M}"
    assert f"nobody answered by {when}" in item.why and "timer" not in item.why
    assert [b.label for b in item.buttons] == ["Approve", "Reject", "Details"]


async def test_a_process_budget_is_named_by_its_title_and_small_sums_show_their_cents(
    app: Steward,
) -> None:
    view = await app.engine.start("invoice_followup", INVOICE, "cli:shell")
    call = ModelCall(view.run.id, "draft_reminder", "draft", "m", 10, 10, 1.0, 0.0045)
    await app.ledger.record_model_call(call)
    budgets = Budgets(app.ledger, UTC_ZONE, daily=0.0, per_process={"invoice_followup": 0.005})
    found = await daily_list(app.ledger, app.catalog, utcnow(), UTC_ZONE, budgets)
    [budget] = [item for item in found.items if item.kind == "budget"]  # no alert for 0
    assert budget.title == "Invoice follow-up's model spend this month: $0.0045 of $0.005"


async def test_today_with_anything_but_all_says_how_to_ask(app: Steward) -> None:
    for asked in ("/today foo", "/today all all"):
        reply = await app.coordinator.handle(Inbound(SHELL, "t", f"today-{asked}", text=asked))
        assert texts(reply) == "Usage: /today, or /today all for every item"
    shown = await app.coordinator.handle(Inbound(SHELL, "t", "today-ALL", text="/today ALL"))
    assert texts(shown).endswith("nothing needs you today.")


async def test_a_list_sent_after_downtime_holds_no_gate_that_expired_meanwhile(
    app: Steward,
) -> None:
    view = await app.engine.start("onboarding", onboarding("Beta"), "cli:shell")
    assert view.approval is not None
    sent: list[Reply] = []

    async def notify(reply: Reply, reply_to: object) -> None:
        sent.append(reply)

    clock = Clock(utcnow())
    await at_clock(app, notify, clock).tick()
    clock.now = view.approval.expires_at + timedelta(days=1)  # down over both
    await at_clock(app, notify, clock).tick()
    expired, listed = sent
    assert "expired" in texts(expired).lower()
    assert "nothing needs you today" in texts(listed) and listed.cards == []


async def test_a_new_digest_time_moves_the_next_list(app: Steward) -> None:
    sent: list[Reply] = []

    async def notify(reply: Reply, reply_to: object) -> None:
        sent.append(reply)

    clock = Clock(datetime(2026, 10, 23, 9, 0, tzinfo=UTC))
    eight = at_clock(app, notify, clock)
    await eight.tick()  # plans the 24th at 08:00; then STEWARD_DIGEST_AT=07:00
    seven = at_clock(app, notify, clock, time(7, 0))
    await seven.tick()
    clock.now = datetime(2026, 10, 24, 7, 0, 1, tzinfo=UTC)
    await seven.tick()
    assert len(sent) == 1
    clock.now = datetime(2026, 10, 24, 8, 0, 1, tzinfo=UTC)
    await seven.tick()
    assert len(sent) == 1  # once


@pytest.mark.parametrize("fails", ["raises", "no channel took it"])
async def test_a_list_that_could_not_be_handed_on_is_sent_at_the_next_tick(
    app: Steward, fails: str
) -> None:
    sent: list[Reply] = []
    failing = [True]

    async def notify(reply: Reply, reply_to: object) -> bool:
        if failing.pop() if failing else False:
            if fails == "raises":
                raise RuntimeError("the channel is not there")
            return False  # as Service.notify says when every channel failed
        sent.append(reply)
        return True

    clock = Clock(datetime(2026, 10, 24, 8, 0, 1, tzinfo=UTC))
    scheduler = at_clock(app, notify, clock)
    await app.ledger.plan_timer("digest:2026-10-24", "digest", clock.now - timedelta(seconds=1))
    await scheduler.tick()
    assert sent == []
    await scheduler.tick()
    assert len(sent) == 1 and "Saturday 24 October" in sent[0].texts[0]


async def test_a_channel_that_could_not_take_the_list_gets_it_at_the_next_tick_alone(
    app: Steward,
) -> None:
    """Telegram and Slack in one steward: the day's list was one timer, claimed once any
    channel took it, so a channel that could not then had no list that day."""
    sent: list[str] = []
    down = {"slack"}

    async def notify(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        assert reply_to is not None and "chat_id" not in reply_to  # its operators, alone
        if reply_to["channel"] in down:
            down.clear()
            raise RuntimeError("the ledger refused the reply")
        sent.append(reply_to["channel"])
        return True

    clock = Clock(datetime(2026, 10, 23, 9, 0, tzinfo=UTC))
    scheduler = Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        notify,
        digest=DigestTime(time(8, 0), UTC_ZONE),
        clock=clock,
        channels=("telegram", "slack"),
    )
    await scheduler.tick()  # plans the 24th's lists
    clock.now = datetime(2026, 10, 24, 8, 0, 1, tzinfo=UTC)
    await scheduler.tick()
    assert sent == ["telegram"]
    for _ in range(2):
        await scheduler.tick()
        assert sent == ["telegram", "slack"]


async def test_the_list_of_a_channel_taken_out_of_the_settings_ends_after_a_week(
    app: Steward, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack taken out of the settings: the list its steward had planned stayed due for
    ever, fetched at every tick by a steward that never sends it, and said nowhere."""
    sent: list[str] = []

    async def notify(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        sent.append(reply_to["channel"] if reply_to else "every channel")
        return True

    due = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    await app.ledger.plan_timer("digest:2026-10-24:slack", "digest", due)
    clock = Clock(due + timedelta(days=7))
    telegram = Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        notify,
        digest=DigestTime(time(9, 0), UTC_ZONE),
        clock=clock,
        channels=("telegram",),
    )
    await telegram.tick()  # within the week: Slack's steward may be down, and come back
    slack_list = await app.ledger.get_timer("digest:2026-10-24:slack")
    assert slack_list is not None and slack_list.status == "pending"
    clock.now = due + timedelta(days=7, seconds=1)
    with caplog.at_level(logging.WARNING, logger="bot.scheduler"):
        for _ in range(3):
            await telegram.tick()
    slack_list = await app.ledger.get_timer("digest:2026-10-24:slack")
    assert slack_list is not None and slack_list.status == "cancelled"
    assert await app.ledger.due_timers(clock.now) == []
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "dropped the daily list digest:2026-10-24:slack: no steward serving slack sent it "
        "in the 7 days since it was due (is slack still in the settings?)"
    ]
    assert sent == []  # telegram's own list is not due before 09:00


async def test_a_terminal_alone_shows_the_list_a_channel_s_steward_was_down_for(
    app: Steward,
) -> None:
    """`steward chat` alone, Telegram's `steward run` stopped over 08:00: the terminal
    showed no list that day, the day's timer being Telegram's steward's alone."""
    shown: list[Reply] = []
    sent: list[str] = []

    async def terminal(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        assert reply_to is None  # shown here, not meant for Telegram's chats
        if await app.door.to_show(reply):  # as the terminal's Service shows it
            shown.append(reply)
        return True

    async def telegram(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        assert reply_to is not None
        sent.append(f"{reply_to['channel']} {reply.once}")
        return True

    due = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    await app.ledger.plan_timer("digest:2026-10-24:telegram", "digest", due)
    clock = Clock(due + timedelta(hours=1))
    alone = at_clock(app, terminal, clock)
    for _ in range(3):
        await alone.tick()
    await at_clock(app, terminal, clock).tick()  # another terminal, or this one again
    assert len(shown) == 1 and "Saturday 24 October" in shown[0].texts[0]
    telegram_list = await app.ledger.get_timer("digest:2026-10-24:telegram")
    assert telegram_list is not None and telegram_list.status == "pending"
    back = Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        telegram,
        digest=DigestTime(time(8, 0), UTC_ZONE),
        clock=clock,
        channels=("telegram",),
    )
    await back.tick()  # Telegram's steward back: its chats have the day's list too
    await back.tick()
    assert sent == ["telegram digest:2026-10-24"]


async def test_a_terminal_keeps_the_list_of_a_channel_in_its_settings_past_a_week(
    app: Steward, caplog: pytest.LogCaptureFixture
) -> None:
    """Telegram's `steward run` stopped for ten days (a holiday), then `steward chat`
    opened first: the terminal dropped Telegram's list as if Telegram had been taken out
    of the settings that name it ("is telegram still in the settings?"), and showed none;
    `steward run`, back, then sent none that day. A terminal drops only the list of a
    channel its settings do not name."""
    shown: list[Reply] = []
    sent: list[str] = []

    async def terminal(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        assert reply_to is None
        if await app.door.to_show(reply):
            shown.append(reply)
        return True

    async def telegram(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        assert reply_to is not None
        sent.append(f"{reply_to['channel']} {reply.once}")
        return True

    due = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    await app.ledger.plan_timer("digest:2026-10-24:telegram", "digest", due)
    await app.ledger.plan_timer("digest:2026-10-24:slack", "digest", due)  # taken out
    clock = Clock(due + timedelta(days=10, hours=1))
    alone = Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        terminal,
        digest=DigestTime(time(8, 0), UTC_ZONE),
        clock=clock,
        configured=("telegram",),
    )
    with caplog.at_level(logging.WARNING, logger="bot.scheduler"):
        await alone.tick()
        await alone.tick()
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "dropped the daily list digest:2026-10-24:slack: no steward serving slack sent it "
        "in the 7 days since it was due (is slack still in the settings?)"
    ]
    assert len(shown) == 1
    telegram_list = await app.ledger.get_timer("digest:2026-10-24:telegram")
    assert telegram_list is not None and telegram_list.status == "pending"
    back = Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        telegram,
        digest=DigestTime(time(8, 0), UTC_ZONE),
        clock=clock,
        channels=("telegram",),
        configured=("telegram",),
    )
    await back.tick()
    assert sent == ["telegram digest:2026-10-24"]


async def drive_the_list(home: Path, stall: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bot.digest_driver",
        str(home),
        stall,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def lists_owed(home: Path) -> list[str]:
    """The chats the ledger owes a daily list, one entry per list."""
    with sqlite3.connect(home / "steward.db") as db:
        rows = db.execute("select chat_id, payload from replies where channel = 'telegram'")
        return sorted(str(chat) for chat, payload in rows if "Saturday 24 October" in payload)


@pytest.mark.slow
@pytest.mark.parametrize("stall", ["before", "between"])
async def test_a_list_cut_off_by_a_sigkill_goes_to_each_chat_once_after_the_restart(
    tmp_path: Path, stall: str
) -> None:
    """Claimed before any chat's list was kept, a list a SIGKILL cut off was lost: for
    every chat (killed before the first), or for those after the first (killed between)."""
    home = tmp_path / "home"
    driver = await drive_the_list(home, stall)
    assert driver.stdout is not None
    line = await asyncio.wait_for(driver.stdout.readline(), 60)
    assert line == b"stalled\n", (line, await driver.stderr.read() if driver.stderr else b"")
    driver.send_signal(signal.SIGKILL)
    await driver.wait()
    assert lists_owed(home) == ([] if stall == "before" else ["1"])

    for _ in range(2):  # the restart sends what was missed; the next start, nothing
        again = await drive_the_list(home, "none")
        out, err = await asyncio.wait_for(again.communicate(), 60)
        assert again.returncode == 0 and out == b"done\n", err.decode()
        assert lists_owed(home) == ["1", "2"]


async def test_a_list_of_a_bot_gone_ends_after_a_week_and_one_planned_for_the_platform_goes(
    app: Steward, caplog: pytest.LogCaptureFixture
) -> None:
    """Each bot has a list of its own: one planned for a bot whose steward never came back
    (its token replaced) ends after a week, where a terminal keeps it; one planned for
    Telegram alone, before bots were told apart, is sent by the bot that fires it."""
    sent: list[str] = []

    async def notify(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        sent.append(reply_to["channel"] if reply_to else "every channel")
        return True

    due = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    await app.ledger.plan_timer("digest:2026-10-24:telegram:777", "digest", due)
    await app.ledger.plan_timer("digest:2026-10-24:telegram", "digest", due)
    clock = Clock(due + timedelta(days=7, seconds=1))
    terminal = Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        notify,
        digest=DigestTime(time(9, 0), UTC_ZONE),
        clock=clock,
        configured=("telegram",),
    )
    bot = Scheduler(
        app.ledger,
        app.engine,
        app.coordinator,
        notify,
        digest=DigestTime(time(9, 0), UTC_ZONE),
        clock=clock,
        channels=("telegram",),
        configured=("telegram",),
    )
    bot.serve(["telegram:4242"])
    await terminal.tick()
    gone = await app.ledger.get_timer("digest:2026-10-24:telegram:777")
    assert gone is not None and gone.status == "pending"
    sent.clear()  # the terminal showed the day's list
    with caplog.at_level(logging.WARNING, logger="bot.scheduler"):
        for _ in range(2):
            await bot.tick()
    gone = await app.ledger.get_timer("digest:2026-10-24:telegram:777")
    assert gone is not None and gone.status == "cancelled"
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "dropped the daily list digest:2026-10-24:telegram:777: no steward serving "
        "telegram:777 sent it in the 7 days since it was due (was that telegram account "
        "replaced in a steward's settings?)"
    ]
    assert sent == ["telegram"]
    assert await app.ledger.due_timers(clock.now) == []
