"""LangGraph checkpoints on the ledger's database: AsyncSqliteSaver or AsyncPostgresSaver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiosqlite
import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from memory.database_url import DatabaseURL
from memory.ledger.database import SQLITE_BUSY_TIMEOUT_MS
from memory.ledger.errors import LedgerUnavailable


@asynccontextmanager
async def open_checkpointer(url: DatabaseURL) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Opens the saver for the ledger's database and creates its tables."""
    async with AsyncExitStack() as stack:
        saver: BaseCheckpointSaver[str]
        try:
            if url.is_sqlite:
                conn = await aiosqlite.connect(url.sqlite_path)
                stack.push_async_callback(conn.close)
                await conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                await conn.execute("PRAGMA synchronous=FULL")
                sqlite_saver = AsyncSqliteSaver(conn)
                await sqlite_saver.setup()
                saver = sqlite_saver
            else:
                pg_saver = await stack.enter_async_context(
                    AsyncPostgresSaver.from_conn_string(url.libpq)
                )
                await pg_saver.setup()
                saver = pg_saver
        except (OSError, aiosqlite.Error, psycopg.Error) as exc:
            raise LedgerUnavailable(f"cannot open checkpoints at {url}: {exc}") from exc
        yield saver
