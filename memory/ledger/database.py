"""How the ledger reaches its database: one small async interface, two ways to run it.

PostgreSQL goes through SQLAlchemy's async engine with psycopg. SQLite goes through
the standard library driver on one dedicated worker thread: every statement is one
hop to that thread, where aiosqlite (the async driver SQLAlchemy offers) makes four
(cursor, execute, fetch, close) — measured at ~130 hops per operator turn, which made
the ledger, not LangGraph, the slowest part of a turn. SQLite has one writer anyway,
so transactions queue here instead of waiting in SQLite's busy handler — and the
transactions queued while the thread was busy run together as one group commit: one
fsync for all, no caller resumed before the commit that holds its writes, and a
failing caller's batch re-run one transaction each so the failure stays its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Executable, Row, create_engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from memory.database_url import DatabaseURL

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 15_000


class Rows:
    """A statement's result, fully read: safe to use on any thread."""

    def __init__(self, rows: Sequence[Row[Any]], rowcount: int) -> None:
        self._rows = list(rows)
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Row[Any]]:
        return iter(self._rows)

    def all(self) -> list[Row[Any]]:
        return list(self._rows)

    def first(self) -> Row[Any] | None:
        return self._rows[0] if self._rows else None

    def one(self) -> Row[Any]:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.first()
        return None if row is None else row[0]


class DatabaseConnection(Protocol):
    dialect_name: str

    async def execute(self, statement: Executable, params: Any = None) -> Rows: ...

    async def run_sync(self, fn: Callable[[Connection], T]) -> T: ...


class Database(Protocol):
    dialect_name: str

    async def run(self, fn: Callable[[Connection], T], write: bool = True) -> T:
        """Runs ``fn`` in one transaction: committed if it returns, rolled back if it raises."""
        ...

    def begin(self) -> AbstractAsyncContext: ...

    def connect(self) -> AbstractAsyncContext: ...

    async def close(self) -> None: ...


AbstractAsyncContext = Any  # an async context manager yielding a DatabaseConnection


def open_database(url: DatabaseURL) -> Database:
    if url.is_sqlite:
        return ThreadedSqlite(url)
    return AsyncPostgres(create_async_engine(url.sqlalchemy, pool_size=10, pool_pre_ping=True))


# -- PostgreSQL: SQLAlchemy async with psycopg -------------------------------------------


class _AsyncConnection:
    dialect_name = "postgresql"

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, params: Any = None) -> Rows:
        result = await self._conn.execute(statement, params)
        rows = result.all() if result.returns_rows else []
        return Rows(rows, result.rowcount)

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        return await self._conn.run_sync(fn)


class AsyncPostgres:
    dialect_name = "postgresql"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, fn: Callable[[Connection], T], write: bool = True) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[_AsyncConnection]:
        async with self.engine.begin() as conn:
            yield _AsyncConnection(conn)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[_AsyncConnection]:
        async with self.engine.connect() as conn:
            yield _AsyncConnection(conn)

    async def close(self) -> None:
        await self.engine.dispose()


# -- SQLite: the standard driver on one worker thread -------------------------------------


class _ThreadedConnection:
    dialect_name = "sqlite"

    def __init__(self, conn: Connection, call: Callable[..., Any]) -> None:
        self._conn = conn
        self._call = call

    async def execute(self, statement: Executable, params: Any = None) -> Rows:
        return await self._call(_execute, self._conn, statement, params)  # type: ignore[no-any-return]

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        return await self._call(fn, self._conn)  # type: ignore[no-any-return]


def _execute(conn: Connection, statement: Executable, params: Any) -> Rows:
    result = conn.execute(statement, params)
    rows = result.all() if result.returns_rows else []
    return Rows(rows, result.rowcount)


@dataclass(frozen=True)
class _Queued:
    fn: Callable[[Connection], Any]
    write: bool
    done: asyncio.Future[Any]


class ThreadedSqlite:
    dialect_name = "sqlite"

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
        self._lock = asyncio.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn`` on the database thread between transactions (for the checkpointer)."""
        async with self._lock:
            return await asyncio.shield(self._call(fn, *args))

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
                async with self._lock:
                    outcomes = await self._call(self._run_batch, batch)
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

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[_ThreadedConnection]:
        async with self._transaction(write=True) as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[_ThreadedConnection]:
        async with self._transaction(write=False) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[_ThreadedConnection]:
        async with self._lock:
            conn = await self._call(self._open, write)
            try:
                yield _ThreadedConnection(conn, self._call)
            except BaseException:
                await asyncio.shield(self._call(self._close, conn, False))
                raise
            await asyncio.shield(self._call(self._close, conn, write))

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
        await self._call(self._dispose)
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
