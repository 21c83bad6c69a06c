"""The embedded SQLite ledger runs on the loop, and never makes the loop wait for a lock.

Another process may hold SQLite's write lock (a ``steward approve`` from a shell). A
write that finds it locked waits on a worker thread instead, while the loop goes on,
and lands as soon as the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, OperationalError

from memory.database_url import DatabaseURL
from memory.ledger import Ledger, database
from memory.ledger.database import EmbeddedSqlite


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
        hops = 0
        db = ledger.db
        assert isinstance(db, EmbeddedSqlite)
        call = db.call

        async def counted(fn: Any, *args: Any) -> Any:
            nonlocal hops
            hops += 1
            return await call(fn, *args)

        db.call = counted  # type: ignore[method-assign]
        assert await ledger.accept_inbound("telegram", "2", {"text": "again"}) is not None
        assert hops == 0
    finally:
        await ledger.close()
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*) from inbox").fetchone() == (2,)


async def test_a_lock_met_while_rerunning_a_failed_batch_runs_each_caller_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch fails on one caller's work; while its callers are re-run one by one, the
    database is found locked. What already committed stays committed once; only the
    callers that did not run go to the worker thread."""
    db = EmbeddedSqlite(DatabaseURL.for_sqlite_file(tmp_path / "x.db"))
    await db.run(lambda conn: conn.execute(text("create table t (v text unique)")))
    locked_now = False
    real_open = db._open
    opened = 0

    def open_or_locked(write: bool, durable: bool, patient: bool) -> Connection:
        nonlocal opened
        opened += 1
        if locked_now and not patient and opened > 2:  # the second re-run meets the lock
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        return real_open(write, durable, patient)

    monkeypatch.setattr(db, "_open", open_or_locked)

    def insert(value: str) -> Any:
        return lambda conn: conn.execute(text("insert into t values (:v)"), {"v": value})

    def broken(conn: Connection) -> None:
        nonlocal locked_now
        locked_now = True
        raise ValueError("this caller's own failure")

    results = await asyncio.gather(
        db.run(insert("a")), db.run(broken), db.run(insert("c")), return_exceptions=True
    )
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], ValueError)
    assert not isinstance(results[2], BaseException)
    rows = await db.run(lambda conn: conn.execute(text("select v from t order by v")).all())
    assert [r[0] for r in rows] == ["a", "c"]
    await db.close()


@pytest.mark.parametrize("through", ["driver", "sqlalchemy"])
async def test_a_commit_refused_leaves_no_transaction_open_for_the_next(
    tmp_path: Path, through: str
) -> None:
    """SQLite refuses a COMMIT that breaks a deferred constraint and keeps the
    transaction open. The connection went back to the pool of one as it was, holding
    the write lock, and every later BEGIN failed: "cannot start a transaction within a
    transaction", the batch's other caller too."""
    db = EmbeddedSqlite(DatabaseURL.for_sqlite_file(tmp_path / "x.db"))
    await db.run(lambda conn: conn.execute(text("create table parent (id integer primary key)")))
    await db.run(
        lambda conn: conn.execute(
            text(
                "create table child (parent integer references parent (id) "
                "deferrable initially deferred)"
            )
        )
    )
    assert db._conn is not None  # between transactions: a pragma takes
    database._driver(db._conn).execute("PRAGMA foreign_keys=ON")

    def orphan(conn: Connection) -> None:
        if through == "driver":  # as the checkpointer writes
            conn.connection.driver_connection.execute("insert into child values (1)")  # type: ignore[union-attr]
        else:
            conn.execute(text("insert into child values (1)"))

    def parent(conn: Connection) -> None:
        conn.execute(text("insert into parent values (2)"))

    with pytest.raises(IntegrityError):
        await db.run(orphan)
    failed, wrote = await asyncio.gather(db.run(orphan), db.run(parent), return_exceptions=True)
    assert isinstance(failed, IntegrityError) and wrote is None, (failed, wrote)
    counts = "select (select count(*) from child), (select count(*) from parent)"
    assert tuple(await db.run(lambda conn: conn.execute(text(counts)).one(), write=False)) == (
        0,
        1,
    )
    await db.close()


async def test_a_write_that_did_not_wait_for_the_disk_survives_a_crash_of_the_process(
    tmp_path: Path,
) -> None:
    """Only a power cut can take it: SIGKILL right after the commit leaves it in the WAL."""
    path = tmp_path / "ledger.db"
    crashing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, os, signal\n"
        "from memory.database_url import DatabaseURL\n"
        "from memory.ledger import Ledger\n"
        "async def main():\n"
        f"    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file({str(path)!r}))\n"
        "    await ledger.setup()\n"
        "    await ledger.accept_inbound('console', 'u1', {'text': '/runs'}, durable=False)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n",
        cwd=Path(__file__).parents[2],
    )
    assert await crashing.wait() == -9
    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(path))
    await ledger.setup()
    try:
        assert [i.external_id for i in await ledger.unhandled_inbound()] == ["u1"]
    finally:
        await ledger.close()


async def test_a_batch_waits_for_the_disk_when_any_of_its_writes_must(tmp_path: Path) -> None:
    db = EmbeddedSqlite(DatabaseURL.for_sqlite_file(tmp_path / "x.db"))

    def synchronous(conn: Connection) -> Any:
        return conn.exec_driver_sql("PRAGMA synchronous").scalar()

    try:
        together = await asyncio.gather(
            db.run(synchronous, durable=False), db.run(synchronous), db.run(synchronous, False)
        )
        assert together == [2, 2, 2]  # one commit for the three: FULL
        assert await db.run(synchronous, durable=False) == 1  # NORMAL
        assert await db.run(synchronous, write=False, durable=True) == 1  # a read commits nothing
    finally:
        await db.close()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real paths of the files the ledger fsyncs, in order."""
    files: list[str] = []
    real = os.fsync

    def recorded(fd: int) -> None:
        files.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(database.os, "fsync", recorded)
    return files


async def test_sync_puts_the_commits_that_did_not_wait_on_disk(
    tmp_path: Path, fsynced: list[str]
) -> None:
    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(tmp_path / "ledger.db"))
    await ledger.setup()
    wal = str(tmp_path / "ledger.db-wal")
    try:
        await ledger.sync()
        assert fsynced == []  # every commit so far waited for the disk itself
        await ledger.accept_inbound("slack", "e1", {"text": "hi"}, durable=False)
        await ledger.sync()
        assert fsynced == [wal, str(tmp_path)]  # the directory too, the first time
        await ledger.sync()
        assert len(fsynced) == 2  # nothing new since
        await ledger.accept_inbound("slack", "e2", {"text": "hi"}, durable=False)
        await ledger.finish_inbound(-1)  # durable, but it changes nothing: no fsync of its own
        await ledger.sync()
        assert fsynced[2:] == [wal]
    finally:
        await ledger.close()


async def test_sync_of_everyone_puts_another_process_commits_on_disk(
    tmp_path: Path, fsynced: list[str]
) -> None:
    """A commit that did not wait, read from another connection (another process), is
    on disk once this one syncs for everyone: the WAL is one file for all of them."""
    url = DatabaseURL.for_sqlite_file(tmp_path / "ledger.db")
    writer, reader = Ledger.from_url(url), Ledger.from_url(url)
    await writer.setup()
    await reader.setup()
    wal = str(tmp_path / "ledger.db-wal")
    try:
        await writer.accept_inbound("slack", "e1", {"text": "hi"}, durable=False)
        assert [item.external_id for item in await reader.unhandled_inbound()] == ["e1"]
        await reader.sync()
        assert fsynced == []  # the reader made no commit of its own to sync
        await reader.sync(everyone=True)
        assert fsynced[0] == wal
    finally:
        await writer.close()
        await reader.close()


async def test_sync_follows_a_symbolic_link_to_the_wal_sqlite_writes(
    tmp_path: Path, fsynced: list[str]
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "ledger.db").touch()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "ledger.db").symlink_to(tmp_path / "real" / "ledger.db")
    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(tmp_path / "home" / "ledger.db"))
    await ledger.setup()
    try:
        await ledger.accept_inbound("slack", "e1", {"text": "hi"}, durable=False)
        await ledger.sync()
        assert not (tmp_path / "home" / "ledger.db-wal").exists()
        assert fsynced[0] == str(tmp_path / "real" / "ledger.db-wal")
    finally:
        await ledger.close()


async def test_after_a_failed_fsync_every_sync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux may drop the pages a failed fsync was to write, and the next fsync then
    succeeds: nothing may be told "delivered" on the strength of it."""
    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(tmp_path / "ledger.db"))
    await ledger.setup()
    db = ledger.db
    assert isinstance(db, EmbeddedSqlite)
    real = os.fsync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    await ledger.accept_inbound("slack", "e1", {"text": "hi"}, durable=False)
    monkeypatch.setattr(database.os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output"):
        await ledger.sync()
    monkeypatch.setattr(database.os, "fsync", real)
    with pytest.raises(OSError, match="restart steward"):
        await ledger.sync()
    with pytest.raises(OSError, match="restart steward"):
        await ledger.close()
    assert db._conn is None  # released all the same


async def test_a_disk_error_in_sqlites_own_commit_fails_every_later_sync(tmp_path: Path) -> None:
    db = EmbeddedSqlite(DatabaseURL.for_sqlite_file(tmp_path / "x.db"))
    await db.run(lambda conn: conn.execute(text("create table t (v text)")))
    await db.run(lambda conn: conn.execute(text("insert into t values ('a')")), durable=False)

    def commit_failed(conn: Connection) -> None:
        cause = sqlite3.OperationalError("disk I/O error")
        raise OperationalError("COMMIT", {}, cause)

    with pytest.raises(OperationalError):
        await db.run(commit_failed)
    with pytest.raises(OSError, match="restart steward"):
        await db.sync()
    with contextlib.suppress(OSError):
        await db.close()


async def test_a_handling_left_to_be_handled_again_writes_nothing_while_the_lock_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handling that failed (the ledger locked, say) and leaves its delivery to be
    handled again (``failed=None``) has nothing to write: its error comes out as it is,
    not after a transaction of nothing waited out the lock again and failed in its place."""
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 500)
    path = tmp_path / "ledger.db"
    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(path))
    await ledger.setup()
    try:
        inbox_id = await ledger.accept_inbound("hook:form", "1", {"client": "Acme"})
        assert inbox_id is not None
        holder = sqlite3.connect(path, isolation_level=None)  # another connection's lock
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(ValueError, match="the start failed"):
                async with ledger.handling(inbox_id, failed=None) as handling:
                    raise ValueError("the start failed")
        finally:
            holder.execute("COMMIT")
            holder.close()
        assert handling.marked is None
        assert [i.id for i in await ledger.unhandled_inbound()] == [inbox_id]
    finally:
        await ledger.close()
