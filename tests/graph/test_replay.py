"""Replay: a run runs again from a step with changed inputs; a done effect is never
repeated silently — a changed one goes through its gate again, and an action that
already acted on its approval is refused."""

from __future__ import annotations

import json

import pytest

from bot.app import Steward
from bot.cli import _parser
from graph.engine import InputProblem
from graph.errors import InvalidState, NotFound
from memory.ledger import ApprovalStatus, RunStatus
from tests.graph.test_coordinator import app, send  # noqa: F401 - the fixture

ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}


def sent(app: Steward) -> list[dict[str, object]]:  # noqa: F811
    folder = app.settings.outbox_dir
    effects = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []
    return sorted(effects, key=lambda e: str(e["key"]))


async def done_run(app: Steward) -> str:  # noqa: F811
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None
    await app.engine.decide(view.approval.id, True, "cli:shell")
    return view.run.id


async def test_a_changed_input_goes_through_the_gate_again(app: Steward) -> None:  # noqa: F811
    run_id = await done_run(app)
    view = await app.engine.replay(run_id, "draft_welcome", {"client": "Acme Corp"}, "cli:shell")
    assert view.run.status is RunStatus.WAITING and view.approval is not None
    assert view.approval.visit == 2 and view.approval.card["fields"]["Client"] == "Acme Corp"
    assert len(sent(app)) == 1  # nothing until the new approval

    decided = await app.engine.decide(view.approval.id, True, "cli:shell")
    assert decided.view is not None and decided.view.run.status is RunStatus.SUCCEEDED
    first, second = sent(app)
    assert first["key"] == f"{run_id}:send_welcome"
    assert second["key"] == f"{run_id}:send_welcome:2"
    assert second["params"]["subject"] == "Welcome aboard, Acme Corp"  # type: ignore[index]
    run = await app.ledger.get_run(run_id)
    assert run is not None and run.inputs["client"] == "Acme Corp"
    kinds = [e.kind for e in await app.ledger.audit_events()]
    assert "run.replayed" in kinds and (await app.ledger.verify_audit()).ok


async def test_an_action_that_acted_on_its_approval_is_not_repeated(app: Steward) -> None:  # noqa: F811
    run_id = await done_run(app)
    view = await app.engine.replay(run_id, "send_welcome", {}, "cli:shell")
    assert view.run.status is RunStatus.FAILED and view.run.error_class == "permission"
    assert "already acted on this approval" in (view.run.error or "")
    assert len(sent(app)) == 1


async def test_a_waiting_run_leaves_its_open_gate_behind(app: Steward) -> None:  # noqa: F811
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None
    old = view.approval.id
    again = await app.engine.replay(view.run.id, "draft_welcome", {"package": "premium"}, "cli")
    assert again.approval is not None and again.approval.id != old and again.approval.visit == 2
    stale = await app.ledger.get_approval(old)
    assert stale is not None and stale.status is ApprovalStatus.CANCELLED
    late = await app.engine.decide(old, True, "cli:shell")
    assert not late.decided_now and sent(app) == []
    await app.engine.decide(again.approval.id, True, "cli:shell")
    assert [e["key"] for e in sent(app)] == [f"{view.run.id}:send_welcome"]


async def test_bad_replays_say_what_is_wrong(app: Steward) -> None:  # noqa: F811
    run_id = await done_run(app)
    with pytest.raises(NotFound, match="no step 'nope'"):
        await app.engine.replay(run_id, "nope", {}, "cli:shell")
    with pytest.raises(InputProblem, match="colour"):
        await app.engine.replay(run_id, "draft_welcome", {"colour": "red"}, "cli:shell")
    with pytest.raises(InvalidState, match="email"):
        await app.engine.replay(run_id, "draft_welcome", {"email": "not-an-address"}, "cli")
    assert len(sent(app)) == 1


async def test_replay_in_chat_shows_the_new_card(app: Steward) -> None:  # noqa: F811
    run_id = await done_run(app)
    reply = await send(app, f'/replay {run_id} draft_welcome client="Acme Corp"')
    assert f"Replaying run {run_id} from draft_welcome." in reply.texts[0]
    assert reply.cards[0].fields[0] == ("Client", "Acme Corp")
    assert "Usage: /replay" in "\n".join((await send(app, "/replay")).texts)


def test_replay_is_in_the_cli() -> None:
    args, extra = _parser().parse_known_args(["replay", "r1", "--from", "s", "client=X"])
    assert (args.id, args.from_step, [*args.inputs, *extra]) == ("r1", "s", ["client=X"])
