"""An approval whose expiry escalates: when nobody answers in time it is asked again,
its buttons intact, and it can still be decided once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import Steward
from graph.messages import CardOutcome
from memory.ledger import ApprovalStatus, RunStatus
from tests.homes import steward_with

PING = """\
name: ping
title: Ping
description: Send a ping email
inputs:
  email:
    type: email
    description: who
steps:
  - id: approve_ping
    kind: approval
    title: Approve the ping
    summary: Ping {email}
    fields:
      Recipient: "{email}"
    expires_in: 1h
    on_expiry: escalate
  - id: send_ping
    kind: action
    title: Send the ping
    gate: approve_ping
    connector: email
    action: send_email
    with:
      to: "{email}"
      subject: ping
      body: ping
"""


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    async with steward_with(tmp_path, {"ping": PING}) as steward:
        yield steward


async def test_an_escalated_approval_is_asked_again_with_its_buttons(app: Steward) -> None:
    view = await app.engine.start("ping", {"email": "jane@acme.com"}, "cli:a")
    assert view.approval is not None
    run_id = view.run.id
    await app.ledger.write(lambda tx: tx.postpone_deadlines(run_id, -timedelta(days=4)))  # due

    escalated = await app.engine.expire(view.approval.id)  # as its timer does

    assert escalated is not None and not escalated.decided_now
    reply = app.coordinator.decision_reply(escalated)
    assert "asking again" in reply.texts[0]
    [card] = reply.cards
    assert card.approval_id == view.approval.id and "Approve" in [b.label for b in card.buttons]
    assert card.footer.endswith(": it waits for you")  # not a deadline already past
    assert "nobody answered by " in card.footer
    assert not [item for item in reply.items if isinstance(item, CardOutcome)]  # kept its buttons
    kinds = [event.kind for event in await app.ledger.audit_events()]
    assert "approval.escalated" in kinds

    decided = await app.engine.decide(view.approval.id, True, "cli:a")
    assert decided.view is not None and decided.view.run.status is RunStatus.SUCCEEDED
    assert decided.approval.status is ApprovalStatus.APPROVED
