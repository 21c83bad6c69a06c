"""The coordinator end to end: commands, buttons, slot filling, access, routing.

Every test drives a real ``Steward`` on SQLite through ``Coordinator.receive`` with
neutral ``Inbound`` messages, as a channel would, and checks the replies, the ledger
and the outbox (one JSON file per effect).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shlex
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

import graph.coordinator
import graph.engine
from bot.app import Steward
from bot.settings import load_settings
from graph.budget import Budgets
from graph.catalog import Catalog
from graph.errors import StewardError
from graph.messages import Card, CardOutcome, EditPrompt, Inbound, Reply, Sender
from graph.models import LanguageModels
from graph.routing import Router, format_argument, parse_arguments
from memory.ledger import ApprovalStatus, RunStatus
from memory.working import InProcessWorkingMemory
from processes import BUILTIN_DIR
from tests.memory.commit_log import record_commits

OPERATOR = Sender("telegram", "42", "Olivia")
STRANGER = Sender("telegram", "666", "Mallory")
START = "/run onboarding client=Acme email=jane@acme.com package=basic"
_ids = itertools.count(1)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Steward]:
    settings = load_settings(home=tmp_path / "home", operators="telegram:42")
    async with Steward.open(settings) as steward:
        yield steward


async def send(
    app: Steward,
    text: str | None = None,
    *,
    button: str | None = None,
    sender: Sender = OPERATOR,
    chat: str = "chat-1",
) -> Reply:
    inbound = Inbound(sender, chat, f"update-{next(_ids)}", text=text, button=button)
    reply = await app.door.receive(inbound)
    assert reply is not None
    return reply


def outbox(app: Steward) -> list[dict[str, Any]]:
    folder = app.settings.outbox_dir
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def only_card(reply: Reply) -> Card:
    assert len(reply.cards) == 1, reply.items
    return reply.cards[0]


def outcomes(reply: Reply) -> list[CardOutcome]:
    return [i for i in reply.items if isinstance(i, CardOutcome)]


def joined(reply: Reply) -> str:
    return "\n".join(reply.texts)


async def start(app: Steward, text: str = START) -> Card:
    return only_card(await send(app, text))


async def run_of(app: Steward, card: Card) -> str:
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None
    return approval.run_id


# -- starting and approving ------------------------------------------------------------


async def test_run_with_all_inputs_shows_one_card_and_sends_nothing(app: Steward) -> None:
    reply = await send(app, START)
    card = only_card(reply)
    assert [b.label for b in card.buttons] == ["Approve", "Reject", "Edit", "Details"]
    assert all(len(b.payload.encode()) <= 64 for b in card.buttons)
    assert card.buttons[0].payload == f"approve:{card.approval_id}"
    assert card.summary == "Send the welcome email to jane@acme.com"
    assert card.text is not None and "Acme" in card.text
    assert outbox(app) == []
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.is_pending


async def test_approve_button_sends_once_and_a_second_press_changes_nothing(
    app: Steward,
) -> None:
    card = await start(app)
    first = await send(app, button=f"approve:{card.approval_id}")
    [done] = outcomes(first)
    assert done.approval_id == card.approval_id
    assert "Approved by telegram:42" in done.text
    assert len(outbox(app)) == 1
    run = await app.ledger.get_run(await run_of(app, card))
    assert run is not None and run.status is RunStatus.SUCCEEDED

    again = await send(app, button=f"approve:{card.approval_id}")
    assert again.notice and "Already decided" in again.notice
    assert again.cards == []
    assert len(outbox(app)) == 1


async def test_what_a_reply_reports_is_on_disk_before_the_reply_leaves(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat that hears nothing until the reply lets its delivery's record ride on the
    handling's first durable write; a read-only handling's done mark need not wait for
    the disk at all. A decision does not wait either: the effect's record, written
    before the effect, waits, and puts the decision on disk with it."""
    card = await start(app)
    await app.ledger.write(lambda tx: None)  # takes along the card noted as shown
    commits = record_commits(app.ledger, monkeypatch)
    await send(app, "/runs")
    assert commits == [False, False]

    commits.clear()
    await send(app, button=f"approve:{card.approval_id}")
    assert len(outbox(app)) == 1
    assert commits[:3] == [False, False, True]  # the delivery, the decision, the effect's
    assert commits[-1] is True  # what the reply reports is on disk before it leaves


async def test_a_press_that_lost_says_so_only_once_the_decision_is_on_disk(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The winning decision waits for its run's next durable write; a second press in
    that moment hears "already decided" only after a sync has put the decision on disk."""
    card = await start(app)
    reached, held = asyncio.Event(), asyncio.Event()
    begin_effect = app.ledger.begin_effect

    async def holding(*args: Any) -> Any:
        reached.set()
        await held.wait()
        return await begin_effect(*args)

    monkeypatch.setattr(app.ledger, "begin_effect", holding)
    syncs: list[bool] = []
    sync = app.ledger.db.sync

    async def recorded(everyone: bool = False) -> None:
        syncs.append(everyone)
        await sync(everyone)

    monkeypatch.setattr(app.ledger.db, "sync", recorded)
    press = f"approve:{card.approval_id}"
    first = asyncio.create_task(send(app, button=press))
    await reached.wait()  # the decision is committed, and its effect is about to begin
    assert syncs == [] and outbox(app) == []

    second = await send(app, button=press, chat="chat-2")
    assert second.notice and "Already decided" in second.notice
    assert syncs == [True]
    held.set()
    assert outcomes(await first) and len(outbox(app)) == 1


async def test_approve_command_by_id(app: Steward) -> None:
    card = await start(app)
    reply = await send(app, f"/approve {card.approval_id}")
    assert "Approved by telegram:42" in outcomes(reply)[0].text
    assert len(outbox(app)) == 1


async def test_ids_and_process_names_typed_in_capitals_are_found(app: Steward) -> None:
    card = await start(app, "/run Onboarding client=Acme email=jane@acme.com package=basic")
    run_id = (await run_of(app, card)).upper()
    assert "waiting" in joined(await send(app, f"/runs {run_id}"))
    assert "Paused" in joined(await send(app, f"/pause {run_id}"))
    await send(app, f"/resume {run_id}")
    reply = await send(app, f"Approve {card.approval_id.upper()}")  # Slack, without the slash
    assert "Approved by telegram:42" in outcomes(reply)[0].text
    assert len(outbox(app)) == 1


# -- slot filling ----------------------------------------------------------------------


async def test_free_text_asks_for_the_one_missing_input_and_validates_the_answer(
    app: Steward,
) -> None:
    asked = await send(app, "onboard Jane from Acme Corp on the premium package")
    assert asked.cards == []
    assert len(asked.texts) == 1
    assert "email" in asked.texts[0].lower()
    assert asked.texts[0].count("?") == 1
    assert await app.ledger.list_runs() == []

    wrong = await send(app, "not-an-email")
    assert wrong.cards == []
    assert "expected an email address" in joined(wrong)
    assert "not-an-email" in joined(wrong)
    assert "try again" in joined(wrong).lower()
    assert await app.ledger.list_runs() == []

    card = only_card(await send(app, "jane@acme.com"))
    [run] = await app.ledger.list_runs()
    assert run.inputs == {
        "client": "Acme Corp",
        "email": "jane@acme.com",
        "package": "premium",
        "contact": "Jane",  # the one named before the company, greeted by the email
    }
    assert (card.text or "").startswith("Hi Jane,\n")
    assert run.id in card.footer


async def test_run_command_without_inputs_asks_one_at_a_time(app: Steward) -> None:
    first = await send(app, "/run onboarding")
    assert "Which client" in joined(first)
    second = await send(app, "Acme Ltd")
    assert "email" in joined(second).lower() and "client" not in joined(second).lower()
    third = await send(app, "jane@acme.com")
    assert "basic, standard or premium" in joined(third)
    card = only_card(await send(app, "Standard"))
    [run] = await app.ledger.list_runs()
    assert run.inputs["package"] == "standard"
    assert card.approval_id


async def test_an_optional_question_may_be_skipped_and_leaves_no_gap_in_the_draft(
    app: Steward,
) -> None:
    asked = await send(app, '/run newsletter_issue topic="Spring prices" audience=Friends')
    assert "Any points to cover?" in joined(asked) and "/skip" in joined(asked)
    card = only_card(await send(app, "/skip"))
    assert "none" not in card.text.lower()
    assert "This issue is about Spring prices.\n\nThanks for reading" in card.text
    [run] = await app.ledger.list_runs()
    assert "notes" not in run.inputs


@pytest.mark.parametrize("none", ["none", "None.", "no", "nothing", "n/a"])
async def test_an_optional_question_answered_none_is_skipped(app: Steward, none: str) -> None:
    await send(app, '/run newsletter_issue topic="Spring prices" audience=Friends')
    card = only_card(await send(app, none))
    assert "This issue is about Spring prices.\n\nThanks for reading" in (card.text or "")


async def test_an_optional_question_answered_fills_in_the_draft(app: Steward) -> None:
    await send(app, "/run newsletter_issue")
    await send(app, "Spring prices")
    await send(app, "Friends")
    card = only_card(await send(app, "New rates from March."))
    assert "This issue is about Spring prices.\n\nNew rates from March.\n\n" in card.text


async def test_an_optional_input_given_empty_is_left_out(app: Steward) -> None:
    """/run onboarding … contact= kickoff= was refused ("kickoff: expected a date and time
    as YYYY-MM-DD HH:MM, got ''"), the whole start with it; notes= is not asked for."""
    card = only_card(await send(app, f"{START} contact= kickoff="))
    assert card.text is not None and card.text.startswith("Hi Acme team,")
    card = only_card(await send(app, "/run newsletter_issue topic=Prices audience=Friends notes="))
    assert "This issue is about Prices.\n\nThanks for reading" in (card.text or "")
    [news, onboarding] = await app.ledger.list_runs()
    assert "notes" not in news.inputs
    assert "kickoff" not in onboarding.inputs and onboarding.inputs["contact"] == "Acme team"
    refused = await send(app, "/run onboarding client= email=jane@acme.com package=basic")
    assert "client: expected text" in joined(refused)  # a needed one is no less needed


async def test_a_needed_input_cannot_be_skipped(app: Steward) -> None:
    await send(app, "/run onboarding client=Acme")
    refused = await send(app, "/skip")
    assert "needs the email" in joined(refused)
    assert "basic, standard or premium" in joined(await send(app, "jane@acme.com"))


async def test_cancel_during_a_form_drops_it(app: Steward) -> None:
    await send(app, "onboard Jane from Acme Corp on the premium package")
    dropped = await send(app, "/cancel")
    assert "dropped" in joined(dropped).lower()
    after = await send(app, "jane@acme.com")
    assert after.cards == []
    assert await app.ledger.list_runs() == []
    nothing = await send(app, "/cancel")
    assert "Nothing to cancel" in joined(nothing)


@pytest.mark.parametrize("answer", ["Acme", "/skip"])
async def test_a_form_its_definition_no_longer_asks_is_dropped(app: Steward, answer: str) -> None:
    """Working memory (Redis) kept the form across a start that read a changed definition."""
    await send(app, "/run onboarding")
    key = "question:telegram:42:chat-1"
    form = await app.coordinator.memory.get(key)
    assert form is not None and form["asking"] == "client"
    await app.coordinator.memory.set(key, {**form, "asking": "company"}, 60)
    said = joined(await send(app, answer))
    assert "changed since I asked" in said and "/run onboarding" in said
    assert await app.coordinator.memory.get(key) is None


async def test_a_form_of_a_process_no_longer_defined_is_dropped_without_a_run_to_start(
    app: Steward,
) -> None:
    """It said "/run onboarding_v1 to start again", which answered "no process"."""
    await send(app, "/run onboarding")
    key = "question:telegram:42:chat-1"
    form = await app.coordinator.memory.get(key)
    assert form is not None
    await app.coordinator.memory.set(key, {**form, "process": "onboarding_v1"}, 60)
    said = joined(await send(app, "Acme"))
    assert "no onboarding_v1 process any more" in said and "/run onboarding_v1" not in said
    assert await app.coordinator.memory.get(key) is None


async def test_cancel_typed_as_a_phone_writes_it_drops_a_form(app: Steward) -> None:
    await send(app, "/run onboarding")
    assert "dropped" in joined(await send(app, "Cancel."))
    assert "not waiting" in joined(await send(app, "/skip"))


async def test_forms_are_kept_per_chat(app: Steward) -> None:
    await send(app, "onboard Jane from Acme Corp on the premium package", chat="chat-1")
    other = await send(app, "jane@acme.com", chat="chat-2")
    assert other.cards == []
    card = only_card(await send(app, "jane@acme.com", chat="chat-1"))
    assert card.approval_id


# -- commands that explain themselves --------------------------------------------------


async def test_run_with_a_bad_value_names_the_field_and_what_was_expected(app: Steward) -> None:
    reply = await send(app, "/run onboarding client=Acme email=bad package=basic")
    text = joined(reply)
    assert "email" in text and "expected an email address" in text and "'bad'" in text
    assert reply.cards == []
    assert await app.ledger.list_runs() == []


async def test_a_value_with_spaces_and_no_quotes_does_not_start_a_run(app: Steward) -> None:
    reply = await send(app, "/run onboarding client=Acme Corp email=jane@acme.com package=basic")
    assert joined(reply).startswith("'Corp' is not an input")
    assert 'client="Acme Corp"' in joined(reply)
    assert await app.ledger.list_runs() == []
    started = await send(app, '/run onboarding client="Acme Corp" email=j@acme.com package=basic')
    assert started.cards and (await app.ledger.list_runs())[0].inputs["client"] == "Acme Corp"


async def test_a_kickoff_that_has_passed_does_not_start_a_run(app: Steward) -> None:
    refused = await send(app, f'{START} kickoff="2020-01-06 15:00"')
    assert "kickoff: that has passed (it is " in joined(refused)
    assert await app.ledger.list_runs() == []


async def test_a_kickoff_that_has_passed_said_in_words_is_asked_for_again(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Said in plain words, a kick-off that had passed was read off them as any other
    input (routing had no clock), and the start refused it: the whole request was
    dropped, its client, email and package with it. It is told as passed, on the
    operator's clock, and asked for again; the rest is kept."""
    now = datetime(2030, 6, 1, 9, 0, tzinfo=UTC)
    monkeypatch.setattr(graph.coordinator, "utcnow", lambda: now)
    monkeypatch.setattr(graph.engine, "utcnow", lambda: now)
    asked = await send(
        app, "onboard Jane from Acme (jane@acme.com) premium kickoff 2030-05-20 10:00"
    )
    assert asked.texts == [
        "kickoff: that has passed (it is 2030-06-01 09:00 now), got '2030-05-20 10:00'.\n"
        "What is the kickoff? (/skip if none, /cancel to stop)"
    ]
    assert await app.ledger.list_runs() == []
    only_card(await send(app, "2030-06-10 10:00"))
    (run,) = await app.ledger.list_runs()
    assert run.inputs == {
        "client": "Acme",
        "email": "jane@acme.com",
        "package": "premium",
        "contact": "Jane",
        "kickoff": "2030-06-10 10:00",
    }


async def test_run_with_an_unknown_input_says_there_is_no_such_input(app: Steward) -> None:
    text = joined(await send(app, "/run onboarding colour=red"))
    assert "no input 'colour'" in text
    assert "client" in text and "email" in text and "package" in text


async def test_run_of_an_unknown_process_lists_the_processes(app: Steward) -> None:
    text = joined(await send(app, "/run nope"))
    assert "no process named 'nope'" in text
    for name in ("onboarding", "invoice_followup", "newsletter_issue"):
        assert name in text


async def test_run_without_a_process_asks_which(app: Steward) -> None:
    text = joined(await send(app, "/run"))
    assert text.startswith("Which process?") and "onboarding" in text


async def test_unknown_command_gets_help(app: Steward) -> None:
    reply = await send(app, "/frobnicate")
    text = joined(reply)
    assert "/frobnicate" in text and "/run" in text
    assert len(text) < 1000


async def test_help_and_processes(app: Steward) -> None:
    assert "/approve" in joined(await send(app, "/help"))
    text = joined(await send(app, "/processes"))
    assert "onboarding" in text and "email (email)" in text


async def test_processes_names_a_definition_skipped_at_the_start(tmp_path: Path) -> None:
    user = tmp_path / "processes"
    user.mkdir()
    (user / "mine.yaml").write_text("name: mine\ntitle: Mine\n", encoding="utf-8")
    settings = load_settings(home=tmp_path / "home", operators="telegram:42", processes_dir=user)
    async with Steward.open(settings) as steward:
        text = joined(await send(steward, "/processes"))
    assert "onboarding" in text
    assert f"Skipped at the start: {user / 'mine.yaml'}:1: description: Field required" in text


async def test_approve_without_an_id_shows_usage(app: Steward) -> None:
    assert "Usage: /approve ID" in joined(await send(app, "/approve"))
    assert "Usage: /reject ID" in joined(await send(app, "/reject"))
    assert "Usage: /pause ID" in joined(await send(app, "/pause a b"))


async def test_approve_of_an_unknown_id_says_there_is_no_such_approval(app: Steward) -> None:
    text = joined(await send(app, "/approve azzzzzz"))
    assert "no approval 'azzzzzz'; /runs lists the pending ones" in text


async def test_retry_on_a_waiting_run_explains(app: Steward) -> None:
    run_id = await run_of(app, await start(app))
    text = joined(await send(app, f"/retry {run_id}"))
    assert "only a failed run can be retried" in text and "waiting" in text


async def test_empty_text_gets_help(app: Steward) -> None:
    assert "/run" in joined(await send(app, "   "))


async def test_unroutable_text_says_what_it_can_run(app: Steward) -> None:
    text = joined(await send(app, "what's the weather like"))
    assert "not sure" in text and "onboarding" in text
    assert await app.ledger.list_runs() == []


@pytest.mark.parametrize(
    "text",
    [
        "don't onboard Acme",
        "Don\u2019t onboard Jane from Acme on the premium package",
        "cancel the Acme onboarding",
        "stop chasing the Acme invoice",
        "no need to chase the Globex invoice",
    ],
)
async def test_words_against_a_start_open_no_form(app: Steward, text: str) -> None:
    reply = joined(await send(app, text))
    assert "not sure" in reply and "Starting" not in reply
    assert "not waiting" in joined(await send(app, "/skip"))
    assert await app.ledger.list_runs() == []


@pytest.mark.parametrize(
    "text",
    [
        "onboard Jane from Acme (jane@acme.com), premium; don't forget her",
        "onboard Jane from Acme (jane@acme.com), premium, no need for a kick-off call",
        "onboard Jane from Stop & Shop (jane@acme.com) on the premium package",
        "onboard Jane from Acme (jane@acme.com), premium: they never had a shared folder",
    ],
)
async def test_a_request_that_says_no_to_something_else_is_a_request(
    app: Steward, text: str
) -> None:
    """Those words anywhere took the request for one against a start: "I'm not sure"."""
    reply = await send(app, text)
    assert only_card(reply).summary == "Send the welcome email to jane@acme.com"


# -- duplicate deliveries --------------------------------------------------------------


async def test_a_duplicate_delivery_is_handled_once(app: Steward) -> None:
    inbound = Inbound(OPERATOR, "chat-1", "tg-update-777", text=START)
    first = await app.door.receive(inbound)
    assert first is not None and len(first.cards) == 1
    assert await app.door.receive(inbound) is None
    assert len(await app.ledger.list_runs()) == 1


async def test_the_same_external_id_on_another_channel_is_not_a_duplicate(app: Steward) -> None:
    a = Inbound(OPERATOR, "chat-1", "same-id", text="/help")
    b = Inbound(Sender("console", "me"), "chat-1", "same-id", text="/help")
    assert await app.door.receive(a) is not None
    assert await app.door.receive(b) is not None


# -- strangers -------------------------------------------------------------------------


async def test_a_stranger_is_refused_once_and_every_attempt_is_audited(app: Steward) -> None:
    card = await start(app)
    first = await send(app, "hello?", sender=STRANGER)
    assert len(first.texts) == 1 and "only work for the operator" in first.texts[0]
    pressed = await send(app, button=f"approve:{card.approval_id}", sender=STRANGER)
    assert pressed.items == []
    again = await send(app, START, sender=STRANGER)
    assert again.items == []

    denied = [e for e in await app.ledger.audit_events() if e.kind == "access.denied"]
    assert [e.actor for e in denied] == ["telegram:666"] * 3
    assert denied[1].data["button"] == f"approve:{card.approval_id}"
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.is_pending
    assert len(await app.ledger.list_runs()) == 1
    assert outbox(app) == []


async def test_a_refused_stranger_does_not_silence_the_operator(app: Steward) -> None:
    await send(app, "hi", sender=STRANGER)
    assert "/run" in joined(await send(app, "/help"))
    other = Sender("telegram", "777")
    assert "only work for the operator" in joined(await send(app, "hi", sender=other))


async def test_the_local_console_is_always_allowed(app: Steward) -> None:
    reply = await send(app, START, sender=Sender("console", "me"))
    assert len(reply.cards) == 1


# -- reject, reasons, edits, details ---------------------------------------------------


async def test_reject_button_asks_why_and_the_next_text_is_the_reason(app: Steward) -> None:
    card = await start(app)
    reply = await send(app, button=f"reject:{card.approval_id}")
    assert "Rejected by telegram:42" in outcomes(reply)[0].text
    assert any(t.startswith("Why?") for t in reply.texts)
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.status is ApprovalStatus.REJECTED
    assert approval.reason is None

    noted = await send(app, "they asked to wait until March")
    assert "Noted" in joined(noted)
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.reason == "they asked to wait until March"
    reasons = [e for e in await app.ledger.audit_events() if e.kind == "approval.reason"]
    assert len(reasons) == 1 and reasons[0].subject == card.approval_id
    assert outbox(app) == []
    run = await app.ledger.get_run(approval.run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    shown = joined(await send(app, f"/runs {run.id}"))  # the timeline has it too
    assert "rejected: they asked to wait until March — by telegram:42" in shown
    assert "None" not in shown


@pytest.mark.parametrize("reason", ["Has a typo in the name", "Was sent to them already"])
async def test_a_reason_that_starts_as_a_question_would_is_the_reason(
    app: Steward, reason: str
) -> None:
    card = await start(app)
    await send(app, button=f"reject:{card.approval_id}")
    assert "Noted" in joined(await send(app, reason))
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.reason == reason


async def test_a_request_or_a_question_right_after_a_reject_is_no_reason(app: Steward) -> None:
    """The operator moves on: each was noted as the reason, and nothing else was done."""
    card = await start(app)
    await send(app, button=f"reject:{card.approval_id}")
    started = await send(app, "onboard Beta from Beta GmbH (ops@beta.de) on the basic package")
    assert started.cards and "Noted" not in joined(started)
    await send(app, button=f"reject:{started.cards[0].approval_id}")
    assert "Noted." not in joined(await send(app, "what did we send Acme?"))
    for approval_id in (card.approval_id, started.cards[0].approval_id):
        approval = await app.ledger.get_approval(approval_id)
        assert approval is not None and approval.reason is None


@pytest.mark.parametrize(
    "reason",
    [
        "The welcome email is too formal",
        "Welcome email is too formal, I'll call her",
        "wrong package: they want premium, not basic",
        "Invoice amount should be $1,200",
        "Invoice should go to ap@globex.com",
    ],
)
async def test_a_reason_that_names_a_process_is_the_reason(app: Steward, reason: str) -> None:
    """A reason the rules could route was taken for a request: a new onboarding form
    opened, and the rejection kept no reason."""
    card = await start(app)
    await send(app, button=f"reject:{card.approval_id}")
    reply = joined(await send(app, reason))
    assert "Noted" in reply and "Starting" not in reply
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.reason == reason


async def test_a_request_that_opens_with_its_process_s_verb_after_a_reject_is_no_reason(
    app: Steward,
) -> None:
    """It names its process (an alias, "invoice") in passing, after the verb its
    description opens with: it was noted as the reason, and no run started."""
    card = await start(app)
    await send(app, button=f"reject:{card.approval_id}")
    request = "chase Globex for invoice INV-7 of $1,200 due 2026-11-01 (ap@globex.com)"
    reply = await send(app, request)
    assert joined(reply).startswith("Started invoice_followup")  # every input given
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.reason is None


async def test_a_message_long_after_a_reject_is_no_reason(app: Steward) -> None:
    """Only a message right after the press is taken as its reason."""
    card = await start(app)
    await send(app, button=f"reject:{card.approval_id}")
    memory = app.coordinator.memory
    assert isinstance(memory, InProcessWorkingMemory)
    now = memory._clock()
    memory._clock = lambda: now + 16 * 60
    assert joined(await send(app, "hello again")) != "Noted."
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.reason is None


async def test_a_late_reason_goes_to_its_own_visit_of_a_replayed_gate(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"reject:{card.approval_id}")  # "Why?" waits for the reason
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None
    again = await app.engine.replay(approval.run_id, approval.step_id, {}, "cli:shell")
    assert again.approval is not None
    await app.engine.decide(again.approval.id, True, "cli:shell")  # visit 2, before it
    await send(app, "they asked to wait until March")
    rows = [s for s in await app.ledger.run_steps(approval.run_id) if s.kind == "approval"]
    reasons = {(s.detail["visit"], s.status): s.detail.get("reason") for s in rows}
    assert reasons == {(1, "rejected"): "they asked to wait until March", (2, "approved"): None}


async def test_skip_leaves_the_reason_empty(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"reject:{card.approval_id}")
    assert "Okay" in joined(await send(app, "/skip"))
    later = await send(app, "what's the weather like")
    assert "not sure" in joined(later)
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.status is ApprovalStatus.REJECTED
    assert not approval.reason


async def test_reject_command_with_a_reason(app: Steward) -> None:
    card = await start(app)
    reply = await send(app, f"/reject {card.approval_id} wrong client")
    assert "Rejected by telegram:42" in outcomes(reply)[0].text
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.reason == "wrong client"


async def test_a_reason_on_the_line_below_the_reject_command_is_its_reason(app: Steward) -> None:
    card = await start(app)
    reply = await send(app, f"/reject\t{card.approval_id}\nWrong client.\nAnd the price.")
    assert "Rejected by telegram:42" in outcomes(reply)[0].text
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.reason == "Wrong client.\nAnd the price."
    assert "ended: rejected" in joined(await send(app, "/runs\nall"))


async def test_a_new_text_in_parts_is_shown_whole_and_sent_only_on_yes(app: Steward) -> None:
    async def part(text: str) -> Reply:
        inbound = Inbound(OPERATOR, "chat-1", f"part-{next(_ids)}", text, may_go_on=True)
        reply = await app.door.receive(inbound)
        assert reply is not None
        return reply

    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    assert "Got 1 part" in joined(await part("Hi Acme,"))
    assert "Got 2 parts" in joined(await part("welcome aboard."))  # more may come
    shown = await send(app, "done")
    assert shown.texts[1] == "Hi Acme,\n\nwelcome aboard." and "Say yes" in shown.texts[2]
    shown = await send(app, "approve " + card.approval_id)  # a command's shape is words here
    assert shown.texts[1].endswith("\n\napprove " + card.approval_id)
    assert outbox(app) == []  # nothing but yes sends it
    await send(app, "/cancel")
    await send(app, button=f"edit:{card.approval_id}")
    await part("Hi Acme,")
    await send(app, "welcome aboard.")  # a part shorter than a message: shown at once
    await send(app, "yes")
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.edited_text == "Hi Acme,\n\nwelcome aboard."
    assert [e["params"]["body"] for e in outbox(app)] == ["Hi Acme,\n\nwelcome aboard."]
    assert "Nothing to finish" in joined(await send(app, "/done"))


async def test_a_new_text_for_a_card_decided_meanwhile_is_not_used(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    await app.engine.decide(card.approval_id, False, "slack:U0OTHER")  # another operator
    late = await send(app, "Hi Acme, welcome!")
    assert "Rejected by slack:U0OTHER" in joined(late) and "not used" in joined(late)
    assert "not sure" in joined(await send(app, "what's the weather like"))  # no question


async def test_a_typed_decision_drops_the_new_text_asked_for(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    await send(app, f"/approve {card.approval_id}")
    assert "not sure" in joined(await send(app, "what's the weather like"))


async def test_a_press_of_approve_drops_the_new_text_asked_for(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    await send(app, button=f"approve:{card.approval_id}")
    later = await send(app, "what's the weather like")  # a message again, not the new text
    assert "not sure" in joined(later) and "Already decided" not in joined(later)


async def test_edit_button_then_text_approves_with_exactly_that_text(app: Steward) -> None:
    card = await start(app)
    asked = await send(app, button=f"edit:{card.approval_id}")
    [prompt] = [item for item in asked.items if isinstance(item, EditPrompt)]
    assert "new text" in prompt.prompt
    assert prompt.approval_id == card.approval_id and prompt.text == card.text
    assert outbox(app) == []

    new_text = "Hi Acme,\n\nWelcome aboard — 50% of the work is done: you're here!\n\nOlivia"
    shown = await send(app, new_text)
    assert shown.texts[1] == new_text and "Say yes" in shown.texts[2]
    assert outbox(app) == []  # shown whole first: in chat any message may answer
    reply = await send(app, "yes")
    [done] = outcomes(reply)
    assert "Approved by telegram:42" in done.text and "(with edits)" in done.text
    [effect] = outbox(app)
    assert effect["params"]["body"] == new_text
    assert effect["params"]["to"] == "jane@acme.com"


async def test_text_from_an_edit_form_approves_with_it_and_drops_the_question(
    app: Steward,
) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    reply = await send(app, "Hi Acme, edited in a form.", button=f"edited:{card.approval_id}")
    [done] = outcomes(reply)
    assert "(with edits)" in done.text
    [effect] = outbox(app)
    assert effect["params"]["body"] == "Hi Acme, edited in a form."
    assert "not sure" in joined(await send(app, "what's the weather like"))


async def test_a_closed_edit_form_keeps_the_card_and_drops_the_question(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    assert (await send(app, button=f"keep:{card.approval_id}")).items == []
    assert "not sure" in joined(await send(app, "what's the weather like"))
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.is_pending
    assert outbox(app) == []


async def test_edited_text_with_double_braces_is_sent_verbatim(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    new_text = "Hi Acme, our template tag is {{client}} and stays {{as is}}."
    await send(app, new_text)
    await send(app, "yes")
    [effect] = outbox(app)
    assert effect["params"]["body"] == new_text


async def test_an_empty_answer_to_an_edit_does_not_send_an_empty_email(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    await send(app, "   ")
    assert [e["params"]["body"] for e in outbox(app) if not e["params"]["body"]] == []


async def test_cancel_during_an_edit_keeps_the_card(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"edit:{card.approval_id}")
    await send(app, "/cancel")
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.is_pending
    assert outbox(app) == []


async def test_edit_on_a_decided_approval_explains_who_decided(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"approve:{card.approval_id}")
    reply = await send(app, button=f"edit:{card.approval_id}")
    assert reply.notice and "Already decided" in reply.notice
    assert len(outbox(app)) == 1


async def test_a_stale_reject_press_does_not_ask_for_a_reason(app: Steward) -> None:
    card = await start(app)
    await send(app, button=f"approve:{card.approval_id}")
    stale = await send(app, button=f"reject:{card.approval_id}")
    assert stale.notice and "Already decided" in stale.notice
    assert not any(t.startswith("Why?") for t in stale.texts)
    await send(app, "what's the weather like")
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.status is ApprovalStatus.APPROVED
    assert approval.reason is None


async def test_premium_approves_twice_and_the_folder_step_has_no_edit(app: Steward) -> None:
    first = await start(app, START.replace("basic", "premium"))
    reply = await send(app, button=f"approve:{first.approval_id}")
    folder = only_card(reply)
    assert folder.summary == "Create a shared project folder for Acme"
    assert [b.label for b in folder.buttons] == ["Approve", "Reject", "Details"]
    assert len(outbox(app)) == 1
    assert "no text to edit" in joined(await send(app, button=f"edit:{folder.approval_id}"))
    await send(app, button=f"approve:{folder.approval_id}")
    assert sorted(e["action"] for e in outbox(app)) == ["create_folder", "send_email"]


async def test_the_welcome_email_promises_only_what_the_run_does(app: Steward) -> None:
    """A basic client gets no project folder, and a kick-off planned for March is not
    "this week": the welcome email promises neither."""
    card = await start(app, f'{START} kickoff="2099-03-01 15:00"')
    await send(app, button=f"approve:{card.approval_id}")
    [welcome] = outbox(app)
    body = welcome["params"]["body"]
    assert "folder" not in body and "this week" not in body, body
    assert "kick-off call" in body


async def test_a_rejected_kick_off_invitation_still_sets_up_the_premium_folder(
    app: Steward,
) -> None:
    kicked_off = START.replace("basic", "premium") + ' kickoff="2099-03-01 15:00"'
    welcome = await start(app, kicked_off)
    invite = only_card(await send(app, button=f"approve:{welcome.approval_id}"))
    assert invite.title == "Approve the kick-off invitation"
    folder = only_card(await send(app, f"/reject {invite.approval_id} I will call them"))
    assert folder.summary == "Create a shared project folder for Acme"
    await send(app, button=f"approve:{folder.approval_id}")
    assert sorted(e["action"] for e in outbox(app)) == ["create_folder", "send_email"]
    run = await app.ledger.get_run(await run_of(app, folder))
    assert run is not None and run.status is RunStatus.SUCCEEDED


async def test_details_button_shows_inputs_and_steps(app: Steward) -> None:
    card = await start(app)
    reply = await send(app, button=f"details:{card.approval_id}")
    text = joined(reply)
    assert "client: Acme" in text and "email: jane@acme.com" in text
    assert "draft_welcome" in text
    assert len(reply.cards) == 1


async def test_buttons_for_unknown_approvals_get_a_clear_message(app: Steward) -> None:
    for payload in ("approve:zzz", "reject:zzz", "edit:zzz"):
        text = joined(await send(app, button=payload))
        assert text == "no approval 'zzz'; /runs lists the pending ones", payload
    # details said "No approval zzz." where the others say it as above
    assert joined(await send(app, button="details:zzz")) == (
        "no approval 'zzz'; /runs lists the pending ones"
    )
    assert "expired" in joined(await send(app, button="frobnicate:zzz"))
    assert "expired" in joined(await send(app, button="garbage"))


# -- run controls ----------------------------------------------------------------------


async def test_an_approval_cancelled_with_its_run_says_who_cancelled_it(app: Steward) -> None:
    card = await start(app)
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None
    assert "Cancelled run" in joined(await send(app, f"/cancel {approval.run_id}"))
    late = await send(app, f"/approve {card.approval_id}")
    assert (late.notice or "").startswith("Already decided — Cancelled by telegram:42 at")
    assert "Cancelled by telegram:42 at" in outcomes(late)[0].text


async def test_a_paused_run_cannot_be_approved_until_resumed(app: Steward) -> None:
    card = await start(app)
    run_id = await run_of(app, card)
    assert "Paused" in joined(await send(app, f"/pause {run_id}"))
    refused = await send(app, button=f"approve:{card.approval_id}")
    assert "paused" in joined(refused) and f"/resume {run_id}" in joined(refused)
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.is_pending
    assert outbox(app) == []

    resumed = await send(app, f"/resume {run_id}")
    assert only_card(resumed).approval_id == card.approval_id
    done = await send(app, button=f"approve:{card.approval_id}")
    assert "Approved by telegram:42" in outcomes(done)[0].text
    assert len(outbox(app)) == 1


async def test_cancel_a_run(app: Steward) -> None:
    card = await start(app)
    run_id = await run_of(app, card)
    text = joined(await send(app, f"/cancel {run_id}"))
    assert f"Cancelled run {run_id}" in text
    run = await app.ledger.get_run(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and not approval.is_pending
    late = await send(app, button=f"approve:{card.approval_id}")
    assert late.notice and "Already decided" in late.notice
    assert outbox(app) == []
    assert "already cancelled" in joined(await send(app, f"/cancel {run_id}"))


async def test_runs_lists_active_runs_and_all_includes_finished(app: Steward) -> None:
    assert "No runs in progress" in joined(await send(app, "/runs"))
    waiting = await start(app)
    finished = await start(app)
    await send(app, button=f"approve:{finished.approval_id}")
    waiting_run, finished_run = await run_of(app, waiting), await run_of(app, finished)

    active = joined(await send(app, "/runs"))
    assert waiting_run in active and waiting.approval_id in active
    assert finished_run not in active

    everything = joined(await send(app, "/runs all"))
    assert waiting_run in everything and finished_run in everything
    assert "succeeded" in everything
    assert joined(await send(app, "/runs ALL")) == everything  # not a run named ALL


async def test_runs_says_when_it_lists_only_the_newest(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("graph.coordinator.RUNS_SHOWN", 2)
    oldest = await run_of(app, await start(app))
    await start(app)
    assert "older ones" not in joined(await send(app, "/runs"))
    await start(app)
    listed = joined(await send(app, "/runs"))
    assert oldest not in listed and "the newest 2" in listed and "--limit" in listed
    assert "steward runs --all" not in listed
    # `steward runs` lists only the runs in progress: more of all of them takes --all
    assert "steward runs --all --limit N" in joined(await send(app, "/runs all"))


async def test_runs_all_says_how_a_run_ended(app: Steward) -> None:
    rejected = await start(app)
    await send(app, button=f"reject:{rejected.approval_id}")
    cancelled = await run_of(app, await start(app))
    await send(app, f"/cancel {cancelled}")
    listed = joined(await send(app, "/runs all")).split("\n")
    lines = {line.split(" · ")[0]: line for line in listed}
    assert lines[await run_of(app, rejected)].endswith(" · ended: rejected at approve_welcome")
    assert lines[cancelled].endswith(" · ended: cancelled by telegram:42")


# -- tier 2 routing with a fake model --------------------------------------------------


class _ToolCallingFake(GenericFakeChatModel):
    """Answers with scripted messages; binding tools is accepted and ignored."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def _route_answer(process: str | None, inputs: dict[str, str], confidence: float) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[
            {
                "name": "_ModelRoute",
                "args": {
                    "process": process,
                    "inputs": [{"name": name, "value": value} for name, value in inputs.items()],
                    "confidence": confidence,
                },
                "id": "call-1",
                "type": "tool_call",
            }
        ],
        usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
    )


def _models(app: Steward, answers: list[AIMessage]) -> LanguageModels:
    messages: Iterator[AIMessage] = iter(answers)
    fake = _ToolCallingFake(messages=messages)
    return LanguageModels(fake, fake, app.ledger, ("fake", "fake"))


async def test_router_without_models_has_no_tier_2() -> None:
    router = Router(Catalog.load(BUILTIN_DIR, None))
    assert await router.by_model("welcome our new customer") is None


async def test_tier_2_routes_what_the_rules_cannot(app: Steward) -> None:
    text = "please greet Globex, the folks at ops@globex.io bought our top tier"
    assert app.coordinator.router.by_rules(text) is None
    app.coordinator.router.models = _models(
        app,
        [
            _route_answer(
                "onboarding",
                {"client": "Globex", "email": "ops@globex.io", "package": "premium"},
                0.9,
            )
        ],
    )
    card = only_card(await send(app, text))
    [run] = await app.ledger.list_runs()
    assert run.inputs == {
        "client": "Globex",
        "email": "ops@globex.io",
        "package": "premium",
        "contact": "Globex team",  # its default, as nobody was named
    }
    assert (card.text or "").startswith("Hi Globex team,\n")
    assert card.summary == "Send the welcome email to ops@globex.io"


async def test_tier_2_drops_invalid_values_and_asks_for_them(app: Steward) -> None:
    app.coordinator.router.models = _models(
        app,
        [_route_answer("onboarding", {"client": "Globex", "email": "nope", "package": "x"}, 0.8)],
    )
    asked = await send(app, "please greet Globex")
    assert asked.cards == []
    assert "email" in joined(asked).lower()
    assert await app.ledger.list_runs() == []


async def test_tier_2_unsure_or_unknown_process_falls_back(app: Steward) -> None:
    app.coordinator.router.models = _models(
        app,
        [
            _route_answer("onboarding", {}, 0.2),
            _route_answer("launch_rockets", {}, 0.99),
            AIMessage(content="I think onboarding?"),
        ],
    )
    for _ in range(3):
        assert "not sure" in joined(await send(app, "do the thing"))
    assert await app.ledger.list_runs() == []


class _Hanging(_ToolCallingFake):
    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3600)


class _Down(_ToolCallingFake):
    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Connection error.")


async def test_tier_2_says_when_the_model_fails_or_hangs(
    app: Steward, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that hangs kept the chat waiting for minutes (its client's timeout, three
    tries), then said it was "not sure": the operator should hear that it failed, soon."""
    monkeypatch.setattr("graph.routing.ROUTE_SECONDS", 0.05)
    models = _models(app, [])
    app.coordinator.router.models = models
    for model, why in (
        (_Hanging(messages=iter([])), "it did not answer within 0.05 s"),
        (_Down(messages=iter([])), "it failed: Connection error."),
    ):
        models.strong = models.fast = model
        said = joined(await send(app, "please greet Globex, they bought our top tier"))
        assert f"I could not ask the model what you meant ({why})" in said
        assert "nothing was started" in said and "/run PROCESS key=value" in said
        assert "not sure" not in said
    assert await app.ledger.list_runs() == []


async def test_tier_2_over_budget_does_not_offer_a_retry_of_no_run(app: Steward) -> None:
    models = _models(app, [_route_answer("onboarding", {}, 0.9)])
    models.budgets = Budgets(app.ledger, ZoneInfo("UTC"), daily=0.0)
    app.coordinator.router.models = models
    said = joined(await send(app, "please greet Globex, they bought our top tier"))
    assert said.startswith(
        "I could not ask the model what you meant (the daily model budget is spent "
        "($0.00 of $0.00 today)), so nothing was started."
    )
    assert "/retry" not in said


@pytest.mark.parametrize(
    "text",
    [
        "onboarding client=Acme email=jane@acme.com package=basic",
        "  onboarding\tclient=Acme\r\nnote=a#b  ",
        "invoice amount=€120 client=Zoë\u00a0Ltd due=2026-12-24",
        'onboarding client="Acme Ltd" email=jane@acme.com',
        "onboarding client='Acme Ltd' note=it\\'s",
        'onboarding client="Acme',  # unbalanced: split on whitespace
        "",
    ],
)
def test_arguments_are_read_as_a_shell_reads_them(text: str) -> None:
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    positional, named = parse_arguments(text)
    assert positional + [f"{key}={value}" for key, value in named.items()] == tokens


@pytest.mark.parametrize(
    "value",
    [
        "Acme",
        "Acme Ltd",
        'Acme "Best" Co',
        "O'Brien's",
        "a\\b c",
        'say "hi"',
        "tab\there",
        "",
        "\u201cAcme\u201d",
        "\u201eZeit\u201c Verlag",
    ],
)
def test_an_argument_is_written_as_it_is_read_back(value: str) -> None:
    written = format_argument("client", value)
    assert parse_arguments(f"replay r1 draft {written}", strict=True) == (
        ["replay", "r1", "draft"],
        {"client": value},
    )


def test_an_apostrophe_is_a_letter_and_a_double_quote_left_open_is_an_error() -> None:
    assert parse_arguments("onboarding client=O'Brien email=o@b.ie", strict=True) == (
        ["onboarding"],
        {"client": "O'Brien", "email": "o@b.ie"},
    )
    with pytest.raises(StewardError, match="quote is left open"):
        parse_arguments('onboarding client="Acme email=a@b.co', strict=True)


async def test_curly_quotes_as_a_phone_types_them_quote_a_value(app: Steward) -> None:
    card = await start(
        app, "/run onboarding client=\u201cAcme Corp\u201d email=jane@acme.com package=basic"
    )
    assert ("Client", "Acme Corp") in card.fields
    assert parse_arguments('x client="Say \u201chi\u201d"') == (
        ["x"],
        {"client": "Say \u201chi\u201d"},
    )


async def test_an_input_named_in_capitals_is_that_input(app: Steward) -> None:
    card = await start(app, "/run onboarding Client=Acme EMAIL=jane@acme.com Package=Basic")
    assert ("Client", "Acme") in card.fields and ("Package", "basic") in card.fields


async def test_a_run_with_a_quote_left_open_does_not_start(app: Steward) -> None:
    reply = await send(app, '/run onboarding client="Acme email=jane@acme.com package=basic')
    assert "quote is left open" in joined(reply)
    assert await app.ledger.list_runs() == []


async def test_an_input_given_twice_two_ways_starts_nothing(app: Steward) -> None:
    """client=A client=B started the run for B, the client typed last, without a word."""
    reply = await send(
        app, "/run onboarding client=Acme email=jane@acme.com package=basic client=Globex"
    )
    assert "client is given twice, client=Acme and client=Globex: give it once" in joined(reply)
    assert await app.ledger.list_runs() == []
    card = await start(
        app, "/run onboarding client=Acme client=Acme email=j@acme.com package=basic"
    )
    assert ("Client", "Acme") in card.fields


@pytest.mark.parametrize(
    ("text", "asked", "command"),
    [
        ("runs", False, "/runs"),
        ("Runs all", False, "/Runs all"),
        ("runs rabcdefgh2", False, "/runs rabcdefgh2"),
        ("today all", False, "/today all"),
        ("approve a3k9m2pq", False, "/approve a3k9m2pq"),
        ("reject a3k9m2pq too pricey for them", False, "/reject a3k9m2pq too pricey for them"),
        ("undo rabcdefgh2 send_welcome", False, "/undo rabcdefgh2 send_welcome"),
        ("run onboarding client=Acme", False, "/run onboarding client=Acme"),
        ("help", False, "/help"),
        ("history what did we quote Acme?", False, "/history what did we quote Acme?"),
        ("help me onboard Jane from Acme", False, None),
        ("run out of budget", False, None),
        ("today we are thrilled to welcome you", False, None),
        ("approve it please", False, None),
        ("cancel the Acme run", False, None),
        ("undo rabcdefgh2", False, None),
        ("", False, None),
        ("cancel", True, "/cancel"),
        ("skip", True, "/skip"),
        ("Cancel.", True, "/cancel"),  # as a phone writes it
        ("Skip!", True, "/skip"),
        ("Runs.", False, "/runs"),
        ("cancel it.", True, None),
        ("runs", True, None),
        ("approve a3k9m2pq", True, None),
        ("Today we are thrilled to welcome you", True, None),
    ],
)
async def test_a_command_without_its_slash_is_known_by_its_shape(
    app: Steward, text: str, asked: bool, command: str | None
) -> None:
    assert app.coordinator._unslashed(text, asked) == command


async def test_a_cards_expiry_is_on_the_operators_clock(app: Steward) -> None:
    app.coordinator.zone = ZoneInfo("America/New_York")  # STEWARD_TIMEZONE
    card = await start(app)
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None
    local = approval.expires_at.astimezone(ZoneInfo("America/New_York"))
    assert f"if nobody answers by {local:%Y-%m-%d %H:%M %Z}," in (card.footer or "")
    assert local.strftime("%Z") in ("EST", "EDT")


async def test_a_decision_is_told_on_the_operators_clock(app: Steward) -> None:
    zone = ZoneInfo("Asia/Tokyo")  # STEWARD_TIMEZONE; never UTC's date and hour at once
    app.coordinator.zone = zone
    card = await start(app)
    decided = outcomes(await send(app, button=f"reject:{card.approval_id}"))
    approval = await app.ledger.get_approval(card.approval_id)
    assert approval is not None and approval.decided_at is not None
    local = f"at {approval.decided_at.astimezone(zone):%Y-%m-%d %H:%M} JST"
    assert [local in outcome.text for outcome in decided] == [True]
    again = await send(app, button=f"approve:{card.approval_id}")
    assert again.notice is not None and local in again.notice
    details = joined(await send(app, button=f"details:{card.approval_id}"))
    assert local in details
    [gate] = [line for line in details.splitlines() if "(approval) rejected" in line]
    assert f"{approval.decided_at.astimezone(zone):%Y-%m-%d %H:%M}" in gate and "JST" in gate


async def test_skip_with_nothing_asked_says_so(app: Steward) -> None:
    assert "Nothing to skip" in joined(await send(app, "/skip"))
