"""The daily list's lean read, on SQLite and PostgreSQL: times as epoch seconds computed
by the database, money summed from JSON inputs, only open work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from memory.ledger import Approval, ApprovalStatus, Ledger, LedgerTx, Run, RunStatus

CREATED = datetime(2026, 11, 20, 8, 30, 15, 250000, tzinfo=UTC)


def run(run_id: str, status: RunStatus, inputs: dict[str, object]) -> Run:
    return Run(
        id=run_id,
        process="invoice_followup",
        version="v",
        status=status,
        inputs=inputs,
        started_by="test",
        created_at=CREATED,
        updated_at=CREATED,
    )


async def test_open_work_reads_lean_and_right(ledger: Ledger) -> None:
    def seed(tx: LedgerTx) -> None:
        tx.insert_run(run("r1", RunStatus.WAITING, {"amount": "1200.50", "other": "9"}))
        tx.insert_run(run("r2", RunStatus.FAILED, {"amount": "oops"}))
        tx.insert_run(run("r3", RunStatus.SUCCEEDED, {"amount": "5"}))
        tx.insert_approval(
            Approval(
                id="a1",
                run_id="r1",
                step_id="gate",
                visit=1,
                status=ApprovalStatus.PENDING,
                card={"risk": "high", "summary": "s"},
                created_at=CREATED,
                expires_at=CREATED + timedelta(hours=72),
                on_expiry="reject",
            )
        )
        tx.add_timer("wait:r1", "wait", CREATED + timedelta(hours=1), "r1", {})
        tx.add_timer("wait:late", "wait", CREATED + timedelta(days=9), "r1", {})

    await ledger.write(seed)
    work = await ledger.open_work(CREATED + timedelta(days=1), {"invoice_followup": ["amount"]})
    [(approval_id, run_id, created, expires, risk, worth)] = work.approvals
    assert (approval_id, run_id, risk) == ("a1", "r1", "high")
    assert worth == pytest.approx(1200.50)
    assert created == pytest.approx(CREATED.timestamp(), abs=1e-3)
    assert expires - created == pytest.approx(72 * 3600, abs=1e-3)
    assert [(r[0], r[1], r[3]) for r in work.runs] == [("r2", "failed", 0.0)]  # not a number
    [(key, timer_run, due, timer_worth)] = work.timers  # the late one is not due today
    assert (key, timer_run, timer_worth) == ("wait:r1", "r1", pytest.approx(1200.50))
    assert due - created == pytest.approx(3600, abs=1e-3)


async def test_open_work_counts_what_is_still_owed_of_an_amount_paid_in_part(
    ledger: Ledger,
) -> None:
    """A run paid €1,000 of €2,500 was ranked by the €2,500 it was started with."""
    owing = run("r1", RunStatus.FAILED, {"amount": "€2,500.00", "fee": "€100.00"})
    await ledger.write(lambda tx: tx.insert_run(owing))
    await ledger.write(lambda tx: tx.update_run("r1", owed={"amount": "€1,500.00"}))
    stored = await ledger.get_run("r1")
    assert stored is not None and stored.owed == {"amount": "€1,500.00"}
    money = {"invoice_followup": ["amount", "fee"]}
    work = await ledger.open_work(CREATED + timedelta(days=1), money, _number)
    assert [(r[0], r[3]) for r in work.runs] == [("r1", pytest.approx(1600.0))]


def _number(stored: str) -> float:
    return float(stored.lstrip("€").replace(",", ""))
