"""A long-term store that was down when steward started.

steward starts anyway: each call tries to reach the store (at most once per
``retry_seconds``) and raises MemoryUnavailable until it answers, so records wait in the
ledger's journal and history answers say memory is away. Once connected it is the store.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from memory.longterm.records import Filters, Hit, MemoryRecord, Query
from memory.longterm.store import LongTermMemory, MemoryUnavailable, Vector


class Reconnecting:
    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[LongTermMemory]],
        first_error: MemoryUnavailable,
        retry_seconds: float = 10.0,
        embeds_queries: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.embeds_queries = embeds_queries
        self._connect = connect
        self._error = first_error
        self._clock = clock
        self._tried_at = clock()
        self._retry_seconds = retry_seconds
        self._store: LongTermMemory | None = None

    async def _connected(self) -> LongTermMemory:
        if self._store is not None:
            return self._store
        if self._clock() - self._tried_at < self._retry_seconds:
            raise self._error
        self._tried_at = self._clock()
        try:
            self._store = await self._connect()
        except MemoryUnavailable as exc:
            self._error = exc
            raise
        return self._store

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        await (await self._connected()).upsert(records, vectors)

    async def search(self, query: Query) -> list[Hit]:
        return await (await self._connected()).search(query)

    async def latest(self, filters: Filters, limit: int) -> list[MemoryRecord]:
        return await (await self._connected()).latest(filters, limit)

    async def delete(self, ids: Sequence[str]) -> int:
        return await (await self._connected()).delete(ids)

    async def count(self, filters: Filters | None = None) -> int:
        return await (await self._connected()).count(filters)

    async def unembedded(self, limit: int) -> list[MemoryRecord]:
        return await (await self._connected()).unembedded(limit)

    async def set_vectors(self, vectors: dict[str, Vector]) -> None:
        await (await self._connected()).set_vectors(vectors)

    async def clear(self) -> None:
        await (await self._connected()).clear()

    async def warm_up(self) -> None:
        if self._store is not None:
            await self._store.warm_up()

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
