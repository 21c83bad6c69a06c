"""Others' words shown to the operator: a bidi control in them reorders nothing steward
shows, on a card, in an answer, in the daily list, in the terminal."""

from __future__ import annotations

import io
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path

from bot.app import Steward
from bot.console import Printable
from graph.messages import BIDI_CONTROLS, EditPrompt, Inbound, Reply
from memory.longterm import MemoryRecord, RecordKind
from tests.graph.test_coordinator import OPERATOR, send
from tests.graph.test_engine import FAST_RETRY, PAID_NOTE, outbox, with_process

# Written backwards after a right-to-left override, it shows as "€1,500.00", and the
# isolate after it ends no override: the IBAN after it would show backwards too.
FORGED = "Acme \u202e00.005,1€\u2066 DE89 3704 0044\u2069"
MARKED = "Acme \ufffd00.005,1€\ufffd DE89 3704 0044\ufffd"


def everything_shown(reply: Reply) -> str:
    """Every string of a reply, its cards' fields and buttons too."""
    parts: list[str] = [reply.notice or ""]
    for item in reply.items:
        parts += [str(part) for part in _flat(item if isinstance(item, str) else astuple(item))]
    return "\n".join(parts)


def _flat(value: object) -> list[object]:
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _flat(item)]
    return [value]


async def test_a_bidi_control_in_others_words_shows_as_a_mark_on_cards_answers_and_the_list(
    tmp_path: Path,
) -> None:
    """A webhook's amount after a right-to-left override showed backwards on the card."""
    settings = with_process(tmp_path, PAID_NOTE, operators="telegram:42")
    async with Steward.open(settings, retry=FAST_RETRY) as app:
        view = await app.engine.start("paid_note", {"email": "jane@acme.com"}, "cli:shell")
        event = {"amount": FORGED, FORGED: "a field's name"}
        woken = await app.engine.offer_event(view.run.id, "payment", event, "hook:bank")
        assert woken is not None and woken.approval is not None
        card = app.coordinator.describe(woken)
        assert f"amount: {MARKED}" in everything_shown(card)
        said = MemoryRecord.create("test:1", RecordKind.NOTE, f"quote {FORGED}", datetime.now(UTC))
        await app.ledger.journal([said.to_dict()])
        answer = await send(app, "/history what did we quote Acme?")
        assert f"quote {MARKED}" in everything_shown(answer)
        listed = await send(app, "/today")
        rejected = await send(app, f"/reject {woken.approval.id} {FORGED}")
        again = await send(app, button=f"approve:{woken.approval.id}")  # a notice: decided
        assert MARKED in (again.notice or "")
        for reply in (card, answer, listed, rejected, again):
            assert not BIDI_CONTROLS.search(everything_shown(reply)), reply
        approval = await app.ledger.get_approval(woken.approval.id)
        assert approval is not None and approval.reason == FORGED  # kept as it was given
        assert FORGED in approval.card["text"]  # and what the run would send


THANKS = """
name: thanks
title: A thank-you for a payment
description: Thanks a client for the payment a webhook reports, in words one may edit.
inputs:
  email: {type: email}
steps:
  - id: wait_payment
    kind: wait
    event: payment
    output: payment
  - id: draft
    kind: agent
    output: note
    prompt: Thank the client for this payment, quoting it. {payment}
    template: "Received:\\n{payment}"
  - id: approve
    kind: approval
    summary: Thank {email} for the payment
    text: "{note}"
    editable: note
  - id: send
    kind: action
    gate: approve
    connector: email
    action: send_email
    with: {to: "{email}", subject: "Thank you", body: "{note}"}
"""


async def test_an_edit_submitted_unchanged_sends_the_draft_as_it_was(tmp_path: Path) -> None:
    """The Edit form (Slack's modal) and the text to send back in chat (Telegram) hold the
    draft as shown: a mark for each bidi control. Submitted unchanged, the run sent the
    marks in their place. Now the draft as shown, sent back, is the draft as it was; a
    text changed is sent exactly as written."""
    settings = with_process(tmp_path, THANKS, operators="telegram:42")
    async with Steward.open(settings, retry=FAST_RETRY) as app:
        for submit in ("form", "chat", "changed"):
            email = f"{submit}@acme.com"
            view = await app.engine.start("thanks", {"email": email}, "cli:shell")
            event = {"amount": FORGED}
            woken = await app.engine.offer_event(view.run.id, "payment", event, "hook:bank")
            assert woken is not None and woken.approval is not None
            approval_id, draft = woken.approval.id, woken.approval.card["text"]
            assert FORGED in draft
            asked = await send(app, button=f"edit:{approval_id}")
            [prompt] = [item for item in asked.items if isinstance(item, EditPrompt)]
            assert MARKED in prompt.text and not BIDI_CONTROLS.search(prompt.text)
            if submit == "form":
                await send(app, prompt.text, button=f"edited:{approval_id}")
                expected = draft
                again = Inbound(OPERATOR, "chat-1", "again", prompt.text)  # Slack sends it again
                assert await app.door.edit_refused(approval_id, again) is None
            elif submit == "chat":
                await send(app, prompt.text)
                await send(app, "yes")
                expected = draft
            else:
                expected = prompt.text.replace("Acme", "ACME")
                await send(app, expected, button=f"edited:{approval_id}")
            (sent,) = [e["params"] for e in outbox(app) if e["params"]["to"] == email]
            assert sent["body"] == expected


def test_a_bidi_control_reaches_the_terminal_as_a_mark() -> None:
    """What the command line prints (an answer, the daily list) goes out through it."""
    out = io.StringIO()
    Printable(out).write(f"quote {FORGED}\n")
    assert out.getvalue() == f"quote {MARKED}\n"
