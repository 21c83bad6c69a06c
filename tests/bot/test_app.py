"""The composition root: recovery after a crash between storing a message and handling
it, and where the data of an earlier version is."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from bot.app import Steward
from bot.settings import load_settings
from graph.messages import Inbound, Sender
from memory.ledger import RunStatus


async def test_a_stored_but_unhandled_message_is_handled_on_restart(steward: Steward) -> None:
    inbound = Inbound(
        Sender("console", "me"),
        "terminal",
        "m-1",
        text="/run onboarding client=Acme email=jane@acme.com package=basic",
    )
    # What a crash right after the durable receipt leaves behind:
    assert await steward.ledger.accept_inbound("console", "m-1", inbound.to_payload()) is not None
    assert await steward.ledger.list_runs() == []

    replies = [reply for _, reply in await steward.door.recover_inbox("console")]

    assert len(replies) == 1 and replies[0].cards
    runs = await steward.ledger.list_runs()
    assert [r.status for r in runs] == [RunStatus.WAITING]
    assert await steward.ledger.unhandled_inbound() == []
    assert await steward.door.recover_inbox("console") == []  # handled once
    assert await steward.door.receive(inbound) is None  # a redelivery is dropped


async def test_a_run_interrupted_mid_step_continues_on_restart(steward: Steward) -> None:
    view = await steward.engine.start(
        "onboarding", {"client": "Acme", "email": "jane@acme.com", "package": "basic"}, "cli:x"
    )
    assert view.approval is not None
    # The decision committed, then the process died before the run resumed.
    await steward.ledger.decide_approval(view.approval.id, view.approval.status.APPROVED, "cli:x")

    await steward.engine.recover()

    run = await steward.ledger.get_run(view.run.id)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert len(list(steward.settings.outbox_dir.glob("*.json"))) == 1


async def test_the_ledger_an_earlier_version_kept_in_the_home_folder_is_pointed_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "steward.db").write_bytes(b"")  # where STEWARD_HOME came from HOME
    with caplog.at_level(logging.WARNING, logger="bot.app"):
        async with Steward.open(load_settings()):
            pass
    [warning] = [r.getMessage() for r in caplog.records if r.name == "bot.app"]
    assert f"set STEWARD_HOME={tmp_path} or move those files into {tmp_path / '.steward'}" in (
        warning
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.app"):
        async with Steward.open(load_settings(home=tmp_path)):  # it is the home again
            pass
    assert [r for r in caplog.records if r.name == "bot.app"] == []


async def test_a_new_home_is_its_owners_alone(tmp_path: Path) -> None:
    """The ledger, the outbox and long-term memory hold the clients' emails: with the
    usual umask (022) a home steward made was open to every user of the machine."""
    home = tmp_path / "data" / "steward"
    umask = os.umask(0o022)
    try:
        async with Steward.open(load_settings(home=home)):
            pass
    finally:
        os.umask(umask)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


async def test_a_ledger_folder_steward_makes_elsewhere_is_its_owners_alone(
    tmp_path: Path,
) -> None:
    """STEWARD_DATABASE_URL names a SQLite file outside the home, in a folder to make."""
    ledger = tmp_path / "srv" / "ledgers" / "steward.db"
    umask = os.umask(0o022)
    try:
        settings = load_settings(home=tmp_path / "home", database_url=f"sqlite:///{ledger}")
        async with Steward.open(settings):
            pass
    finally:
        os.umask(umask)
    assert stat.S_IMODE(ledger.parent.stat().st_mode) == 0o700


async def test_the_model_clients_connections_close_with_steward(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", llm_model="gpt-4o-mini", openai_api_key="k")
    async with Steward.open(settings) as app:
        models = app.coordinator.router.models
        assert models is not None
        clients = [chat.http_async_client for chat in (models.strong, models.fast)]  # type: ignore[attr-defined]
        assert not any(client.is_closed for client in clients)
    assert all(client.is_closed for client in clients)
