"""Two scheduler processes sharing one ledger: every timer fires exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.app import Steward
from bot.settings import load_settings
from tests.homes import home_with
from tests.waiting import until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RUNS = 120
WAITER = """
name: waiter
title: Waiter
description: waits, then is done
steps:
  - id: pause
    kind: wait
    for: 1s
"""


async def test_two_scheduler_processes_fire_each_timer_once(tmp_path: Path) -> None:
    home = home_with(tmp_path, {"waiter": WAITER})
    drivers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bot.scheduler_driver",
            str(home),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for driver in drivers:  # both are ticking before the timers come due
            assert driver.stdout is not None
            assert await asyncio.wait_for(driver.stdout.readline(), 120) == b"ready\n"
        settings = load_settings(home=home, processes_dir=home / "processes")
        async with Steward.open(settings) as steward:
            for _ in range(RUNS):
                await steward.engine.start("waiter", {}, "test")
        await until(lambda: succeeded(home) == RUNS, 120)  # however long the starts took
        for driver in drivers:  # told to stop once every run is done
            assert driver.stdin is not None
            driver.stdin.close()
            assert await asyncio.wait_for(driver.wait(), 120) == 0
    finally:
        for driver in drivers:
            if driver.returncode is None:
                driver.kill()
                await driver.wait()

    with sqlite3.connect(home / "steward.db") as db:
        fired = db.execute(
            "select claimed_by, count(*) from timers where kind = 'wait' and status = 'fired' "
            "group by claimed_by"
        ).fetchall()
        woken = db.execute(
            "select run_id, count(*) from steps where step_id = 'pause' group by run_id"
        ).fetchall()
    assert sum(count for _, count in fired) == RUNS  # whichever process claimed it
    assert len(woken) == RUNS and all(count == 1 for _, count in woken)
    assert succeeded(home) == RUNS


def succeeded(home: Path) -> int:
    with contextlib.closing(sqlite3.connect(home / "steward.db")) as db:
        return int(db.execute("select count(*) from runs where status = 'succeeded'").fetchone()[0])
