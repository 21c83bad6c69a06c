"""LangGraph checkpoints in the ledger's database.

PostgreSQL: LangGraph's AsyncPostgresSaver. SQLite: LangGraph's own SqliteSaver (the
same tables as AsyncSqliteSaver) run on the ledger's database thread, one trip per
checkpoint operation. AsyncSqliteSaver goes through aiosqlite, four thread hops per
statement behind a lock of its own, and was measured as the slowest part of a run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from memory.ledger import Ledger
from memory.ledger.database import SQLITE_BUSY_TIMEOUT_MS, ThreadedSqlite
from memory.ledger.errors import LedgerUnavailable


class ThreadedSqliteSaver(SqliteSaver):
    """SqliteSaver whose async methods run on the ledger's database thread."""

    def __init__(self, conn: sqlite3.Connection, db: ThreadedSqlite) -> None:
        super().__init__(conn)
        self.db = db

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self.db.call(self.get_tuple, config)

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

        for item in await self.db.call(collect):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self.db.call(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self.db.call(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self.db.call(self.delete_thread, thread_id)

    async def aget_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return await self.db.call(lambda: self.get_delta_channel_history(*args, **kwargs))


@asynccontextmanager
async def open_checkpointer(ledger: Ledger) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Opens the saver for the ledger's database and creates its tables."""
    async with AsyncExitStack() as stack:
        saver: BaseCheckpointSaver[str]
        try:
            if isinstance(ledger.db, ThreadedSqlite):
                db = ledger.db
                conn = await db.call(_connect_sqlite, str(ledger.url.sqlite_path))
                stack.push_async_callback(db.call, conn.close)
                sqlite_saver = ThreadedSqliteSaver(conn, db)
                await db.call(sqlite_saver.setup)
                saver = sqlite_saver
            else:
                pg_saver = await stack.enter_async_context(
                    AsyncPostgresSaver.from_conn_string(ledger.url.libpq)
                )
                await pg_saver.setup()
                saver = pg_saver
        except (OSError, sqlite3.Error, psycopg.Error) as exc:
            raise LedgerUnavailable(f"cannot open checkpoints at {ledger.url}: {exc}") from exc
        yield saver


def _connect_sqlite(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=FULL")
    return conn
