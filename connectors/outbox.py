"""A local connector that writes each effect as one file under ``STEWARD_HOME/outbox/``.

The file is named by the idempotency key and created atomically, so a repeated call
with the same key leaves exactly one file: an effect you can count.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from connectors.base import DataError

ACTIONS = frozenset({"send_email", "send_invoice_reminder", "publish", "create_folder", "notify"})


class OutboxConnector:
    name = "outbox"
    actions = ACTIONS
    idempotent = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def perform(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        if action not in self.actions:
            raise DataError(
                f"the outbox cannot {action!r}; it can {', '.join(sorted(self.actions))}"
            )
        return await asyncio.to_thread(self._write, action, params, key)

    def _write(self, action: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(key.encode()).hexdigest()[:24] + ".json"
        path = self.folder / name
        body = json.dumps({"action": action, "key": key, "params": params}, indent=2, default=str)
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
        return {"file": name, "action": action}

    def count(self) -> int:
        return len(list(self.folder.glob("*.json"))) if self.folder.exists() else 0
