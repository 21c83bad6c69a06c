"""Replay: a run runs again from a step with changed inputs; a done effect is never
repeated silently — a changed one goes through its gate again, and an action that
already acted on its approval is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Steward
from bot.cli import _parser
from bot.settings import load_settings
from connectors.base import DataError
from graph.engine import InputProblem
from graph.errors import InvalidState, NotFound
from memory.database_url import DatabaseURL
from memory.ledger import ApprovalStatus, Run, RunStatus
from tests.graph.test_coordinator import app, send  # noqa: F401 - the fixture
from tests.graph.test_engine_races import INVOICE

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


async def test_an_action_that_acted_on_its_approval_is_refused_and_the_run_stays_as_it_was(
    app: Steward,  # noqa: F811
) -> None:
    run_id = await done_run(app)
    with pytest.raises(InvalidState, match=f"acted on its approval already.*{run_id} approve_"):
        await app.engine.replay(run_id, "send_welcome", {}, "cli:shell")
    run = await app.ledger.get_run(run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.error is None
    assert len(sent(app)) == 1
    again = await app.engine.replay(run_id, "approve_welcome", {}, "cli:shell")  # asks again
    assert again.approval is not None and again.approval.visit == 2
    await app.engine.decide(again.approval.id, True, "cli:shell")
    assert [e["key"] for e in sent(app)] == [f"{run_id}:send_welcome", f"{run_id}:send_welcome:2"]


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
    # acting on the second visit of its gate: a key of its own (see effect_key)
    assert [e["key"] for e in sent(app)] == [f"{view.run.id}:send_welcome@2"]


async def test_bad_replays_say_what_is_wrong(app: Steward) -> None:  # noqa: F811
    run_id = await done_run(app)
    with pytest.raises(NotFound, match="no step 'nope'"):
        await app.engine.replay(run_id, "nope", {}, "cli:shell")
    with pytest.raises(InputProblem, match="colour"):
        await app.engine.replay(run_id, "draft_welcome", {"colour": "red"}, "cli:shell")
    with pytest.raises(InputProblem, match="email"):
        await app.engine.replay(run_id, "draft_welcome", {"email": "not-an-address"}, "cli")
    assert len(sent(app)) == 1


async def test_a_paused_run_is_not_replayed_until_it_is_resumed(app: Steward) -> None:  # noqa: F811
    """A replay of a paused run ran its steps and left it waiting at a new card: the
    pause was undone by a command that never said so."""
    view = await app.engine.start("onboarding", ONBOARD, "cli:shell")
    assert view.approval is not None
    await app.engine.pause(view.run.id, "cli:shell")
    reply = await send(app, f"/replay {view.run.id} draft_welcome package=premium")
    assert f"run {view.run.id} is paused; /resume {view.run.id} first" in reply.texts[0]
    run = await app.ledger.get_run(view.run.id)
    assert run is not None and run.status is RunStatus.PAUSED
    assert run.inputs["package"] == "basic"
    [pending] = await app.ledger.pending_approvals([view.run.id])
    assert pending.id == view.approval.id  # its card stands, as it was
    assert "run.replayed" not in [e.kind for e in await app.ledger.audit_events()]

    await app.engine.resume(view.run.id, "cli:shell")
    again = await app.engine.replay(view.run.id, "draft_welcome", {"package": "premium"}, "cli")
    assert again.run.status is RunStatus.WAITING and again.approval is not None
    assert again.approval.visit == 2


async def test_replay_in_chat_shows_the_new_card(app: Steward) -> None:  # noqa: F811
    run_id = await done_run(app)
    reply = await send(app, f'/replay {run_id} draft_welcome client="Acme Corp"')
    assert f"Replaying run {run_id} from draft_welcome." in reply.texts[0]
    assert reply.cards[0].fields[0] == ("Client", "Acme Corp")
    assert "Usage: /replay" in "\n".join((await send(app, "/replay")).texts)


def test_replay_is_in_the_cli() -> None:
    args, extra = _parser().parse_known_args(["replay", "r1", "--from", "s", "client=X"])
    assert (args.id, args.from_step, [*args.inputs, *extra]) == ("r1", "s", ["client=X"])


def refused_once(app: Steward, address_ending: str) -> None:  # noqa: F811
    """The email connector refuses addresses that end so, as an SMTP server would (550)."""
    connector = app.engine.effects.connectors.get("email")
    perform = connector.perform

    async def smtp(action: str, params: dict[str, Any], key: str) -> Any:
        if str(params["to"]).endswith(address_ending):
            raise DataError("550 5.1.1 no such mailbox")
        return await perform(action, params, key)

    connector.perform = smtp  # type: ignore[method-assign]


async def test_a_failed_action_waits_for_the_new_approval_before_acting(app: Steward) -> None:  # noqa: F811
    refused_once(app, ".cm")
    view = await app.engine.start("onboarding", {**ONBOARD, "email": "jane@acme.cm"}, "cli:a")
    assert view.approval is not None
    failed = await app.engine.decide(view.approval.id, True, "cli:a")
    assert failed.view is not None and failed.view.run.status is RunStatus.FAILED

    replayed = await app.engine.replay(
        view.run.id, "approve_welcome", {"email": "jane@acme.com"}, "cli:a"
    )
    # the failed step stayed behind: it did not run beside the gate, with the new address
    assert replayed.approval is not None and sent(app) == []
    done = await app.engine.decide(replayed.approval.id, True, "cli:a")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    assert [(e["params"]["to"], e["key"]) for e in sent(app)] == [  # type: ignore[index]
        ("jane@acme.com", f"{view.run.id}:send_welcome@2")  # a new approval, a new key
    ]


async def replay_killed(
    app: Steward,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    run: Run,
    from_step: str,
    changes: dict[str, str],
    cut: str,
) -> None:
    """Replays ``run`` and kills the process "after its record", or later, where the
    replay clears what the run stopped at: recovery finds the replay cut short."""
    graph = (await app.engine._compiled_for(run.version)).graph

    async def dies(*args: Any, **kwargs: Any) -> Any:
        raise SystemExit("killed")

    with monkeypatch.context() as crash:
        if cut == "after its record":
            crash.setattr(graph, "aupdate_state", dies)
        else:
            crash.setattr(app.engine, "_advance", dies)
        with pytest.raises(SystemExit):
            await app.engine.replay(run.id, from_step, changes, "cli:a")


@pytest.mark.parametrize("cut", ["after its record", "after clearing the failed step"])
async def test_a_replay_cut_short_asks_again_and_never_acts_on_the_old_approval(
    app: Steward,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    cut: str,
) -> None:
    """A crash, or one "database is locked", between the replay's record and its first
    stop: recovery went on from the state before it, and the failed action sent the old
    email to the old address, unasked."""
    refused_once(app, ".cm")
    view = await app.engine.start("onboarding", {**ONBOARD, "email": "jane@acme.cm"}, "cli:a")
    assert view.approval is not None
    failed = await app.engine.decide(view.approval.id, True, "cli:a")
    assert failed.view is not None and failed.view.run.status is RunStatus.FAILED
    changes = {"email": "x@acme.io"}
    await replay_killed(app, monkeypatch, view.run, "approve_welcome", changes, cut)
    [recovered] = await app.engine.recover()  # the process, restarted
    assert sent(app) == []
    assert recovered.run.status is RunStatus.WAITING
    assert recovered.approval is not None and recovered.approval.visit == 2
    done = await app.engine.decide(recovered.approval.id, True, "cli:a")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    assert [e["params"]["to"] for e in sent(app)] == ["x@acme.io"]  # type: ignore[index]


async def test_an_action_is_not_replayed_with_inputs_its_approval_never_showed(
    app: Steward,  # noqa: F811
) -> None:
    refused_once(app, ".cm")
    view = await app.engine.start("onboarding", {**ONBOARD, "email": "jane@acme.cm"}, "cli:a")
    assert view.approval is not None
    await app.engine.decide(view.approval.id, True, "cli:a")
    with pytest.raises(InvalidState, match=r"/replay .* approve_welcome with the changes"):
        await app.engine.replay(view.run.id, "send_welcome", {"email": "x@other.com"}, "cli:a")
    assert sent(app) == []


@pytest.fixture
async def on_either_db(database_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Steward]:
    """A steward on SQLite, and on PostgreSQL where a server answers."""
    url = database_url.setting
    async with Steward.open(load_settings(home=tmp_path / "home", database_url=url)) as steward:
        yield steward


async def test_a_decision_that_wins_the_race_with_a_replay_goes_first(
    on_either_db: Steward,
) -> None:
    app = on_either_db  # noqa: F811
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    assert view.approval is not None
    engine, compiled_for = app.engine, app.engine._compiled_for
    decided: list[asyncio.Task[Any]] = []

    async def decision_lands_meanwhile(version: str) -> Any:
        if not decided:  # replay has checked the run and not yet written its record
            assert view.approval is not None
            decided.append(asyncio.create_task(engine.decide(view.approval.id, True, "tg:1")))
            for _ in range(400):  # until the decision is in the ledger
                run = await app.ledger.get_run(view.run.id)
                if run is not None and run.status is not RunStatus.WAITING:
                    break
                await asyncio.sleep(0.005)
        return await compiled_for(version)

    engine._compiled_for = decision_lands_meanwhile  # type: ignore[method-assign]
    with pytest.raises(InvalidState, match="is running; replay it once it stops"):
        await engine.replay(view.run.id, "draft_welcome", {"email": "mallory@evil.com"}, "cli:b")
    decision = await decided[0]
    assert decision.decided_now and decision.view.run.status is RunStatus.SUCCEEDED
    assert [e["params"]["to"] for e in sent(app)] == ["jane@acme.com"]  # type: ignore[index]


@pytest.mark.parametrize("dies", ["after its record", "after clearing the checkpoint"])
async def test_a_replay_cut_short_by_a_crash_goes_on_after_the_restart(
    app: Steward,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    dies: str,
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    changes = {"email": "x@acme.io"}
    await replay_killed(app, monkeypatch, view.run, "draft_welcome", changes, dies)
    [recovered] = await app.engine.recover()  # the restarted process
    assert recovered.run.status is RunStatus.WAITING  # not cancelled, not stuck
    assert recovered.approval is not None and recovered.approval.visit == 2
    assert recovered.approval.card["fields"]["Recipient"] == "x@acme.io"
    done = await app.engine.decide(recovered.approval.id, True, "cli:a")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    assert [e["params"]["to"] for e in sent(app)] == ["x@acme.io"]  # type: ignore[index]


async def test_a_gate_replayed_twice_asks_again_each_time(app: Steward) -> None:  # noqa: F811
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    for visit, email in ((2, "a@acme.com"), (3, "b@acme.com")):
        again = await app.engine.replay(view.run.id, "approve_welcome", {"email": email}, "cli:a")
        assert again.run.status is RunStatus.WAITING and again.approval is not None
        assert again.approval.is_pending and again.approval.visit == visit
    done = await app.engine.decide(again.approval.id, True, "cli:a")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    assert [e["params"]["to"] for e in sent(app)] == ["b@acme.com"]  # type: ignore[index]


async def replay_failed_at_its_action(app: Steward) -> str:  # noqa: F811
    """A run whose action failed (SMTP 550), replayed from that action, which failed again."""
    refused_once(app, ".cm")
    view = await app.engine.start("onboarding", {**ONBOARD, "email": "jane@acme.cm"}, "cli:a")
    assert view.approval is not None
    await app.engine.decide(view.approval.id, True, "cli:a")
    replayed = await app.engine.replay(view.run.id, "send_welcome", {}, "cli:a")
    assert replayed.run.status is RunStatus.FAILED and "550" in (replayed.run.error or "")
    return view.run.id


async def test_a_replay_whose_first_step_fails_is_retried_from_that_step(app: Steward) -> None:  # noqa: F811
    run_id = await replay_failed_at_its_action(app)
    retried = await app.engine.retry(run_id, "cli:a")
    assert retried.run.status is RunStatus.FAILED and "550" in (retried.run.error or "")
    assert sent(app) == []


async def test_a_decision_on_a_replayed_gate_survives_a_crash_before_the_run_goes_on(
    app: Steward,  # noqa: F811
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    again = await app.engine.replay(view.run.id, "approve_welcome", {"email": "x@acme.io"}, "cli:a")
    assert again.approval is not None
    # the decision committed, then the process died before the run resumed
    await app.ledger.decide_approval(again.approval.id, ApprovalStatus.APPROVED, "cli:a")

    [recovered] = await app.engine.recover()
    assert recovered.run.status is RunStatus.SUCCEEDED  # not asked again
    assert [e["params"]["to"] for e in sent(app)] == ["x@acme.io"]  # type: ignore[index]


async def test_a_replay_that_failed_at_its_action_is_replayed_from_the_gate(app: Steward) -> None:  # noqa: F811
    run_id = await replay_failed_at_its_action(app)
    again = await app.engine.replay(run_id, "approve_welcome", {"email": "jane@acme.com"}, "cli:a")
    # the action the failed replay was sent to stayed behind: it did not run beside the gate
    assert again.run.status is RunStatus.WAITING and again.approval is not None
    assert sent(app) == []
    done = await app.engine.decide(again.approval.id, True, "cli:a")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    assert [e["params"]["to"] for e in sent(app)] == ["jane@acme.com"]  # type: ignore[index]


async def test_a_rejected_run_replayed_from_its_gate_and_approved_acts(app: Steward) -> None:  # noqa: F811
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    assert view.approval is not None
    await app.engine.decide(view.approval.id, False, "cli:a", "wrong address")
    again = await app.engine.replay(
        view.run.id, "approve_welcome", {"email": "j@acme.com"}, "cli:a"
    )
    assert again.run.status is RunStatus.WAITING and again.approval is not None
    done = await app.engine.decide(again.approval.id, True, "cli:a")
    assert done.view is not None and done.view.run.status is RunStatus.SUCCEEDED
    assert done.view.run.error is None
    assert [e["params"]["to"] for e in sent(app)] == ["j@acme.com"]  # type: ignore[index]


async def test_in_chat_a_failed_run_replayed_from_its_gate_asks_again_and_acts_once(
    app: Steward,  # noqa: F811
) -> None:
    refused_once(app, ".cm")
    view = await app.engine.start("onboarding", {**ONBOARD, "email": "jane@acme.cm"}, "cli:a")
    assert view.approval is not None
    failed = await app.engine.decide(view.approval.id, True, "cli:a")
    assert failed.view is not None and failed.view.run.status is RunStatus.FAILED
    reply = await send(app, f"/replay {view.run.id} approve_welcome email=jane@acme.com")
    card = reply.cards[0]  # the replay's state is the one it goes on from, in a handling too
    assert sent(app) == []
    done = await send(app, f"/approve {card.approval_id}")
    assert f"Run {view.run.id} (onboarding) is done." in "\n".join(done.texts)
    assert [e["params"]["to"] for e in sent(app)] == ["jane@acme.com"]  # type: ignore[index]


async def test_in_chat_a_waiting_run_replayed_with_a_change_asks_again_and_acts(
    app: Steward,  # noqa: F811
) -> None:
    view = await app.engine.start("onboarding", ONBOARD, "cli:a")
    reply = await send(app, f"/replay {view.run.id} draft_welcome client=Globex")
    card = reply.cards[0]
    assert card.fields[0] == ("Client", "Globex")
    done = await send(app, f"/approve {card.approval_id}")
    assert f"Run {view.run.id} (onboarding) is done." in "\n".join(done.texts)
    [email] = sent(app)
    assert email["params"]["subject"] == "Welcome aboard, Globex"  # type: ignore[index]


async def test_a_gate_is_not_replayed_beside_a_draft_made_from_the_old_values(
    app: Steward,  # noqa: F811
) -> None:
    view = await app.engine.start("invoice_followup", INVOICE, "cli:a")
    assert view.approval is not None
    with pytest.raises(InvalidState) as refused:
        await app.engine.replay(view.run.id, "approve_reminder", {"amount": "999"}, "cli:a")
    assert str(refused.value) == (
        "draft_reminder drafted its text with the inputs you change, before approve_reminder: "
        f"/replay {view.run.id} draft_reminder amount=999, so that it drafts again"
    )
    redrafted = await app.engine.replay(view.run.id, "draft_reminder", {"amount": "999"}, "cli:a")
    assert redrafted.approval is not None
    assert (
        "999.00" in redrafted.approval.card["text"]
        and "1200" not in redrafted.approval.card["text"]
    )
    # A change no draft used goes through the gate as before.
    changed = await app.engine.replay(
        view.run.id, "approve_reminder", {"email": "billing@acme.com"}, "cli:a"
    )
    assert changed.approval is not None and "billing@acme.com" in changed.approval.card["summary"]


async def test_a_replay_that_corrects_the_client_greets_it_by_its_new_name(
    app: Steward,  # noqa: F811
) -> None:
    view = await app.engine.start("onboarding", {**ONBOARD, "client": "Acmee"}, "cli:a")
    assert view.approval is not None and view.approval.card["text"].startswith("Hi Acmee team,")
    fixed = await app.engine.replay(view.run.id, "draft_welcome", {"client": "Acme"}, "cli:a")
    assert fixed.approval is not None
    assert fixed.approval.card["text"].startswith("Hi Acme team,")
    assert fixed.run.inputs["contact"] == "Acme team"
    # A contact typed in stands, whatever the client becomes.
    named = await app.engine.start("onboarding", {**ONBOARD, "contact": "Jane"}, "cli:a")
    again = await app.engine.replay(named.run.id, "draft_welcome", {"client": "Globex"}, "cli:a")
    assert again.approval is not None and again.approval.card["text"].startswith("Hi Jane,")


async def test_an_action_never_approved_is_not_replayed(app: Steward) -> None:  # noqa: F811
    """A run cancelled at its gate, replayed from its action: refused before the run is
    touched, where it was set failed for reaching its action unapproved."""
    values = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}
    view = await app.engine.start("onboarding", values, "cli:shell")
    run_id = view.run.id
    await app.engine.cancel(run_id, "cli:shell")
    with pytest.raises(InvalidState, match=f"no approval to act on: /replay {run_id} approve_"):
        await app.engine.replay(run_id, "send_welcome", {}, "cli:shell")
    run = await app.ledger.get_run(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert sent(app) == []
