"""Which of a ledger's write transactions waited for the disk, in order."""

from __future__ import annotations

from typing import Any

import pytest

from memory.ledger import Ledger


def record_commits(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """From now on, one entry per write transaction: True where it waited for the disk."""
    commits: list[bool] = []
    run = ledger.db.run

    async def recorded(fn: Any, write: bool = True, durable: bool = True) -> Any:
        if write:
            commits.append(durable)
        return await run(fn, write, durable)

    monkeypatch.setattr(ledger.db, "run", recorded)
    return commits
