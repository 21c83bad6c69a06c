"""Replies as Telegram messages: escaping, splitting at boundaries, cards that fit."""

from __future__ import annotations

from html.parser import HTMLParser

from bot.splitting import length
from bot.splitting import split_text as split_at
from bot.telegram.render import (
    MESSAGE_LIMIT,
    Outgoing,
    asking,
    card_messages,
    outcome_html,
    prompt_messages,
    text_messages,
)
from graph.messages import Button, Card, CardOutcome, EditPrompt, Verbatim


def split_text(text: str) -> list[str]:
    return split_at(text, MESSAGE_LIMIT)


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible(html: str) -> tuple[str, list[str]]:
    parser = _Visible()
    parser.feed(html)
    parser.close()
    return "".join(parser.text), parser.tags


def test_user_text_can_never_open_a_tag() -> None:
    nasty = "<b>bold</b> & <a href='x'>link</a> *stars* _under_ `code` [x](y) &amp;"
    (message,) = text_messages(nasty)
    text, tags = visible(message.html)
    assert tags == []
    assert text == nasty


def test_short_text_is_one_message() -> None:
    assert split_text("hello") == ["hello"]


def test_long_text_splits_at_paragraphs_and_loses_nothing() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 150 for i in range(20)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    parts = split_text(text)
    assert len(parts) > 1
    assert all(length(part) <= MESSAGE_LIMIT for part in parts)
    assert all(part.startswith("Paragraph ") for part in parts)  # cut between paragraphs
    assert "\n\n".join(parts) == text


def test_a_line_without_breaks_is_cut_at_spaces_then_anywhere() -> None:
    spaced = "abc " * 3000
    assert all(length(part) <= MESSAGE_LIMIT for part in split_text(spaced))
    assert all(not part.endswith("ab") for part in split_text(spaced))
    solid = "x" * 10_000
    parts = split_text(solid)
    assert [len(p) for p in parts] == [4096, 4096, 1808]
    assert "".join(parts) == solid


def test_length_counts_utf16_units_like_telegram() -> None:
    emoji = "😀" * 3000  # two UTF-16 units each
    assert length(emoji) == 6000
    parts = split_text(emoji)
    assert all(length(p) <= MESSAGE_LIMIT for p in parts)
    assert "".join(parts) == emoji


def test_very_long_text_goes_as_a_document() -> None:
    text = "\n\n".join("line " * 800 for _ in range(8))
    (message,) = text_messages(text)
    assert message.document is not None
    name, content = message.document
    assert name.endswith(".txt") and content == text


def test_a_persons_own_long_text_goes_as_a_document_of_theirs_as_it_is() -> None:
    text = Verbatim("\n\n".join("Type /help or /cancel " * 200 for _ in range(8)))
    (message,) = text_messages(text)
    assert message.document == ("reply.txt", text)
    assert "My answer" not in message.html and "The text is" in message.html


def test_an_edit_prompt_whose_text_goes_as_a_file_is_asked_in_chat_first() -> None:
    draft = "\n\n".join("line " * 800 for _ in range(8))
    prompt = "Send the new text; I show it whole, and yes approves the card with it."
    asked, current = prompt_messages(EditPrompt("a2b3c4d", draft, prompt))
    assert asked == Outgoing(prompt) and current.document == ("current-text.txt", draft)
    assert "32,014 characters" in current.html
    short = EditPrompt("a2b3c4d", "Hi Jane", prompt)
    assert prompt_messages(short) == text_messages(short.as_message)


def _card(text: str | None) -> Card:
    return Card(
        approval_id="a2b3c4d",
        title="Send the welcome email <to> Jane & co",
        summary="Email jane@acme.com",
        fields=[("To", "jane@acme.com")],
        risk="medium",
        text=text,
        footer="Approval a2b3c4d · run r1",
        buttons=[
            Button("Approve", "approve:a2b3c4d", "primary"),
            Button("Reject", "reject:a2b3c4d", "danger"),
            Button("Edit", "edit:a2b3c4d"),
            Button("Details", "details:a2b3c4d"),
        ],
    )


def test_a_card_is_one_message_with_its_buttons_and_escaped_text() -> None:
    (message,) = card_messages(_card("Hi <Jane>, *welcome* & thanks"))
    text, tags = visible(message.html)
    assert "Send the welcome email <to> Jane & co" in text
    assert "Hi <Jane>, *welcome* & thanks" in text
    assert set(tags) <= {"b", "i", "blockquote"}
    assert message.keyboard is not None
    (row,) = message.keyboard.inline_keyboard
    assert [b.text for b in row] == ["Approve", "Reject", "Edit", "Details"]
    assert all(len(str(b.callback_data).encode()) <= 64 for b in row)
    assert row[1].callback_data == "ask:reject:a2b3c4d"  # a danger button asks first
    sure = asking(message.keyboard, "ask:reject:a2b3c4d")
    (keys,) = sure.inline_keyboard
    assert [(k.text, k.callback_data) for k in keys[1:3]] == [
        ("Yes, Reject", "reject:a2b3c4d"),
        ("Back", "back:reject:a2b3c4d"),
    ]
    assert asking(sure, "back:reject:a2b3c4d") == message.keyboard


def test_a_card_with_a_very_long_text_sends_the_whole_card_as_a_file_first() -> None:
    draft = "A long draft. " * 1000
    document, card = card_messages(_card(draft))
    assert document.document is not None
    name, content = document.document
    assert name == "a2b3c4d.txt" and draft.strip() in content and "jane@acme.com" in content
    assert card.keyboard is not None
    shown, _ = visible(card.html)
    assert length(shown) <= MESSAGE_LIMIT and "all of it is in the file above" in shown


def test_a_card_whose_fields_are_too_long_still_fits_with_its_buttons() -> None:
    card = _card("Short text")
    huge = Card(**{**card.__dict__, "fields": [("Notes", "x" * 2500), ("More", "y" * 2500)]})
    document, message = card_messages(huge)
    assert document.document is not None and "x" * 2500 in document.document[1]
    shown, _ = visible(message.html)
    assert length(shown) <= MESSAGE_LIMIT
    assert "Short text" in shown and message.keyboard is not None


def test_a_card_with_many_long_fields_and_a_long_text_still_fits_with_its_buttons() -> None:
    card = _card("Dear client, " + "lorem ipsum " * 400)
    fields = [(f"param {n}", f"{n}-" + "x" * 200) for n in range(16)]  # one per action param
    shown_of = {}
    for count in (16, 64):
        many = Card(**{**card.__dict__, "fields": fields * (count // 16)})
        document, message = card_messages(many)
        assert document.document is not None and "15-" + "x" * 200 in document.document[1]
        shown, _ = visible(message.html)
        assert length(shown) <= MESSAGE_LIMIT and message.keyboard is not None
        assert "param 0" in shown
        shown_of[count] = shown
    assert "Dear client" in shown_of[16] and "more fields" not in shown_of[16]  # text shorter
    assert "more fields in the file above" in shown_of[64]  # 64 cannot all be shown


def test_shortening_a_card_ends_even_when_nothing_it_may_cut_is_enough() -> None:
    card = _card(None)
    odd = Card(**{**card.__dict__, "fields": [("Notes", "x" * 200)], "risk": "r" * 5000})
    document, message = card_messages(odd)  # returns: the whole card is in the file
    assert document.document is not None and message.keyboard is not None


def test_a_split_never_leaves_a_scrap_at_an_early_boundary() -> None:
    text = "ab\n\n" + "word " * 3000
    parts = split_text(text)
    assert all(length(p) > 1000 for p in parts[:-1])
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())


def test_outcome_shows_the_decision_escaped() -> None:
    html = outcome_html(CardOutcome("a1", "Email <jane>\nApproved by telegram:1 at 2026-11-21"))
    text, tags = visible(html)
    assert text == "Email <jane>\nApproved by telegram:1 at 2026-11-21"
    assert tags == ["b"]


def test_an_outcome_with_a_long_reason_fits_a_message() -> None:
    summary = "Email <jane>\nat Acme"
    reason = "too pricey & late " * 400
    html = outcome_html(
        CardOutcome("a1", f"{summary}\nRejected by telegram:1 at 2026-11-21: {reason}")
    )
    text, tags = visible(html)
    assert len(text) <= MESSAGE_LIMIT
    assert text.startswith(summary + "\nRejected by telegram:1")
    assert tags == ["b"]
