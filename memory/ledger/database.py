"""How the ledger reaches its database: one small async interface, two ways to run it.

PostgreSQL goes through SQLAlchemy's async engine with psycopg. SQLite goes through
the standard library driver, and its transactions run on the event loop itself: a
ledger transaction is a few statements and one WAL commit, a fraction of a millisecond,
cheaper than any hop to a thread (aiosqlite, the async driver SQLAlchemy offers, makes
four hops per statement — ~130 per operator turn — and even one hop per transaction to
a dedicated thread cost more than the transaction under load). SQLite has one writer
anyway, so transactions queue here instead of waiting in SQLite's busy handler, and
those queued in the same turn of the loop run together as one group commit: one fsync
for all, no caller resumed before the commit that holds its writes, and a failing
caller's batch re-run one transaction each so the failure stays its own.

Only another process (a ``steward approve`` from a shell) can hold the write lock. The
loop never waits for it: a batch that finds the database locked runs again on a worker
thread that waits up to the busy timeout, while the loop goes on.

A write is durable by default: its commit returns once it is on disk. A caller may ask
for less (``durable=False``) where nobody outside the process can learn of the write
before a durable commit comes after it: such a commit survives a crash of this process,
not one of the machine (or of the PostgreSQL server), and the next durable commit that
writes anything, whoever makes it, makes it durable too
(SQLite's WAL and PostgreSQL's WAL are each one log, flushed in order). On SQLite that
is ``synchronous=NORMAL`` for the commit, on PostgreSQL ``synchronous_commit = off``.
``sync()`` puts every such commit made so far on disk, for the moment before the outside
is told: a channel stores a delivery this way, lets its handling go first, and tells its
platform "delivered" once ``sync()`` returns, so the reply never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory.database_url import DatabaseURL
from memory.ledger.errors import WroteWhileReading

T = TypeVar("T")
# Set while a handling that is to write nothing runs (see ``Ledger.reading_only``).
reading_only: ContextVar[bool] = ContextVar("steward_reading_only", default=False)
SQLITE_BUSY_TIMEOUT_MS = 15_000
# A PostgreSQL that takes the connection and never answers (hung, or behind a firewall
# that drops its packets) fails a connect after this long, not never (libpq's default).
CONNECT_SECONDS = 10


class Database(Protocol):
    async def run(
        self, fn: Callable[[Connection], T], write: bool = True, durable: bool = True
    ) -> T:
        """Runs ``fn`` in one transaction: committed if it returns, rolled back if it raises.

        ``durable=False``: the commit does not wait for the disk (see the module docstring).
        """
        ...

    def run_soon(self, fn: Callable[[Connection], Any]) -> asyncio.Future[Any]:
        """Runs ``fn`` as a write that need not wait for the disk, along with the next
        one anybody makes (on SQLite, in the same batch and commit); the future holds
        its outcome. Starts nothing on its own on SQLite: a ``run`` must follow."""
        ...

    commits: Commits

    async def sync(self, everyone: bool = False) -> None:
        """Returns once every commit this process made so far is on disk; with
        ``everyone``, every commit another process made that this one can read, too."""
        ...

    async def close(self) -> None: ...


@dataclass
class Commits:
    """This process's write commits: those that waited for the disk, those that did not,
    and how many of the latter a sync has put on disk since. (A durable commit is no
    proof for the ones before it: one that changed nothing wrote nothing, synced nothing.)
    """

    durable: int = 0
    lazy: int = 0
    synced: int = 0

    def count(self, durable: bool) -> None:
        if durable:
            self.durable += 1
        else:
            self.lazy += 1

    async def sync(self, flush: Callable[[], Awaitable[None]], everyone: bool = False) -> None:
        """Runs ``flush`` if a commit that did not wait may not be on disk yet: one of
        this process's, or with ``everyone``, any (this process cannot count those)."""
        owed = self.lazy
        if everyone or self.synced < owed:
            await flush()
            self.synced = max(self.synced, owed)


def open_database(url: DatabaseURL) -> Database:
    if url.is_sqlite:
        return EmbeddedSqlite(url)
    waiting = {} if "connect_timeout" in url.url.query else {"connect_timeout": CONNECT_SECONDS}
    engine = create_async_engine(
        url.sqlalchemy, pool_size=10, pool_pre_ping=True, connect_args=waiting
    )
    return AsyncPostgres(engine)


# -- PostgreSQL: SQLAlchemy async with psycopg -------------------------------------------


class AsyncPostgres:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.commits = Commits()

    async def run(
        self, fn: Callable[[Connection], T], write: bool = True, durable: bool = True
    ) -> T:
        may_write(write)
        async with self.engine.begin() as conn:
            result = await conn.run_sync(fn if durable else _without_waiting_for_disk(fn))
        if write:
            self.commits.count(durable)
        return result

    def run_soon(self, fn: Callable[[Connection], Any]) -> asyncio.Future[Any]:
        may_write(True)
        return asyncio.ensure_future(self.run(fn, durable=False))

    async def sync(self, everyone: bool = False) -> None:
        await self.commits.sync(self._flush, everyone)

    async def _flush(self) -> None:
        # A durable commit flushes the WAL up to itself, but only a transaction that
        # wrote to the WAL gets one: this one writes a message there (no table, and any
        # role may), which logical decoding would read as steward's, and nothing else does.
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
            await conn.exec_driver_sql("SELECT pg_logical_emit_message(true, 'steward', 'sync')")

    async def close(self) -> None:
        await self.engine.dispose()


def may_write(write: bool) -> None:
    """Raises ``WroteWhileReading`` for a write where only reading is allowed."""
    if write and reading_only.get():
        raise WroteWhileReading("a write where the handling was to write nothing")


def _without_waiting_for_disk(fn: Callable[[Connection], T]) -> Callable[[Connection], T]:
    def run(conn: Connection) -> T:
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        return fn(conn)

    return run


# -- SQLite: the standard driver, on the loop -------------------------------------------


@dataclass(frozen=True)
class _Queued:
    fn: Callable[[Connection], Any]
    write: bool
    durable: bool
    done: asyncio.Future[Any]


# The outcome of a transaction that found another process holding the database: not
# run at all, to be run again on the worker thread.
_LOCKED: tuple[bool, Any] = (False, None)


class EmbeddedSqlite:
    def __init__(self, url: DatabaseURL) -> None:
        self._queue: list[_Queued] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self._conn: Connection | None = None  # one at a time: the loop, or the thread
        self.engine: Engine = create_engine(
            url.url.set(drivername="sqlite"),
            pool_size=1,
            max_overflow=0,
            pool_reset_on_return=None,  # every transaction ends in its own commit or rollback
            connect_args={"check_same_thread": False},  # handed to the thread when locked
        )
        _configure_sqlite(self.engine)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="steward-ledger")
        # Syncs wait on their own thread, never behind a write waiting for a lock.
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="steward-ledger-sync")
        self._disk = _WalSync(url.sqlite_path.absolute())
        self.commits = Commits()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs blocking ``fn`` on the worker thread, off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def sync(self, everyone: bool = False) -> None:
        await self.commits.sync(self._fsync_wal, everyone)

    async def _fsync_wal(self) -> None:
        """The WAL is where commits go; syncing it is what a durable commit does. Off the
        loop, so that the loop goes on meanwhile."""
        await asyncio.get_running_loop().run_in_executor(self._syncer, self._disk.sync)

    async def run(
        self, fn: Callable[[Connection], T], write: bool = True, durable: bool = True
    ) -> T:
        may_write(write)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Queued(fn, write, write and durable, done))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        return await done  # type: ignore[no-any-return]

    def run_soon(self, fn: Callable[[Connection], Any]) -> asyncio.Future[Any]:
        may_write(True)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(fn, True, False, done))
        return done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                outcomes = self._run_batch(batch, patient=False)
                locked = [i for i, outcome in enumerate(outcomes) if outcome is _LOCKED]
                if locked:  # wait for the other process off the loop, then run just those
                    retried = await self.call(self._run_batch, [batch[i] for i in locked], True)
                    for i, outcome in zip(locked, retried, strict=True):
                        outcomes[i] = outcome
                for queued, (ok, value) in zip(batch, outcomes, strict=True):
                    if queued.done.done():
                        continue
                    if ok:
                        queued.done.set_result(value)
                    elif isinstance(value, StopIteration):  # a future cannot hold one
                        queued.done.set_exception(RuntimeError(f"StopIteration: {value}"))
                    else:
                        queued.done.set_exception(value)
                await asyncio.sleep(0)  # let the callers just resumed queue their next work
        finally:
            self._draining = False

    def _run_batch(self, batch: list[_Queued], patient: bool) -> list[tuple[bool, Any]]:
        """One transaction and one commit for the whole batch.

        If any caller's work raises, the batch rolls back and each caller runs again
        in a transaction of its own, so one failure never takes the others with it.
        Impatient (on the loop), a transaction that finds the database locked rolls back
        and its callers' outcome is ``_LOCKED``: nothing of theirs ran.
        """
        write = any(q.write for q in batch)
        durable = any(q.durable for q in batch)
        try:
            conn = self._open(write, durable, patient)
        except Exception as exc:
            if not patient and _is_locked(exc):
                return [_LOCKED] * len(batch)
            return [(False, exc)] * len(batch)
        try:
            outcomes: list[tuple[bool, Any]] = [(True, q.fn(conn)) for q in batch]
            self._close(conn, commit=write)
            if write:
                self.commits.count(durable)
            return outcomes
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._close(conn, commit=False)
            if _is_disk_failure(exc):  # SQLite's own fsync may be what failed
                self._disk.failed = exc
            if not patient and _is_locked(exc):
                return [_LOCKED] * len(batch)
            if len(batch) == 1:
                return [(False, exc)]
        return [outcome for queued in batch for outcome in self._run_batch([queued], patient)]

    def _open(self, write: bool, durable: bool, patient: bool) -> Connection:
        """Begins a transaction on the one connection, kept open between them."""
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        wait_ms = SQLITE_BUSY_TIMEOUT_MS if patient else 0
        _set_pragma(self._conn, "busy_timeout", wait_ms)
        if write:
            _set_pragma(self._conn, "synchronous", "FULL" if durable else "NORMAL")
        self._conn.info["write"] = write
        _begin(_driver(self._conn), write)
        return self._conn

    def _close(self, conn: Connection, commit: bool) -> None:
        try:
            if conn.get_transaction() is not None:  # begun by a statement of SQLAlchemy's
                conn.commit() if commit else conn.rollback()
            else:
                _end(_driver(conn), commit)
        except BaseException:
            # A connection whose transaction ended badly is not reused as it is: the pool
            # (of one, reset by nobody) would hand it back still in that transaction (a
            # COMMIT refused leaves it open), holding the write lock, and every BEGIN
            # after would fail. What is left of it is rolled back; one that cannot be
            # is dropped, and the pool connects again.
            try:
                if _driver(conn).in_transaction:
                    _driver(conn).rollback()
            except Exception:
                with contextlib.suppress(Exception):  # closed already: nothing to drop
                    conn.invalidate()
            conn.close()
            self._conn = None
            raise

    def _dispose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    async def close(self) -> None:
        try:
            if self._drainer is not None:
                await self._drainer
            await self.sync()  # other processes may keep the WAL from being checkpointed
        finally:
            self._dispose()
            self._executor.shutdown(wait=True)
            self._syncer.shutdown(wait=True)
            self._disk.close()


class _WalSync:
    """Puts a SQLite database's WAL on disk as its own durable commit would: the file
    SQLite writes (symbolic links followed), and the directory that holds it when the
    file is new. A failed fsync of the file may have dropped what it was to keep, so
    after one every sync fails: steward must restart and recover from what is on disk.
    (SQLite itself ignores a directory that cannot be synced, and so does this.)"""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._held: int | None = None  # the file last synced, held open: a new one shows
        self.failed: Exception | None = None

    def sync(self) -> None:
        if self.failed is not None:
            raise OSError(
                f"an earlier fsync of the ledger failed ({self.failed}); what it held may "
                "not be on disk: restart steward"
            ) from self.failed
        database = Path(os.path.realpath(self._database))
        try:
            fd = os.open(database.with_name(f"{database.name}-wal"), os.O_RDONLY)
        except FileNotFoundError:
            # Removed only by a checkpoint when the last connection closed, which synced
            # the database file first. (Never open and close the database file itself: a
            # close drops every POSIX lock this process holds on it, SQLite's too.)
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            self.failed = exc
            raise
        if self._held is not None and os.path.sameopenfile(fd, self._held):
            os.close(fd)
            return
        with contextlib.suppress(OSError):
            sync_folder(database.parent)
        self.close()
        self._held = fd

    def close(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None


def sync_folder(folder: Path) -> None:
    """Makes the names in ``folder`` durable: after a power loss, a file made there and
    its contents synced could still be missing, its entry in the folder never written."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _set_pragma(conn: Connection, name: str, value: object) -> None:
    """Sets a connection's pragma between transactions, where it differs."""
    if conn.info.get(name) != value:
        driver = conn.connection.driver_connection  # no transaction for a pragma
        assert driver is not None
        driver.execute(f"PRAGMA {name}={value}")
        conn.info[name] = value


def _is_disk_failure(exc: Exception) -> bool:
    return isinstance(exc, OperationalError) and "disk I/O error" in str(exc.orig)


def _is_locked(exc: Exception) -> bool:
    if not isinstance(exc, OperationalError):
        return False
    message = str(exc.orig)
    return "database is locked" in message or "database is busy" in message


def _configure_sqlite(engine: Engine) -> None:
    """WAL, full fsync, a busy timeout for other processes, BEGIN IMMEDIATE for writers."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        driver = _driver(conn)
        if not driver.in_transaction:  # else begun by _open, as a statement of fn's runs
            _begin(driver, conn.info.get("write", True))


def _driver(conn: Connection) -> sqlite3.Connection:
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def _begin(driver: sqlite3.Connection, write: bool) -> None:
    """Begins a transaction on the driver itself: SQLAlchemy's own begin and commit (its
    transaction objects and events) cost more than SQLite's BEGIN and COMMIT, for every
    transaction. A statement run through SQLAlchemy inside it joins it (``_on_begin``)."""
    _on_driver(driver.execute, "BEGIN IMMEDIATE" if write else "BEGIN")


def _end(driver: sqlite3.Connection, commit: bool) -> None:
    _on_driver(driver.commit if commit else driver.rollback)


def _on_driver(call: Callable[..., Any], *args: str) -> None:
    """Calls the driver; its error raised as SQLAlchemy would raise it ("locked" and disk
    failures are recognised by their SQLAlchemy types)."""
    try:
        call(*args)
    except sqlite3.Error as exc:
        statement = args[0] if args else call.__name__.upper()
        raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
