"""1,000 timers due in the same minute: each fires exactly once, and how late.

1,000 runs each wait at a step of their own (``wait for: 20s``); they are started as fast
as steward starts them, so their timers come due within the same minute. Two
schedulers in two processes share the SQLite ledger, as two steward processes would,
and race for every timer. Counted from the ledger: how many timers fired, how many
more than once (none may), and each one's lag — when it fired after it was due: p50,
p95, max. Target: max lag ≤ 2 s.

    uv run python -m bench.timers [--runs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.common import percentile
from bot.app import Steward
from bot.scheduler import Scheduler
from bot.settings import load_settings
from graph.messages import Reply

WAITER = """
name: waiter
title: Waiter
description: waits, then is done
steps:
  - id: pause
    kind: wait
    for: 20s
"""


def settings(home: Path) -> object:
    return load_settings(home=home, processes_dir=home / "processes")


async def seed(home: Path, runs: int) -> None:
    (home / "processes").mkdir(parents=True, exist_ok=True)
    (home / "processes" / "waiter.yaml").write_text(WAITER)
    async with Steward.open(settings(home)) as steward:  # type: ignore[arg-type]
        for _ in range(runs):
            await steward.engine.start("waiter", {}, "bench")


async def schedule(home: Path, seconds: float) -> None:
    """One scheduler process: ticks until ``seconds`` have passed."""

    async def quiet(reply: Reply, reply_to: object) -> None:
        return None

    async with Steward.open(settings(home)) as steward:  # type: ignore[arg-type]
        scheduler = Scheduler(
            steward.ledger, steward.engine, steward.coordinator, quiet, interval=0.2
        )
        ticking = asyncio.create_task(scheduler.run())
        await asyncio.sleep(seconds)
        ticking.cancel()


def lags(home: Path) -> tuple[list[float], int, int, int]:
    with sqlite3.connect(home / "steward.db") as db:
        rows = db.execute(
            "select due_at, fired_at, status from timers where kind = 'wait'"
        ).fetchall()
        done = db.execute("select count(*) from runs where status = 'succeeded'").fetchone()[0]
        twice = db.execute(
            "select count(*) from (select run_id from steps where step_id = 'pause' "
            "group by run_id having count(*) > 1)"
        ).fetchone()[0]
    fired = [
        (datetime.fromisoformat(f) - datetime.fromisoformat(d)).total_seconds()
        for d, f, status in rows
        if status == "fired"
    ]
    return fired, len(rows), int(done), int(twice)


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="steward-bench-") as folder:
        home = Path(folder)
        began = time.monotonic()
        await seed(home, runs)
        seeded = time.monotonic() - began
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.timers", "--schedule", str(home), "--for", "45"
            )
            for _ in range(2)
        ]
        for worker in workers:
            await worker.wait()
        fired, timers, done, twice = lags(home)
    print(f"timers: {runs:,} runs waiting, seeded in {seeded:.1f} s; two scheduler processes")
    print(
        f"  timers {timers:,}, fired {len(fired):,}, runs finished {done:,}, "
        f"runs woken twice {twice}"
    )
    print(
        f"  lag p50 {percentile(fired, 50):.2f} s  p95 {percentile(fired, 95):.2f} s  "
        f"max {max(fired):.2f} s   (target max ≤ 2 s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--schedule", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--for", dest="seconds", type=float, default=45, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.schedule:
        asyncio.run(schedule(arguments.schedule, arguments.seconds))
    else:
        asyncio.run(main(arguments.runs))
