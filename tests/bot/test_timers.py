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
from graph.messages import Reply
from memory.ledger import ApprovalStatus, RunStatus, utcnow
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
