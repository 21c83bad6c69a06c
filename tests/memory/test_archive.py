"""Export and import: a round trip loses nothing, the audit chain still verifies, and a
run waiting at a gate goes on after the import without repeating a done effect — into
SQLite, and into PostgreSQL where a server answers."""

from __future__ import annotations

import base64
import json
import os
import stat
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_SINGLE_ARG
from sqlalchemy import Connection, func, insert, select

from bot.app import Steward
from bot.cli import _brought_along
from bot.settings import Settings, load_settings
from graph.messages import Inbound, Sender
from memory import archive
from memory.database_url import DatabaseURL
from memory.ledger import NewAuditEvent, RunStatus, utcnow
from memory.ledger import schema as t
from memory.ledger.migrate import HEAD
from processes import BUILTIN_DIR

INVOICE = {
    "client": "Acme",
    "email": "billing@acme.com",
    "invoice": "INV-7",
    "amount": "1200",
    "due_date": "2026-11-01",
}


def onboarding(client: str) -> dict[str, str]:
    return {"client": client, "email": f"{client.lower()}@example.com", "package": "basic"}


async def seed(app: Steward) -> dict[str, str]:
    """Runs in every state worth keeping: done with an effect, waiting at a gate,
    rejected, waiting on a timer, plus chat messages in the inbox."""
    done = await app.engine.start("onboarding", onboarding("Done"), "cli:shell")
    waiting = await app.engine.start("onboarding", onboarding("Waiting"), "cli:shell")
    rejected = await app.engine.start("onboarding", onboarding("Rejected"), "cli:shell")
    invoice = await app.engine.start("invoice_followup", INVOICE, "cli:shell")
    for view, approve, reason in (
        (done, True, None),
        (rejected, False, "no"),
        (invoice, True, None),
    ):
        assert view.approval is not None
        await app.engine.decide(view.approval.id, approve, "cli:shell", reason)
    await app.door.receive(Inbound(Sender("console", "me"), "terminal", "m-1", text="/runs"))
    assert waiting.approval is not None
    return {"waiting_approval": waiting.approval.id, "waiting_run": waiting.run.id}


async def tables(app: Steward) -> dict[str, list[dict[str, Any]]]:
    def read(conn: Connection) -> dict[str, list[dict[str, Any]]]:
        return {table.name: list(archive._rows(conn, table)) for table in archive._tables()}

    return await app.ledger.db.run(read, write=False)


def outbox(home: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["key"] for p in (home / "outbox").glob("*.json"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseURL | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_database")  # type: ignore[no-any-return]


async def test_a_round_trip_loses_nothing(tmp_path: Path, target: DatabaseURL | None) -> None:
    folder = tmp_path / "export"
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        ids = await seed(old)
        before = await tables(old)
        summary = await archive.export(old.ledger, old.engine.checkpointer, folder)
        assert summary.counts["runs"] == 4 and summary.counts["checkpoints"] > 0
        assert summary.counts["inbox"] == 1 and summary.counts["timers"] >= 1
        assert "memory_journal" in summary.counts and summary.counts["entities"] >= 1
        with pytest.raises(archive.ArchiveError, match="not empty"):
            await archive.export(old.ledger, old.engine.checkpointer, folder)
    sent_before = outbox(tmp_path / "old")
    assert len(sent_before) == 2  # the welcome email and the first reminder

    overrides: dict[str, Any] = {"home": tmp_path / "new"}
    if target is not None:
        overrides["database_url"] = str(target)
    async with Steward.open(load_settings(**overrides)) as new:
        seen: list[str] = []
        await archive.import_(
            new.ledger,
            new.engine.checkpointer,
            folder,
            lambda what, done, of: seen.append(what),
        )
        assert seen[0] == "checkpoints" and "runs" in seen
        after = await tables(new)
        for name, rows in before.items():
            assert after[name] == rows, name
        report = await new.ledger.verify_audit()
        assert report.ok and report.checked == len(before["audit_events"])
        # The new home's long-term memory is fed from the imported journal.
        found = await new.history.search("welcome email", utcnow())
        assert found.hits and all(hit.record.run_id for hit in found.hits)

        decided = await new.engine.decide(ids["waiting_approval"], True, "cli:shell")
        assert decided.view is not None and decided.view.run.status is RunStatus.SUCCEEDED
        assert outbox(tmp_path / "new") == [f"{ids['waiting_run']}:send_welcome"]
        later = await new.engine.start("onboarding", onboarding("Later"), "cli:shell")
        assert later.approval is not None  # new rows take ids after the imported ones
        with pytest.raises(archive.ArchiveError, match="import into a new one"):
            await archive.import_(new.ledger, new.engine.checkpointer, folder)


async def test_not_an_export_is_refused_clearly(tmp_path: Path) -> None:
    async with Steward.open(load_settings(home=tmp_path / "home")) as app:
        with pytest.raises(archive.NotAnExport, match="there is no folder"):
            await archive.import_(app.ledger, app.engine.checkpointer, tmp_path / "nothing")
        with pytest.raises(archive.NotAnExport, match="no steward export"):
            await archive.import_(app.ledger, app.engine.checkpointer, tmp_path)
        folder = tmp_path / "half"
        folder.mkdir()
        (folder / "manifest.json").write_text('{"format": "steward-export/1", "counts": {}}')
        with pytest.raises(archive.ArchiveError, match="missing from the export"):
            await archive.import_(app.ledger, app.engine.checkpointer, folder)


@pytest.mark.parametrize(
    "text", ["[]", '"steward"', '{"format": "steward-export/1", "counts": []}']
)
async def test_a_manifest_of_another_shape_is_refused_clearly(tmp_path: Path, text: str) -> None:
    """JSON, but no object (or counts that are no object): a traceback."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "manifest.json").write_text(text)
    (folder / "checkpoints.jsonl").write_text("")
    async with Steward.open(load_settings(home=tmp_path / "home")) as app:
        with pytest.raises(archive.ArchiveError, match="is not a steward export's manifest"):
            await archive.import_(app.ledger, app.engine.checkpointer, folder)


async def test_an_export_from_before_a_table_was_added_is_imported(tmp_path: Path) -> None:
    """An export of a steward from before card_messages holds no file for it."""
    async with Steward.open(load_settings(home=tmp_path / "old")) as app:
        await seed(app)
        await archive.export(app.ledger, app.engine.checkpointer, tmp_path / "export")
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    del manifest["counts"]["card_messages"]
    (tmp_path / "export" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "export" / "card_messages.jsonl").unlink()
    async with Steward.open(load_settings(home=tmp_path / "new")) as app:
        summary = await archive.import_(app.ledger, app.engine.checkpointer, tmp_path / "export")
        assert summary.counts["card_messages"] == 0 and summary.counts["runs"] == 4


async def test_an_export_postgresql_cannot_hold_is_refused_whole(
    tmp_path: Path, postgres_database: DatabaseURL
) -> None:
    """A home made before text was cleaned as it came in may hold a NUL, which SQLite
    keeps and PostgreSQL refuses: one clear line, and nothing half imported."""
    folder = tmp_path / "export"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "hooks.yaml").write_text(HOOKS)
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        await old.engine.start("onboarding", onboarding("Kept"), "cli:shell")
        await old.ledger.audit(NewAuditEvent("hook:form", "run.started", "r1", {"c": "A\x00"}))
        along = _brought_along(old.settings)
        await archive.export(old.ledger, old.engine.checkpointer, folder, along=along)
    url = postgres_database.setting
    async with Steward.open(load_settings(home=tmp_path / "new", database_url=url)) as new:
        along = _brought_along(new.settings)
        with pytest.raises(archive.ArchiveError, match=r"refuses a row .* nothing was imported"):
            await archive.import_(new.ledger, new.engine.checkpointer, folder, along=along)
        assert not (tmp_path / "new" / "hooks.yaml").exists()
        assert await new.ledger.list_runs(None) == []
        assert await new.ledger.audit_events() == []
        assert [saved async for saved in new.engine.checkpointer.alist(None)] == []


@pytest.mark.parametrize(
    ("name", "line", "said"),
    [
        ("checkpoints", "{}", "checkpoints.jsonl line 2 is not a checkpoint"),
        ("checkpoints", '{"checkpoint": ["msgpack", "!!"]}', "line 2 is not a checkpoint"),
        ("runs", "42", "runs.jsonl line 5 is not a row of runs"),
        ("runs", '{"nosuchcolumn": 1}', "runs.jsonl line 5 is not a row of runs"),
        ("runs", '{"id": "r1", "created_at": "garbage"}', "line 5: created_at is not a time"),
        ("runs", "\udcff", "runs.jsonl is not UTF-8 text"),
    ],
)
async def test_a_broken_line_refuses_the_import_before_anything_is_written(
    tmp_path: Path, name: str, line: str, said: str
) -> None:
    """A broken checkpoint left the ledger imported without checkpoints (its waiting runs
    could not go on) and the home no longer empty for the good export; a broken row
    ended in a traceback."""
    folder = tmp_path / "export"
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        await seed(old)
        await archive.export(old.ledger, old.engine.checkpointer, folder)
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in folder.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    lines = (folder / f"{name}.jsonl").read_bytes().splitlines(keepends=True)
    lines.insert(1 if name == "checkpoints" else 4, line.encode(errors="surrogateescape") + b"\n")
    (broken / f"{name}.jsonl").write_bytes(b"".join(lines))
    async with Steward.open(load_settings(home=tmp_path / "new")) as new:
        with pytest.raises(archive.ArchiveError, match=said):
            await archive.import_(new.ledger, new.engine.checkpointer, broken)
        assert await new.ledger.list_runs(None) == []
        summary = await archive.import_(new.ledger, new.engine.checkpointer, folder)
        assert summary.counts["runs"] == 4


async def test_an_import_runs_no_code_a_checkpoint_names(tmp_path: Path) -> None:
    """A checkpoint is data: one that names a function to call as it is read (msgpack's
    constructor extension, which LangGraph's default serializer obeys) is not obeyed."""
    folder, made = tmp_path / "export", tmp_path / "made-by-the-export"
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        await seed(old)
        await archive.export(old.ledger, old.engine.checkpointer, folder)
    path = folder / "checkpoints.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    kind, data = entries[0]["metadata"]
    metadata = ormsgpack.unpackb(base64.b64decode(data))
    call = ormsgpack.packb(("os", "mkdir", str(made)))
    metadata["note"] = ormsgpack.Ext(EXT_CONSTRUCTOR_SINGLE_ARG, call)
    entries[0]["metadata"] = [kind, base64.b64encode(ormsgpack.packb(metadata)).decode()]
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    async with Steward.open(load_settings(home=tmp_path / "new")) as new:
        await archive.import_(new.ledger, new.engine.checkpointer, folder)
        assert not made.exists()
        assert len(await new.ledger.list_runs(None)) == 4


async def test_rows_the_manifest_does_not_count_refuse_the_import_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """A file cut short or added to after the export: the check came after the commit,
    and left the home imported and no longer empty for the good export."""
    folder = tmp_path / "export"
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        await seed(old)
        await archive.export(old.ledger, old.engine.checkpointer, folder)
    runs = (folder / "runs.jsonl").read_text().splitlines(keepends=True)
    extra = json.loads(runs[0]) | {"id": "rextra0001"}
    (folder / "runs.jsonl").write_text("".join(runs) + json.dumps(extra) + "\n")
    async with Steward.open(load_settings(home=tmp_path / "new")) as new:
        with pytest.raises(archive.ArchiveError, match="do not match the manifest"):
            await archive.import_(new.ledger, new.engine.checkpointer, folder)
        assert await new.ledger.list_runs(None) == []


async def test_a_home_that_has_planned_its_daily_list_takes_the_import(
    tmp_path: Path, target: DatabaseURL | None
) -> None:
    """A new home that `steward run` had started once held its next daily list's timer,
    and the import failed on the export's timer of the same id ("the database failed")."""
    folder = tmp_path / "export"
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        ids = await seed(old)
        await old.ledger.plan_timer("digest:2026-12-08", "digest", utcnow())
        expiries = [t.key for t in await old.ledger.due_timers(utcnow() + timedelta(days=9))]
        await archive.export(old.ledger, old.engine.checkpointer, folder)
    overrides: dict[str, Any] = {"home": tmp_path / "new"}
    if target is not None:
        overrides["database_url"] = str(target)
    async with Steward.open(load_settings(**overrides)) as new:
        await new.ledger.plan_timer("digest:2026-12-08", "digest", utcnow())
        await new.ledger.plan_timer("digest:2026-12-09", "digest", utcnow())
        await archive.import_(new.ledger, new.engine.checkpointer, folder)
        later = utcnow() + timedelta(days=9)
        assert [t.key for t in await new.ledger.due_timers(later)] == expiries
        decided = await new.engine.decide(ids["waiting_approval"], True, "cli:shell")
        assert decided.view is not None and decided.view.run.status is RunStatus.SUCCEEDED


async def test_an_export_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    """It holds the clients' emails and the drafts to them: with the usual umask (022)
    its folder and files were readable by every user of the machine."""
    folder = tmp_path / "backups" / "export"
    folder.parent.mkdir()
    umask = os.umask(0o022)
    try:
        async with Steward.open(load_settings(home=tmp_path / "home")) as app:
            await seed(app)
            await archive.export(app.ledger, app.engine.checkpointer, folder)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert "manifest.json" in modes and "runs.jsonl" in modes
    assert set(modes.values()) == {0o600}


@pytest.mark.parametrize(
    ("newer", "said"),
    [
        ({"schema": "0099"}, "exported by a newer steward .* upgrade this one"),
        ({"schema": ""}, "exported by a newer steward"),  # not a traceback
        ({"schema": "head"}, "exported by a newer steward"),  # no revision: not this one's
        ({"counts": {"invoices": 1}}, "holds invoices, which this steward does not know"),
    ],
)
async def test_an_export_of_a_newer_steward_is_refused(
    tmp_path: Path, newer: dict[str, Any], said: str
) -> None:
    """A table this steward does not have was left behind, and the import said done."""
    folder = tmp_path / "export"
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        await seed(old)
        await archive.export(old.ledger, old.engine.checkpointer, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema"] == HEAD
    manifest["schema"] = newer.get("schema", HEAD)
    manifest["counts"] |= newer.get("counts", {})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "invoices.jsonl").write_text('{"id": 1, "amount": "1200"}\n')
    async with Steward.open(load_settings(home=tmp_path / "new")) as new:
        with pytest.raises(archive.ArchiveError, match=said):
            await archive.import_(new.ledger, new.engine.checkpointer, folder)
        assert await new.ledger.list_runs(None) == []


async def test_an_export_taken_while_runs_start_is_one_moment(
    tmp_path: Path, target: DatabaseURL | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each table was read in a transaction of its own, the checkpoints after them all:
    runs that started meanwhile were exported without their approvals, and a run's
    checkpoints without its row."""
    folder = tmp_path / "export"
    overrides: dict[str, Any] = {"home": tmp_path / "old"}
    if target is not None:
        overrides["database_url"] = str(target)
    async with Steward.open(load_settings(**overrides)) as old:
        await seed(old)
        read = old.ledger.db.run
        starting = False

        async def a_run_starts_first(fn: Any, write: bool = True, durable: bool = True) -> Any:
            nonlocal starting
            if not write and not starting:  # the export reads: another process starts a run
                starting = True
                try:
                    await old.engine.start("onboarding", onboarding("Busy"), "cli:shell")
                finally:
                    starting = False
            return await read(fn, write, durable)

        monkeypatch.setattr(old.ledger.db, "run", a_run_starts_first)
        await archive.export(old.ledger, old.engine.checkpointer, folder)
        monkeypatch.undo()

    def rows(name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]

    runs = {row["id"] for row in rows("runs")}
    waiting = {row["id"] for row in rows("runs") if row["status"] == "waiting"}
    asked = {row["run_id"] for row in rows("approvals")}
    started = {row["subject"] for row in rows("audit_events") if row["kind"] == "run.started"}
    threads = {row["config"]["configurable"]["thread_id"] for row in rows("checkpoints")}
    assert waiting <= asked <= runs and started == runs and waiting <= threads <= runs
    async with Steward.open(load_settings(home=tmp_path / "new")) as new:
        await archive.import_(new.ledger, new.engine.checkpointer, folder)
        assert (await new.ledger.verify_audit()).ok


async def test_an_import_stopped_midway_can_be_made_again(
    tmp_path: Path, target: DatabaseURL | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger was committed before the checkpoints were stored: a stop between the
    two (Ctrl-C, a lost connection) left waiting runs that could not go on, and the home
    refused the import again as no longer empty."""
    folder = tmp_path / "export"
    async with Steward.open(load_settings(home=tmp_path / "old")) as old:
        ids = await seed(old)
        await archive.export(old.ledger, old.engine.checkpointer, folder)
    overrides: dict[str, Any] = {"home": tmp_path / "new"}
    if target is not None:
        overrides["database_url"] = str(target)
    async with Steward.open(load_settings(**overrides)) as new:
        saver = new.engine.checkpointer
        put = saver.aput
        stored = 0

        async def stops_midway(*args: Any) -> Any:
            nonlocal stored
            stored += 1
            if stored == 3:
                raise KeyboardInterrupt
            return await put(*args)

        monkeypatch.setattr(saver, "aput", stops_midway)
        with pytest.raises(KeyboardInterrupt):
            await archive.import_(new.ledger, saver, folder)
        monkeypatch.undo()
        summary = await archive.import_(new.ledger, saver, folder)
        assert summary.counts["runs"] == 4
        decided = await new.engine.decide(ids["waiting_approval"], True, "cli:shell")
        assert decided.view is not None and decided.view.run.status is RunStatus.SUCCEEDED


async def test_an_export_is_on_disk_when_it_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "exported … records" was said with the files in the page cache alone: a power cut
    then (a machine shut down for the move) could leave an export empty."""
    folder = tmp_path / "export"
    synced: list[str] = []
    fsync = os.fsync

    def noted(descriptor: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")).name)
        fsync(descriptor)

    async with Steward.open(load_settings(home=tmp_path / "home")) as app:
        await seed(app)
        monkeypatch.setattr(os, "fsync", noted)
        await archive.export(app.ledger, app.engine.checkpointer, folder)
        monkeypatch.undo()
    files = sorted(path.name for path in folder.iterdir())
    assert sorted(synced[:-2]) == sorted(set(files) - {"manifest.json"})
    assert synced[-2:] == ["manifest.json", "export"]


NOTE = "Hello Jane, welcome aboard the premium package. " * 4


def notes(conn: Connection) -> None:
    """20,000 audit events, unchained (neither an export nor an import checks the chain)."""
    at, unchained = utcnow(), "0" * 64
    for start in range(0, 20_000, 1000):
        events = [
            {"at": at, "actor": "cli:shell", "kind": "note", "subject": f"n{start + i}"}
            | {"data": {"text": NOTE}, "prev_hash": unchained, "hash": unchained}
            for i in range(1000)
        ]
        conn.execute(insert(t.audit_events), events)


async def test_an_export_holds_a_batch_of_rows_in_memory_not_the_ledger(
    tmp_path: Path, target: DatabaseURL | None
) -> None:
    """Every table was read whole, and only then written: an export of 200,000 audit
    events took 290 MB (SQLite) to 400 MB (PostgreSQL) more than steward itself."""
    async with Steward.open(settings_of(tmp_path / "home", target)) as app:
        await seed(app)
        await app.ledger.db.run(notes)
        tracemalloc.start()
        try:
            summary = await archive.export(app.ledger, app.engine.checkpointer, tmp_path / "export")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        saved = [tup async for tup in app.engine.checkpointer.alist(None)]
    assert summary.counts["checkpoints"] == len(saved) > 0
    lines = (tmp_path / "export" / "audit_events.jsonl").read_text().splitlines()
    assert len(lines) > 20_000 and json.loads(lines[-1])["data"] == {"text": NOTE}
    assert peak < 8_000_000  # read whole, the table took 27 MB


async def test_an_import_holds_a_batch_of_rows_in_memory_not_the_export(
    tmp_path: Path, target: DatabaseURL | None
) -> None:
    """Every file was read whole before any row was written: an import of 200,000 audit
    events took 490 MB more than steward itself."""
    async with Steward.open(settings_of(tmp_path / "old")) as old:
        await seed(old)
        await old.ledger.db.run(notes)
        await archive.export(old.ledger, old.engine.checkpointer, tmp_path / "export")
    async with Steward.open(settings_of(tmp_path / "new", target)) as new:
        tracemalloc.start()
        try:
            summary = await archive.import_(
                new.ledger, new.engine.checkpointer, tmp_path / "export"
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        imported = await new.ledger.db.run(
            lambda c: c.execute(select(func.count()).select_from(t.audit_events)).scalar_one()
        )
        assert imported == summary.counts["audit_events"] > 20_000
    assert peak < 8_000_000  # read whole, the files took 41 MB


HOOKS = "form:\n  secret: a-long-random-string\n  start: onboarding\n"


def settings_of(home: Path, target: DatabaseURL | None = None) -> Settings:
    return load_settings(home=home, **({"database_url": str(target)} if target else {}))


async def a_home_with_files(home: Path) -> dict[str, str]:
    """A home whose outbox holds two effects and a run waiting, with a definition of the
    operator's and the webhooks' file beside the ledger."""
    (home / "processes").mkdir(parents=True)
    (home / "processes" / "mine.yaml").write_text(
        (BUILTIN_DIR / "invoice_followup.yaml").read_text().replace("invoice_followup", "mine")
    )
    (home / "hooks.yaml").write_text(HOOKS)
    async with Steward.open(settings_of(home)) as app:
        assert app.catalog.get("mine") is not None
        return await seed(app)


async def test_an_export_brings_the_outbox_processes_and_webhooks_along(
    tmp_path: Path, target: DatabaseURL | None
) -> None:
    """They were left behind: on the new machine the outbox no longer showed what had
    been sent, the operator's processes were gone, and so were the webhooks, whose
    senders' deliveries were refused. The workers are the old machine's, and stay."""
    folder, old_home, new_home = tmp_path / "export", tmp_path / "old", tmp_path / "new"
    ids = await a_home_with_files(old_home)
    async with Steward.open(settings_of(old_home)) as old:
        summary = await archive.export(
            old.ledger, old.engine.checkpointer, folder, along=_brought_along(old.settings)
        )
    assert summary.files == 4 and "workers" not in summary.counts
    assert "model_holds" not in summary.counts
    assert {p.name for p in (folder / "home").iterdir()} == {"outbox", "processes", "hooks.yaml"}
    assert stat.S_IMODE((folder / "home" / "hooks.yaml").stat().st_mode) == 0o600
    async with Steward.open(settings_of(new_home, target)) as new:
        summary = await archive.import_(
            new.ledger, new.engine.checkpointer, folder, along=_brought_along(new.settings)
        )
        assert summary.files == 4
        assert outbox(new_home) == outbox(old_home)
        decided = await new.engine.decide(ids["waiting_approval"], True, "cli:shell")
        assert decided.view is not None and decided.view.run.status is RunStatus.SUCCEEDED
    assert len(outbox(new_home)) == len(outbox(old_home)) + 1
    for kept in ("hooks.yaml", "processes/mine.yaml"):
        assert (new_home / kept).read_bytes() == (old_home / kept).read_bytes()
        assert stat.S_IMODE((new_home / kept).stat().st_mode) == 0o600
    async with Steward.open(settings_of(new_home, target)) as new:
        assert new.catalog.get("mine") is not None


def manifest_of(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "manifest.json").read_text()))


@pytest.mark.parametrize("made", ["now", "before its format named the files"])
async def test_an_export_that_brings_files_says_so_by_its_format(tmp_path: Path, made: str) -> None:
    """It said steward-export/1, as one of the ledger alone does: a steward from before
    the files, which reads that format and knows no files, imported the ledger, left the
    outbox, the processes and hooks.yaml behind, and said done. It refuses a format it
    does not read, as this one does; an export of the ledger alone stays one it reads,
    and so does one made before, files and all."""
    folder, alone, old_home = tmp_path / "export", tmp_path / "alone", tmp_path / "old"
    await a_home_with_files(old_home)
    async with Steward.open(settings_of(old_home)) as old:
        along = _brought_along(old.settings)
        await archive.export(old.ledger, old.engine.checkpointer, folder, along=along)
        await archive.export(old.ledger, old.engine.checkpointer, alone)
    assert manifest_of(folder)["format"] == "steward-export/2"
    assert manifest_of(alone)["format"] == "steward-export/1"
    manifest = manifest_of(folder)
    if made != "now":
        manifest["format"] = "steward-export/1"
    (folder / "manifest.json").write_text(json.dumps(manifest | {"format": "steward-export/3"}))
    async with Steward.open(settings_of(tmp_path / "new")) as new:
        along = _brought_along(new.settings)
        newer = r"exported by a newer steward \(its format is steward-export/3.*upgrade this one"
        with pytest.raises(archive.ArchiveError, match=newer):
            await archive.import_(new.ledger, new.engine.checkpointer, folder, along=along)
        assert await new.ledger.list_runs(None) == []
        assert not (tmp_path / "new" / "hooks.yaml").exists()
        (folder / "manifest.json").write_text(json.dumps(manifest))
        summary = await archive.import_(new.ledger, new.engine.checkpointer, folder, along=along)
        assert summary.files == 4 and summary.counts["runs"] == 4
    assert (tmp_path / "new" / "hooks.yaml").read_bytes() == (old_home / "hooks.yaml").read_bytes()


async def test_an_export_copies_no_file_a_link_in_the_home_points_out_to(tmp_path: Path) -> None:
    """A definition linked to a file outside the folder (a key, by a repository of
    definitions that holds the link) was copied into the export as the file's content."""
    folder, home = tmp_path / "export", tmp_path / "old"
    await a_home_with_files(home)
    (tmp_path / "id_ed25519").write_text("PRIVATE KEY")
    (home / "processes" / "key.yaml").symlink_to(tmp_path / "id_ed25519")
    async with Steward.open(settings_of(home)) as old:
        along = _brought_along(old.settings)
        with pytest.raises(archive.ArchiveError, match=r"key\.yaml is a link to .*id_ed25519"):
            await archive.export(old.ledger, old.engine.checkpointer, folder, along=along)
        assert not folder.exists()
        (home / "processes" / "key.yaml").unlink()
        (home / "processes" / "linked.yaml").symlink_to(home / "processes" / "mine.yaml")
        summary = await archive.export(old.ledger, old.engine.checkpointer, folder, along=along)
    assert summary.files == 5
    assert (folder / "home" / "processes" / "linked.yaml").read_bytes() == (
        home / "processes" / "mine.yaml"
    ).read_bytes()


async def test_an_import_overwrites_no_file_of_the_home(tmp_path: Path) -> None:
    """A file of the home that the export brings too is left as it is, and nothing is
    imported, unless it is the export's own (an import made again after a stop)."""
    folder, home = tmp_path / "export", tmp_path / "new"
    await a_home_with_files(tmp_path / "old")
    async with Steward.open(settings_of(tmp_path / "old")) as old:
        await archive.export(
            old.ledger, old.engine.checkpointer, folder, along=_brought_along(old.settings)
        )
    home.mkdir()
    (home / "hooks.yaml").write_text("other:\n  secret: mine\n  start: onboarding\n")
    async with Steward.open(settings_of(home)) as new:
        with pytest.raises(archive.ArchiveError, match=r"hooks\.yaml is there already .* nothing"):
            await archive.import_(
                new.ledger, new.engine.checkpointer, folder, along=_brought_along(new.settings)
            )
        assert await new.ledger.list_runs(None) == []
        assert outbox(home) == [] and not (home / "processes").exists()
        assert "secret: mine" in (home / "hooks.yaml").read_text()
        (home / "hooks.yaml").write_text(HOOKS)
        summary = await archive.import_(
            new.ledger, new.engine.checkpointer, folder, along=_brought_along(new.settings)
        )
        assert summary.files == 3 and len(outbox(home)) == 2


async def test_a_file_of_the_home_cut_short_refuses_the_import(tmp_path: Path) -> None:
    folder, home = tmp_path / "export", tmp_path / "new"
    await a_home_with_files(tmp_path / "old")
    async with Steward.open(settings_of(tmp_path / "old")) as old:
        await archive.export(
            old.ledger, old.engine.checkpointer, folder, along=_brought_along(old.settings)
        )
    mine = folder / "home" / "processes" / "mine.yaml"
    mine.write_bytes(mine.read_bytes()[:100])
    async with Steward.open(settings_of(home)) as new:
        with pytest.raises(archive.ArchiveError, match=r"mine\.yaml is missing or not as exported"):
            await archive.import_(
                new.ledger, new.engine.checkpointer, folder, along=_brought_along(new.settings)
            )
        assert await new.ledger.list_runs(None) == []
        assert outbox(home) == [] and not (home / "hooks.yaml").exists()


async def test_a_file_of_the_home_changed_after_its_check_is_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was checked against the manifest, then copied as it was by then: a definition
    changed in between went into the new home's processes unchecked."""
    folder, home = tmp_path / "export", tmp_path / "new"
    await a_home_with_files(tmp_path / "old")
    async with Steward.open(settings_of(tmp_path / "old")) as old:
        along = _brought_along(old.settings)
        await archive.export(old.ledger, old.engine.checkpointer, folder, along=along)
    bring = archive._import_files
    mine = folder / "home" / "processes" / "mine.yaml"

    def changed_meanwhile(files: Any) -> list[Path]:
        mine.write_text(mine.read_text().replace("mine", "yours"))
        return bring(files)

    monkeypatch.setattr(archive, "_import_files", changed_meanwhile)
    async with Steward.open(settings_of(home)) as new:
        along = _brought_along(new.settings)
        with pytest.raises(archive.ArchiveError, match=r"mine\.yaml changed .* nothing was"):
            await archive.import_(new.ledger, new.engine.checkpointer, folder, along=along)
        assert await new.ledger.list_runs(None) == []
    assert not (home / "hooks.yaml").exists() and outbox(home) == []
    assert list((home / "processes").iterdir()) == []


async def test_a_file_of_the_home_made_during_the_import_is_left_and_nothing_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made where the export's goes after the check: the import stopped as an export it
    could not read, naming its own temporary file, and left the files it had written
    before that one (hooks.yaml, the outbox) in the home."""
    folder, home = tmp_path / "export", tmp_path / "new"
    await a_home_with_files(tmp_path / "old")
    async with Steward.open(settings_of(tmp_path / "old")) as old:
        along = _brought_along(old.settings)
        await archive.export(old.ledger, old.engine.checkpointer, folder, along=along)
    bring = archive._import_files
    mine = home / "processes" / "mine.yaml"

    def made_meanwhile(files: Any) -> list[Path]:
        mine.parent.mkdir(exist_ok=True)
        mine.write_text("the operator's own")
        return bring(files)

    monkeypatch.setattr(archive, "_import_files", made_meanwhile)
    async with Steward.open(settings_of(home)) as new:
        along = _brought_along(new.settings)
        with pytest.raises(archive.ArchiveError, match=r"mine\.yaml was made during the import"):
            await archive.import_(new.ledger, new.engine.checkpointer, folder, along=along)
        assert await new.ledger.list_runs(None) == []
    assert not (home / "hooks.yaml").exists() and outbox(home) == []
    assert mine.read_text() == "the operator's own"
    assert [p.name for p in (home / "processes").iterdir()] == ["mine.yaml"]


async def test_a_file_changed_during_the_import_leaves_nothing_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows are read again as they are written: one more by then is refused whole."""
    folder = tmp_path / "export"
    async with Steward.open(settings_of(tmp_path / "old")) as old:
        await seed(old)
        await archive.export(old.ledger, old.engine.checkpointer, folder)
    store = archive._import_checkpoints
    runs = folder / "runs.jsonl"

    async def a_run_added_meanwhile(*args: Any) -> int:
        extra = json.loads(runs.read_text().splitlines()[0]) | {"id": "rextra0001"}
        with runs.open("a") as lines:
            lines.write(json.dumps(extra) + "\n")
        return await store(*args)

    monkeypatch.setattr(archive, "_import_checkpoints", a_run_added_meanwhile)
    async with Steward.open(settings_of(tmp_path / "new")) as new:
        with pytest.raises(archive.ArchiveError, match=r"runs\.jsonl changed .* nothing was"):
            await archive.import_(new.ledger, new.engine.checkpointer, folder)
        assert await new.ledger.list_runs(None) == []
        assert [saved async for saved in new.engine.checkpointer.alist(None)] == []
