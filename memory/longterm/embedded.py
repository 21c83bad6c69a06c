"""The embedded long-term store: one SQLite file with FTS5 for keywords and sqlite-vec
for vectors, the default when no Weaviate is configured.

Python's own ``sqlite3`` here cannot load extensions, so this file is opened with
sqlean-py, a build of SQLite that can; the ledger and LangGraph's checkpointer keep
their own connections. A vector is kept twice: as float32 (``floats``), and
binary-quantised, one bit per dimension, in a sqlite-vec ``vec0`` table (``bits``),
whose bits a long-running process (``warm_up``) also holds in memory (``SignBits``). A
search takes the nearest neighbours by Hamming distance from the bits — of every record,
or of the records the filters match — a few times more than it needs, and orders them
by cosine distance on the floats. Vectors live apart from the records so that a keyword
search reads small rows. Another process's commits (``PRAGMA data_version`` tells) are
taken in from a log of the vectors they changed.

Nothing here must survive a crash: the ledger's memory journal can rebuild it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlean
import sqlite_vec

from memory.longterm.records import Filters, Hit, MemoryRecord, Query, RecordKind
from memory.longterm.sign_bits import SignBits, sign_bits
from memory.longterm.store import MemoryUnavailable, Vector, fuse, ranking
from memory.longterm.unspaced import MARKS, WORD, in_pairs, unspaced

T = TypeVar("T")

# Candidates each side brings to the fusion (at least, and per result wanted), and how
# many bit-vector neighbours are taken per candidate before the float vectors decide.
CANDIDATES = 30
PER_RESULT = 3
OVERSAMPLE = 3

# Words are kept as unicode61 reads them, with the marks of letters of the scripts
# written without spaces (``unspaced``), whose runs of letters are indexed as pairs.
KEYWORD_INDEX = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5 (
    text, entity, content='records', content_rowid='rowid',
    tokenize="porter unicode61 remove_diacritics 2 tokenchars '{MARKS}'"
);
"""
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS records (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    run_id TEXT,
    entity TEXT,
    chat TEXT,
    source TEXT NOT NULL,
    embedded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_at ON records (at);
CREATE INDEX IF NOT EXISTS records_entity ON records (entity, at);
CREATE INDEX IF NOT EXISTS records_run ON records (run_id, at);
CREATE INDEX IF NOT EXISTS records_unembedded ON records (at) WHERE embedded = 0;
CREATE TABLE IF NOT EXISTS floats (rowid INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vector_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rowid_changed INTEGER NOT NULL
);
"""
    + KEYWORD_INDEX
)
# How many vector changes the log keeps for other processes to catch up with; one that
# fell further behind reads all the bits again.
CHANGES_KEPT = 50_000
ALL_DROPPED = -1  # logged for a drop of every vector (a new model, a clear)
RE_READ_AFTER = 20_000  # changes by others past which reading every bit again is quicker
VEC0_MAX_K = 4_096  # the most neighbours sqlite-vec's vec0 gives in one query

# A record's words count fully, the name of what it is about (its client, say) by half.
BM25 = "bm25(records_fts, 1.0, 0.5)"
# Bumped when the tables change: a store of another version is emptied and, being empty,
# fed again from the ledger's journal; one of KEYWORDS_CHANGED has its keyword index made
# again from its records, in place.
VERSION = "5"
# Version 3 kept a run of Chinese, Japanese or Thai as one word; 4, a Korean word with
# what is joined to it ("아크미에게").
KEYWORDS_CHANGED = ("3", "4")

# Words too common to help a keyword search find anything.
STOPWORDS = frozenset(
    """a about after again all am an and any are as at be been before being but by can
    could did do does doing for from had has have how i if in into is it its me my of on
    or our out over so than that the their them then there these they this to too under
    up us was we were what when where which while who whom why will with would you your
    didn don""".split()
)


def keyword_query(text: str, every_word: bool = False) -> str | None:
    """An FTS5 query that finds records with any of the text's words (``every_word``:
    with all of them), each one quoted, so user text can never be read as FTS5 syntax, a
    run of a script written without spaces as its pairs of letters; None when no word
    is left."""
    words = [
        w
        for w in WORD.findall(in_pairs(text).lower())
        if (len(w) > 1 or unspaced(w)) and w not in STOPWORDS
    ]
    unique = list(dict.fromkeys(words))
    return (" AND " if every_word else " OR ").join(f'"{word}"' for word in unique) or None


class EmbeddedMemory:
    embeds_queries = False

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        self.name = f"embedded:{self.path or ':memory:'}"
        try:  # a full disk, a folder in the way: one line, not a traceback
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlean.connect(str(path), check_same_thread=False, isolation_level=None)
        except (OSError, sqlean.Error) as exc:
            raise MemoryUnavailable(f"cannot open long-term memory at {path}: {exc}") from exc
        try:
            self._conn.enable_load_extension(True)
            sqlite_vec.load(self._conn)
            self._conn.enable_load_extension(False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # the ledger can rebuild it all
            self._conn.executescript(SCHEMA)
            self._upgrade()
            self._dims = self._stored_dims()
        except sqlean.Error as exc:
            self._conn.close()
            raise MemoryUnavailable(f"cannot open long-term memory at {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._signs: SignBits | None = None  # read when a search first needs them
        self._version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        self._seen = 0  # the last change in the log the bits in memory hold
        self._logged = 0  # the last change this process logged
        self._hold_bits = False  # until warm_up: a one-off search asks sqlite-vec
        self._changed_signs: dict[int, bytes | None] = {}  # in the open transaction
        self._signs_dropped = False  # all vectors dropped in the open transaction

    # -- the interface -------------------------------------------------------------------

    async def upsert(
        self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]
    ) -> None:
        if len(records) != len(vectors):
            raise ValueError("one vector (or None) per record")
        await self._run(lambda: self._upsert(records, vectors))

    async def search(self, query: Query) -> list[Hit]:
        return await self._run(lambda: self._search(query))

    async def latest(self, filters: Filters, limit: int) -> list[MemoryRecord]:
        where, params = _where(filters)
        sql = f"SELECT {_COLUMNS} FROM records r WHERE {where} ORDER BY r.at DESC, r.rowid DESC"
        return await self._run(
            lambda: [_record(r) for r in self._conn.execute(f"{sql} LIMIT ?", [*params, limit])]
        )

    async def delete(self, ids: Sequence[str]) -> int:
        return await self._run(lambda: self._delete(ids))

    async def count(self, filters: Filters | None = None) -> int:
        where, params = _where(filters or Filters())
        sql = f"SELECT count(*) FROM records r WHERE {where}"
        return await self._run(lambda: int(self._conn.execute(sql, params).fetchone()[0]))

    async def unembedded(self, limit: int) -> list[MemoryRecord]:
        sql = f"SELECT {_COLUMNS} FROM records r WHERE embedded = 0 ORDER BY at LIMIT ?"
        return await self._run(lambda: [_record(r) for r in self._conn.execute(sql, (limit,))])

    async def set_vectors(self, vectors: dict[str, Vector]) -> None:
        await self._run(lambda: self._set_vectors(vectors))

    async def clear(self) -> None:
        def clear() -> None:
            with self._transaction():
                self._conn.execute("DELETE FROM records")
                self._conn.execute("INSERT INTO records_fts (records_fts) VALUES ('delete-all')")
                self._drop_vectors()

        await self._run(clear)

    async def warm_up(self) -> None:
        """From now on searches scan the bits in memory; they are read now."""

        def read() -> None:
            self._hold_bits = True
            with self._snapshot():
                if self._dims is not None and self._signs is None:
                    self._read_bits()

        await self._run(read)

    async def close(self) -> None:
        await self._run(self._conn.close)

    # -- on the database's side ----------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        return await asyncio.to_thread(locked)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction, caught up with other processes: the bits, the records and
        the vectors of one moment."""
        self._conn.execute("BEGIN")
        try:
            self._catch_up()
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn, self._catch_up, self._after)

    def _catch_up(self) -> None:
        """Takes in what another process changed since this one last looked (``PRAGMA
        data_version`` tells): the vectors' size, and the bits of the vectors it wrote
        or removed, from the change log (all of them, after a new size or a long gap)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return
        try:
            self._take_in_others_changes()
        except BaseException:
            self._signs = None  # half taken in: read them all again when next needed
            raise
        self._version = version

    def _take_in_others_changes(self) -> None:
        dims = self._stored_dims()
        if self._signs is None or dims != self._dims:
            self._dims, self._signs = dims, None
            return
        changed = [
            row[0]
            for row in self._conn.execute(
                "SELECT DISTINCT rowid_changed FROM vector_changes WHERE seq > ?", (self._seen,)
            )
        ]
        oldest = self._conn.execute("SELECT min(seq) FROM vector_changes").fetchone()[0]
        if (
            ALL_DROPPED in changed
            or len(changed) > RE_READ_AFTER
            or (oldest is not None and oldest > self._seen + 1)
        ):
            self._signs = None  # dropped, too many to look up, or trimmed past what was seen
            return
        bits: dict[int, bytes | None] = dict.fromkeys(changed)
        for rowid in changed:  # one by one: vec0 scans the whole table for an IN (…)
            row = self._conn.execute("SELECT embedding FROM bits WHERE rowid = ?", (rowid,))
            found = row.fetchone()
            bits[rowid] = found[0] if found else None
        self._signs.apply(bits)
        self._seen = self._last_change()

    def _after(self, committed: bool) -> None:
        """After a transaction of this process's: the bits in memory change with it, if it
        committed; the vectors' size is read again either way (a rolled-back one may
        have changed it on the way)."""
        changed, self._changed_signs = self._changed_signs, {}
        dropped, self._signs_dropped = self._signs_dropped, False
        logged, self._logged = self._logged, 0  # a rolled-back seq is given out again
        if self._signs is not None:
            if committed and not dropped:
                self._signs.apply(changed)
                self._seen = max(self._seen, logged)
            else:
                self._signs = None
        self._dims = self._stored_dims()

    def _nearest_bits(self, query: bytes, k: int, among: list[int] | None) -> list[int] | None:
        """The rowids nearest by the bits in memory; None when this process does not
        hold them (no ``warm_up``: a one-off question from a shell would pay more for
        reading them all than for asking sqlite-vec)."""
        if not self._hold_bits:
            return None
        if self._signs is None:
            self._read_bits()
        assert self._signs is not None
        return self._signs.nearest(query, k, among)

    def _read_bits(self) -> None:
        assert self._dims is not None
        self._seen = self._last_change()
        rows = self._conn.execute("SELECT rowid, embedding FROM bits")
        self._signs = SignBits.load(self._dims, rows)

    def _last_change(self) -> int:
        return int(
            self._conn.execute("SELECT coalesce(max(seq), 0) FROM vector_changes").fetchone()[0]
        )

    def _upsert(self, records: Sequence[MemoryRecord], vectors: Sequence[Vector | None]) -> None:
        conn = self._conn
        with self._transaction():
            for chunk in _chunks(list(zip(records, vectors, strict=True)), 500):
                ids = [record.id for record, _ in chunk]
                marks = ",".join("?" * len(ids))
                known = {
                    row[1]: (row[0], row[2], row[3])
                    for row in conn.execute(
                        f"SELECT rowid, id, text, entity FROM records WHERE id IN ({marks})", ids
                    )
                }
                for record, vector in chunk:
                    blob = self._blob(vector)
                    old = known.get(record.id)
                    if old is not None:
                        rowid, old_text, old_entity = old
                        self._unindex(rowid, old_text, old_entity)
                        conn.execute(
                            "UPDATE records SET kind=?, text=?, at=?, actor=?, run_id=?, "
                            "entity=?, chat=?, source=?, embedded=? WHERE rowid=?",
                            (*_values(record), blob is not None, rowid),
                        )
                        self._forget_vector(rowid)
                        known[record.id] = (rowid, record.text, record.entity)  # again, later
                    else:
                        rowid = conn.execute(
                            "INSERT INTO records (id, kind, text, at, actor, run_id, entity, "
                            "chat, source, embedded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (record.id, *_values(record), blob is not None),
                        ).lastrowid
                        known[record.id] = (rowid, record.text, record.entity)
                    self._index(rowid, record.text, record.entity)
                    if vector is not None and blob is not None:
                        self._keep_vector(rowid, vector, blob)

    def _index(self, rowid: int, text: str, entity: str | None) -> None:
        self._conn.execute(
            "INSERT INTO records_fts (rowid, text, entity) VALUES (?, ?, ?)",
            (rowid, *_keywords(text, entity)),
        )

    def _unindex(self, rowid: int, text: str, entity: str | None) -> None:
        """Takes a record's words out of the keyword index, as ``_index`` put them in."""
        self._conn.execute(
            "INSERT INTO records_fts (records_fts, rowid, text, entity) VALUES ('delete', ?, ?, ?)",
            (rowid, *_keywords(text, entity)),
        )

    def _keep_vector(self, rowid: int, vector: Vector, blob: bytes) -> None:
        bits = sign_bits(vector)
        self._conn.execute("INSERT INTO floats (rowid, vector) VALUES (?, ?)", (rowid, blob))
        self._conn.execute(
            "INSERT INTO bits (rowid, embedding) VALUES (?, vec_bit(?))", (rowid, bits)
        )
        self._changed_signs[rowid] = bits
        self._log_change(rowid)

    def _forget_vector(self, rowid: int) -> None:
        self._conn.execute("DELETE FROM floats WHERE rowid = ?", (rowid,))
        if self._dims is not None:
            self._conn.execute("DELETE FROM bits WHERE rowid = ?", (rowid,))
            self._changed_signs[rowid] = None
            self._log_change(rowid)

    def _log_change(self, rowid: int) -> None:
        seq = self._conn.execute(
            "INSERT INTO vector_changes (rowid_changed) VALUES (?)", (rowid,)
        ).lastrowid
        self._logged = seq
        if seq % 1_000 == 0:
            self._conn.execute("DELETE FROM vector_changes WHERE seq <= ?", (seq - CHANGES_KEPT,))

    def _blob(self, vector: Vector | None) -> bytes | None:
        """The vector as float32 bytes; the first vector, or one of another size (a new
        model), sets the dimensions and drops the vectors of the old size."""
        if vector is None:
            return None
        if self._dims != len(vector):
            if len(vector) % 8:
                raise ValueError(f"vectors need a multiple of 8 dimensions, not {len(vector)}")
            self._drop_vectors()
            self._conn.execute(
                f"CREATE VIRTUAL TABLE bits USING vec0 (embedding bit[{len(vector)}])"
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('dims', ?)", (str(len(vector)),)
            )
            self._dims = len(vector)
        return bytes(sqlite_vec.serialize_float32(vector))

    def _drop_vectors(self) -> None:
        self._signs_dropped = True  # every process reads the bits again
        self._log_change(ALL_DROPPED)
        self._conn.execute("DROP TABLE IF EXISTS bits")
        self._conn.execute("DELETE FROM floats")
        self._conn.execute("UPDATE records SET embedded = 0 WHERE embedded = 1")
        self._conn.execute("DELETE FROM meta WHERE key = 'dims'")
        self._dims = None

    def _upgrade(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        if row is not None and row[0] == VERSION:
            return
        if row is not None and row[0] in KEYWORDS_CHANGED:
            self._index_again()
            return
        empty = self._conn.execute("SELECT count(*) FROM records").fetchone()[0] == 0
        if row is not None or not empty:  # an older layout: start again
            for table in ("records_fts", "bits", "floats", "records", "meta"):
                self._conn.execute(f"DROP TABLE IF EXISTS {table}")
            self._conn.executescript(SCHEMA)
        self._conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('version', ?)", (VERSION,)
        )

    def _index_again(self) -> None:
        """Makes the keyword index again from the records, which stay as they are, their
        vectors too (nothing is embedded again); once, whatever other process opens the
        store at the same time."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            if row[0] in KEYWORDS_CHANGED:
                self._conn.execute("DROP TABLE records_fts")
                self._conn.execute(KEYWORD_INDEX)
                rows = self._conn.execute("SELECT rowid, text, entity FROM records")
                self._conn.executemany(
                    "INSERT INTO records_fts (rowid, text, entity) VALUES (?, ?, ?)",
                    ((rowid, *_keywords(text, entity)) for rowid, text, entity in rows),
                )
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (VERSION,))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _stored_dims(self) -> int | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'dims'").fetchone()
        return int(row[0]) if row else None

    def _set_vectors(self, vectors: dict[str, Vector]) -> None:
        with self._transaction():
            for record_id, vector in vectors.items():
                blob = self._blob(vector)
                row = self._conn.execute(
                    "UPDATE records SET embedded = 1 WHERE id = ? RETURNING rowid", (record_id,)
                ).fetchone()
                if row is None or blob is None:
                    continue
                self._forget_vector(row[0])
                self._keep_vector(row[0], vector, blob)

    def _delete(self, ids: Sequence[str]) -> int:
        removed = 0
        with self._transaction():
            for chunk in _chunks(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT rowid, text, entity FROM records WHERE id IN ({marks})", chunk
                ).fetchall()
                for rowid, text, entity in rows:
                    self._unindex(rowid, text, entity)
                    self._forget_vector(rowid)
                self._conn.execute(f"DELETE FROM records WHERE id IN ({marks})", chunk)
                removed += len(rows)
        return removed

    def _search(self, query: Query) -> list[Hit]:
        with self._snapshot():
            return self._search_now(query)

    def _search_now(self, query: Query) -> list[Hit]:
        limit = max(query.limit, 1)
        wanted = max(limit * PER_RESULT, CANDIDATES)
        vector = query.vector if self._dims is not None else None
        if vector is not None and len(vector) != self._dims:
            vector = None  # a query from another model than the stored vectors
        alpha = query.alpha if vector is not None else 0.0
        keyword = self._keyword(query, wanted) if alpha < 1 else []
        nearest = self._nearest(vector, query.filters, wanted) if vector and alpha > 0 else []
        ranked = fuse(keyword, nearest, alpha)
        if not ranked:
            return []
        cut = ranked[min(limit, len(ranked)) - 1][1]
        ranked = [(key, score) for key, score in ranked if score >= cut]  # and ties at the cut
        rowids = [int(key) for key, _ in ranked]
        marks = ",".join("?" * len(rowids))
        rows = self._conn.execute(
            f"SELECT rowid, {_COLUMNS} FROM records r WHERE rowid IN ({marks})", rowids
        )
        found = {row[0]: _record(row[1:]) for row in rows}
        hits = [
            (Hit(found[int(key)], score), int(key)) for key, score in ranked if int(key) in found
        ]
        hits.sort(key=lambda pair: (ranking(pair[0]), pair[1]))
        return [hit for hit, _ in hits[:limit]]

    def _keyword(self, query: Query, wanted: int) -> list[tuple[str, float]]:
        """The best ``wanted`` by keywords; of those scored alike, the newest (records
        are stored in the order they happened), which the fusion keeps first."""
        match = keyword_query(query.text, query.every_word)
        if match is None:
            return []
        if query.filters.empty:  # the index alone answers
            sql = (
                f"SELECT rowid, -{BM25} FROM records_fts WHERE records_fts MATCH ? "
                f"ORDER BY {BM25}, rowid DESC LIMIT ?"
            )
            params: list[Any] = []
        else:
            where, params = _where(query.filters)
            sql = (
                f"SELECT f.rowid, -{BM25} FROM records_fts f "
                f"JOIN records r ON r.rowid = f.rowid WHERE records_fts MATCH ? AND {where} "
                f"ORDER BY {BM25}, f.rowid DESC LIMIT ?"
            )
        return [
            (str(rowid), score)
            for rowid, score in self._conn.execute(sql, (match, *params, wanted))
        ]

    def _nearest(self, vector: Vector, filters: Filters, wanted: int) -> list[tuple[str, float]]:
        among = None
        if not filters.empty:
            where, params = _where(filters)
            sql = f"SELECT r.rowid FROM records r WHERE {where}"
            among = [rowid for (rowid,) in self._conn.execute(sql, params)]
        bits = sign_bits(vector)
        near = self._nearest_bits(bits, wanted * OVERSAMPLE, among)
        if near is None:
            return self._nearest_by_sqlite_vec(vector, bits, among, wanted)
        if not near:
            return []
        sql = (
            "SELECT rowid, vec_distance_cosine(vector, ?) AS d FROM floats "
            f"WHERE rowid IN ({','.join('?' * len(near))}) ORDER BY d, rowid DESC LIMIT ?"
        )
        params = [sqlite_vec.serialize_float32(vector), *near, wanted]
        return [(str(rowid), 1.0 - distance) for rowid, distance in self._conn.execute(sql, params)]

    def _nearest_by_sqlite_vec(
        self, vector: Vector, bits: bytes, among: list[int] | None, wanted: int
    ) -> list[tuple[str, float]]:
        """The same search without the bits in memory: sqlite-vec's own top-k over them,
        or, filtered, cosine on the vectors of the matching records."""
        blob = sqlite_vec.serialize_float32(vector)
        if among is None:
            sql = (
                "WITH near AS (SELECT rowid FROM bits WHERE embedding MATCH vec_bit(?) AND k = ?) "
                "SELECT f.rowid, vec_distance_cosine(f.vector, ?) AS d FROM near "
                "JOIN floats f ON f.rowid = near.rowid ORDER BY d, f.rowid DESC LIMIT ?"
            )
            k = min(wanted * OVERSAMPLE, VEC0_MAX_K)
            params: list[Any] = [bits, k, blob, wanted]
        else:
            sql = (
                "SELECT rowid, vec_distance_cosine(vector, ?) AS d FROM floats "
                "WHERE rowid IN (SELECT value FROM json_each(?)) ORDER BY d, rowid DESC LIMIT ?"
            )
            params = [blob, json.dumps(among), wanted]
        return [(str(rowid), 1.0 - distance) for rowid, distance in self._conn.execute(sql, params)]


class _Transaction:
    """BEGIN IMMEDIATE, ``before`` (the write lock held), … COMMIT, or ROLLBACK on an
    error (and on a failed COMMIT), so that no transaction is left open; ``after`` runs
    once it is over, either way, told whether it committed."""

    def __init__(self, conn: Any, before: Callable[[], None], after: Callable[[bool], None]):
        self.conn = conn
        self.before = before
        self.after = after

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.before()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def __exit__(self, kind: object, *rest: object) -> None:
        committed = False
        try:
            if kind is None:
                try:
                    self.conn.execute("COMMIT")
                    committed = True
                    return
                except Exception:
                    self._roll_back()
                    raise
            self._roll_back()
        finally:
            self.after(committed)

    def _roll_back(self) -> None:
        if self.conn.in_transaction:  # SQLite may have rolled back by itself
            self.conn.execute("ROLLBACK")


_COLUMNS = "r.id, r.kind, r.text, r.at, r.actor, r.run_id, r.entity, r.chat, r.source"


def _keywords(text: str, entity: str | None) -> tuple[str, str | None]:
    """What the keyword index keeps of a record: its text, and of the entity it is about
    its name, not its kind ("client:"); each with runs of a script written without
    spaces in pairs."""
    return in_pairs(text), in_pairs(entity.partition(":")[2]) if entity else None


def _values(record: MemoryRecord) -> tuple[Any, ...]:
    return (
        record.kind.value,
        record.text,
        record.at.timestamp(),
        record.actor,
        record.run_id,
        record.entity,
        record.chat,
        record.source,
    )


def _record(row: Sequence[Any]) -> MemoryRecord:
    record_id, kind, text, at, actor, run_id, entity, chat, source = row
    return MemoryRecord(
        record_id,
        RecordKind(kind),
        text,
        datetime.fromtimestamp(at, UTC),
        actor,
        run_id,
        entity,
        chat,
        source,
    )


def _where(filters: Filters) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1"]
    params: list[Any] = []
    if filters.kinds:
        clauses.append(f"r.kind IN ({','.join('?' * len(filters.kinds))})")
        params.extend(kind.value for kind in filters.kinds)
    if filters.entities:
        clauses.append(f"r.entity IN ({','.join('?' * len(filters.entities))})")
        params.extend(filters.entities)
    if filters.run_id is not None:
        clauses.append("r.run_id = ?")
        params.append(filters.run_id)
    if filters.since is not None:
        clauses.append("r.at >= ?")
        params.append(filters.since.timestamp())
    if filters.until is not None:
        clauses.append("r.at < ?")
        params.append(filters.until.timestamp())
    return " AND ".join(clauses), params


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
