"""Export and import: everything steward knows, as JSON Lines in one folder.

``export`` writes each ledger table (runs, steps, approvals, inbox, audit log and its
head, idempotency records, timers, model costs, definitions, and every long-term memory
record in the memory journal) to ``<table>.jsonl``, a row a line, and every LangGraph
checkpoint with its pending writes to ``checkpoints.jsonl``, all as of one moment,
through the checkpointer's own API (so an export from SQLite imports into PostgreSQL
too). Each row goes to its file as it is read, so an export of a ledger of any size
holds a batch of rows in memory, not the ledger. Under ``home/`` it copies the files of
the home its caller names (``Along``), each with its size and SHA-256 in the manifest.
``manifest.json`` says what is there, how many rows, and the revision of the ledger it
came from, and its format names the kinds of content it holds, so that a steward that
does not know one refuses the export: an export of a newer steward is refused, never
imported in part.

``import`` restores a folder into an empty home: rows go back exactly as they were
(ids, timestamps, the audit chain's hashes), so the chain still verifies and a run that
was waiting at a gate can be approved after the import and goes on from its checkpoint,
without repeating an effect that was already done. Each file is read through once, a
line at a time, before anything is written, and again as it is written, so an import too
holds a batch of rows in memory, not the export. The home's files go where the new
home keeps them, never over a file there that is not the export's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from sqlalchemy import Connection, Table, delete, func, insert, select, text

from memory.checkpoints import read_at_once
from memory.ledger import Ledger, cannot_store, cause
from memory.ledger import schema as t
from memory.ledger.database import sync_folder
from memory.ledger.migrate import HEAD, is_known
from memory.ledger.schema import UTCDateTime

# An export is of the first format that holds what it holds: a steward refuses a format
# it does not read, so one from before a kind of content refuses an export that holds
# it, where it would leave that content behind and say done. The ledger's rows and the
# checkpoints are the first; the home's files (under home/) came with the second.
FORMAT = "steward-export/"
LEDGER_ONLY = f"{FORMAT}1"
WITH_HOME_FILES = f"{FORMAT}2"
FORMATS = (LEDGER_ONLY, WITH_HOME_FILES)
CHECKPOINTS = "checkpoints"
# Tables a new home fills at its start (the audit chain's head, the built-in definitions):
# their rows that the export has too are replaced by the export's.
SEEDED = {"audit_head", "definitions"}
Progress = Callable[[str, int, int], None]  # what, done, of
ROWS_FETCHED = 1000  # an export reads a table this many rows at a time
HOME = "home"  # the export's folder for the files of the home it brings along


class ArchiveError(Exception):
    """An export or an import that cannot be done: the folder to export into is not
    empty; the export is not one this steward can read whole, or the database refuses
    a row of it; the home is not empty, or holds a file of its own where one of the
    export's goes."""


class NotAnExport(ArchiveError):
    """The folder named is no export at all: not there, a file, or no manifest in it."""


class NoSuchFolder(ArchiveError):
    """The folder an export is to be made in is not there: bad input (a typo in its
    path), told as such, never made up, as ``cp`` and ``tar`` do not make one."""


class DanglingLink(ArchiveError):
    """Where the import puts a file of the home, the file or a folder of its path is a
    link to nothing: bad input, as a folder that is no export is. Nothing is written
    through it."""


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    files: int = 0  # of the home, brought along

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Along:
    """Files of the home an export brings along under a name: the file at ``path``, or,
    given ``patterns``, the files in the folder there whose names match one of them."""

    path: Path
    patterns: tuple[str, ...] = ()

    def files(self) -> list[tuple[str, Path]]:
        """Each file there now, with its name under this one's ("" for the file itself).
        A file of the folder that is a link to one outside it is refused: whoever could
        put the link there (a repository of definitions holds links too) would have an
        export carry out what it points to, a key or a password file."""
        if not self.patterns:
            return [("", self.path)] if self.path.is_file() else []
        if not self.path.is_dir():
            return []
        found = {p for pattern in self.patterns for p in self.path.glob(pattern) if p.is_file()}
        inside = self.path.resolve()
        for path in sorted(found):
            if not path.resolve().is_relative_to(inside):
                raise ArchiveError(
                    f"{path} is a link to {path.resolve()}, outside {self.path}: an export "
                    "copies no file from elsewhere; copy it in, or remove the link"
                )
        return [(p.name, p) for p in sorted(found)]

    def place(self, name: str) -> Path:
        return self.path / name if name else self.path


# How far a long-term store was fed is the store's, not the data's: a new home's store
# is fed from the start. The workers serving a ledger, and the room their model calls
# under way hold in the budgets, are the processes of its place.
NOT_EXPORTED = {"memory_cursors", "workers", "model_holds"}


def _tables() -> list[Table]:
    return [table for table in t.metadata.sorted_tables if table.name not in NOT_EXPORTED]


async def export(
    ledger: Ledger,
    checkpointer: BaseCheckpointSaver[str],
    folder: Path,
    progress: Progress | None = None,
    along: Mapping[str, Along] | None = None,
) -> Summary:
    for what in (along or {}).values():
        what.files()  # refuses before anything is written
    _new_folder(folder)
    report = progress or (lambda what, done, of: None)
    counts: dict[str, int] = {}
    tables = _tables()

    def write_tables(conn: Connection) -> None:
        for index, table in enumerate(tables):
            counts[table.name] = _write_lines(folder / f"{table.name}.jsonl", _rows(conn, table))
            report(table.name, index + 1, len(tables) + 1)

    # One moment's: runs that start meanwhile are exported whole, or not at all.
    with _private(folder / f"{CHECKPOINTS}.jsonl") as checkpoints:

        def keep(saved: CheckpointTuple) -> None:
            checkpoints.write(_line(_checkpoint_entry(checkpointer, saved)))
            counts[CHECKPOINTS] = counts.get(CHECKPOINTS, 0) + 1

        await read_at_once(ledger, checkpointer, write_tables, keep)
    counts.setdefault(CHECKPOINTS, 0)
    report(CHECKPOINTS, len(tables) + 1, len(tables) + 1)
    # After the ledger's moment: the outbox holds every effect the ledger says is done (one
    # made since is there too, and taken as done again by its key, never made twice).
    files = _export_files(along or {}, folder / HOME)
    exported_at = datetime.now().astimezone().isoformat()
    manifest = {
        "format": WITH_HOME_FILES if files else LEDGER_ONLY,
        "schema": HEAD,
        "exported_at": exported_at,
        "counts": counts,
        "files": files,
    }
    with _private(folder / "manifest.json") as out:  # last: what it counts is on disk
        out.write(json.dumps(manifest, indent=2) + "\n")
    sync_folder(folder)  # the files' names too
    return Summary(counts, len(files))


async def import_(
    ledger: Ledger,
    checkpointer: BaseCheckpointSaver[str],
    folder: Path,
    progress: Progress | None = None,
    along: Mapping[str, Along] | None = None,
) -> Summary:
    manifest = _manifest(folder)
    report = progress or (lambda what, done, of: None)
    if not await ledger.db.run(_empty, write=False):
        raise ArchiveError("this home has runs or an audit log already: import into a new one")
    tables = _tables()
    counts: dict[str, int] = {}
    expected = manifest.get("counts", {})
    unknown = set(expected) - {table.name for table in tables} - {CHECKPOINTS}
    if unknown:  # rows of them would be left behind, the import said done
        raise ArchiveError(
            f"the export holds {', '.join(sorted(unknown))}, which this steward does not "
            "know: upgrade it to import an export of a newer one; nothing was imported"
        )

    def rows_of(table: Table) -> Iterator[dict[str, Any]]:
        path = folder / f"{table.name}.jsonl"
        if table.name in expected or path.exists():
            return _read(path, table)
        return iter(())  # an export from before the table was there

    def checkpoints() -> Iterator[Decoded]:
        return _decode_checkpoints(checkpointer, _read_lines(folder / f"{CHECKPOINTS}.jsonl"))

    # Read through before anything is written, a line at a time: a broken line refuses the
    # import, where it left the ledger imported without its checkpoints, and the home no
    # longer empty. What is written is read again, so no file is ever held in memory.
    read = {table.name: sum(1 for _ in rows_of(table)) for table in tables}
    threads = [parent["configurable"]["thread_id"] for parent, *_ in checkpoints()]
    read[CHECKPOINTS] = len(threads)
    wrong = {k: (v, expected.get(k)) for k, v in read.items() if expected.get(k, 0) != v}
    if wrong:  # a file cut short, or one line too many: before anything is written
        raise ArchiveError(f"rows read do not match the manifest: {wrong}; nothing was imported")
    files = _files_to_bring(manifest, folder / HOME, along or {})

    def restore(conn: Connection) -> None:
        for index, table in enumerate(tables):
            if table is t.timers:  # a home with no runs has planned its daily list alone
                conn.execute(delete(table))
            counts[table.name] = 0
            rows = rows_of(table)
            while these := list(islice(rows, 500)):
                if table.name in SEEDED:  # what the new home wrote itself gives way
                    (key,) = table.primary_key.columns
                    conn.execute(delete(table).where(key.in_([row[key.name] for row in these])))
                conn.execute(insert(table), these)
                counts[table.name] += len(these)
            if counts[table.name] != read[table.name]:  # the file changed since it was read
                raise ArchiveError(f"{table.name}.jsonl changed during the import")
            report(table.name, index + 2, len(tables) + 1)
        if conn.dialect.name == "postgresql":
            _reset_sequences(conn, tables)

    # The home's files and the checkpoints first, each written whole, once: a stop before
    # the ledger's commit leaves the home empty for the import again (the same file there
    # is taken as brought), where one after it left runs without them.
    brought = _import_files(files)
    counts[CHECKPOINTS] = await _import_checkpoints(checkpointer, checkpoints())
    report(CHECKPOINTS, 1, len(tables) + 1)
    try:
        await ledger.db.run(restore)  # one transaction: all of it, or nothing
    except Exception as exc:
        if not (cannot_store(exc) or isinstance(exc, ArchiveError)):
            raise
        for thread in set(threads):
            await checkpointer.adelete_thread(thread)
        for path in brought:
            path.unlink(missing_ok=True)
        said = str(exc) if isinstance(exc, ArchiveError) else None
        raise ArchiveError(
            f"{said or f'this database refuses a row of the export ({cause(exc)})'}; "
            "nothing was imported"
        ) from None
    return Summary(counts, len(files))


# -- ledger rows ---------------------------------------------------------------------------


def _rows(conn: Connection, table: Table) -> Iterator[dict[str, Any]]:
    """The table's rows as plain JSON, fetched from the database a batch at a time."""
    primary = list(table.primary_key.columns)
    query = select(table).order_by(*primary).execution_options(yield_per=ROWS_FETCHED)
    for row in conn.execute(query).mappings():
        yield {key: _plain(value) for key, value in row.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    return value


def _read(path: Path, table: Table) -> Iterator[dict[str, Any]]:
    times = {c.name for c in table.columns if isinstance(c.type, UTCDateTime)}
    columns = set(table.columns.keys())
    for number, row in enumerate(_read_lines(path), 1):
        if not isinstance(row, dict) or not set(row) <= columns:
            raise ArchiveError(f"{path.name} line {number} is not a row of {table.name}")
        for name in times:
            if row.get(name) is not None:
                try:
                    row[name] = datetime.fromisoformat(row[name])
                except (TypeError, ValueError):
                    raise ArchiveError(
                        f"{path.name} line {number}: {name} is not a time ({row[name]!r})"
                    ) from None
        yield row


def _new_folder(folder: Path) -> None:
    """The export's own folder, made here; the folder it goes in must be there already."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
    except FileNotFoundError:
        raise NoSuchFolder(
            f"there is no folder {folder.parent} to export into: make it first, or name "
            "another; nothing was exported"
        ) from None
    if any(folder.iterdir()):
        raise ArchiveError(f"{folder} is not empty: export into a new folder")


def _write_lines(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Writes ``rows`` a line each; how many it wrote."""
    written = 0
    with _private(path) as out:
        for row in rows:
            out.write(_line(row))
            written += 1
    return written


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


@contextmanager
def _private(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A new file only its owner can read (an export holds the clients' emails and the
    webhooks' secrets), on disk once the block is done."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    encoding = None if binary else "utf-8"
    with open(os.open(path, flags, 0o600), "wb" if binary else "w", encoding=encoding) as out:
        yield out
        out.flush()
        os.fsync(out.fileno())


def _read_lines(path: Path) -> Iterator[Any]:
    """Each line of the file, as the JSON it holds, read as it is asked for."""
    if not path.exists():
        raise ArchiveError(f"{path.name} is missing from the export")
    with open(path, encoding="utf-8") as lines:
        number = 0
        try:
            for number, line in enumerate(lines, 1):  # noqa: B007 (the excepts name it)
                yield json.loads(line)
        except UnicodeDecodeError:
            raise ArchiveError(f"{path.name} is not UTF-8 text") from None
        except ValueError:
            raise ArchiveError(f"{path.name} line {number} is not JSON") from None


def _empty(conn: Connection) -> bool:
    filled = (t.runs, t.audit_events, t.memory_journal)
    return all(conn.execute(select(func.count()).select_from(f)).scalar_one() == 0 for f in filled)


def _reset_sequences(conn: Connection, tables: list[Table]) -> None:
    """Rows came with their ids: PostgreSQL's sequences move past them."""
    for table in tables:
        for column in table.primary_key.columns:
            if column.autoincrement is True:
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                        f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"
                    )
                )


def _manifest(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise NotAnExport(f"there is no folder {folder}")
    if not folder.is_dir():
        raise NotAnExport(f"{folder} is a file, not the folder of an export")
    if not (folder / "manifest.json").exists():
        raise NotAnExport(f"{folder} holds no steward export (no manifest.json)")
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except ValueError:  # a file of that name, of something else
        raise NotAnExport(f"{folder} holds no steward export (no readable manifest.json)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts", {}), dict):
        raise NotAnExport(f"{folder / 'manifest.json'} is not a steward export's manifest")
    made = manifest.get("format")
    if made not in FORMATS:
        if not _newer(made):
            raise NotAnExport(
                f"{folder / 'manifest.json'} is not a steward export's manifest "
                f"(its format is {made!r})"
            )
        raise ArchiveError(
            f"{folder} was exported by a newer steward (its format is {made}, this one reads "
            f"{' and '.join(FORMATS)}): upgrade this one to import it; nothing was imported"
        )
    schema = manifest.get("schema", HEAD)
    if not isinstance(schema, str) or not is_known(schema):
        raise ArchiveError(
            f"{folder} was exported by a newer steward (its ledger at revision {schema!r}, "
            f"this one's at {HEAD}): upgrade this one to import it"
        )
    return dict(manifest)


def _newer(made: Any) -> bool:
    """Whether ``made`` names a format past those this steward reads: steward-export/3."""
    number = made.removeprefix(FORMAT) if isinstance(made, str) else ""
    known = max(int(known.removeprefix(FORMAT)) for known in FORMATS)
    return number.isascii() and number.isdigit() and int(number) > known


# -- files of the home ---------------------------------------------------------------------


def _export_files(along: Mapping[str, Along], folder: Path) -> dict[str, dict[str, Any]]:
    """Copies each file ``along`` names into ``folder``, by its name there; what the
    manifest says of each (its size and SHA-256), by that name."""
    said: dict[str, dict[str, Any]] = {}
    for name, what in along.items():
        for inside, path in what.files():
            kept = f"{name}/{inside}" if inside else name
            target = folder / kept
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "rb") as source, _private(target, binary=True) as out:
                said[kept] = _copy(source, out)
    for made in {folder / name.rpartition("/")[0] for name in said} | {folder}:
        if made.is_dir():
            sync_folder(made)
    return said


def _copy(source: IO[bytes], out: IO[bytes] | None) -> dict[str, Any]:
    """Copies ``source`` to ``out`` (or only reads it); its size and SHA-256."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _same(path: Path, said: Any) -> bool:
    with open(path, "rb") as source:
        return bool(_copy(source, None) == said)


def _files_to_bring(
    manifest: dict[str, Any], folder: Path, along: Mapping[str, Along]
) -> list[tuple[Path, Path, Any]]:
    """Each file of the export to bring into this home, and where, all checked before
    anything is written: the export's is as exported, and nothing else is in its place."""
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise ArchiveError("manifest.json's files are not a list by name")
    bring = []
    for kept, said in sorted(files.items()):
        name, slash, inside = kept.partition("/")
        what = along.get(name)
        plain = bool(inside) and inside == Path(inside).name and inside != ".."
        if what is None or bool(slash) != bool(what.patterns) or (slash and not plain):
            raise ArchiveError(f"the export holds {kept}, which this steward has no place for")
        source, target = folder / kept, what.place(inside)
        if link := _dangling(target):
            raise DanglingLink(
                f"{link} is a link to {os.readlink(link)}, which is not there: the import "
                "writes no file through a link; remove it, then import; nothing was imported"
            )
        if not source.is_file() or not _same(source, said):
            raise ArchiveError(f"{source} is missing or not as exported; nothing was imported")
        if target.exists() and not (target.is_file() and _same(target, said)):
            raise ArchiveError(
                f"{target} is there already and is not the export's {kept}: move it away, "
                "then import; nothing was imported"
            )
        if not target.exists():
            bring.append((source, target, said))
    return bring


def _dangling(path: Path) -> Path | None:
    """The first of ``path`` and the folders above it that is a link to nothing, if any."""
    return next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)


def _import_files(files: list[tuple[Path, Path, Any]]) -> list[Path]:
    """Writes each file whole where it goes, readable by its owner alone, as the manifest
    says it is, never over a file: one changed since it was checked, or one whose place
    was taken meanwhile, is refused, and none is left written; the files written."""
    brought: list[Path] = []
    try:
        for source, target, said in files:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.import{os.getpid()}")
            temporary.unlink(missing_ok=True)
            try:
                with open(source, "rb") as original, _private(temporary, binary=True) as out:
                    copied = _copy(original, out)
                if copied != said:
                    raise ArchiveError(f"{source} changed during the import; nothing was imported")
                try:
                    os.link(temporary, target)  # never over a file made meanwhile
                except FileExistsError:
                    raise ArchiveError(
                        f"{target} was made during the import: move it away, then import; "
                        "nothing was imported"
                    ) from None
            finally:
                temporary.unlink(missing_ok=True)
            brought.append(target)
    except BaseException:
        for path in brought:
            path.unlink(missing_ok=True)
        raise
    for folder in {target.parent for target in brought}:
        sync_folder(folder)
    return brought


# -- checkpoints ---------------------------------------------------------------------------


def _checkpoint_entry(
    checkpointer: BaseCheckpointSaver[str], saved: CheckpointTuple
) -> dict[str, Any]:
    serde = checkpointer.serde
    return {
        "config": saved.config,
        "parent_config": saved.parent_config,
        "checkpoint": _typed(serde.dumps_typed(saved.checkpoint)),
        "metadata": _typed(serde.dumps_typed(saved.metadata)),
        "writes": [
            [task, channel, _typed(serde.dumps_typed(value))]
            for task, channel, value in saved.pending_writes or []
        ],
    }


# A checkpoint as read from the export: where it goes, itself, its metadata, its channel
# versions, and its pending writes by task.
Decoded = tuple[RunnableConfig, Any, Any, Any, dict[str, list[tuple[str, Any]]]]


def _decode_checkpoints(
    checkpointer: BaseCheckpointSaver[str], entries: Iterable[Any]
) -> Iterator[Decoded]:
    serde = checkpointer.serde
    for number, entry in enumerate(entries, 1):
        try:
            checkpoint = serde.loads_typed(_untyped(entry["checkpoint"]))
            metadata = serde.loads_typed(_untyped(entry["metadata"]))
            own = entry["config"]["configurable"]
            root = {"thread_id": own["thread_id"], "checkpoint_ns": own.get("checkpoint_ns", "")}
            parent = RunnableConfig(
                configurable=(entry["parent_config"] or {}).get("configurable", root)
            )
            versions = checkpoint["channel_versions"]
            by_task: dict[str, list[tuple[str, Any]]] = {}
            for task, channel, value in entry["writes"]:
                by_task.setdefault(task, []).append((channel, serde.loads_typed(_untyped(value))))
        # What the file's text can make the decoding raise: a key or item missing, a
        # wrong type, bad base64 or msgpack, an unknown serialization type.
        except (LookupError, TypeError, ValueError, AttributeError, NotImplementedError):
            raise ArchiveError(f"{CHECKPOINTS}.jsonl line {number} is not a checkpoint") from None
        yield parent, checkpoint, metadata, versions, by_task


async def _import_checkpoints(
    checkpointer: BaseCheckpointSaver[str], checkpoints: Iterable[Decoded]
) -> int:
    count = 0
    for parent, checkpoint, metadata, versions, by_task in checkpoints:
        stored = await checkpointer.aput(parent, checkpoint, metadata, versions)
        for task, writes in by_task.items():
            await checkpointer.aput_writes(stored, writes, task)
        count += 1
    return count


def _typed(pair: tuple[str, bytes]) -> list[str]:
    kind, data = pair
    return [kind, base64.b64encode(data).decode()]


def _untyped(pair: list[str]) -> tuple[str, bytes]:
    return pair[0], base64.b64decode(pair[1])
