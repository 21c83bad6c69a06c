"""Replies as Slack messages: Block Kit cards within Slack's limits, text that stays text."""

from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import replace
from typing import Any

import pytest

from bot.slack.channel import from_slack
from bot.slack.render import (
    CARD_TEXT_LIMIT,
    DRAFT_BLOCKS,
    EDIT_BLOCK,
    EDIT_INPUT,
    MESSAGE_LIMIT,
    MOST_BLOCKS,
    SECTION_LIMIT,
    as_typed_in_slack,
    card_message,
    card_overflow,
    edit_view,
    ephemeral_message,
    escape,
    mrkdwn,
    outcome_message,
    text_message,
    text_messages,
)
from graph.messages import Button, Card, CardOutcome, EditPrompt
from tests.fakes.slack_api import MAX_BLOCK_TEXT, text_in_blocks, validate_blocks

DRAFT = "Hi *Jane*,\n\nwelcome <!channel> & <https://evil.example|click here>.\n\n— Olivia"

OPS = ["U0OPS", "W0OPS"]  # the operators steward names as mentions


def card(text: str | None = DRAFT) -> Card:
    return Card(
        approval_id="a2b3c4d",
        title="Send the welcome email",
        summary="Email jane@acme.com <Jane & co>",
        fields=[("To", "jane@acme.com"), ("Subject", "Welcome *aboard*")],
        text=text,
        risk="medium",
        footer="Approval a2b3c4d · run r1 · if nobody answers by 2026-11-24 08:00 UTC, …",
        buttons=[
            Button("Approve", "approve:a2b3c4d", "primary"),
            Button("Reject", "reject:a2b3c4d", "danger"),
            Button("Edit", "edit:a2b3c4d"),
            Button("Details", "details:a2b3c4d"),
        ],
    )


def of_type(blocks: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [block for block in blocks if block["type"] == kind]


def test_text_is_escaped_so_it_cannot_mention_or_link() -> None:
    [message] = text_messages("tell <!channel> & <@U123> about <https://x.example|this>")
    assert message.blocks is None
    assert "<" not in message.text and ">" not in message.text
    assert message.text == (
        "tell &lt;!channel&gt; &amp; &lt;@U123&gt; about &lt;https://x.example|this&gt;"
    )
    assert escape("a & b") == "a &amp; b"


def test_long_text_is_split_at_paragraphs() -> None:
    paragraphs = [f"paragraph {n}: " + "word " * 150 for n in range(20)]
    messages = text_messages("\n\n".join(paragraphs))
    assert len(messages) > 1
    assert all(len(m.text) <= MESSAGE_LIMIT for m in messages)
    assert all(m.text.startswith("paragraph") for m in messages)


def test_a_card_says_what_why_risk_and_expiry_with_its_buttons() -> None:
    message = card_message(card())
    blocks = message.blocks
    assert blocks is not None
    header, summary = blocks[0], blocks[1]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Send the welcome email", "emoji": True},
    }
    assert summary["text"] == {
        "type": "plain_text",
        "text": "Email jane@acme.com <Jane & co>",
        "emoji": True,
    }
    [fields] = [b for b in of_type(blocks, "section") if "fields" in b]
    assert [f["text"] for f in fields["fields"]] == [
        "*To*",
        "jane@acme.com",
        "*Subject*",
        "Welcome *aboard*",
    ]
    assert [f["type"] for f in fields["fields"]] == ["mrkdwn", "plain_text"] * 2
    [context] = of_type(blocks, "context")
    risk, footer = (e["text"] for e in context["elements"])
    assert risk == "*Risk:* medium" and footer.startswith("Approval a2b3c4d")
    [actions] = of_type(blocks, "actions")
    buttons = {b["action_id"]: b for b in actions["elements"]}
    assert list(buttons) == ["approve", "reject", "edit", "details"]
    assert (
        buttons["approve"]["style"] == "primary"
        and buttons["approve"]["value"] == "approve:a2b3c4d"
    )
    assert buttons["reject"]["style"] == "danger"
    assert set(buttons["reject"]["confirm"]) >= {"title", "text", "confirm", "deny"}
    assert "style" not in buttons["edit"] and "confirm" not in buttons["edit"]


def test_a_draft_is_shown_as_written() -> None:
    blocks = card_message(card()).blocks or []
    draft = [b["text"] for b in of_type(blocks, "section") if "text" in b][1:]
    assert [t["type"] for t in draft] == ["plain_text"]
    assert draft[0]["text"] == DRAFT


def test_a_long_draft_fits_slacks_limits_and_points_to_details() -> None:
    long = "\n\n".join(f"Paragraph {n}. " + "lorem ipsum " * 200 for n in range(40))
    blocks = card_message(card(long)).blocks or []
    assert len(blocks) <= MOST_BLOCKS
    sections = [b["text"]["text"] for b in of_type(blocks, "section") if "text" in b]
    assert all(len(text) <= SECTION_LIMIT for text in sections)
    assert 2 < len(sections) <= 1 + DRAFT_BLOCKS - 1
    assert text_in_blocks(blocks) <= CARD_TEXT_LIMIT < MAX_BLOCK_TEXT
    notes = [e["text"] for b in of_type(blocks, "context") for e in b["elements"]]
    assert any("thread" in note and "more characters" in note for note in notes)
    assert of_type(blocks, "actions")  # the buttons are never cut
    heading, *parts = card_overflow(card(long))
    assert "a2b3c4d" in heading.text
    assert "".join("".join(p.text for p in parts).split()) == "".join(escape(long).split())
    assert card_overflow(card()) == []


def test_a_card_with_long_fields_fits_slacks_limits_and_they_go_on_whole_in_its_thread() -> None:
    paragraph = "We will review, design and ship the work in small steps. " * 34  # ~1,950
    names = ("Scope", "Deliverables", "Timeline", "Terms", "Notes")
    fields = [(name, f"{name}: {paragraph}") for name in names]
    for text in (None, "word " * 5000):
        long = replace(card(text), fields=[("To", "jane@acme.com"), *fields])
        blocks = card_message(long).blocks or []
        assert validate_blocks(blocks) == [] and len(blocks) <= MOST_BLOCKS
        assert text_in_blocks(blocks) <= CARD_TEXT_LIMIT < MAX_BLOCK_TEXT
        buttons = [e["action_id"] for b in of_type(blocks, "actions") for e in b["elements"]]
        assert buttons == ["approve", "reject", "edit", "details"]
        shown = [f["text"] for b in of_type(blocks, "section") for f in b.get("fields", [])]
        assert "jane@acme.com" in shown  # a short field is whole
        assert all(any(v.startswith(f"{name}: We will") for v in shown) for name, _ in fields)
        notes = [e["text"] for b in of_type(blocks, "context") for e in b["elements"]]
        assert any("Fields cut short" in note and "thread" in note for note in notes)
        said = "\n\n".join(m.text for m in card_overflow(long))
        assert all(f"{name}: {escape(value.strip())}" in said for name, value in fields)
        assert "To: jane@acme.com" not in said  # what the card shows whole is not repeated
        assert ("The whole text" in said) is (text is not None)


def test_a_card_with_more_fields_than_its_blocks_hold_keeps_its_buttons() -> None:
    many = replace(card("word " * 5000), fields=[(f"F{n}", "x" * 300) for n in range(300)])
    blocks = card_message(many).blocks or []
    assert validate_blocks(blocks) == [] and len(blocks) <= MOST_BLOCKS
    assert text_in_blocks(blocks) <= CARD_TEXT_LIMIT and blocks[-1]["type"] == "actions"
    said = "".join(m.text for m in card_overflow(many))
    assert all(f"F{n}: {'x' * 300}" in said for n in range(300))


def test_a_short_draft_is_split_into_sections_that_fit() -> None:
    text = "\n\n".join("x" * 1000 for _ in range(7))
    sections = [
        b["text"]["text"]
        for b in of_type(card_message(card(text)).blocks or [], "section")
        if "text" in b
    ]
    assert "\n\n".join(sections[1:]) == text


def test_an_outcome_has_no_buttons_and_names_who_decided() -> None:
    settled = outcome_message(
        CardOutcome(
            "a2b3c4d",
            "Email jane@acme.com\n"
            "Rejected by slack:U0OPS at 2026-11-21 10:00 UTC: not slack:U0EVIL <!here>",
        ),
        OPS,
    )
    blocks = settled.blocks or []
    assert not of_type(blocks, "actions")
    [context] = of_type(blocks, "context")
    line = context["elements"][0]["text"]
    assert line == "*Rejected by <@U0OPS> at 2026-11-21 10:00 UTC*: not slack:U0EVIL &lt;!here&gt;"


def test_an_operator_steward_names_is_a_mention_and_no_one_else_is() -> None:
    """Any "by slack:U…" became a mention: a client's words or a webhook's field naming a
    member of the workspace so notified them."""
    [message] = text_messages(
        "Run r1: retried by slack:U0OPS at 10:00\n     approved — by slack:W0OPS, 0.9\n"
        "Approved by telegram:42: told slack:U0EVIL\nSent by slack:U0CLIENT",
        OPS,
    )
    assert message.text == (
        "Run r1: retried by <@U0OPS> at 10:00\n     approved — by <@W0OPS>, 0.9\n"
        "Approved by telegram:42: told slack:U0EVIL\nSent by slack:U0CLIENT"
    )
    shown = "Send it, as asked by slack:U0CLIENT\nApproved by slack:U0OPS at 10:00"
    settled = outcome_message(CardOutcome("a2b3c4d", shown), OPS)
    assert settled.text == "Send it, as asked by slack:U0CLIENT\nApproved by <@U0OPS> at 10:00"
    assert ephemeral_message("Retried by slack:U0CLIENT", OPS).text == "Retried by slack:U0CLIENT"


def test_a_reason_with_marks_of_its_own_shows_them_and_who_decided_in_bold() -> None:
    """Not one bold span around a reason whose ``*`` or line break would end it, and no
    mark of the reason's formats it."""
    text = "Email jane@acme.com\nRejected by slack:U0OPS at 10:00: *wrong* _client_\nsee notes"
    [context] = of_type(outcome_message(CardOutcome("a2b3c4d", text), OPS).blocks or [], "context")
    line = context["elements"][0]["text"]
    assert line == "*Rejected by <@U0OPS> at 10:00*: " + mrkdwn("*wrong* _client_\nsee notes")


def test_text_in_mrkdwn_shows_its_marks_and_makes_no_link_mention_or_quote() -> None:
    literal = "<!date^00000000^{_}|"
    said = "> *so* _very_ ~late~ `now` & <!here> <https://x.example|y>\n>> a_b"
    assert mrkdwn(said) == (
        f"\u00ad&gt; {literal}*>so{literal}*> {literal}_>very{literal}_> {literal}~>late"
        f"{literal}~> {literal}`>now{literal}`> &amp; &lt;!here&gt; "
        f"&lt;https://x.example|y&gt;\n\u00ad&gt;&gt; a{literal}_>b"
    )
    [whisper] = [ephemeral_message("Already decided — Rejected by slack:U0OPS at 10:00: *no*", OPS)]
    assert (
        whisper.text == f"Already decided — Rejected by <@U0OPS> at 10:00: {literal}*>no{literal}*>"
    )
    marked = replace(card(), fields=[("due_date", "x")], risk="*high*")
    blocks = json.dumps(card_message(marked).blocks)
    assert "_date" not in blocks and "*high*" not in blocks


def test_an_outcome_with_a_long_reason_and_a_summary_of_lines_is_valid() -> None:
    summary = "Send the welcome email\nto jane@acme.com"
    reason = "too pricey & late\n" * 400  # escaped, it would pass a context's 3,000
    settled = outcome_message(
        CardOutcome("a2b3c4d", f"{summary}\nRejected by slack:U0OPS at 2026-11-21: {reason}"), OPS
    )
    blocks = settled.blocks or []
    assert validate_blocks(blocks) == []
    assert blocks[0]["text"]["text"] == summary
    [context] = of_type(blocks, "context")
    assert context["elements"][0]["text"].startswith("*Rejected by <@U0OPS> at")
    assert len(settled.text) <= MESSAGE_LIMIT and "&amp;" in settled.text


def test_an_outcome_whose_reason_is_mostly_escapes_fits_and_ends() -> None:
    def stuck(*_: object) -> None:
        raise TimeoutError("outcome_message did not end")

    signal.signal(signal.SIGALRM, stuck)  # it once looped for good on such a reason
    signal.alarm(10)
    try:
        for reason in ("&" * 800, "<>" * 1000, "a&" * 2000):
            text = f"Send it\nRejected by slack:U0OPS at 2026-11-21: {reason}"
            settled = outcome_message(CardOutcome("a2b3c4d", text), OPS)
            assert validate_blocks(settled.blocks or []) == []
            [context] = of_type(settled.blocks or [], "context")
            line = context["elements"][0]["text"]
            assert not re.search(r"&(?!amp;|lt;|gt;)", line)  # no escape cut in two
    finally:
        signal.alarm(0)


def test_the_edit_form_holds_the_draft_and_says_where_it_goes() -> None:
    prompt = EditPrompt("a2b3c4d", DRAFT, "Send the new text")
    view = edit_view(prompt, "D0OPS/1700000000.000100")
    assert view is not None
    assert len(view["title"]["text"]) <= 24
    [field] = [b for b in view["blocks"] if b.get("block_id") == EDIT_BLOCK]
    assert field["element"]["action_id"] == EDIT_INPUT
    assert field["element"]["initial_value"] == DRAFT
    assert json.loads(view["private_metadata"]) == {
        "approval": "a2b3c4d",
        "chat": "D0OPS/1700000000.000100",
    }
    assert edit_view(EditPrompt("a2b3c4d", "x" * 3001, "…"), "D0OPS") is None


def test_text_from_slack_is_unwrapped_and_unescaped() -> None:
    assert from_slack("mail <mailto:jane@acme.com|jane@acme.com> &lt;now&gt; &amp;c") == (
        "mail jane@acme.com <now> &c"
    )
    assert from_slack("see <https://acme.example/q?a=1&amp;b=2>") == (
        "see https://acme.example/q?a=1&b=2"
    )
    assert from_slack("<https://acme.example|acme.example> <#C01|general> <@U0A> <!here>") == (
        "acme.example #general @U0A @here"
    )
    assert from_slack("&amp;lt; stays &amp;lt;") == "&lt; stays &lt;"
    assert from_slack("book <https://cal.example/acme?x=1&amp;y=2|our calendar>") == (
        "book our calendar (https://cal.example/acme?x=1&y=2)"  # its words, and its link
    )
    assert from_slack("<http://acme.example/|acme.example> <mailto:a@b.co|write us>") == (
        "acme.example write us (a@b.co)"
    )


@pytest.mark.parametrize(
    ("said", "typed"),
    [
        ("/runs lists them", "/steward runs lists them"),
        ("no run 'x'; /runs all lists them.", "no run 'x'; /steward runs all lists them."),
        ("(afterwards: /undo r2 send_welcome)", "(afterwards: /steward undo r2 send_welcome)"),
        ("/processes · /help", "/steward processes · /steward help"),
        ("Try /approve?", "Try /steward approve?"),
        ("What is the email? (/cancel to stop)", "What is the email? (cancel to stop)"),
        ("Try again, or /cancel.", "Try again, or cancel."),
        ("Why? (/skip or /cancel)", "Why? (skip or cancel)"),
        ("To cancel a run: /cancel RUN", "To cancel a run: /steward cancel RUN"),
        ("https://acme.com/runs", "https://acme.com/runs"),  # no command: a path
        ("see /run/latest", "see /run/latest"),
        ("/runner and /frobnicate", "/runner and /frobnicate"),
    ],
)
def test_commands_are_told_as_they_are_typed_in_slack(said: str, typed: str) -> None:
    assert as_typed_in_slack(said) == typed


def test_a_long_list_is_rendered_in_a_few_ms() -> None:
    line = "r2b3c4d5 · onboarding · waiting · approval a2b3c4d: Send the welcome email"
    listing = "\n".join([line] * 10_000)

    def took() -> float:
        began = time.perf_counter()
        text_message(as_typed_in_slack(listing), OPS)
        return time.perf_counter() - began

    # Patterns tried at every character took ~30 ms here, and ~150 µs of each /runs reply.
    assert min(took() for _ in range(3)) < 0.008


def test_a_cards_data_is_shown_as_it_is_and_its_undo_as_typed_in_slack() -> None:
    card = Card(
        "a1",
        "Run a command",
        "Run it",
        fields=[("command", "/start"), ("Undo", "Stop it (afterwards: /undo r1 run_it)")],
    )
    shown = json.dumps(card_message(card).blocks)
    assert '"/start"' in shown and "/steward start" not in shown
    assert "(afterwards: /steward undo r1 run_it)" in shown
