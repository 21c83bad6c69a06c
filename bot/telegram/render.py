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

from bot.splitting import fit, length, split_text
from graph.cards import outcome_parts
from graph.messages import Card, CardOutcome, EditPrompt, Verbatim

MESSAGE_LIMIT = 4096
# A text typed or pasted longer than a message reaches steward in parts of about this
# much or more each (a client cuts between words), the last part shorter.
PART_OF_A_LONGER_TEXT = MESSAGE_LIMIT - 200
MOST_MESSAGES = 4  # beyond this many parts, one document reads better than a flood
CARD_LIMIT = MESSAGE_LIMIT - 96  # a margin for what Telegram trims or counts differently
CARD_TEXT_LIMIT = 2000  # a shortened card's text: room left for its title, fields, footer
FIELD_LIMIT = 120  # a shortened card's title, summary, each field and footer


@dataclass(frozen=True)
class Outgoing:
    """One message to send: HTML text, and a keyboard or a document where it has one."""

    html: str
    keyboard: InlineKeyboardMarkup | None = None
    document: tuple[str, str] | None = None  # file name, content


def text_messages(text: str) -> list[Outgoing]:
    parts = split_text(text, MESSAGE_LIMIT)
    if len(parts) > MOST_MESSAGES:
        whose = "The text" if isinstance(text, Verbatim) else "My answer"  # a person's own
        caption = f"{whose} is {len(text):,} characters long, so here it is as a file."
        return [Outgoing(escape(caption, quote=False), document=("reply.txt", text))]
    return [Outgoing(escape(part, quote=False)) for part in parts]


def prompt_messages(prompt: EditPrompt) -> list[Outgoing]:
    """An edit prompt with the text it replaces; where that would go as a file, the
    prompt goes first on its own, so that what steward waits for is read in chat."""
    whole = text_messages(prompt.as_message)
    if whole[0].document is None:
        return whole
    size = f"The current text is {len(prompt.text):,} characters long, so here it is as a file."
    current = Outgoing(escape(size, quote=False), document=("current-text.txt", prompt.text))
    return [*text_messages(prompt.prompt), current]


# A danger button (Reject) asks before it acts, as a confirm dialog does in Slack: its
# first press shows "Yes, Reject" and "Back" in its place, and only "Yes" decides.
ASK = "ask:"
BACK = "back:"
YES = "Yes, "


def card_messages(card: Card) -> list[Outgoing]:
    """The card as one message with its buttons. When the whole card will not fit, the
    whole card goes first as a document and the message shows it shortened."""
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    b.label, callback_data=ASK + b.payload if b.style == "danger" else b.payload
                )
                for b in card.buttons
            ]
        ]
    )
    whole = _card_lines(card, card.text, shorten=False)
    if length(_plain(whole)) <= CARD_LIMIT:
        return [Outgoing(_html(whole), keyboard)]
    document = Outgoing(
        escape(f"The whole card for approval {card.approval_id}:", quote=False),
        document=(f"{card.approval_id}.txt", _plain(whole)),
    )
    return [document, Outgoing(_html(_shortened(card)), keyboard)]


def asking(keyboard: InlineKeyboardMarkup, pressed: str) -> InlineKeyboardMarkup:
    """``keyboard`` with the danger button pressed (``ask:PAYLOAD``) as "Yes, …" (the
    payload) and "Back"; with ``back:PAYLOAD`` pressed, as it was."""
    rows = []
    for row in keyboard.inline_keyboard:
        keys: list[InlineKeyboardButton] = []
        for key in row:
            data = str(key.callback_data)
            if pressed.startswith(ASK) and data == pressed:
                payload = data.removeprefix(ASK)
                keys.append(InlineKeyboardButton(YES + key.text, callback_data=payload))
                keys.append(InlineKeyboardButton("Back", callback_data=BACK + payload))
            elif pressed.startswith(BACK) and data == pressed.removeprefix(BACK):
                keys.append(
                    InlineKeyboardButton(key.text.removeprefix(YES), callback_data=ASK + data)
                )
            elif pressed.startswith(BACK) and data == pressed:
                continue
            else:
                keys.append(key)
        rows.append(keys)
    return InlineKeyboardMarkup(rows)


def _shortened(card: Card) -> list[_Line]:
    """The card cut to fit one message: each line to FIELD_LIMIT, the text to
    CARD_TEXT_LIMIT, and then, while it is still too long, the text shorter and the
    last fields left to the file."""
    budget, shown = CARD_TEXT_LIMIT, len(card.fields)
    while True:
        text = card.text and fit(card.text, budget) + "\n… (all of it is in the file above)"
        lines = _card_lines(card, text if budget else None, shorten=True, fields=shown)
        over = length(_plain(lines)) - CARD_LIMIT
        if over <= 0 or not ((card.text and budget) or shown):  # fits, or nothing left to cut
            return lines
        if card.text and budget:
            budget = max(0, budget - over)
        else:
            shown -= 1


@dataclass(frozen=True)
class _Line:
    style: str  # "title", "field", "quote", "footer" or "" for plain
    text: str
    label: str = ""


def _card_lines(
    card: Card, text: str | None, shorten: bool, fields: int | None = None
) -> list[_Line]:
    """The card's lines, with its first ``fields`` fields (all of them by default)."""

    def short(value: str) -> str:
        if not shorten or length(value) <= FIELD_LIMIT:
            return value
        return fit(value, FIELD_LIMIT) + " …"

    shown = card.fields[:fields] if fields is not None else card.fields
    lines = [_Line("title", short(card.title)), _Line("", short(card.summary))]
    if card.fields or card.risk:
        lines.append(_Line("", ""))
        lines += [_Line("field", short(str(value)), short(label)) for label, value in shown]
        if len(shown) < len(card.fields):
            left = len(card.fields) - len(shown)
            lines.append(_Line("", f"… {left} more field{'s' * (left > 1)} in the file above"))
    if card.risk:
        lines.append(_Line("field", card.risk, "Risk"))
    if text:
        lines += [_Line("", ""), _Line("quote", text)]
    if card.footer:
        lines += [_Line("", ""), _Line("footer", short(card.footer))]
    return lines


def _html(lines: list[_Line]) -> str:
    def one(line: _Line) -> str:
        match line.style:
            case "title":
                return f"<b>{_e(line.text)}</b>"
            case "field":
                return f"<b>{_e(line.label)}:</b> {_e(line.text)}"
            case "quote":
                return f"<blockquote>{_e(line.text)}</blockquote>"
            case "footer":
                return f"<i>{_e(line.text)}</i>"
        return _e(line.text)

    return "\n".join(one(line) for line in lines)


def _plain(lines: list[_Line]) -> str:
    """What Telegram shows of the card once its formatting is parsed."""
    return "\n".join(f"{line.label}: {line.text}" if line.label else line.text for line in lines)


def outcome_html(outcome: CardOutcome) -> str:
    """The settled card, within a message's length: the decision whole where it can be,
    a long summary or reason cut short."""
    summary, decision = outcome_parts(outcome)
    decision = fit(decision, MESSAGE_LIMIT // 2)
    summary = fit(summary, MESSAGE_LIMIT - length(decision) - 1)
    if not decision:
        return _e(summary)
    return f"{_e(summary)}\n<b>{_e(decision)}</b>"


def _e(text: str) -> str:
    return escape(text, quote=False)
