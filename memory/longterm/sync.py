"""Feeds the long-term store from the ledger.

Two streams in the ledger hold what long-term memory keeps, both written as things
happen, in the same transactions as the things themselves: the audit log (a run
started, a draft put up for approval, a decision, an effect, an outcome — turned into
records here, by ``from_audit``, so that the hot path pays nothing for memory) and the
memory journal (the operator's words and steward's answers). This feeds both on, in
order, to whichever store is configured, and keeps in the ledger how far each store has
got in each. So a store that is down misses nothing (its records wait in the ledger), a
new or emptied store is rebuilt by feeding it from the start, and a record whose
embedding failed is stored for keyword search at once and given its vector later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from memory.embeddings import Embedder, EmbeddingFailed, Vector
from memory.ledger import AuditEvent, Ledger, LedgerTx, Outage, Place
from memory.longterm.records import MemoryRecord
from memory.longterm.store import LongTermMemory, MemoryUnavailable

log = logging.getLogger(__name__)

BATCH = 256

# The records an audit event makes (most make none), read in a transaction of the ledger.
FromAudit = Callable[[LedgerTx, AuditEvent], Sequence[dict[str, Any]]]


class MemorySync:
    def __init__(
        self,
        ledger: Ledger,
        store: LongTermMemory,
        embedder: Embedder | None,
        from_audit: FromAudit | None = None,
        batch: int = BATCH,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.embedder = embedder
        self.from_audit = from_audit
        self.batch = batch
        # A store fed with another model's vectors is fed again from the start.
        self.cursor_name = f"{store.name} {embedder.name if embedder else 'keywords'}"
        self.audit_cursor_name = f"{self.cursor_name} audit"
        self._wake = asyncio.Event()
        self._store_down: str | None = None
        self._embedder_down: str | None = None
        self._feeding = asyncio.Lock()
        self._checked = False
        self._stopping = False  # ``run`` ends after the batch it feeds

    async def catch_up(self) -> int:
        """Feeds the store everything the ledger holds for it so far; returns how many
        records.

        Raises MemoryUnavailable when the store does not answer: what is not fed yet
        stays in the ledger for the next try.
        """
        async with self._feeding:
            if not self._checked:
                await self._check_store()
                self._checked = True
            fed = await self._feed_audit() + await self._feed_journal()
            await self._embed_missing()
            return fed

    async def _check_store(self) -> None:
        """A store that was fed but is empty now was lost or replaced: it is fed again.
        One that holds records this feeder never gave it (another embedding model's
        vectors, of another size maybe) is emptied first."""
        fed = await self.ledger.cursor(self.cursor_name)
        fed += await self.ledger.cursor(self.audit_cursor_name)
        held = await self.store.count()
        if fed and held == 0:
            log.warning("%s is empty; rebuilding it from the ledger", self.store.name)
            await self._rewind()
        elif not fed and held:
            log.warning("%s holds records fed otherwise; rebuilding it", self.store.name)
            await self.store.clear()

    async def _rewind(self) -> None:
        await self.ledger.rewind_cursor(self.cursor_name)
        await self.ledger.rewind_cursor(self.audit_cursor_name)

    async def _feed_journal(self) -> int:
        fed = 0
        place = await self.ledger.place(self.cursor_name)
        while entries := await self.ledger.journal_after(place.seq, self.batch):
            records = [MemoryRecord.from_dict(body) for _, body in entries]
            await self.store.upsert(records, await self._vectors(records))
            fed += len(records)
            if not await self._move(self.cursor_name, place, entries[-1][0]):
                break
            place = replace(place, seq=entries[-1][0])
            if self._stopping:
                break
        return fed

    async def _feed_audit(self) -> int:
        convert = self.from_audit
        if convert is None:
            return 0
        fed = 0
        place = await self.ledger.place(self.audit_cursor_name)

        def read(tx: LedgerTx) -> tuple[int, list[dict[str, Any]]]:
            events = tx.audit_after(place.seq, self.batch)
            made = [record for event in events for record in convert(tx, event)]
            return (events[-1].seq if events else place.seq), made

        while True:
            last, made = await self.ledger.read(read)
            if last == place.seq:
                return fed
            if made:
                records = [MemoryRecord.from_dict(body) for body in made]
                await self.store.upsert(records, await self._vectors(records))
                fed += len(records)
            if not await self._move(self.audit_cursor_name, place, last):
                return fed
            place = replace(place, seq=last)
            if self._stopping:
                return fed

    async def _move(self, name: str, read: Place, fed: int) -> bool:
        """Notes that the store was fed up to ``fed``, unless another feeder of the store
        moved the cursor since this one read it at ``read`` (a rebuild in another process
        rewound it, or a feeder beside this one went on): then its move stands and this
        feeder stops, to read the cursor afresh next time."""
        if await self.ledger.move_cursor_from(name, read, fed):
            return True
        log.info("%s was moved by another feeder meanwhile; reading it again next time", name)
        return False

    async def rebuild(self) -> int:
        """Empties the store and feeds it everything again."""
        async with self._feeding:
            await self.store.clear()
            await self._rewind()
            self._checked = True
        return await self.catch_up()

    async def behind(self) -> int:
        """How many journal entries and audit events the store has yet to get."""
        journal = await self.ledger.journal_end()
        journal -= await self.ledger.cursor(self.cursor_name)
        if self.from_audit is None:
            return journal
        audit = await self.ledger.audit_end()
        return journal + audit - await self.ledger.cursor(self.audit_cursor_name)

    def wake(self) -> None:
        """Something was journaled: feed it now rather than at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        """Has ``run`` end once the batch it feeds is fed and noted: cancelled between
        the two, the next start finds records it was not told of, and feeds it all again."""
        self._stopping = True
        self._wake.set()

    async def run(self, every_seconds: float = 5.0, retry_seconds: float = 10.0) -> None:
        """Keeps the store fed until cancelled or stopped; an outage is logged once, and
        its end."""
        try:
            await self._feed_until_stopped(every_seconds, retry_seconds)
        finally:
            self._stopping = False  # a catch_up() after it feeds everything again

    async def _feed_until_stopped(self, every_seconds: float, retry_seconds: float) -> None:
        outage = Outage(log, "feeding long-term memory")
        while not self._stopping:
            pause = every_seconds
            try:
                await self.catch_up()
                outage.worked()
                if self._store_down is not None:
                    log.warning("long-term memory is back (%s); caught up", self.store.name)
                    self._store_down = None
            except MemoryUnavailable as exc:
                if self._store_down is None:
                    log.warning("long-term memory is down, records wait in the ledger: %s", exc)
                self._store_down = str(exc)
                pause = retry_seconds
            except Exception as exc:
                outage.failed(exc)
                pause = retry_seconds
            if self._stopping:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _vectors(self, records: Sequence[MemoryRecord]) -> list[Vector | None]:
        if self.embedder is None:
            return [None] * len(records)
        try:
            vectors: list[Vector | None] = list(
                await self.embedder.embed([r.indexed_text for r in records])
            )
        except EmbeddingFailed as exc:
            self._embedding_failed(exc)
            return [None] * len(records)
        self._embedding_works()
        return vectors

    async def _embed_missing(self) -> None:
        """Gives their vectors to records stored while the embedder failed."""
        if self.embedder is None:
            return
        while waiting := await self.store.unembedded(self.batch):
            try:
                vectors = await self.embedder.embed([r.indexed_text for r in waiting])
            except EmbeddingFailed as exc:
                self._embedding_failed(exc)
                return
            self._embedding_works()
            await self.store.set_vectors(
                {record.id: vector for record, vector in zip(waiting, vectors, strict=True)}
            )
            if len(waiting) < self.batch:
                return

    def _embedding_failed(self, exc: EmbeddingFailed) -> None:
        if self._embedder_down is None:
            log.warning("embedding failed; records are kept and embedded later: %s", exc)
        self._embedder_down = str(exc)

    def _embedding_works(self) -> None:
        if self._embedder_down is not None:
            log.warning("embedding works again (%s)", self.embedder and self.embedder.name)
        self._embedder_down = None
