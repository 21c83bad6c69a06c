"""The embedded SQLite ledger runs on the loop, and never makes the loop wait for a lock.

Another process may hold SQLite's write lock (a ``steward approve`` from a shell). A
write that finds it locked waits on a worker thread instead, while the loop goes on,
and lands as soon as the lock is released.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from memory.database_url import DatabaseURL
from memory.ledger import Ledger


async def test_a_write_waits_off_the_loop_while_another_process_holds_the_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(path))
    await ledger.setup()
    try:
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "db.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(1.0)\n"
            "db.execute('COMMIT')\n",
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"locked\n"

        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        loop = asyncio.get_running_loop()
        started = loop.time()
        inbox_id = await ledger.accept_inbound("telegram", "1", {"text": "hello"})
        waited = loop.time() - started
        ticker.cancel()
        await holder.wait()

        assert inbox_id is not None
        assert waited >= 0.5  # it did wait for the other process …
        assert ticks >= waited / 0.01 * 0.5  # … and the loop kept running meanwhile
        assert [i.id for i in await ledger.unhandled_inbound("telegram")] == [inbox_id]
        # and the fast path is back: the next write needs no thread
        assert await ledger.accept_inbound("telegram", "2", {"text": "again"}) is not None
    finally:
        await ledger.close()
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from inbox").fetchone() == (2,)
