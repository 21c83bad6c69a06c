"""The ledger's contract, run on every backend (SQLite and PostgreSQL) via the ``ledger`` fixture.

Each test talks to the public ``Ledger``/``LedgerTx`` API and checks what comes back out of
the database, including the behaviour under concurrent callers that steward relies on:
the first approval decision wins, a timer fires once, and the audit chain stays whole.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, inspect, select

from graph.messages import Inbound, Sender
from memory.database_url import DatabaseURL
from memory.ledger import (
    NEVER,
    Approval,
    ApprovalStatus,
    IdempotencyRecord,
    Ledger,
    LedgerTx,
    ModelCall,
    NewAuditEvent,
    OwedReply,
    Place,
    Run,
    RunCancelled,
    RunStatus,
    Timer,
    utcnow,
)
from memory.ledger import ledger as ledger_module
from memory.ledger import schema as t
from memory.ledger.ledger import expiry_key
from memory.ledger.migrate import HEAD, alembic_config
from tests.memory.commit_log import record_commits

T0 = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def make_run(run_id: str = "run1", **overrides: Any) -> Run:
    values: dict[str, Any] = {
        "id": run_id,
        "process": "invoice-chaser",
        "version": "v1abc",
        "status": RunStatus.RUNNING,
        "inputs": {"customer": "Acme", "amount": 120.5, "tags": ["a", "b"]},
        "started_by": "telegram:42",
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    return Run(**values)


def make_approval(approval_id: str = "ap1", run_id: str = "run1", **overrides: Any) -> Approval:
    values: dict[str, Any] = {
        "id": approval_id,
        "run_id": run_id,
        "step_id": "confirm",
        "visit": 1,
        "status": ApprovalStatus.PENDING,
        "card": {"title": "Send the reminder?", "body": "Dear Acme…"},
        "created_at": T0,
        "expires_at": T0 + timedelta(days=1),
        "on_expiry": "reject",
        "editable": "body",
    }
    values.update(overrides)
    return Approval(**values)


async def insert_runs(ledger: Ledger, *runs: Run) -> None:
    await ledger.write(lambda tx: [tx.insert_run(run) for run in runs])


async def insert_approvals(ledger: Ledger, *approvals: Approval) -> None:
    await ledger.write(lambda tx: [tx.insert_approval(a) for a in approvals])


async def count_rows(ledger: Ledger, table: Any) -> int:
    query = select(func.count()).select_from(table)
    return int(await ledger.db.run(lambda conn: conn.execute(query).scalar_one(), write=False))


def assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)


# -- setup ---------------------------------------------------------------------------------


async def test_setup_is_idempotent(ledger: Ledger) -> None:
    await ledger.audit(NewAuditEvent("operator", "test.before", "x"))
    await ledger.setup()
    await ledger.setup()
    assert await count_rows(ledger, t.audit_head) == 1
    report = await ledger.verify_audit()
    assert report.ok, report.problems
    assert report.checked == 1


async def test_fresh_ledger_has_a_valid_empty_audit_log(ledger: Ledger) -> None:
    report = await ledger.verify_audit()
    assert report.ok
    assert report.checked == 0
    assert report.problems == []
    assert await ledger.audit_events() == []


# -- runs ----------------------------------------------------------------------------------


async def test_get_run_round_trips_every_field(ledger: Ledger) -> None:
    run = make_run(
        status=RunStatus.WAITING,
        reply_to={"channel": "telegram", "chat": 42},
        current_step="confirm",
        steps_logged=3,
        error="boom",
        error_class="transient",
        updated_at=T0 + timedelta(minutes=5),
    )
    await insert_runs(ledger, run)

    stored = await ledger.get_run("run1")

    assert stored == run
    assert stored is not None
    assert stored.status is RunStatus.WAITING
    assert_utc(stored.created_at)
    assert_utc(stored.updated_at)


async def test_get_run_converts_other_timezones_to_utc(ledger: Ledger) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 1, 11, 0, tzinfo=plus_two)
    await insert_runs(ledger, make_run(created_at=local, updated_at=local))

    stored = await ledger.get_run("run1")

    assert stored is not None
    assert stored.created_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert_utc(stored.created_at)


async def test_get_run_unknown_is_none(ledger: Ledger) -> None:
    assert await ledger.get_run("nope") is None


async def test_list_runs_filters_by_status_and_orders_newest_first(ledger: Ledger) -> None:
    plus_two = timezone(timedelta(hours=2))
    await insert_runs(
        ledger,
        make_run("old", created_at=T0, status=RunStatus.SUCCEEDED),
        make_run("mid", created_at=T0 + timedelta(hours=1), status=RunStatus.WAITING),
        # 11:45+02:00 is 09:45 UTC: newer than "old", older than "mid" despite its wall clock.
        make_run(
            "local",
            created_at=datetime(2026, 3, 1, 11, 45, tzinfo=plus_two),
            status=RunStatus.RUNNING,
        ),
        make_run("new", created_at=T0 + timedelta(hours=2), status=RunStatus.RUNNING),
    )

    assert [r.id for r in await ledger.list_runs()] == ["new", "mid", "local", "old"]
    assert [r.id for r in await ledger.list_runs([RunStatus.RUNNING])] == ["new", "local"]
    waiting_or_done = await ledger.list_runs([RunStatus.WAITING, RunStatus.SUCCEEDED])
    assert [r.id for r in waiting_or_done] == ["mid", "old"]
    assert await ledger.list_runs([RunStatus.FAILED]) == []
    assert [r.id for r in await ledger.list_runs(limit=2)] == ["new", "mid"]


async def test_run_lines_show_the_newest_runs_with_the_approval_each_waits_for(
    ledger: Ledger,
) -> None:
    await insert_runs(
        ledger,
        make_run("old", created_at=T0, status=RunStatus.SUCCEEDED),
        make_run("mid", created_at=T0 + timedelta(hours=1), status=RunStatus.WAITING),
        make_run(
            "failed",
            created_at=T0 + timedelta(hours=2),
            status=RunStatus.FAILED,
            error="the mail server said no",
            error_class="permanent",
            current_step="send",
        ),
        make_run("new", created_at=T0 + timedelta(hours=3), current_step="draft"),
    )
    summary = 'Send "the reminder" to Zoë — €120'
    await insert_approvals(
        ledger,
        make_approval("decided", "mid", created_at=T0),
        make_approval("older", "mid", step_id="a", created_at=T0 + timedelta(seconds=1)),
        make_approval(
            "newest",
            "mid",
            step_id="b",
            created_at=T0 + timedelta(seconds=2),
            card={"summary": summary, "body": "…"},
        ),
        make_approval("done", "old", card={"summary": "not pending"}),
    )
    await ledger.decide_approval("decided", ApprovalStatus.APPROVED, "x")
    await ledger.decide_approval("done", ApprovalStatus.REJECTED, "x")

    lines = await ledger.run_lines()
    assert [line.id for line in lines] == ["new", "failed", "mid", "old"]
    new, failed, mid, old = lines
    assert (new.status, new.current_step, new.approval_id) == (RunStatus.RUNNING, "draft", None)
    assert (failed.error_class, failed.error) == ("permanent", "the mail server said no")
    assert (mid.approval_id, mid.approval_summary) == ("newest", summary)
    assert (old.approval_id, old.approval_summary) == (None, "")
    waiting = await ledger.run_lines([RunStatus.WAITING, RunStatus.RUNNING], limit=1)
    assert [line.id for line in waiting] == ["new"]
    assert [line.id for line in await ledger.run_lines([RunStatus.FAILED])] == ["failed"]
    assert await ledger.run_lines([RunStatus.PAUSED]) == []


async def test_update_run_changes_status_and_touches_updated_at(ledger: Ledger) -> None:
    await insert_runs(ledger, make_run(), make_run("other"))

    await ledger.write(
        lambda tx: tx.update_run("run1", status=RunStatus.PAUSED.value, current_step="wait")
    )

    stored = await ledger.get_run("run1")
    assert stored is not None
    assert stored.status is RunStatus.PAUSED
    assert stored.current_step == "wait"
    assert stored.updated_at > T0
    assert_utc(stored.updated_at)
    other = await ledger.get_run("other")
    assert other is not None and other.status is RunStatus.RUNNING


async def test_failed_transaction_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError, match="abort"):

        def start_then_fail(tx: LedgerTx) -> None:
            tx.insert_run(make_run())
            tx.audit(NewAuditEvent("operator", "run.started", "run1"))
            raise RuntimeError("abort")

        await ledger.write(start_then_fail)

    assert await ledger.get_run("run1") is None
    assert await ledger.audit_events() == []
    assert (await ledger.verify_audit()).ok


# -- approvals -----------------------------------------------------------------------------


async def test_insert_and_get_approval(ledger: Ledger) -> None:
    approval = make_approval()
    await insert_approvals(ledger, approval)

    stored = await ledger.get_approval("ap1")

    assert stored == approval
    assert stored is not None and stored.is_pending
    assert_utc(stored.expires_at)
    assert await ledger.approval_for_gate("run1", "confirm", 1) == approval
    assert await ledger.approval_for_gate("run1", "confirm", 2) is None


async def test_a_card_is_announced_once(ledger: Ledger) -> None:
    await insert_runs(ledger, make_run(status=RunStatus.WAITING))
    later = T0 + timedelta(minutes=1)
    await insert_approvals(
        ledger,
        make_approval("ap1"),
        make_approval("ap2", step_id="other"),
        make_approval("ap3", step_id="third", created_at=later),
        make_approval("ap4", step_id="decided", status=ApprovalStatus.APPROVED),
    )
    shown = OwedReply("r1", "telegram", "42", {}, 0, T0)
    await ledger.owe_reply(shown, cards=["ap2"])

    lapsed = T0 - timedelta(minutes=5)  # claims older than this have lapsed
    assert [a.id for a in await ledger.unannounced_approvals(later, lapsed)] == ["ap1"]
    everything = later + timedelta(1)
    assert [a.id for a in await ledger.unannounced_approvals(everything, lapsed)] == [
        "ap1",
        "ap3",
    ]
    claims = await asyncio.gather(*(ledger.claim_announcement("ap1", T0, lapsed) for _ in range(3)))
    assert sorted(claims) == [False, False, True]
    assert not await ledger.claim_announcement("ap2", T0, lapsed)  # handed out already
    assert [a.id for a in await ledger.unannounced_approvals(everything, lapsed)] == ["ap3"]

    # The claimed card never reached a channel: once the claim lapses it is claimed again.
    lapsed_later = T0 + timedelta(seconds=1)
    assert [a.id for a in await ledger.unannounced_approvals(everything, lapsed_later)] == [
        "ap1",
        "ap3",
    ]
    assert await ledger.claim_announcement("ap1", later, lapsed_later)
    await ledger.release_announcement("ap3")  # a claim taken back is no claim
    await ledger.owe_reply(OwedReply("r2", "telegram", "42", {}, 0, T0), cards=["ap1"])
    assert [a.id for a in await ledger.unannounced_approvals(everything, later)] == ["ap3"]


async def test_the_audit_log_says_which_approvals_were_decided_since_it_was_read(
    ledger: Ledger,
) -> None:
    await insert_runs(ledger, make_run(status=RunStatus.WAITING))
    await insert_approvals(
        ledger,
        make_approval("ap1"),
        make_approval("ap2", step_id="b"),
        make_approval("ap3", step_id="c"),
    )
    start = await ledger.audit_end()
    await ledger.decide_approval("ap2", ApprovalStatus.REJECTED, "cli:shell")
    await ledger.audit(NewAuditEvent("x", "run.note", "r1", {}))  # no decision
    await ledger.decide_approval("ap1", ApprovalStatus.APPROVED, "telegram:1")
    read, decided = await ledger.decided_after(start)
    assert decided == ["ap2", "ap1"] and read == await ledger.audit_end()
    await ledger.audit(NewAuditEvent("x", "run.note", "r1", {}))
    again, nothing = await ledger.decided_after(read)
    assert nothing == [] and again == read + 1  # read past what holds no decision
    cancelled = {"approvals": ["ap3"], "error": "cancelled by cli:shell"}
    await ledger.audit(NewAuditEvent("cli:shell", "run.cancelled", "run1", cancelled))
    assert await ledger.decided_after(again, before=T0) == (again, [])  # not yet: too new
    assert await ledger.decided_after(again) == (again + 1, ["ap3"])


async def test_a_young_decision_is_read_later_even_with_older_times_after_it(
    ledger: Ledger,
) -> None:
    """Times need not rise with seq (an event written late with its own older time)."""
    await insert_runs(ledger, make_run(status=RunStatus.WAITING))
    await insert_approvals(ledger, make_approval("ap1"))
    start = await ledger.audit_end()
    await ledger.decide_approval("ap1", ApprovalStatus.APPROVED, "telegram:1")
    old = utcnow() - timedelta(seconds=30)
    await ledger.write(lambda tx: tx.audit(NewAuditEvent("x", "run.started", "r2", {}), at=old))
    read, decided = await ledger.decided_after(start, utcnow() - timedelta(seconds=10))
    assert (read, decided) == (start, [])  # stopped before the young decision
    assert (await ledger.decided_after(read))[1] == ["ap1"]


async def test_decide_approval_first_decision_wins_under_concurrency(ledger: Ledger) -> None:
    await insert_runs(ledger, make_run(status=RunStatus.WAITING))
    await insert_approvals(ledger, make_approval())

    results = await asyncio.gather(
        ledger.decide_approval("ap1", ApprovalStatus.APPROVED, "telegram:1"),
        ledger.decide_approval("ap1", ApprovalStatus.REJECTED, "telegram:2", reason="no"),
    )

    winners = [(a, won) for a, won in results if won]
    losers = [(a, won) for a, won in results if not won]
    assert len(winners) == 1
    assert len(losers) == 1
    winner_index = 0 if results[0][1] else 1
    expected_status = (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED)[winner_index]
    expected_by = ("telegram:1", "telegram:2")[winner_index]

    stored = await ledger.get_approval("ap1")
    assert stored is not None
    assert stored.status is expected_status
    assert stored.decided_by == expected_by
    assert_utc(stored.decided_at)
    assert winners[0][0] == stored
    assert losers[0][0] == stored  # the loser sees the approval as the winner decided it

    decisions = [e for e in await ledger.audit_events() if e.kind.startswith("approval.")]
    assert [e.kind for e in decisions] == [f"approval.{expected_status.value}"]
    assert (await ledger.verify_audit()).ok


async def test_decide_approval_unknown_id(ledger: Ledger) -> None:
    assert await ledger.decide_approval("missing", ApprovalStatus.APPROVED, "x") == (None, False)
    assert await ledger.audit_events() == []


async def test_decide_approval_resumes_run_and_audits(ledger: Ledger) -> None:
    await insert_runs(ledger, make_run(status=RunStatus.WAITING))
    await insert_approvals(ledger, make_approval())

    approval, won = await ledger.decide_approval(
        "ap1", ApprovalStatus.APPROVED, "slack:U1", reason="fine", edited_text="Dear Acme, hi"
    )

    assert won
    assert approval is not None
    assert approval.status is ApprovalStatus.APPROVED
    assert approval.decided_by == "slack:U1"
    assert approval.reason == "fine"
    assert approval.edited_text == "Dear Acme, hi"
    run = await ledger.get_run("run1")
    assert run is not None
    assert run.status is RunStatus.RUNNING
    assert run.updated_at == approval.decided_at
    events = await ledger.audit_events()
    assert len(events) == 1
    assert events[0].kind == "approval.approved"
    assert events[0].actor == "slack:U1"
    assert events[0].subject == "ap1"
    assert events[0].data == {"run": "run1", "reason": "fine", "edited": True}
    assert events[0].at == approval.decided_at

    again, won_again = await ledger.decide_approval("ap1", ApprovalStatus.REJECTED, "slack:U2")
    assert not won_again
    assert again == approval
    assert len(await ledger.audit_events()) == 1


async def test_pending_approvals_filters_by_run_ids(ledger: Ledger) -> None:
    await insert_approvals(
        ledger,
        make_approval("a1", "run1", created_at=T0),
        make_approval("a2", "run2", created_at=T0 + timedelta(seconds=1)),
        make_approval("a3", "run3", created_at=T0 + timedelta(seconds=2)),
        make_approval("a4", "run1", step_id="other", created_at=T0 + timedelta(seconds=3)),
    )
    await ledger.decide_approval("a4", ApprovalStatus.REJECTED, "x")

    assert [a.id for a in await ledger.pending_approvals()] == ["a1", "a2", "a3"]
    assert [a.id for a in await ledger.pending_approvals(["run1", "run3"])] == ["a1", "a3"]
    assert await ledger.pending_approvals(["nobody"]) == []
    assert await ledger.pending_approvals([]) == []


async def test_cancel_pending_approvals(ledger: Ledger) -> None:
    await insert_approvals(
        ledger,
        make_approval("a1", "run1"),
        make_approval("a2", "run1", step_id="second"),
        make_approval("a3", "run2"),
    )
    await ledger.decide_approval("a2", ApprovalStatus.APPROVED, "x")

    cancelled = await ledger.write(lambda tx: tx.cancel_pending_approvals("run1", "cli:shell"))

    assert cancelled == ["a1"]
    a1 = await ledger.get_approval("a1")
    assert a1 is not None and a1.status is ApprovalStatus.CANCELLED
    assert a1.decided_by == "cli:shell" and a1.decided_at is not None
    a2 = await ledger.get_approval("a2")
    assert a2 is not None and a2.status is ApprovalStatus.APPROVED
    assert [a.id for a in await ledger.pending_approvals()] == ["a3"]


# -- inbox ---------------------------------------------------------------------------------


async def test_a_delivery_with_a_nul_character_is_stored(ledger: Ledger) -> None:
    """PostgreSQL stores no NUL: the neutral message holds none, whatever the platform
    sent, so a message or a forged button press with one never fails its storing."""
    sender = Sender("telegram", "42", "Ol\x00ivia")
    press = Inbound(sender, "7", "update-nul", text="a\x00b", button="approve:\x00x")
    inbox_id = await ledger.accept_inbound("telegram", press.external_id, press.to_payload())
    assert inbox_id is not None
    [stored] = await ledger.unhandled_inbound("telegram")
    again = Inbound.from_payload(stored.payload)
    assert (again.text, again.button, again.sender.name) == (
        "a\ufffdb",
        "approve:\ufffdx",
        "Ol\ufffdivia",
    )


async def test_accept_inbound_deduplicates_deliveries(ledger: Ledger) -> None:
    first = await ledger.accept_inbound("telegram", "update-1", {"text": "hi"})
    assert isinstance(first, int)

    assert await ledger.accept_inbound("telegram", "update-1", {"text": "hi again"}) is None
    other_channel = await ledger.accept_inbound("slack", "update-1", {"text": "hey"})
    assert isinstance(other_channel, int)
    assert other_channel != first

    items = await ledger.unhandled_inbound()
    assert [(i.id, i.channel, i.payload) for i in items] == [
        (first, "telegram", {"text": "hi"}),
        (other_channel, "slack", {"text": "hey"}),
    ]


async def test_replies_are_kept_per_channel_in_order_until_sent(ledger: Ledger) -> None:
    def reply(key: str, channel: str = "telegram") -> OwedReply:
        return OwedReply(key, channel, "42", {"reply": {"items": [key]}}, 0, utcnow())

    for kept in (reply("r1"), reply("s1", "slack"), reply("r2"), reply("r3")):
        await ledger.owe_reply(kept)
    await ledger.reply_progress("r2", 1, {"reply": {"items": ["r2"]}, "results": {"0": True}})
    await ledger.reply_sent("r1")
    await ledger.drop_reply("r3", NewAuditEvent("telegram", "reply.dropped", "telegram:42"))
    (left,) = await ledger.take_over_replies("telegram")
    assert (left.key, left.chat_id, left.payload, left.sent_steps) == (
        "r2",
        "42",
        {"reply": {"items": ["r2"]}, "results": {"0": True}},
        1,
    )
    assert_utc(left.created_at)
    assert [r.key for r in await ledger.take_over_replies("slack")] == ["s1"]
    assert [e.kind for e in await ledger.audit_events()] == ["reply.dropped"]


async def test_a_reply_meant_once_is_owed_to_each_chat_once_even_after_it_is_sent(
    ledger: Ledger,
) -> None:
    def reply(key: str, chat: str, channel: str = "telegram") -> OwedReply:
        return OwedReply(key, channel, chat, {"reply": {"items": [key]}}, 0, utcnow())

    once = "digest:2026-10-24"
    assert await ledger.owe_reply(reply("a", "42"), once=once)
    await ledger.reply_sent("a")
    assert not await ledger.owe_reply(reply("b", "42"), once=once)
    assert await ledger.owe_reply(reply("c", "43"), once=once)  # another chat
    assert await ledger.owe_reply(reply("d", "42", "slack"), once=once)  # another channel
    assert await ledger.owe_reply(reply("e", "42"), once="digest:2026-10-25")  # another day
    assert await ledger.owe_reply(reply("f", "42"))  # news, meant as often as it comes
    owed = [r.key for r in await ledger.take_over_replies("telegram")]
    assert owed == ["c", "e", "f"]


async def test_unhandled_inbound_until_finished(ledger: Ledger) -> None:
    one = await ledger.accept_inbound("telegram", "u1", {"n": 1})
    two = await ledger.accept_inbound("telegram", "u2", {"n": 2})
    three = await ledger.accept_inbound("slack", "u3", {"n": 3})
    assert one is not None and two is not None and three is not None

    items = await ledger.unhandled_inbound()
    assert [i.id for i in items] == [one, two, three]
    assert all(i.status == "new" for i in items)
    assert_utc(items[0].received_at)
    assert [i.external_id for i in await ledger.unhandled_inbound("slack")] == ["u3"]

    await ledger.finish_inbound(one)
    await ledger.finish_inbound(three, status="ignored")

    assert [i.id for i in await ledger.unhandled_inbound()] == [two]
    assert await ledger.unhandled_inbound("slack") == []
    # A finished delivery is still known: redelivery stays a duplicate.
    assert await ledger.accept_inbound("telegram", "u1", {"n": 1}) is None


# -- effects -------------------------------------------------------------------------------


async def test_begin_effect_records_attempts(ledger: Ledger) -> None:
    request = {"to": "acme@example.com", "subject": "Invoice"}

    assert await ledger.begin_effect("k1", "run1", "send", "email", request) is None

    previous = await ledger.begin_effect("k1", "run1", "send", "email", request)
    assert previous is not None
    assert previous.status == "started"
    assert previous.attempts == 1
    assert previous.request == request
    assert (previous.run_id, previous.step_id, previous.connector) == ("run1", "send", "email")
    assert previous.result is None and previous.error is None

    now = await ledger.get_effect("k1")
    assert now is not None
    assert now.status == "started"
    assert now.attempts == 2


async def test_finished_effect_is_returned_untouched(ledger: Ledger) -> None:
    await ledger.begin_effect("k1", "run1", "send", "email", {"to": "a"})
    await ledger.finish_effect(
        "k1", {"message_id": "m-1"}, None, NewAuditEvent("run1", "effect.done", "k1")
    )

    done = await ledger.begin_effect("k1", "run1", "send", "email", {"to": "a"})

    assert done is not None
    assert done.status == "done"
    assert done.result == {"message_id": "m-1"}
    assert done.attempts == 1
    assert await ledger.get_effect("k1") == done
    assert await ledger.begin_effect("k1", "run1", "send", "email", {"to": "a"}) == done
    assert [e.kind for e in await ledger.audit_events()] == ["effect.done"]


async def test_failed_effect_can_be_retried(ledger: Ledger) -> None:
    await ledger.begin_effect("k1", "run1", "send", "email", {})
    await ledger.finish_effect("k1", None, "smtp 550", NewAuditEvent("run1", "effect.failed", "k1"))

    failed = await ledger.get_effect("k1")
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error == "smtp 550"

    previous = await ledger.begin_effect("k1", "run1", "send", "email", {})
    assert previous == failed
    retried = await ledger.get_effect("k1")
    assert retried is not None
    assert (retried.status, retried.attempts) == ("started", 2)


async def test_release_unfinished_effects(ledger: Ledger) -> None:
    """Only the newest attempt with no outcome, the one the run stopped at: an older one
    is one a replay went past, which nobody checked."""
    await ledger.begin_effect("started-1", "run1", "a", "email", {})
    await ledger.begin_effect("started-2", "run1", "b", "email", {})
    await ledger.begin_effect("done", "run1", "c", "email", {})
    await ledger.finish_effect("done", {"ok": True}, None, NewAuditEvent("run1", "effect", "done"))
    await ledger.begin_effect("other-run", "run2", "a", "email", {})

    released = await ledger.release_unfinished_effects("run1", "telegram:1")

    assert released == ["started-2"]
    record = await ledger.get_effect("started-2")
    assert record is not None
    assert record.status == "failed"
    assert record.error == "released by the operator"
    for key in ("started-1", "other-run"):
        unknown = await ledger.get_effect(key)
        assert unknown is not None and unknown.status == "started"
    done = await ledger.get_effect("done")
    assert done is not None and done.status == "done"
    released_events = [e for e in await ledger.audit_events() if e.kind == "effect.released"]
    assert [(e.subject, e.actor) for e in released_events] == [("started-2", "telegram:1")]
    assert await ledger.release_unfinished_effects("run2", "telegram:1") == ["other-run"]
    assert await ledger.release_unfinished_effects("run2", "telegram:1") == []


async def test_a_confirmed_effect_is_recorded_with_the_answer_made_from_its_record(
    ledger: Ledger,
) -> None:
    await ledger.begin_effect("older", "run1", "a", "email", {"to": "a"})
    await ledger.begin_effect("newest", "run1", "b", "email", {"to": "b"})

    def answer(record: IdempotencyRecord) -> dict[str, Any]:
        return {"to": record.request["to"], "step": record.step_id, "confirmed_by": "cli:me"}

    assert await ledger.confirm_unfinished_effects("run1", "cli:me", answer) == ["newest"]
    confirmed = await ledger.get_effect("newest")
    assert confirmed is not None and confirmed.status == "done"
    assert confirmed.result == {"to": "b", "step": "b", "confirmed_by": "cli:me"}
    older = await ledger.get_effect("older")
    assert older is not None and older.status == "started"
    kinds = [(e.kind, e.subject) for e in await ledger.audit_events()]
    assert kinds == [("effect.confirmed", "newest")]


# -- timers --------------------------------------------------------------------------------


async def test_due_timers_returns_only_due_pending_ones(ledger: Ledger) -> None:
    now = T0

    def add_timers(tx: LedgerTx) -> None:
        tx.add_timer("late", "wait", now - timedelta(minutes=1), "run1", {"n": 2})
        tx.add_timer("later", "expiry", now + timedelta(minutes=1), "run1", {})
        tx.add_timer("early", "wait", now - timedelta(hours=1), None, {"n": 1})
        tx.add_timer("exact", "wait", now, "run2", {})
        tx.add_timer("cancelled", "wait", now - timedelta(hours=2), "run3", {})
        tx.cancel_timers("run3")

    await ledger.write(add_timers)

    due = await ledger.due_timers(now)

    assert [timer.key for timer in due] == ["early", "late", "exact"]
    assert due[0].payload == {"n": 1}
    assert due[0].run_id is None
    assert all(timer.status == "pending" for timer in due)
    assert_utc(due[0].due_at)
    assert due[0].due_at == now - timedelta(hours=1)
    assert [timer.key for timer in await ledger.due_timers(now, limit=1)] == ["early"]

    # The same instant written in another timezone compares the same way.
    minus_five = timezone(timedelta(hours=-5))
    assert [timer.key for timer in await ledger.due_timers(now.astimezone(minus_five))] == [
        "early",
        "late",
        "exact",
    ]

    assert await ledger.claim_timer(due[0].id, "worker-1")
    assert [timer.key for timer in await ledger.due_timers(now)] == ["late", "exact"]
    query = select(t.timers.c.status).where(t.timers.c.key == "early")
    status = await ledger.db.run(lambda conn: conn.execute(query).scalar_one(), write=False)
    assert status == "fired"


async def test_due_timers_leave_out_the_waits_held_behind_an_event_before_the_limit(
    ledger: Ledger,
) -> None:
    """Waits for an event due after it came (not handled yet) are left out before the
    limit is applied: the timers after them are due all the same."""
    came, paid = T0 - timedelta(hours=1), {"event": "paid"}

    def add_timers(tx: LedgerTx) -> None:
        for i in range(3):
            tx.add_timer(f"held{i}", "wait", came + timedelta(minutes=i + 1), None, paid)
        tx.add_timer("before", "wait", came - timedelta(minutes=1), None, paid)
        tx.add_timer("other", "wait", T0 - timedelta(minutes=3), None, {"event": "signed"})
        tx.add_timer("plain", "wait", T0 - timedelta(minutes=2), None, {})
        tx.add_timer("expiry", "approval_expiry", T0 - timedelta(minutes=1), None, paid)

    await ledger.write(add_timers)
    everything = [t.key for t in await ledger.due_timers(T0, limit=None)]
    assert everything == ["before", "held0", "held1", "held2", "other", "plain", "expiry"]
    left = await ledger.due_timers(T0, limit=3, held={"paid": came})
    assert [t.key for t in left] == ["before", "other", "plain"]
    assert [t.key for t in await ledger.due_timers(T0, held={})] == everything


async def test_a_paused_runs_deadlines_are_not_due_and_move_by_the_pause(ledger: Ledger) -> None:
    """While paused, none of its timers is due; resumed, its waits and the gates whose
    expiry has not fired move by the time it was paused."""
    paused = make_run("run1", status=RunStatus.PAUSED)
    await insert_runs(ledger, paused, make_run("run2", status=RunStatus.WAITING))
    expires = T0 + timedelta(hours=1)
    pending = make_approval("ap1", "run1", expires_at=expires)
    escalated = make_approval("ap2", "run1", step_id="again", expires_at=expires)
    await insert_approvals(ledger, pending, escalated)

    def add_timers(tx: LedgerTx) -> None:
        tx.add_timer(expiry_key("ap1"), "approval_expiry", expires, "run1", {"approval": "ap1"})
        tx.add_timer(expiry_key("ap2"), "approval_expiry", expires, "run1", {"approval": "ap2"})
        tx.add_timer("wait:run1", "wait", T0 + timedelta(hours=2), "run1", {})
        tx.add_timer("event:run1", "wait", NEVER, "run1", {"event": "paid"})
        tx.add_timer("wait:run2", "wait", T0 + timedelta(hours=2), "run2", {})

    await ledger.write(add_timers)
    assert [t.key for t in await ledger.due_timers(T0 + timedelta(days=1))] == ["wait:run2"]
    ap2_timer = await ledger.get_timer(expiry_key("ap2"))
    assert ap2_timer is not None and await ledger.claim_timer(ap2_timer.id, "w")  # escalated

    await ledger.write(lambda tx: tx.postpone_deadlines("run1", timedelta(hours=3)))

    moved = {key: await ledger.get_timer(key) for key in ("wait:run1", "event:run1")}
    assert moved["wait:run1"] and moved["wait:run1"].due_at == T0 + timedelta(hours=5)
    assert moved["event:run1"] and moved["event:run1"].due_at == NEVER
    ap1, ap2 = await ledger.get_approval("ap1"), await ledger.get_approval("ap2")
    assert ap1 and ap1.expires_at == expires + timedelta(hours=3)
    assert ap2 and ap2.expires_at == expires  # its expiry fired: no later one would
    ap1_timer = await ledger.get_timer(expiry_key("ap1"))
    assert ap1_timer and ap1_timer.due_at == expires + timedelta(hours=3)


async def test_claim_timer_is_atomic(ledger: Ledger) -> None:

    def add_timer(tx: LedgerTx) -> Timer | None:
        tx.add_timer("t1", "wait", T0, "run1", {})
        return tx.timer("t1")

    timer = await ledger.write(add_timer)
    assert timer is not None

    claims = await asyncio.gather(*(ledger.claim_timer(timer.id, f"w{i}") for i in range(10)))

    assert sum(claims) == 1
    assert claims.count(True) == 1
    query = select(t.timers).where(t.timers.c.id == timer.id)
    row = await ledger.db.run(lambda conn: conn.execute(query).one(), write=False)
    assert row.status == "fired"
    assert row.claimed_by == f"w{claims.index(True)}"
    assert await ledger.claim_timer(timer.id, "late") is False


async def test_open_wait(ledger: Ledger) -> None:

    def add_timers(tx: LedgerTx) -> None:
        tx.add_timer("expiry", "expiry", T0, "run1", {})
        tx.add_timer("wait", "wait", T0, "run1", {"until": "x"})

    await ledger.write(add_timers)
    wait = await ledger.open_wait("run1")
    assert wait is not None and wait.key == "wait"
    assert await ledger.open_wait("run2") is None


# -- model calls ---------------------------------------------------------------------------


def model_call(run_id: str | None, cost: float) -> ModelCall:
    return ModelCall(
        run_id=run_id,
        step_id="draft" if run_id else None,
        purpose="draft",
        model="gpt-test",
        prompt_tokens=100,
        completion_tokens=20,
        latency_ms=321.5,
        cost_usd=cost,
    )


async def test_model_spend_sums_costs(ledger: Ledger) -> None:
    assert await ledger.model_spend() == 0.0
    assert await ledger.model_spend("run1") == 0.0

    for call in (
        model_call("run1", 0.125),
        model_call("run1", 0.25),
        model_call("run2", 1.5),
        model_call(None, 0.0625),
    ):
        await ledger.record_model_call(call)

    assert await ledger.model_spend() == pytest.approx(1.9375)
    assert await ledger.model_spend("run1") == pytest.approx(0.375)
    assert await ledger.model_spend("run2") == pytest.approx(1.5)
    assert await ledger.model_spend("run3") == 0.0
    assert isinstance(await ledger.model_spend(), float)


# -- definitions ---------------------------------------------------------------------------


async def test_a_cursor_moves_from_where_its_reader_read_it_or_not_at_all(
    ledger: Ledger,
) -> None:
    assert await ledger.place("store") == Place(0)  # never moved
    assert await ledger.move_cursor_from("store", Place(0), 100)
    assert await ledger.cursor("store") == 100
    assert not await ledger.move_cursor_from("other", Place(5), 100)  # never moved: not at 5
    assert await ledger.cursor("other", unread=-1) == -1
    assert await ledger.move_cursor_from("store", Place(100), 200)
    await ledger.rewind_cursor("store")  # a rebuild
    assert await ledger.place("store") == Place(0, rewinds=1)
    assert not await ledger.move_cursor_from("store", Place(200), 300)  # a stale reader's move
    assert not await ledger.move_cursor_from("store", Place(0), 300)  # read before the rewind
    assert await ledger.cursor("store") == 0
    # Two readers of one place at once: one moves it.
    read = await ledger.place("store")
    moved = await asyncio.gather(*(ledger.move_cursor_from("store", read, n) for n in (10, 20)))
    assert sorted(moved) == [False, True]
    assert await ledger.cursor("store") == (10 if moved[0] else 20)
    await ledger.rewind_cursor("new")  # a rebuild before any feed
    assert not await ledger.move_cursor_from("new", Place(0), 5)
    assert await ledger.move_cursor_from("new", Place(0, rewinds=1), 5)


async def test_save_definition_keeps_the_first_body_per_version(ledger: Ledger) -> None:
    body = {"name": "invoice-chaser", "steps": [{"id": "draft", "kind": "llm"}]}
    await ledger.save_definition("v1abc", "invoice-chaser", body, "name: invoice-chaser\n")
    await ledger.save_definition("v1abc", "invoice-chaser", {"changed": True}, "changed\n")
    await ledger.save_definition("v2def", "invoice-chaser", {"name": "v2"}, "v2\n")

    assert await count_rows(ledger, t.definitions) == 2
    assert await ledger.get_definition("v1abc") == body
    assert await ledger.get_definition("v2def") == {"name": "v2"}
    assert await ledger.get_definition("missing") is None


async def test_handling_marks_the_inbox_item_done_with_the_first_write(ledger: Ledger) -> None:
    inbox_id = await ledger.accept_inbound("console", "m1", {"text": "/run"})
    assert inbox_id is not None
    async with ledger.handling(inbox_id):
        await ledger.write(lambda tx: tx.insert_run(make_run()))
        assert await ledger.unhandled_inbound() == []  # done together with the run
        await ledger.write(lambda tx: tx.update_run("run1", status=RunStatus.WAITING.value))
    assert await ledger.unhandled_inbound() == []


async def test_handling_without_writes_marks_done_at_the_end(ledger: Ledger) -> None:
    inbox_id = await ledger.accept_inbound("console", "m2", {"text": "/help"})
    assert inbox_id is not None
    async with ledger.handling(inbox_id):
        assert [i.id for i in await ledger.unhandled_inbound()] == [inbox_id]
    assert await ledger.unhandled_inbound() == []


async def test_a_failed_write_leaves_the_item_for_the_next_write(ledger: Ledger) -> None:
    inbox_id = await ledger.accept_inbound("console", "m3", {"text": "/run"})
    assert inbox_id is not None

    def boom(tx: LedgerTx) -> None:
        raise RuntimeError("boom")

    async with ledger.handling(inbox_id):
        with pytest.raises(RuntimeError):
            await ledger.write(boom)
        assert [i.id for i in await ledger.unhandled_inbound()] == [inbox_id]
        await ledger.write(lambda tx: tx.insert_run(make_run()))
        assert await ledger.unhandled_inbound() == []


async def test_a_handler_that_raises_sets_the_item_aside(ledger: Ledger) -> None:
    inbox_id = await ledger.accept_inbound("console", "m4", {"text": "poison"})
    assert inbox_id is not None
    with pytest.raises(ValueError):
        async with ledger.handling(inbox_id):
            raise ValueError("handler bug")
    assert await ledger.unhandled_inbound() == []


async def test_a_handler_that_raises_may_leave_the_item_to_be_handled_again(
    ledger: Ledger,
) -> None:
    """A webhook's start that failed before it wrote stays stored, to be tried again;
    one that failed after its first write was done with it."""
    inbox_id = await ledger.accept_inbound("hook:form", "m5", {"client": "Acme"})
    assert inbox_id is not None
    with pytest.raises(ValueError):
        async with ledger.handling(inbox_id, failed=None) as handling:
            raise ValueError("the ledger was locked")
    assert handling.marked is None
    assert [i.id for i in await ledger.unhandled_inbound()] == [inbox_id]
    with pytest.raises(ValueError):
        async with ledger.handling(inbox_id, failed=None) as handling:
            await ledger.write(lambda tx: tx.insert_run(make_run()))
            raise ValueError("after the start")
    assert handling.marked == "done"
    assert await ledger.unhandled_inbound() == []


async def test_a_running_only_update_leaves_a_cancelled_run_alone(ledger: Ledger) -> None:
    await insert_runs(ledger, make_run())
    assert await ledger.write(lambda tx: tx.update_running_run("run1", current_step="x"))
    await ledger.write(lambda tx: tx.update_run("run1", status=RunStatus.CANCELLED.value))
    assert not await ledger.write(lambda tx: tx.update_running_run("run1", status="succeeded"))
    stored = await ledger.get_run("run1")
    assert stored is not None and stored.status is RunStatus.CANCELLED


async def test_an_effect_is_refused_for_a_cancelled_run(ledger: Ledger) -> None:
    await insert_runs(ledger, make_run(status=RunStatus.CANCELLED))
    with pytest.raises(RunCancelled):
        await ledger.begin_effect("run1:send", "run1", "send", "outbox", {})
    assert await ledger.get_effect("run1:send") is None


async def test_a_failed_batch_drops_droppable_riders_and_keeps_the_rest(ledger: Ledger) -> None:
    inbox_id = await ledger.accept_inbound("console", "m9", {})
    assert inbox_id is not None
    with pytest.raises(RuntimeError):
        async with ledger.batching():
            ledger.defer(lambda tx: tx.insert_run(make_run("dropped")), droppable=True)
            ledger.defer(lambda tx: tx.finish_inbox(inbox_id, "failed"))
            raise RuntimeError("the write these rode on failed")
    assert await ledger.get_run("dropped") is None
    assert await ledger.unhandled_inbound() == []


async def test_stop_iteration_in_one_write_does_not_stall_the_others(ledger: Ledger) -> None:
    def broken(tx: LedgerTx) -> None:
        next(iter([]))

    results = await asyncio.gather(
        ledger.write(broken),
        ledger.write(lambda tx: tx.insert_run(make_run("ok"))),
        return_exceptions=True,
    )
    assert isinstance(results[0], RuntimeError)
    assert await ledger.get_run("ok") is not None


def _commit_waits_for_disk(conn: Connection) -> bool:
    if conn.dialect.name == "sqlite":
        return bool(conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2)  # FULL
    return bool(conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on")


async def test_a_write_may_commit_without_waiting_for_the_disk(ledger: Ledger) -> None:
    assert await ledger.db.run(_commit_waits_for_disk) is True
    assert await ledger.db.run(_commit_waits_for_disk, durable=False) is False
    assert await ledger.db.run(_commit_waits_for_disk) is True  # that one transaction only
    inbox_id = await ledger.accept_inbound("console", "m5", {"text": "/runs"}, durable=False)
    assert [i.id for i in await ledger.unhandled_inbound()] == [inbox_id]  # committed all the same


async def test_a_handling_that_writes_nothing_is_marked_done_without_waiting_for_the_disk(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = record_commits(ledger, monkeypatch)
    quiet = await ledger.accept_inbound("console", "m6", {"text": "/runs"})
    busy = await ledger.accept_inbound("console", "m7", {"text": "/run"})
    assert quiet is not None and busy is not None
    assert commits == [True, True]  # a channel's delivery is on disk before it says so

    async with ledger.handling(quiet):
        pass
    assert commits[2:] == [False]  # losing the mark repeats an answer that changed nothing

    async with ledger.handling(busy):
        await ledger.write(lambda tx: tx.insert_run(make_run()))
    assert commits[3:] == [True]  # the mark rides with the run, on disk

    paid = await ledger.accept_inbound("console", "m8", {"text": "/history what happened?"})
    assert paid is not None
    async with ledger.handling(paid):
        await ledger.record_model_call(model_call(None, 0.02))  # not a ledger.write
    assert commits[4:] == [True, True, True]  # a crash must not make it pay again
    assert await ledger.unhandled_inbound() == []


@pytest.mark.parametrize("synced_by", ["the process", "another process"])
async def test_sync_flushes_what_did_not_wait_for_the_disk(ledger: Ledger, synced_by: str) -> None:
    """On PostgreSQL (SQLite's fsyncs are checked in test_embedded_sqlite), even where
    the server's own default is not to wait: the flush has happened when sync returns —
    the process's own, or another's that read the commit and syncs for everyone, though
    it made no commit of its own. (The server's WAL writer flushes on its own too, but
    within wal_writer_delay.)"""
    if ledger.url.is_sqlite:
        pytest.skip("SQLite's sync is checked file by file in test_embedded_sqlite")
    careless = DatabaseURL(ledger.url.url.update_query_dict({"options": _NO_WAITING}))
    other = Ledger.from_url(careless)
    try:
        await other.accept_inbound("slack", "e1", {"text": "hi"}, durable=False)
        written = await other.db.run(lambda conn: _lsn(conn, "pg_current_wal_insert_lsn"), False)
        syncing = other if synced_by == "the process" else ledger
        await syncing.sync(everyone=syncing is ledger)
        flushed = await syncing.db.run(lambda conn: _lsn(conn, "pg_current_wal_flush_lsn"), False)
        assert flushed >= written
    finally:
        await other.close()


_NO_WAITING = "-c synchronous_commit=off"


def _lsn(conn: Connection, function: str) -> int:
    hi, lo = str(conn.exec_driver_sql(f"SELECT {function}()").scalar()).split("/")
    return int(hi, 16) << 32 | int(lo, 16)


async def test_a_write_that_can_wait_goes_with_the_next_write(ledger: Ledger) -> None:
    commits = ledger.db.commits
    before = commits.durable + commits.lazy
    ledger.soon(lambda tx: tx.note_entity("client:Acme"))
    await ledger.write(lambda tx: tx.note_entity("client:Globex"))
    await asyncio.gather(*ledger._soon_writing, return_exceptions=True)  # queued first
    assert await ledger.entities() == ["client:Acme", "client:Globex"]
    if ledger.url.is_sqlite:  # where transactions queued together share a commit
        assert commits.durable + commits.lazy == before + 1


async def test_a_write_that_can_wait_goes_on_its_own_soon(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "SOON_SECONDS", 0.01)
    ledger.soon(lambda tx: tx.note_entity("client:Acme"))
    for _ in range(100):
        if await ledger.entities():
            break
        await asyncio.sleep(0.01)
    assert await ledger.entities() == ["client:Acme"]


async def test_a_write_that_can_wait_and_fails_is_dropped_and_holds_up_nothing(
    ledger: Ledger,
) -> None:
    def broken(tx: LedgerTx) -> None:
        raise RuntimeError("a bug")

    ledger.soon(broken)
    ledger.soon(lambda tx: tx.note_entity("client:Acme"))  # went with it: dropped with it
    await ledger.write(lambda tx: tx.note_entity("client:Globex"))
    await asyncio.gather(*ledger._soon_writing, return_exceptions=True)
    await ledger.write(lambda tx: tx.note_entity("client:Initech"))
    assert await ledger.entities() == ["client:Globex", "client:Initech"]


async def test_a_write_that_can_wait_is_written_at_close(database_url: DatabaseURL) -> None:
    first = Ledger.from_url(database_url)
    await first.setup()
    first.soon(lambda tx: tx.note_entity("client:Acme"))
    await first.close()
    again = Ledger.from_url(database_url)
    await again.setup()
    try:
        assert await again.entities() == ["client:Acme"]
    finally:
        await again.close()


async def test_the_migrations_build_the_schema_the_code_declares(ledger: Ledger) -> None:
    def differences(conn: Any) -> list[Any]:
        return compare_metadata(MigrationContext.configure(conn), t.metadata)

    assert await ledger.db.run(differences, write=False) == []


def test_the_head_a_start_checks_for_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


async def test_every_migration_undoes_itself_and_the_ledger_migrates_again(ledger: Ledger) -> None:
    def down_one_at_a_time_then_up(conn: Connection) -> tuple[list[str], list[Any]]:
        config = alembic_config(conn)
        for _ in ScriptDirectory.from_config(config).walk_revisions():
            command.downgrade(config, "-1")
        left = [name for name in inspect(conn).get_table_names() if name != "alembic_version"]
        command.upgrade(config, "head")
        return left, compare_metadata(MigrationContext.configure(conn), t.metadata)

    left, differences = await ledger.db.run(down_one_at_a_time_then_up)
    assert left == []
    assert differences == []


async def test_bare_delivery_ids_are_prefixed_among_the_newest_only(ledger: Ledger) -> None:
    for external_id in ("1", "2", "4242:3"):
        assert await ledger.accept_inbound("telegram", external_id, {}) is not None
    assert await ledger.accept_inbound("slack", "Ev1", {}) is not None
    assert await ledger.prefix_deliveries("telegram", "4242:", newest=2) == 1
    stored = await ledger.db.run(
        lambda c: sorted(c.execute(select(t.inbox.c.channel, t.inbox.c.external_id)).all()),
        write=False,
    )
    assert [tuple(row) for row in stored] == [
        ("slack", "Ev1"),
        ("telegram", "1"),  # older than the newest two: left
        ("telegram", "4242:2"),
        ("telegram", "4242:3"),
    ]
    assert await ledger.prefix_deliveries("telegram", "4242:") == 1
    assert await ledger.prefix_deliveries("telegram", "4242:") == 0


async def test_delivery_ids_of_the_kinds_named_are_prefixed_all_of_them(ledger: Ledger) -> None:
    kinds = ("message:", "view:")
    ids = ("message:C1:1.0", "view:V1", "B1:message:C1:2.0", "Ev1", "view-closed:V")
    for external_id in (*ids, "message:C1:2.0"):  # stored under its new id too, above
        assert await ledger.accept_inbound("slack", external_id, {}) is not None
    assert await ledger.accept_inbound("telegram", "message:1", {}) is not None
    assert await ledger.prefix_deliveries("slack", "B1:", newest=None, kinds=kinds) == 2
    stored = await ledger.db.run(
        lambda c: sorted(c.execute(select(t.inbox.c.channel, t.inbox.c.external_id)).all()),
        write=False,
    )
    assert [tuple(row) for row in stored] == [
        ("slack", "B1:message:C1:1.0"),
        ("slack", "B1:message:C1:2.0"),
        ("slack", "B1:view:V1"),
        ("slack", "Ev1"),  # of no kind named: left
        ("slack", "message:C1:2.0"),  # stored under its new id too: left
        ("slack", "view-closed:V"),
        ("telegram", "message:1"),
    ]
    assert await ledger.prefix_deliveries("slack", "B1:", newest=None, kinds=kinds) == 0


async def test_the_newest_bare_delivery_is_when_the_last_stored_under_an_id_without_a_colon_came(
    ledger: Ledger,
) -> None:
    assert await ledger.newest_bare_delivery("slack") is None
    before = utcnow()
    assert await ledger.accept_inbound("slack", "Ev1", {}) is not None
    bare = await ledger.newest_bare_delivery("slack")
    assert await ledger.accept_inbound("slack", "message:C1:1.000001", {}) is not None
    assert await ledger.accept_inbound("telegram", "2", {}) is not None
    assert bare is not None and before <= bare <= utcnow()
    assert await ledger.newest_bare_delivery("slack") == bare
