"""Neutral replies as Telegram messages: HTML-escaped, split to fit, cards with keyboards.

Everything that came from a person (a draft, a name, a reason) is escaped, so no text
can break a message's formatting. Telegram counts a message's length in UTF-16 code
units after formatting is parsed, at most 4,096; longer text is split at paragraph
boundaries, and text that would take more than a few messages goes as a document.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from graph.messages import Card, CardOutcome

MESSAGE_LIMIT = 4096
MOST_MESSAGES = 4  # beyond this many parts, one document reads better than a flood
CARD_TEXT_LIMIT = 3000  # leaves room for the card's title, fields and footer


@dataclass(frozen=True)
class Outgoing:
    """One message to send: HTML text, and a keyboard or a document where it has one."""

    html: str
    keyboard: InlineKeyboardMarkup | None = None
    document: tuple[str, str] | None = None  # file name, content


def text_messages(text: str) -> list[Outgoing]:
    parts = split_text(text)
    if len(parts) > MOST_MESSAGES:
        caption = f"My answer is {len(text):,} characters long, so here it is as a file."
        return [Outgoing(escape(caption, quote=False), document=("reply.txt", text))]
    return [Outgoing(escape(part, quote=False)) for part in parts]


def card_messages(card: Card) -> list[Outgoing]:
    """The card, with its text attached as a document first when too long to show."""
    shown = card.text
    before = []
    if card.text is not None and length(card.text) > CARD_TEXT_LIMIT:
        before.append(
            Outgoing(
                escape(f"The full text for approval {card.approval_id}:", quote=False),
                document=(f"{card.approval_id}.txt", card.text),
            )
        )
        shown = _cut(card.text, CARD_TEXT_LIMIT) + "\n… (the full text is in the file above)"
    lines = [f"<b>{_e(card.title)}</b>", _e(card.summary)]
    if card.fields:
        lines.append("")
        lines += [f"<b>{_e(label)}:</b> {_e(str(value))}" for label, value in card.fields]
    if shown:
        lines += ["", f"<blockquote>{_e(shown)}</blockquote>"]
    if card.footer:
        lines += ["", f"<i>{_e(card.footer)}</i>"]
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.payload) for b in card.buttons]]
    )
    return [*before, Outgoing("\n".join(lines), keyboard)]


def outcome_html(outcome: CardOutcome) -> str:
    summary, _, decision = outcome.text.partition("\n")
    if not decision:
        return _e(summary)
    return f"{_e(summary)}\n<b>{_e(decision)}</b>"


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Parts of at most ``limit`` UTF-16 units, cut at the widest boundary that fits:
    a blank line, then a line break, then a space, and only then mid-word."""
    parts = []
    rest = text
    while length(rest) > limit:
        head = _cut(rest, limit)
        for boundary in ("\n\n", "\n", " "):
            at = head.rfind(boundary)
            if at > 0:
                parts.append(rest[:at].rstrip())
                rest = rest[at + len(boundary) :].lstrip("\n")
                break
        else:
            parts.append(head)
            rest = rest[len(head) :]
    if rest.strip() or not parts:
        parts.append(rest)
    return [part for part in parts if part.strip()] or [text]


def length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-16 units."""
    if length(text) <= limit:
        return text
    cut = min(len(text), limit)
    while length(text[:cut]) > limit:
        cut -= 1
    return text[:cut]


def _e(text: str) -> str:
    return escape(text, quote=False)
