"""Long-term memory: every message, decision, outcome and artifact, searchable by
keywords and meaning. One interface (``store.LongTermMemory``), two backends
(``embedded``: SQLite FTS5 + sqlite-vec; ``weaviate``), fed from the ledger (``sync``)."""

from memory.longterm.records import (
    Filters,
    Hit,
    MemoryRecord,
    Query,
    RecordKind,
    record_id,
)
from memory.longterm.store import LongTermMemory, MemoryUnavailable

__all__ = [
    "Filters",
    "Hit",
    "LongTermMemory",
    "MemoryRecord",
    "MemoryUnavailable",
    "Query",
    "RecordKind",
    "record_id",
]
