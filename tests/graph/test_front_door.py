"""The front door: what it does with a delivery it cannot store, on either database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DataError, OperationalError

from bot.app import Steward
from bot.settings import load_settings
from graph.messages import Inbound, Sender
from memory.database_url import DatabaseURL

OPERATOR = Sender("telegram", "42", "Olivia")


@pytest.fixture
async def app(database_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(
        home=tmp_path / "home",
        database_url=database_url.setting,
        operators=OPERATOR.key,
    )
    async with Steward.open(settings) as steward:
        yield steward


async def test_a_delivery_the_database_refuses_is_set_aside_and_the_next_one_goes_on(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivered again it would be refused again, and Telegram brings nothing after an
    update it was not told of: so it is audited, and the door answers as for a duplicate."""
    refuse(app, monkeypatch, DataError("INSERT INTO inbox …", {}, Exception("value too long")))
    assert await app.door.accept(Inbound(OPERATOR, "7", "update-1", text="/runs")) is None
    [event] = [e for e in await app.ledger.audit_events() if e.kind == "delivery.unstorable"]
    assert event.subject == "telegram" and event.data["delivery"] == "update-1"
    assert "value too long" in event.data["error"]
    assert await app.ledger.unhandled_inbound() == []

    monkeypatch.undo()
    reply = await app.door.receive(Inbound(OPERATOR, "7", "update-2", text="/runs"))
    assert reply is not None and reply.texts


async def test_a_delivery_the_database_failed_to_store_is_not_set_aside(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Down, locked, a bug: the platform must deliver it again, so the error goes on."""
    for error in (OperationalError("INSERT …", {}, Exception("locked")), TypeError("a bug")):
        refuse(app, monkeypatch, error)
        with pytest.raises(type(error)):
            await app.door.accept(Inbound(OPERATOR, "7", "update-1", text="/runs"))
    assert [e for e in await app.ledger.audit_events() if e.kind == "delivery.unstorable"] == []


def refuse(app: Steward, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    async def refusing(*args: Any) -> None:
        raise error

    monkeypatch.setattr(app.ledger, "accept_inbound", refusing)


async def test_a_delivery_longer_than_its_column_is_set_aside(app: Steward) -> None:
    """PostgreSQL refuses an id longer than its column (SQLite takes it)."""
    long = Inbound(OPERATOR, "7", "u" * 300, text="/runs")
    stored = await app.door.accept(long)
    unstorable = [e for e in await app.ledger.audit_events() if e.kind == "delivery.unstorable"]
    if app.ledger.url.is_sqlite:
        assert stored is not None and unstorable == []
    else:
        assert stored is None and len(unstorable) == 1
