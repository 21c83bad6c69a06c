"""User connectors: an installed package's ``steward.connectors`` entry point is
registered like a built-in one, and a broken one is skipped without stopping steward."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bot.app import Steward
from bot.settings import load_settings

PLUGIN = """
import json
from pathlib import Path
from pydantic import BaseModel


class AddContact(BaseModel):
    email: str
    name: str


class CrmConnector:
    name = "crm"
    actions = frozenset({"add_contact"})
    idempotent = True
    schemas = {"add_contact": AddContact}

    def __init__(self, folder):
        self.folder = Path(folder)

    async def perform(self, action, params, key):
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / (key.replace(":", "_") + ".json")).write_text(json.dumps(params))
        return {"contact": params["email"]}


def make():
    import os
    return CrmConnector(os.environ["CRM_FOLDER"])


def broken():
    raise RuntimeError("CRM_TOKEN is not set")


def not_a_connector():
    return object()


class SyncConnector(CrmConnector):
    name = "sync_crm"

    def perform(self, action, params, key):  # acted, then "can't be used in 'await'"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "sync.json").write_text(json.dumps(params))
        return {}


def sync_connector():
    import os
    return SyncConnector(os.environ["CRM_FOLDER"])
"""

PROCESS = """
name: crm_sync
title: CRM sync
description: Add a client to the CRM.
inputs:
  email: {type: email}
  name: {type: string}
steps:
  - id: approve
    kind: approval
    summary: Add {name} to the CRM
  - id: add
    kind: action
    gate: approve
    connector: crm
    action: add_contact
    with: {email: "{email}", name: "{name}"}
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package, as pip leaves one: a module and its dist-info."""
    site = tmp_path / "site"
    (site / "steward_crm_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "steward_crm_plugin.py").write_text(PLUGIN)
    info = site / "steward_crm_plugin-0.1.dist-info"
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: steward-crm-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [steward.connectors]
            crm = steward_crm_plugin:make
            broken = steward_crm_plugin:broken
            odd = steward_crm_plugin:not_a_connector
            missing = steward_crm_plugin:nowhere
            sync = steward_crm_plugin:sync_connector
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CRM_FOLDER", str(tmp_path / "crm"))
    return tmp_path / "crm"


def contacts(folder: Path) -> list[dict[str, str]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


async def test_an_installed_connector_acts_after_approval_once(
    tmp_path: Path, plugin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    processes = tmp_path / "processes"
    processes.mkdir()
    (processes / "crm_sync.yaml").write_text(PROCESS)
    settings = load_settings(home=tmp_path / "home", processes_dir=processes)
    async with Steward.open(settings) as steward:
        assert steward.connectors.get("crm").name == "crm"
        skipped = " ".join(r.getMessage() for r in caplog.records)
        assert "connector 'broken'" in skipped and "CRM_TOKEN is not set" in skipped
        assert "connector 'odd'" in skipped and "returned no connector" in skipped
        assert "connector 'missing'" in skipped
        assert "connector 'sync'" in skipped and "write it `async def perform`" in skipped

        view = await steward.engine.start(
            "crm_sync", {"email": "jane@acme.com", "name": "Jane"}, "cli:shell"
        )
        assert view.approval is not None and contacts(plugin) == []
        done = await steward.engine.decide(view.approval.id, True, "cli:shell")
        assert done.view is not None and done.view.run.status.value == "succeeded"
        assert contacts(plugin) == [{"email": "jane@acme.com", "name": "Jane"}]
