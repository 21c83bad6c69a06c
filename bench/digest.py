"""The daily list over 10,000 open items: how long building it takes, on SQLite.

The ledger is seeded with open work as steward leaves it — 5,000 runs waiting at an
approval (half of them invoices with money at stake), 3,000 runs waiting for a
follow-up due today, 2,000 failed runs — then the list is built (read, ranked, the top
ten rendered) over and over: p50 and p95 ms. Beside it, in the same run, the bare reads
it needs (the same lean read, no ranking): the floor the ledger sets. Target: p95
≤ 100 ms.

    uv run python -m bench.digest [--items 10000] [--builds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bench.common import percentile, steward_home
from bot.app import Steward
from graph.digest import daily_list
from memory.ledger import Approval, ApprovalStatus, LedgerTx, Run, RunStatus, utcnow

INVOICE = {
    "client": "Acme",
    "email": "billing@acme.com",
    "invoice": "INV-7",
    "amount": "1200.00",
    "due_date": "2026-11-01",
}


async def seed(steward: Steward, items: int, zone: ZoneInfo) -> None:
    now = utcnow()
    local = now.astimezone(zone)
    # What is left of the operator's day: each follow-up falls due within it, whatever
    # the hour the benchmark runs at (spread over ten hours, those past midnight were no
    # longer today's after two in the afternoon, and the list came out short).
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
    today_left = midnight - local
    approvals, waits = items // 2, items * 3 // 10  # the rest have failed
    versions = {d.name: d.version for d in steward.catalog}

    def batch(start: int, stop: int) -> Callable[[LedgerTx], None]:
        def write(tx: LedgerTx) -> None:
            for n in range(start, stop):
                created = now - timedelta(minutes=n % 5000)
                invoice = n % 2 == 0
                process = "invoice_followup" if invoice else "onboarding"
                inputs = INVOICE if invoice else {"client": f"C{n}", "email": f"c{n}@x.com"}
                if n < approvals:
                    status, step, error = RunStatus.WAITING, "approve", None
                elif n < approvals + waits:
                    status, step, error = RunStatus.WAITING, "wait", None
                else:
                    status, step, error = RunStatus.FAILED, "send", "SMTP said no"
                run_id = f"b{n:09d}"
                tx.insert_run(
                    Run(
                        id=run_id,
                        process=process,
                        version=versions[process],
                        status=status,
                        inputs=inputs,
                        started_by="bench",
                        created_at=created,
                        updated_at=created,
                        current_step=step,
                        error=error,
                        error_class="data" if error else None,
                    )
                )
                if n < approvals:
                    tx.insert_approval(
                        Approval(
                            id=f"a{n:07d}",
                            run_id=run_id,
                            step_id=step,
                            visit=1,
                            status=ApprovalStatus.PENDING,
                            card={"summary": f"Approve item {n}", "risk": "medium"},
                            created_at=created,
                            expires_at=created + timedelta(hours=72),
                            on_expiry="reject",
                        )
                    )
                elif n < approvals + waits:
                    due = now + today_left * (n % 600) / 600
                    tx.add_timer(f"wait:{run_id}", "wait", due, run_id, {"step": step})

        return write

    for start in range(0, items, 1000):
        await steward.ledger.write(batch(start, min(items, start + 1000)))


async def main(items: int, builds: int, freeze: bool) -> None:
    zone = ZoneInfo("Europe/Berlin")
    async with steward_home({}) as steward:
        await seed(steward, items, zone)
        if freeze:
            gc.freeze()  # as `steward run` does once it has started
        ledger = steward.ledger
        built: list[float] = []
        reads: list[float] = []
        for _ in range(builds):
            began = time.perf_counter()
            found = await daily_list(ledger, steward.catalog, utcnow(), zone)
            found.reply()
            built.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            await ledger.open_work(utcnow() + timedelta(days=1))
            reads.append((time.perf_counter() - began) * 1000)
        assert found.total == items and len(found.items) == 10, (found.total, len(found.items))
    state = "start-up objects frozen, as in steward run" if freeze else "nothing frozen"
    print(f"daily list over {items:,} open items, {builds} builds, SQLite ({state})")
    for name, samples in (("the list (read, rank, render)", built), ("the bare reads", reads)):
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        print(f"  {name:<30} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")
    print(f"  p95 {percentile(built, 95):.1f} ms (target ≤ 100 ms)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--no-freeze", action="store_true", help="leave gc.freeze() out")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.items, arguments.builds, not arguments.no_freeze))
