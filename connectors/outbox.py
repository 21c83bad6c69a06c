"""A local connector that writes each effect as one file under ``STEWARD_HOME/outbox/``.

The file is named by the idempotency key and created atomically, so a repeated call
with the same key leaves exactly one file: an effect you can count.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from connectors.base import DataError

ACTIONS = frozenset({"send_email", "publish", "create_folder", "notify"})
EFFECT_FILES = "*.json"


class OutboxConnector:
    """Also stands in for a connector that is not configured (``email`` without
    STEWARD_SMTP_URL), under that connector's name: its effects land here, countable."""

    idempotent = True

    def __init__(
        self,
        folder: Path,
        name: str = "outbox",
        actions: frozenset[str] = ACTIONS,
        schemas: Mapping[str, type[BaseModel]] | None = None,
    ) -> None:
        self.folder = folder
        self.name = name
        self.actions = actions
        self.schemas: Mapping[str, type[BaseModel]] = schemas or {}

    async def perform(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        if action not in self.actions:
            raise DataError(
                f"the {self.name} outbox cannot {action!r}; it can "
                + ", ".join(sorted(self.actions)),
                reached=False,
            )
        return await asyncio.to_thread(self._write, action, params, key)

    def _write(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:24] + ".json"
        path = self.folder / name
        effect = {"connector": self.name, "action": action, "key": key, "params": params}
        body = json.dumps(effect, indent=2, default=str)
        temp = path.with_suffix(f".tmp{os.getpid()}")
        with open(temp, "w", encoding="utf-8") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)  # fails if the effect already happened: no second file
        except FileExistsError:
            pass
        finally:
            temp.unlink(missing_ok=True)
        _sync_folder(self.folder)  # the file's name too: the ledger is told it is done next
        return {"file": name, "action": action}

    def count(self) -> int:
        return len(list(self.folder.glob(EFFECT_FILES))) if self.folder.exists() else 0


def _sync_folder(folder: Path) -> None:
    """Makes the names in ``folder`` durable: after a power loss, a file made there and
    its contents synced could still be missing, its entry in the folder never written."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
