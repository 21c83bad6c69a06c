"""Checkpoints in the ledger's SQLite transactions: a resumed run's checkpoint is read
with the decision that resumes it, and what was read ahead is never taken stale."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import Steward
from bot.settings import load_settings
from memory.checkpoints import LedgerSqliteSaver
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
    assert saver._read == {}


async def test_what_was_read_ahead_goes_stale_with_any_write_to_the_thread(
    app: Steward,
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    saver = saver_of(app)
    config = {"configurable": {"thread_id": view.run.id, "checkpoint_ns": ""}}
    await app.ledger.write(lambda tx: saver.read_ahead(tx.conn, view.run.id))
    ahead = saver._read[view.run.id]
    assert ahead is not None

    await saver.aput_writes(ahead.config, [("later", 1)], "task-1")

    assert view.run.id not in saver._read
    fresh = await saver.aget_tuple(config)  # type: ignore[arg-type]
    assert fresh is not None
    assert ("task-1", "later", 1) in fresh.pending_writes


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

    assert saver_of(app)._read == {}
    run = await app.ledger.get_run(view.run.id)
    assert run is not None and run.status is RunStatus.RUNNING  # recovery resumes it
