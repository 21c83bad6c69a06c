"""How the ledger reaches its database: one small async interface, two ways to run it.

PostgreSQL goes through SQLAlchemy's async engine with psycopg. SQLite goes through
the standard library driver on one dedicated worker thread: every transaction is one
hop to that thread, where aiosqlite (the async driver SQLAlchemy offers) makes four per
statement (cursor, execute, fetch, close) — measured at ~130 hops per operator turn,
which made the ledger, not LangGraph, the slowest part of a turn. SQLite has one writer anyway,
so transactions queue here instead of waiting in SQLite's busy handler — and the
transactions queued while the thread was busy run together as one group commit: one
fsync for all, no caller resumed before the commit that holds its writes, and a
failing caller's batch re-run one transaction each so the failure stays its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory.database_url import DatabaseURL

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 15_000


class Database(Protocol):
    async def run(self, fn: Callable[[Connection], T], write: bool = True) -> T:
        """Runs ``fn`` in one transaction: committed if it returns, rolled back if it raises."""
        ...

    async def close(self) -> None: ...


def open_database(url: DatabaseURL) -> Database:
    if url.is_sqlite:
        return ThreadedSqlite(url)
    return AsyncPostgres(create_async_engine(url.sqlalchemy, pool_size=10, pool_pre_ping=True))


# -- PostgreSQL: SQLAlchemy async with psycopg -------------------------------------------


class AsyncPostgres:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, fn: Callable[[Connection], T], write: bool = True) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        await self.engine.dispose()


# -- SQLite: the standard driver on one worker thread -------------------------------------


@dataclass(frozen=True)
class _Queued:
    fn: Callable[[Connection], Any]
    write: bool
    done: asyncio.Future[Any]


class ThreadedSqlite:
    def __init__(self, url: DatabaseURL) -> None:
        self._queue: list[_Queued] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self._conn: Connection | None = None  # used only on the database thread
        self.engine: Engine = create_engine(
            url.url.set(drivername="sqlite"),
            pool_size=1,
            max_overflow=0,
            pool_reset_on_return=None,  # every transaction ends in its own commit or rollback
        )
        _configure_sqlite(self.engine)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="steward-ledger")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn`` on the database thread, between two of its transactions.

        The thread runs one job at a time, and every transaction is one job, so nothing
        else is needed to keep transactions apart.
        """
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, fn: Callable[[Connection], T], write: bool = True) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Queued(fn, write, done))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        return await done  # type: ignore[no-any-return]

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                outcomes = await self.call(self._run_batch, batch)
                for queued, (ok, value) in zip(batch, outcomes, strict=True):
                    if queued.done.done():
                        continue
                    if ok:
                        queued.done.set_result(value)
                    elif isinstance(value, StopIteration):  # a future cannot hold one
                        queued.done.set_exception(RuntimeError(f"StopIteration: {value}"))
                    else:
                        queued.done.set_exception(value)
        finally:
            self._draining = False

    def _run_batch(self, batch: list[_Queued]) -> list[tuple[bool, Any]]:
        """One transaction and one commit for the whole batch.

        If any caller's work raises, the batch rolls back and each caller runs again
        in a transaction of its own, so one failure never takes the others with it.
        """
        write = any(q.write for q in batch)
        try:
            conn = self._open(write)
        except Exception as exc:
            return [(False, exc)] * len(batch)
        try:
            outcomes: list[tuple[bool, Any]] = [(True, q.fn(conn)) for q in batch]
            self._close(conn, commit=write)
            return outcomes
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._close(conn, commit=False)
            if len(batch) == 1:
                return [(False, exc)]
        return [outcome for queued in batch for outcome in self._run_batch([queued])]

    def _open(self, write: bool) -> Connection:
        """Begins a transaction on the thread's one connection, kept open between them."""
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        self._conn.info["write"] = write
        self._conn.begin()
        return self._conn

    def _close(self, conn: Connection, commit: bool) -> None:
        try:
            if commit:
                conn.commit()
            else:
                conn.rollback()
        except BaseException:
            conn.close()  # a connection whose transaction ended badly is not reused
            self._conn = None
            raise

    def _dispose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    async def close(self) -> None:
        if self._drainer is not None:
            await self._drainer
        await self.call(self._dispose)
        self._executor.shutdown(wait=True)


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
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write", True) else "BEGIN")
