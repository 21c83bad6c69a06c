"""Undo: a step that acted is compensated by its declared action, after its own approval,
once."""

from __future__ import annotations

import asyncio

import pytest

from bot.app import Steward
from graph.catalog import load_definition
from graph.compensation import undo_definition, undo_run_id
from graph.definitions import ActionStep
from graph.messages import Card
from memory.ledger import RunStatus
from processes import BUILTIN_DIR
from tests.graph.test_coordinator import (
    START,
    app,  # noqa: F401 - the fixture
    joined,
    only_card,
    outbox,
    outcomes,
    run_of,
    send,
    start,
)


async def sent_welcome(app: Steward) -> str:  # noqa: F811
    card = await start(app)
    run_id = await run_of(app, card)
    await send(app, button=f"approve:{card.approval_id}")
    assert len(outbox(app)) == 1
    return run_id


async def test_the_welcome_card_says_how_to_undo_it(app: Steward) -> None:  # noqa: F811
    card = await start(app)
    run_id = await run_of(app, card)
    undo = dict(card.fields)["Undo"]
    assert undo.startswith("Send a correction of the welcome email to jane@acme.com")
    assert f"/undo {run_id} send_welcome" in undo


async def test_undo_asks_first_then_sends_the_correction_once(app: Steward) -> None:  # noqa: F811
    run_id = await sent_welcome(app)
    reply = await send(app, f"/undo {run_id} send_welcome")
    card: Card = only_card(reply)
    assert card.title == "Undo: Send the welcome email"
    assert card.risk == "high"
    assert card.text is not None and "Please disregard my previous email" in card.text
    assert [b.label for b in card.buttons] == ["Approve", "Reject", "Edit", "Details"]
    assert len(outbox(app)) == 1  # nothing until it is approved

    again = await send(app, f"/undo {run_id} send_welcome")
    undo_id = undo_run_id(run_id, "send_welcome")
    assert f"is being undone: run {undo_id} is waiting" in joined(again)

    correction = "Hi Acme, sorry: ignore my last email. Jane, we start next week."
    await send(app, button=f"edit:{card.approval_id}")
    await send(app, correction)
    done = await send(app, "yes")
    assert "(with edits)" in outcomes(done)[0].text
    first, second = sorted(outbox(app), key=lambda e: e["key"])  # r… before u…
    assert second["action"] == "send_email"
    assert second["params"] == {
        "to": "jane@acme.com",
        "subject": "Correction: Welcome aboard, Acme",
        "body": correction,
    }
    assert first["params"]["subject"] == "Welcome aboard, Acme"
    undo_run = await app.ledger.get_run(second["key"].split(":")[0])
    assert undo_run is not None and undo_run.status is RunStatus.SUCCEEDED
    assert "undone already" in joined(await send(app, f"/undo {run_id} send_welcome"))
    assert undo_run.inputs["undoes"] == f"{run_id}:send_welcome"
    assert "undone already" in joined(await send(app, f"/undo {run_id} send_welcome"))
    assert len(outbox(app)) == 2


async def test_two_undos_said_at_once_start_one_undo_run(app: Steward) -> None:  # noqa: F811
    """The second, from another chat or the shell, is told the first is under way."""
    run_id = await sent_welcome(app)
    said = f"/undo {run_id} send_welcome"
    first, second = await asyncio.gather(send(app, said), send(app, said))
    cards = [r for r in (first, second) if any(isinstance(i, Card) for i in r.items)]
    assert len(cards) == 1
    other = second if cards[0] is first else first
    assert f"is being undone: run {undo_run_id(run_id, 'send_welcome')}" in joined(other)


async def test_nothing_to_undo_before_the_step_acted(app: Steward) -> None:  # noqa: F811
    card = await start(app)
    run_id = await run_of(app, card)
    reply = await send(app, f"/undo {run_id} send_welcome")
    assert "has not acted" in joined(reply)
    assert "no step 'nope'" in joined(await send(app, f"/undo {run_id} nope"))
    assert "Usage: /undo RUN STEP" in joined(await send(app, f"/undo {run_id}"))
    assert outbox(app) == []


async def test_a_step_undone_by_hand_that_never_acted_has_nothing_to_undo(
    app: Steward,  # noqa: F811
) -> None:
    """An issue cancelled at its gate: it said to send a correction to the list by hand,
    though nothing was published."""
    start = '/run newsletter_issue topic="Spring" audience=Friends notes="new prices"'
    card = only_card(await send(app, start))
    run_id = await run_of(app, card)
    await send(app, f"/cancel {run_id}")
    told = joined(await send(app, f"/undo {run_id} publish_issue"))
    assert "has not acted: nothing to undo" in told and "by hand" not in told


async def test_a_step_described_but_not_undoable_says_how_to_undo_by_hand(
    app: Steward,  # noqa: F811
) -> None:
    first = await start(app, START.replace("basic", "premium"))
    run_id = await run_of(app, first)
    folder = only_card(await send(app, button=f"approve:{first.approval_id}"))
    await send(app, button=f"approve:{folder.approval_id}")
    reply = await send(app, f"/undo {run_id} approve_welcome")
    assert "no compensating action" in joined(reply)
    assert "no compensating action" in joined(await send(app, f"/undo {run_id} create_folder"))


async def test_a_step_that_never_ran_has_nothing_to_undo(app: Steward) -> None:  # noqa: F811
    """A basic onboarding makes no folder: its undo says so, not that a folder cannot be
    undone."""
    first = await start(app, START)
    run_id = await run_of(app, first)
    await send(app, button=f"approve:{first.approval_id}")
    told = joined(await send(app, f"/undo {run_id} create_folder"))
    assert told == f"step create_folder of run {run_id} has not acted: nothing to undo"


def test_the_undo_process_takes_only_what_its_templates_use() -> None:
    onboarding = load_definition(BUILTIN_DIR / "onboarding.yaml")
    step = onboarding.step("send_welcome")
    assert isinstance(step, ActionStep)
    undo = undo_definition(onboarding, step)
    assert sorted(undo.inputs) == ["client", "contact", "correction", "email"]
    assert [s.kind for s in undo.steps] == ["approval", "action"]
    assert undo.version == undo_definition(onboarding, step).version


@pytest.mark.parametrize("bad", ["{nobody}", "Dear {nobody}"])
def test_a_compensation_using_unknown_values_is_refused(bad: str) -> None:
    from graph.definitions import ProcessDefinition

    body = {
        "name": "p",
        "title": "P",
        "description": "d",
        "inputs": {"email": {"type": "email"}},
        "steps": [
            {"id": "gate", "kind": "approval", "summary": "s"},
            {
                "id": "act",
                "kind": "action",
                "gate": "gate",
                "connector": "outbox",
                "action": "x",
                "compensate": {"summary": "undo", "action": "y", "with": {"to": bad}},
            },
        ],
    }
    with pytest.raises(ValueError, match="undoes with"):
        ProcessDefinition.model_validate(body)


async def test_a_rejected_undo_says_how_to_ask_for_it_again_and_that_works(
    app: Steward,  # noqa: F811
) -> None:
    run_id = await sent_welcome(app)
    card = only_card(await send(app, f"/undo {run_id} send_welcome"))
    await send(app, f"/reject {card.approval_id} not now")
    again = joined(await send(app, f"/undo {run_id} send_welcome"))
    undo_id = undo_run_id(run_id, "send_welcome")
    assert f"was not undone: its undo (run {undo_id}) was rejected at" in again
    assert f"/replay {undo_id} approve_undo asks for it again" in again
    asked = only_card(await send(app, f"/replay {undo_id} approve_undo"))  # in chat
    done = await send(app, f"/approve {asked.approval_id}")
    assert f"Run {undo_id} (undo_onboarding_send_welcome) is done." in joined(done)
    assert len(outbox(app)) == 2  # the welcome, and now its correction


async def test_after_a_replay_undo_takes_back_each_send_as_it_was_sent(
    app: Steward,  # noqa: F811
) -> None:
    """The step acted twice, to the wrong address and then, replayed, to the right one:
    the first undo corrects the later send, the next one the first, each to its own."""
    reply = await send(
        app, "/run onboarding client=Umbrella email=wrong@umbrella.com package=basic"
    )
    await send(app, f"/approve {only_card(reply).approval_id}")
    [run] = await app.ledger.list_runs()
    replayed = await send(app, f"/replay {run.id} approve_welcome email=right@umbrella.com")
    await send(app, f"/approve {only_card(replayed).approval_id}")
    sent = {e["key"]: e["params"]["to"] for e in outbox(app)}
    assert sent == {
        f"{run.id}:send_welcome": "wrong@umbrella.com",
        f"{run.id}:send_welcome:2": "right@umbrella.com",
    }

    later = only_card(await send(app, f"/undo {run.id} send_welcome"))
    assert later.summary == "Send a correction of the welcome email to right@umbrella.com"
    await send(app, f"/approve {later.approval_id}")
    first = only_card(await send(app, f"/undo {run.id} send_welcome"))
    assert first.summary == "Send a correction of the welcome email to wrong@umbrella.com"
    await send(app, f"/approve {first.approval_id}")
    corrections = [e for e in outbox(app) if e["params"]["subject"].startswith("Correction")]
    assert sorted(e["params"]["to"] for e in corrections) == [
        "right@umbrella.com",
        "wrong@umbrella.com",
    ]
    assert "undone already" in joined(await send(app, f"/undo {run.id} send_welcome"))


async def published_to_friends(app: Steward) -> str:  # noqa: F811
    """A newsletter issue published to the Friends list; its run id."""
    start = '/run newsletter_issue topic="Spring" audience=Friends notes="new prices"'
    await send(app, f"/approve {only_card(await send(app, start)).approval_id}")
    [run] = await app.ledger.list_runs()
    return run.id


async def test_a_step_undone_by_hand_says_how_with_the_run_s_values(
    app: Steward,  # noqa: F811
) -> None:
    run_id = await published_to_friends(app)
    told = joined(await send(app, f"/undo {run_id} publish_issue"))
    assert told.endswith("to undo it by hand: send a correction to the Friends list")


async def test_by_hand_after_a_replay_names_each_list_the_issue_went_to(
    app: Steward,  # noqa: F811
) -> None:
    run_id = await published_to_friends(app)
    again = await send(app, f"/replay {run_id} draft_issue audience=Customers")
    await send(app, f"/approve {only_card(again).approval_id}")
    told = joined(await send(app, f"/undo {run_id} publish_issue"))
    assert told.endswith(
        "to undo it by hand: send a correction to the Friends list; "
        "send a correction to the Customers list"
    )


async def test_the_kick_off_time_reads_as_typed_on_its_cards_and_to_the_client(
    app: Steward,  # noqa: F811
) -> None:
    welcome = await start(app, f'{START} contact=Jane kickoff="2099-03-01 15:00"')
    invite = only_card(await send(app, f"/approve {welcome.approval_id}"))
    assert invite.summary == "Invite jane@acme.com to the kick-off call on 2099-03-01 15:00"
    await send(app, f"/approve {invite.approval_id}")
    [run] = await app.ledger.list_runs()
    undo = only_card(await send(app, f"/undo {run.id} send_kickoff"))
    assert undo.text == (
        "Hi Jane,\n\n"
        "I'm sorry: our kick-off call on 2099-03-01 15:00 is cancelled. "
        "I will propose a new time shortly."
    )
