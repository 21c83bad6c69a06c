"""The engine where things happen at once or out of order: cancels, loops, pauses, crashes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from bot.app import Steward
from bot.settings import load_settings
from connectors import ConnectorRegistry, TransientError
from graph.effects import EffectGuard, RetryPolicy
from graph.engine import RunLocks
from memory.database_url import DatabaseURL
from memory.ledger import (
    ApprovalStatus,
    LedgerTx,
    NewAuditEvent,
    RunStatus,
    RunTakenOver,
    utcnow,
)
from memory.ledger.ledger import decide as record_decision
from memory.ledger.ledger import expiry_key
from tests.graph.test_engine import Flaky
from tests.homes import steward_with
from tests.memory.test_workers import fall_silent, set_running, worker

ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}
INVOICE = {
    "client": "Acme",
    "email": "ap@acme.com",
    "invoice": "INV-7",
    "amount": "1200",
    "due_date": "2026-10-01",
}
LOOPING = """
name: looping_sender
title: Looping sender
description: a user-written process whose branch loops back to its action
inputs:
  email: {type: email}
steps:
  - id: approve
    kind: approval
    summary: Send one note to {email}
  - id: send
    kind: action
    gate: approve
    connector: outbox
    action: send_email
    with: {to: "{email}", body: hello}
  - id: again
    kind: branch
    if: email != None
    then: send
"""
DONE = NewAuditEvent("steward", "effect.done", "run1:send", {"run": "run1", "step": "send"})


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    async with steward_with(tmp_path, {"looping": LOOPING}) as steward:
        yield steward


def sent(app: Steward) -> list[dict[str, object]]:
    folder = app.settings.outbox_dir
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []


async def test_a_cancel_that_lands_before_the_resume_stops_the_effect(app: Steward) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    assert view.approval is not None
    holding = AsyncExitStack()  # hold the run, so the approval waits after recording its decision
    await holding.enter_async_context(app.engine._locks.hold(view.run.id))
    deciding = asyncio.create_task(app.engine.decide(view.approval.id, True, "cli:a"))
    for _ in range(500):  # until the decision is recorded
        approval = await app.ledger.get_approval(view.approval.id)
        if approval is not None and not approval.is_pending:
            break
        await asyncio.sleep(0.01)
    # Another process cancels the run now, between the decision and the resume.
    await app.ledger.write(lambda tx: tx.update_run(view.run.id, status=RunStatus.CANCELLED.value))
    await holding.aclose()
    decision = await deciding
    assert decision.decided_now and decision.view is not None
    assert decision.view.run.status is RunStatus.CANCELLED
    assert sent(app) == []


async def test_an_effect_never_starts_for_a_cancelled_run(app: Steward) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    assert view.approval is not None
    await app.ledger.decide_approval(view.approval.id, ApprovalStatus.APPROVED, "cli:a")
    await app.ledger.write(lambda tx: tx.update_run(view.run.id, status=RunStatus.CANCELLED.value))
    await app.ledger.write(lambda tx: tx.update_run(view.run.id, status=RunStatus.RUNNING.value))
    # Resume, and cancel while the run is inside its action, before the effect starts.
    original = app.ledger.begin_effect

    async def cancel_first(*args: object, **kwargs: object) -> object:
        await app.ledger.write(
            lambda tx: tx.update_run(view.run.id, status=RunStatus.CANCELLED.value)
        )
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    app.ledger.begin_effect = cancel_first  # type: ignore[method-assign]
    await app.engine.recover()
    run = await app.ledger.get_run(view.run.id)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert sent(app) == []


async def test_one_approval_allows_one_action_even_in_a_loop(app: Steward) -> None:
    view = await app.engine.start("looping_sender", {"email": "x@y.com"}, "cli:a")
    assert view.approval is not None
    decision = await app.engine.decide(view.approval.id, True, "cli:a")
    assert decision.view is not None
    run = decision.view.run
    assert run.status is RunStatus.FAILED and run.error_class == "permission"
    assert "each approval allows one action" in (run.error or "")
    assert len(sent(app)) == 1


async def test_a_paused_wait_keeps_its_timer_until_resumed(app: Steward) -> None:
    view = await app.engine.start("invoice_followup", INVOICE, "cli:a")
    assert view.approval is not None
    await app.engine.decide(view.approval.id, True, "cli:a")
    timer = await app.ledger.open_wait(view.run.id)
    assert timer is not None
    await app.engine.pause(view.run.id, "cli:a")
    assert await app.engine.fire_timer(timer, "w1") is None
    assert await app.ledger.open_wait(view.run.id) is not None  # still due
    await app.engine.resume(view.run.id, "cli:a")
    woken = await app.engine.fire_timer(timer, "w1")
    assert woken is not None
    again = await app.engine.view(view.run.id)
    assert again.approval is not None and again.approval.visit == 2


async def test_a_gate_s_time_to_answer_does_not_run_while_its_run_is_paused(
    app: Steward,
) -> None:
    view = await app.engine.start("invoice_followup", INVOICE, "cli:a")
    assert view.approval is not None and view.approval.expires_at is not None
    deadline = view.approval.expires_at
    await app.engine.pause(view.run.id, "cli:a")
    # Paused for four days, past the gate's 72 h: as if it were paused back then.
    four_days = timedelta(days=4)
    await app.ledger.write(lambda tx: tx.update_run(view.run.id, updated_at=utcnow() - four_days))
    # None of its timers is due while it is paused, however late it gets …
    assert [
        t for t in await app.ledger.due_timers(utcnow() + timedelta(days=365)) if t.run_id
    ] == []
    # … and one fetched just before the pause is set aside when it fires, not applied.
    expiry = await app.ledger.get_timer(expiry_key(view.approval.id))
    assert expiry is not None and await app.engine.fire_timer(expiry, "w1") is None
    await app.engine.resume(view.run.id, "cli:a")

    approval = await app.ledger.get_approval(view.approval.id)
    assert approval is not None and approval.status is ApprovalStatus.PENDING
    assert approval.expires_at is not None
    assert abs(approval.expires_at - (deadline + four_days)) < timedelta(seconds=5)
    assert await app.ledger.due_timers(deadline + timedelta(hours=1)) == []
    [later] = await app.ledger.due_timers(approval.expires_at + timedelta(seconds=1))
    assert later.key == expiry.key and later.due_at == approval.expires_at


async def test_a_crash_after_a_wake_was_claimed_is_replayed(app: Steward) -> None:
    view = await app.engine.start("invoice_followup", INVOICE, "cli:a")
    assert view.approval is not None
    await app.engine.decide(view.approval.id, True, "cli:a")
    timer = await app.ledger.open_wait(view.run.id)
    assert timer is not None
    woken = {"by": "event:payment", "data": {"ref": "tx1"}}

    def claim_then_die(tx: LedgerTx) -> None:
        assert tx.claim_timer(timer.id, "w1", woken)
        tx.update_run(view.run.id, status=RunStatus.RUNNING.value)

    await app.ledger.write(claim_then_die)

    await app.engine.recover()

    run = await app.ledger.get_run(view.run.id)
    assert run is not None and run.status is RunStatus.SUCCEEDED  # paid: the loop ended


async def test_a_run_lock_lets_one_in_at_a_time_and_is_gone_when_nobody_needs_it() -> None:
    locks = RunLocks()
    inside: list[str] = []

    async def hold(name: str) -> None:
        async with locks.hold("run-1"):
            inside.append(f"{name} in")
            await asyncio.sleep(0.01)
            inside.append(f"{name} out")

    await asyncio.gather(hold("a"), hold("b"), hold("c"))
    assert inside == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert len(locks) == 0

    with pytest.raises(RuntimeError):
        async with locks.hold("run-2"):
            raise RuntimeError("the step failed")
    assert len(locks) == 0


async def test_finished_runs_leave_no_locks_behind(app: Steward) -> None:
    for _ in range(20):
        view = await app.engine.start("onboarding", ONBOARD, "cli:a")
        assert view.approval is not None
        await app.engine.decide(view.approval.id, True, "cli:a")
    assert len(app.engine._locks) == 0


async def test_a_replay_straight_into_the_wait_takes_the_payment_kept_for_it(
    app: Steward,
) -> None:
    """Paid while the reminder waited for approval; the operator skips the reminder by
    replaying from the wait: the run takes the payment and ends, waiting for nothing."""
    view = await app.engine.start("invoice_followup", INVOICE, "cli:a")
    paid = {"invoice": "INV-7"}
    assert await app.engine.offer_event(view.run.id, "payment", paid, "hook:payments") is None
    replayed = await app.engine.replay(view.run.id, "wait_for_payment", {}, "cli:a")
    assert replayed.run.status is RunStatus.SUCCEEDED
    assert await app.ledger.open_wait(view.run.id) is None
    assert sent(app) == []  # no reminder: it was skipped, and the client had paid


@pytest.mark.parametrize("command", ["cancel", "replay"])
async def test_a_decision_from_another_worker_and_a_cancel_or_replay_never_deadlock(
    tmp_path: Path, postgres_database: DatabaseURL, command: str
) -> None:
    """Another worker approves while this one cancels or replays the run. Each write
    takes the run's row before its gates' and timers', so one waits for the other: the
    decision stands, and the command goes after it or is refused, never a deadlock."""
    settings = load_settings(home=tmp_path / "home", database_url=postgres_database.setting)
    async with Steward.open(settings) as app:
        view = await app.engine.start("invoice_followup", INVOICE, "cli:a")
        assert view.approval is not None
        approval_id, run_id = view.approval.id, view.run.id
        deciding = threading.Event()
        failed: list[BaseException] = []
        other = create_engine(postgres_database.sqlalchemy)

        def hold(approval: object, run: object) -> None:  # inside its transaction
            deciding.set()
            time.sleep(0.5)  # the command starts meanwhile

        def other_worker() -> None:
            try:
                with other.begin() as conn:
                    record_decision(
                        LedgerTx(conn), approval_id, ApprovalStatus.APPROVED, "tg:2", check=hold
                    )
            except BaseException as exc:
                failed.append(exc)
                deciding.set()

        worker = threading.Thread(target=other_worker)
        worker.start()
        await asyncio.to_thread(deciding.wait, 5)
        try:
            if command == "cancel":
                await app.engine.cancel(run_id, "cli:a")
            else:
                await app.engine.replay(run_id, "approve_reminder", {}, "cli:a")
        except Exception as exc:  # refused after the decision: fine; a deadlock is not
            assert "deadlock" not in repr(exc).lower(), exc
        await asyncio.to_thread(worker.join)
        other.dispose()
        assert failed == []
        approval = await app.ledger.get_approval(approval_id)
        assert approval is not None and approval.status is ApprovalStatus.APPROVED


async def test_a_worker_back_from_a_freeze_leaves_the_effect_record_to_the_one_that_took_over(
    database_url: DatabaseURL,
) -> None:
    """Its try failed while it was frozen past its lease; "b" took the run over and made
    the effect. Before trying again "a" learnt the run was another's, and recorded the
    effect failed over "b"'s done, with an audit event of a failure that never was."""
    async with worker(database_url, "a") as a, worker(database_url, "b") as b:
        await set_running(a, "run1")
        connectors = ConnectorRegistry()
        connectors.register(Flaky([TransientError("the partner answered 503")]))
        retry = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002, timeout=5)

        async def frozen(seconds: float) -> None:
            await fall_silent(b, "a")
            [taken] = await b.take_over_runs(own=False)
            await b.begin_effect("run1:send", taken.id, "send", "flaky", {})
            await b.finish_effect("run1:send", {"ok": True}, None, DONE)

        guard = EffectGuard(a, connectors, retry, sleep=frozen)
        with pytest.raises(RunTakenOver):
            await guard.perform(
                key="run1:send",
                run_id="run1",
                step_id="send",
                connector_name="flaky",
                action="send_email",
                params={},
            )
        effect = await a.get_effect("run1:send")
        assert effect is not None and effect.status == "done" and effect.error is None
        assert [e.kind for e in await a.audit_events()] == ["effect.done"]
