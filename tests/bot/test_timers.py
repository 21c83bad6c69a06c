"""The timers the scheduler fires for runs — a gate's expiry, a wait — around failures
and pauses: each fires once, in time, and never for a paused run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import bot.scheduler
import graph.engine
from bot.app import Steward
from bot.scheduler import Scheduler
from graph.errors import InvalidState
from graph.messages import CardOutcome, Reply
from memory.ledger import ApprovalStatus, LedgerTx, Run, RunStatus, utcnow
from tests.graph.test_digest import ESCALATING
from tests.homes import steward_with

NAP = """
name: nap
title: Nap
description: waits an hour
steps:
  - id: nap
    kind: wait
    for: 1h
"""
ONBOARD = {"client": "Beta", "email": "beta@example.com", "package": "basic"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    async with steward_with(tmp_path, {"quick_check": ESCALATING, "nap": NAP}) as steward:
        yield steward


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduler(app: Steward, clock: Clock, sent: list[Reply] | None = None) -> Scheduler:
    async def notify(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        if sent is not None:
            sent.append(reply)
        return True

    return Scheduler(app.ledger, app.engine, app.coordinator, notify, clock=clock)


async def paused_for_three_hours(
    app: Steward, monkeypatch: pytest.MonkeyPatch, run_id: str
) -> datetime:
    """Pauses the run and resumes it on a clock three hours on; when it was paused."""
    await app.engine.pause(run_id, "cli:shell")
    paused = utcnow()
    monkeypatch.setattr(graph.engine, "utcnow", lambda: paused + timedelta(hours=3))
    await app.engine.resume(run_id, "cli:shell")
    return paused


async def test_a_gate_whose_expiry_failed_midway_expires_at_the_next_tick(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its timer is taken in the transaction that expires the gate, and a pause lands
    before or after both: a failure in between left the timer taken and the gate
    pending for good."""
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")  # it rejects on expiry
    assert view.approval is not None
    clock = Clock(view.approval.expires_at + timedelta(minutes=1))
    hiccups = iter([RuntimeError("the ledger refused the statement")])
    real = app.engine._expire

    def hiccup_once(*args: Any) -> Any:
        if (error := next(hiccups, None)) is not None:
            raise error
        return real(*args)

    monkeypatch.setattr(app.engine, "_expire", hiccup_once)
    ticks = scheduler(app, clock)
    assert await ticks.tick() == 0  # logged
    assert await ticks.tick() == 1
    approval = await app.ledger.get_approval(view.approval.id)
    run = await app.ledger.get_run(view.run.id)
    assert approval is not None and approval.status is ApprovalStatus.EXPIRED
    assert run is not None and run.status is RunStatus.CANCELLED


async def test_paused_runs_whose_waits_fell_due_hold_up_no_other_timer(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paused run's wait is not fetched at every tick: a batch of them kept every
    other timer from firing (here the batch is 3; it is 500)."""
    monkeypatch.setattr(bot.scheduler, "BATCH", 3)
    for _ in range(3):
        view = await app.engine.start("nap", {}, "cli:shell")
        await app.engine.pause(view.run.id, "cli:shell")
    live = await app.engine.start("nap", {}, "cli:shell")  # due a moment after them
    ticks = scheduler(app, Clock(utcnow() + timedelta(hours=2)))
    assert await ticks.tick() == 1
    run = await app.ledger.get_run(live.run.id)
    assert run is not None and run.status is RunStatus.SUCCEEDED


async def test_news_of_a_timer_that_cannot_be_told_holds_up_no_other_timer(
    app: Steward,
) -> None:
    """A failure to hand one fired timer's news to the channels stopped the tick: the
    others fired, untold, and the daily list and missed cards waited for the next."""
    naps = [await app.engine.start("nap", {}, "cli:shell") for _ in range(2)]
    told: list[Reply] = []

    async def notify(reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        if not told:
            told.append(reply)
            raise RuntimeError("the outbox refused the reply")
        told.append(reply)
        return True

    clock = Clock(utcnow() + timedelta(hours=2))
    ticks = Scheduler(app.ledger, app.engine, app.coordinator, notify, clock=clock)
    assert await ticks.tick() == 2
    assert len(told) == 2
    for nap in naps:
        run = await app.ledger.get_run(nap.run.id)
        assert run is not None and run.status is RunStatus.SUCCEEDED


async def test_a_resumed_run_waits_out_the_rest_of_its_wait(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time a run is paused does not count, for its waits as for its gates."""
    view = await app.engine.start("nap", {}, "cli:shell")  # wakes in an hour
    started = await paused_for_three_hours(app, monkeypatch, view.run.id)
    ticks = scheduler(app, Clock(started + timedelta(hours=3, minutes=30)))
    assert await ticks.tick() == 0  # half an hour of its wait is left
    ticks.clock = Clock(started + timedelta(hours=4, minutes=1))
    assert await ticks.tick() == 1
    run = await app.ledger.get_run(view.run.id)
    assert run is not None and run.status is RunStatus.SUCCEEDED


async def test_an_escalated_gate_keeps_its_passed_deadline_through_a_pause(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its expiry fired already: a later deadline would promise another escalation that
    no timer makes."""
    view = await app.engine.start("quick_check", {}, "cli:shell")
    assert view.approval is not None
    deadline = view.approval.expires_at
    sent: list[Reply] = []
    assert await scheduler(app, Clock(deadline + timedelta(minutes=1)), sent).tick() == 1
    assert any("asking again" in text for reply in sent for text in reply.texts)
    await paused_for_three_hours(app, monkeypatch, view.run.id)
    approval = await app.ledger.get_approval(view.approval.id)
    assert approval is not None and approval.is_pending and approval.expires_at == deadline


async def test_a_gate_approved_past_its_deadline_expires_as_its_timer_would(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its timer fires (a tick later, or once steward is back up), an Approve
    came in time for the gate: the run acted on an approval that had lapsed."""
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")  # it rejects on expiry
    assert view.approval is not None
    late = view.approval.expires_at + timedelta(minutes=1)
    monkeypatch.setattr(graph.engine, "utcnow", lambda: late)

    reply = await app.coordinator.decide(view.approval.id, True, "telegram:1")

    approval = await app.ledger.get_approval(view.approval.id)
    run = await app.ledger.get_run(view.run.id)
    assert approval is not None and approval.status is ApprovalStatus.EXPIRED
    assert approval.decided_by == "steward"
    assert run is not None and run.status is RunStatus.CANCELLED
    [shown] = [item for item in reply.items if isinstance(item, CardOutcome)]
    assert "Expired by steward" in shown.text
    assert await scheduler(app, Clock(late)).tick() == 0  # its timer went with the gate
    kinds = [event.kind for event in await app.ledger.audit_events()]
    assert kinds.count("approval.expired") == 1 and "approval.approved" not in kinds


async def test_a_gate_rejected_or_paused_past_its_deadline_is_not_expired_by_the_answer(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rejection is what the expiry would do, with a reason; a paused run's deadline
    moves when it resumes."""
    rejected = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    paused = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert rejected.approval is not None and paused.approval is not None
    await app.engine.pause(paused.run.id, "cli:shell")
    late = paused.approval.expires_at + timedelta(minutes=1)
    monkeypatch.setattr(graph.engine, "utcnow", lambda: late)

    decision = await app.engine.decide(rejected.approval.id, False, "cli:shell", "not now")
    assert decision.approval.status is ApprovalStatus.REJECTED
    with pytest.raises(InvalidState, match="paused"):
        await app.engine.decide(paused.approval.id, True, "cli:shell")
    approval = await app.ledger.get_approval(paused.approval.id)
    assert approval is not None and approval.is_pending


async def test_a_gate_approved_past_its_deadline_as_its_timer_fires_is_already_expired(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timer (or another answer) decides the gate while the Approve waits for its
    run's lock (PostgreSQL): the Approve is told so; it raised an AssertionError."""
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None
    approval_id = view.approval.id
    late = view.approval.expires_at + timedelta(minutes=1)
    monkeypatch.setattr(graph.engine, "utcnow", lambda: late)
    lock_run = LedgerTx.lock_run

    def timer_first(tx: LedgerTx, run_id: str) -> Run | None:
        monkeypatch.setattr(LedgerTx, "lock_run", lock_run)
        app.engine._expire(tx, approval_id)  # committed as the lock was awaited
        return lock_run(tx, run_id)

    monkeypatch.setattr(LedgerTx, "lock_run", timer_first)
    reply = await app.coordinator.decide(approval_id, True, "telegram:1")

    assert reply.notice is not None and reply.notice.startswith("Already decided")
    approval = await app.ledger.get_approval(approval_id)
    assert approval is not None and approval.status is ApprovalStatus.EXPIRED
