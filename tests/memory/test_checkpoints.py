"""Checkpoints in the ledger's SQLite transactions: a resumed run's checkpoint is read
with the decision that resumes it and handed to the resume, and never taken stale, twice,
by another task or outside the resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import Steward
from bot.settings import load_settings
from memory.checkpoints import LedgerSqliteSaver, _handed
from memory.ledger import RunStatus

ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "premium"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        yield steward


def saver_of(app: Steward) -> LedgerSqliteSaver:
    saver = app.engine.checkpointer
    assert isinstance(saver, LedgerSqliteSaver)
    return saver


def count_reads(saver: LedgerSqliteSaver, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads whose checkpoint was read in a transaction of its own."""
    reads: list[str] = []
    run = saver._run

    async def counted(fn: Callable[..., Any], *args: Any, write: bool = True) -> Any:
        if fn == saver.get_tuple:
            reads.append(args[0]["configurable"]["thread_id"])
        return await run(fn, *args, write=write)

    monkeypatch.setattr(saver, "_run", counted)
    return reads


async def test_a_decision_reads_its_runs_checkpoint_in_its_own_transaction(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None
    saver = saver_of(app)
    reads = count_reads(saver, monkeypatch)

    decision = await app.engine.decide(view.approval.id, True, "cli:shell")

    assert decision.view is not None and decision.view.approval is not None  # the next gate
    assert decision.view.approval.step_id == "approve_folder"
    assert reads == []
    assert _handed.get() is None


async def test_a_checkpoint_handed_to_a_resume_goes_stale_with_any_write_in_its_task(
    app: Steward,
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    saver = saver_of(app)
    config: Any = {"configurable": {"thread_id": view.run.id, "checkpoint_ns": ""}}
    latest = await app.ledger.write(lambda tx: saver.read_latest(tx.conn, view.run.id))
    assert latest is not None
    with saver.resuming(view.run.id, latest):
        await saver.aput_writes(latest.config, [("later", 1)], "task-1")
        fresh = await saver.aget_tuple(config)
    assert fresh is not None and ("task-1", "later", 1) in fresh.pending_writes


async def test_a_checkpoint_handed_to_a_resume_is_taken_once_in_its_task_alone(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    saver = saver_of(app)
    config: Any = {"configurable": {"thread_id": view.run.id, "checkpoint_ns": ""}}
    other: Any = {"configurable": {"thread_id": "another run", "checkpoint_ns": ""}}
    latest = await app.ledger.write(lambda tx: saver.read_latest(tx.conn, view.run.id))
    reads = count_reads(saver, monkeypatch)
    with saver.resuming(view.run.id, latest):
        assert await asyncio.create_task(saver.aget_tuple(config)) is not latest  # another task
        assert await saver.aget_tuple(other) is None  # another thread: read, and not taken
        assert await saver.aget_tuple(config) is not latest  # taken by the first read only
    with saver.resuming(view.run.id, latest):
        assert await saver.aget_tuple(config) is latest
        assert await saver.aget_tuple(config) is not latest
    assert await saver.aget_tuple(config) is not latest  # never outside its block
    assert reads == [view.run.id, "another run", view.run.id, view.run.id, view.run.id]


async def test_a_resume_that_fails_before_it_reads_forgets_what_was_read_ahead(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None

    async def broken(version: str) -> Any:
        raise RuntimeError("no definition")

    monkeypatch.setattr(app.engine, "_compiled_for", broken)
    with pytest.raises(RuntimeError, match="no definition"):
        await app.engine.decide(view.approval.id, True, "cli:shell")

    assert _handed.get() is None
    run = await app.ledger.get_run(view.run.id)
    assert run is not None and run.status is RunStatus.RUNNING  # recovery resumes it
