"""The local outbox: one file per effect, on disk before the ledger hears it is done."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from connectors.outbox import OutboxConnector


async def test_an_effect_s_file_and_its_name_are_on_disk_before_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's contents were synced and the folder's entry for it not: after a power
    loss the file could be gone while the ledger said the effect was done."""
    synced: list[bool] = []  # each sync: of a folder?
    sync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        sync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    outbox = OutboxConnector(tmp_path / "outbox")
    await outbox.perform("notify", {"text": "hello"}, "run1:tell")
    assert synced == [False, True]  # the file, then the folder's entry for it
    assert outbox.count() == 1
