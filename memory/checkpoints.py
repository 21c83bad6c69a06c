"""LangGraph checkpoints in the ledger's database.

PostgreSQL: LangGraph's AsyncPostgresSaver. SQLite: LangGraph's own SqliteSaver (the
same tables as AsyncSqliteSaver) run inside the ledger's queued transactions, one trip
per checkpoint operation. AsyncSqliteSaver goes through aiosqlite, four thread hops per
statement behind a lock and a commit of its own, and was measured as the slowest part
of a run.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Connection

from memory.ledger import Ledger
from memory.ledger.database import EmbeddedSqlite
from memory.ledger.errors import LedgerUnavailable

T = TypeVar("T")
CHECKPOINT_CONNECTIONS = 10  # as many as the ledger's own pool
_SETTING_UP = 0x43_48_4B_50  # "CHKP": the advisory lock the saver's setup holds
CONNECT_SECONDS = 10.0
# A checkpoint is read as data: it may bring back the types LangGraph keeps itself (its
# own, dates, decimals…), never call a function it names, as LangGraph's default reading
# does for a row whoever can write the database wrote, or an export someone handed over.
SERDE = JsonPlusSerializer(allowed_msgpack_modules=None)
# A thread's latest checkpoint, read ahead and handed to one task's next read of it
# (tasks started meanwhile inherit the variable, not the hand-off).
_handed: ContextVar[tuple[asyncio.Task[Any] | None, str, CheckpointTuple | None] | None] = (
    ContextVar("steward_checkpoint_handed", default=None)
)


class LedgerSqliteSaver(SqliteSaver):
    """SqliteSaver writing inside the ledger's transactions, on the ledger's connection.

    Its statements run on the ledger connection of the transaction they are queued in.
    Inside ``Ledger.batching()`` its writes are deferred to the block's next ledger
    write, so a run's checkpoint and the ledger record of where it stopped commit
    together, in one fsync. A run about to be resumed can have its latest checkpoint
    read inside the transaction that decided it (``read_latest``) and handed to the
    resume (``resuming``), which then takes it instead of reading it on a trip of its own.
    """

    def __init__(self, ledger: Ledger, db: EmbeddedSqlite) -> None:
        idle = sqlite3.connect(":memory:", check_same_thread=False)
        # Its connection is replaced by the ledger's for each operation.
        super().__init__(idle, serde=SERDE)
        idle.close()
        self.ledger = ledger
        self.db = db
        self.is_setup = True  # the tables come from create_tables(), once, at open

    @contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        """A cursor inside the ledger's open transaction; the transaction commits it."""
        cur = self.conn.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def _on(self, conn: Connection, fn: Callable[..., T], *args: Any) -> T:
        # The ledger runs one transaction at a time, so one connection at a time is here.
        self.conn = conn.connection.dbapi_connection  # type: ignore[assignment]
        return fn(*args)

    async def _run(self, fn: Callable[..., T], *args: Any, write: bool = True) -> T:
        return await self.db.run(lambda conn: self._on(conn, fn, *args), write=write)

    async def _write(self, fn: Callable[..., Any], *args: Any) -> None:
        _handed.set(None)  # what was read ahead is old now
        if not self.ledger.defer(lambda tx: self._on(tx.conn, fn, *args), droppable=True):
            await self._run(fn, *args)

    def read_latest(self, conn: Connection, thread_id: str) -> CheckpointTuple | None:
        """The thread's latest checkpoint, read in the caller's transaction."""
        return self._on(conn, self.get_tuple, _latest(thread_id))

    def read_each(self, conn: Connection, keep: Callable[[CheckpointTuple], None]) -> None:
        """Hands ``keep`` every checkpoint, the newest first, one at a time as read in the
        caller's transaction."""

        def each() -> None:
            for saved in self.list(None):
                keep(saved)

        self._on(conn, each)

    @contextmanager
    def resuming(self, thread_id: str, latest: CheckpointTuple | None) -> Iterator[None]:
        """Hands ``latest`` (from ``read_latest``) to the next read of the thread's latest
        checkpoint in this task — the resume's first — instead of a trip of its own. Any
        write of a checkpoint in this task first makes it old; it never outlives the block.
        """
        token = _handed.set((asyncio.current_task(), thread_id, latest))
        try:
            yield
        finally:
            _handed.reset(token)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        handed = _handed.get()
        if handed is not None and handed[0] is asyncio.current_task():
            _handed.set(None)  # taken once
            _, thread_id, latest = handed
            configurable = config["configurable"]
            root = configurable["thread_id"] == thread_id and not configurable.get("checkpoint_ns")
            if root and not get_checkpoint_id(config):  # the thread's latest, as read ahead
                return latest
        return await self._run(self.get_tuple, config, write=False)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> list[CheckpointTuple]:
            return list(self.list(config, filter=filter, before=before, limit=limit))

        for item in await self._run(collect, write=False):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self._write(self.put, config, checkpoint, metadata, new_versions)
        return {
            "configurable": {
                "thread_id": config["configurable"]["thread_id"],
                "checkpoint_ns": config["configurable"]["checkpoint_ns"],
                "checkpoint_id": checkpoint["id"],
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._write(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        _handed.set(None)
        await self._run(self.delete_thread, thread_id)

    async def aget_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return await self._run(lambda: self.get_delta_channel_history(*args, **kwargs))

    @staticmethod
    def create_tables(path: str) -> None:
        """SqliteSaver's own schema, created once, on a connection of its own."""
        conn = sqlite3.connect(path)
        try:
            SqliteSaver(conn).setup()
        finally:
            conn.close()


async def read_at_once(
    ledger: Ledger,
    saver: BaseCheckpointSaver[str],
    fn: Callable[[Connection], T],
    keep: Callable[[CheckpointTuple], None],
) -> T:
    """What ``fn`` reads of the ledger, and every checkpoint handed to ``keep``, as of one
    moment: on SQLite in one transaction; on PostgreSQL in two that share a snapshot. The
    checkpoints are handed over as read, a thread's at a time at most, never all at once."""
    if isinstance(saver, LedgerSqliteSaver):

        def both(conn: Connection) -> T:
            read = fn(conn)
            saver.read_each(conn, keep)
            return read

        return await ledger.db.run(both, write=False)
    if not isinstance(saver, AsyncPostgresSaver):
        read = await ledger.db.run(fn, write=False)
        async for saved in saver.alist(None):
            keep(saved)
        return read
    pool = saver.conn
    assert isinstance(pool, AsyncConnectionPool)  # as open_checkpointer made it
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        exported = await (await conn.execute("SELECT pg_export_snapshot() AS id")).fetchone()
        assert exported is not None

        def in_snapshot(ledger_conn: Connection) -> T:
            ledger_conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            ledger_conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{exported['id']}'")
            return fn(ledger_conn)

        read = await ledger.db.run(in_snapshot, write=False)
        pinned = AsyncPostgresSaver(conn, serde=saver.serde)
        # The saver's list fetches all it finds at once: a thread's, not every thread's.
        threads = await conn.execute("SELECT DISTINCT thread_id FROM checkpoints")
        for thread in [row["thread_id"] async for row in threads]:
            async for saved in pinned.alist({"configurable": {"thread_id": thread}}):
                keep(saved)
        return read


def _latest(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


@asynccontextmanager
async def open_checkpointer(ledger: Ledger) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Opens the saver for the ledger's database and creates its tables."""
    async with AsyncExitStack() as stack:
        saver: BaseCheckpointSaver[str]
        try:
            if isinstance(ledger.db, EmbeddedSqlite):
                path = str(ledger.url.sqlite_path)
                await ledger.db.call(LedgerSqliteSaver.create_tables, path)
                saver = LedgerSqliteSaver(ledger, ledger.db)
            else:
                pool = await _postgres_pool(ledger.url.libpq)
                stack.push_async_callback(pool.close)
                pg_saver = AsyncPostgresSaver(pool, serde=SERDE)
                await _one_setup_at_a_time(pool, pg_saver.setup)
                saver = pg_saver
        except (OSError, sqlite3.Error, psycopg.Error, PoolTimeout) as exc:
            raise LedgerUnavailable(f"cannot open checkpoints at {ledger.url}: {exc}") from exc
        yield saver


async def _one_setup_at_a_time(
    pool: AsyncConnectionPool[Any], setup: Callable[[], Awaitable[None]]
) -> None:
    """Runs ``setup`` holding a session lock, so that stewards starting together on a new
    database do not create the saver's tables twice (one of them failed its start). The
    others ask for the lock again and again, never waiting inside a statement: the setup
    creates an index CONCURRENTLY, which waits for every transaction under way."""
    async with pool.connection() as conn:
        while not await _took_lock(conn):  # noqa: ASYNC110 (the other is another process)
            await asyncio.sleep(0.05)
        try:
            await setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETTING_UP,))


async def _took_lock(conn: psycopg.AsyncConnection[Any]) -> bool:
    asked = await conn.execute("SELECT pg_try_advisory_lock(%s) AS took", (_SETTING_UP,))
    taken = await asked.fetchone()
    return bool(taken and taken["took"])


async def _postgres_pool(conninfo: str) -> AsyncConnectionPool[Any]:
    """Connections for the checkpoints, as AsyncPostgresSaver.from_conn_string makes its
    one, each checked before use: after a restart of PostgreSQL (or a connection it
    dropped) the next checkpoint gets a new one, where the saver's single connection
    stayed closed and failed every run until steward restarted."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=CHECKPOINT_CONNECTIONS,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=AsyncConnectionPool.check_connection,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=CONNECT_SECONDS)
    except BaseException:
        await pool.close()
        raise
    return pool
