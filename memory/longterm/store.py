"""The one narrow interface of long-term memory, which every backend implements and
``tests/memory/test_long_term_memory.py`` checks: the embedded SQLite store and Weaviate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from memory.ledger.errors import LedgerUnavailable
from memory.longterm.records import Filters, Hit, MemoryRecord, Query


class MemoryUnavailable(LedgerUnavailable):
    """The long-term store does not answer; what it should hold waits in the ledger."""


Vector = list[float]


class LongTermMemory(Protocol):
    # Names the store (backend and place), so the ledger knows how far it has been fed.
    name: str
    # True when the store embeds a query's text itself (Weaviate with a vectorizer).
    embeds_queries: bool

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        """Writes records by id: a record written again replaces itself, never duplicates.
        A record without a vector is found by keywords until ``set_vectors`` gives it one."""
        ...

    async def search(self, query: Query) -> list[Hit]:
        """Best first: keywords (BM25) and vectors fused by relative score with
        ``query.alpha``, within ``query.filters``."""
        ...

    async def latest(self, filters: Filters, limit: int) -> list[MemoryRecord]:
        """The newest records within ``filters``, newest first: what a time holds when
        no word of a question is found in it ("what happened yesterday?")."""
        ...

    async def delete(self, ids: Sequence[str]) -> int:
        """Removes records by id; returns how many there were."""
        ...

    async def count(self, filters: Filters | None = None) -> int: ...

    async def unembedded(self, limit: int) -> list[MemoryRecord]:
        """Records stored without a vector (their embedding failed), oldest first."""
        ...

    async def set_vectors(self, vectors: dict[str, Vector]) -> None: ...

    async def clear(self) -> None:
        """Forgets everything, before a rebuild from the ledger."""
        ...

    async def warm_up(self) -> None:
        """Readies the store for the many questions of a long-running process (the
        embedded store reads its vectors' bits into memory); a one-off question does
        without."""
        ...

    async def close(self) -> None: ...


def fuse(
    keyword: Sequence[tuple[str, float]], vector: Sequence[tuple[str, float]], alpha: float
) -> list[tuple[str, float]]:
    """Relative score fusion, as Weaviate's hybrid search does it: each list's scores
    are scaled to 0..1 (best 1, worst 0), then summed with weights 1 - alpha and alpha.

    Scores are higher-is-better; the result is best first, ties by id (a number, where
    the ids are: "9" before "10") for stability. Of records found equally well the
    newest comes first: see ``ranking``, once the records are read.
    """
    fused: dict[str, float] = {}
    for weight, hits in ((1.0 - alpha, keyword), (alpha, vector)):
        if not hits or weight <= 0:
            continue
        scores = [score for _, score in hits]
        top, bottom = max(scores), min(scores)
        spread = top - bottom
        for key, score in hits:
            scaled = (score - bottom) / spread if spread > 0 else 1.0
            fused[key] = fused.get(key, 0.0) + weight * scaled
    return sorted(fused.items(), key=lambda item: (-item[1], _as_number(item[0])))


def ranking(hit: Hit) -> tuple[float, float]:
    """Orders hits best first and, of equally good ones, newest first: of two quotes
    that match as well, the one that stands is the newer."""
    return (-hit.score, -hit.record.at.timestamp())


def _as_number(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (-1, key)
