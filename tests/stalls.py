"""A run whose stop the ledger fails to record, for the tests of what comes after."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from bot.app import Steward
from graph import engine as engine_module

ONBOARD_PREMIUM = {"client": "Acme", "email": "jane@acme.com", "package": "premium"}


async def stalled_after_its_email(steward: Steward, monkeypatch: pytest.MonkeyPatch) -> str:
    """An onboarding approved, its email sent, and then the write of where it stopped
    failed (the disk, the database away): its id, the run left running and noted stalled,
    due for a resume at once."""
    monkeypatch.setattr(engine_module, "STALLED_FIRST_RETRY", 0.0)
    view = await steward.engine.start("onboarding", ONBOARD_PREMIUM, "cli:shell")
    assert view.approval is not None
    write = steward.ledger.write
    failures = [OperationalError("COMMIT", {}, Exception("disk I/O error"))]

    async def failing(fn: Any, durable: bool = True) -> Any:
        if failures and fn.__qualname__.endswith("_settle.<locals>.record"):
            raise failures.pop()
        return await write(fn, durable)

    monkeypatch.setattr(steward.ledger, "write", failing)
    with pytest.raises(OperationalError):
        await steward.engine.decide(view.approval.id, True, "cli:shell")
    return view.run.id
