"""A run's timeline: each step with its inputs, decision, rule or model, confidence,
cost and duration — in /runs RUN, Details and steward runs show."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import Steward
from graph.messages import Inbound, Sender
from graph.timeline import timeline
from tests.graph.test_budget import ONBOARD, open_steward


async def test_a_runs_timeline_says_who_decided_what_and_what_it_cost(tmp_path: Path) -> None:
    app: Steward
    async for app in open_steward(tmp_path):
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert view.approval is not None
        await app.engine.decide(view.approval.id, True, "telegram:42", None, "Dear Acme, edited.")
        run = await app.ledger.get_run(view.run.id)
        assert run is not None
        rows = {row.step: row for row in await timeline(app.ledger, run)}
        draft = rows["draft_welcome"]
        assert draft.by == "model house-model" and draft.cost_usd > 0
        gate = rows["approve_welcome"]
        assert gate.decision == "approved with edits" and gate.by == "telegram:42"
        sent = rows["send_welcome"]
        assert "to=jane@acme.com" in sent.inputs and "body=Dear Acme, edited." in sent.inputs
        assert sent.decision == f"email.send_email done, key {run.id}:send_welcome"
        branch = rows["kickoff_planned"]
        assert branch.by == "rule: kickoff != None (false)" and branch.confidence == "certain"
        assert branch.decision == "went to premium_extras"  # no kickoff given: the rule is false
        assert all(row.took_seconds >= 0 for row in rows.values())

        sender = Sender("cli", "shell")
        reply = await app.coordinator.handle(Inbound(sender, "t", "x-1", text=f"/runs {run.id}"))
        text = "\n".join(reply.texts)
        assert f"Run {run.id} · onboarding · succeeded" in text
        assert "drafted the text — by model house-model" in text and "$0.0070" in text
        missing = await app.coordinator.handle(Inbound(sender, "t", "x-2", text="/runs rnope"))
        # it said "No run 'rnope'; /runs all lists them." where others say it as below
        assert missing.texts == ["no run 'rnope'; /runs all lists them"]


async def test_a_waiting_runs_timeline_in_chat_names_its_pending_approval(
    tmp_path: Path,
) -> None:
    """``steward runs RUN`` named it; ``/runs RUN`` showed the run waiting, and not for what."""
    app: Steward
    async for app in open_steward(tmp_path):
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        assert view.approval is not None
        sender = Sender("cli", "shell")
        reply = await app.coordinator.handle(
            Inbound(sender, "t", "x-1", text=f"/runs {view.run.id}")
        )
        assert f"pending approvals: {view.approval.id}" in "\n".join(reply.texts)


async def test_each_visit_of_a_step_shows_what_that_visit_cost(tmp_path: Path) -> None:
    """A step run twice (a replay, a loop) drafts twice: each of its rows shows its own
    draft's cost, not the two drafts' sum, which counted the spend twice."""
    app: Steward
    async for app in open_steward(tmp_path):
        view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
        await app.engine.replay(view.run.id, "draft_welcome", {}, "cli:shell")
        run = await app.ledger.get_run(view.run.id)
        assert run is not None
        drafts = [row for row in await timeline(app.ledger, run) if row.step == "draft_welcome"]
        assert [row.cost_usd for row in drafts] == [pytest.approx(0.007)] * 2
