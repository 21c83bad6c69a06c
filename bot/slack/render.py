"""Neutral replies as Slack messages: Block Kit cards, escaped text, split to fit.

Text from a person (a draft, a name, a reason) goes into ``plain_text`` objects, which
Slack shows as written, or into a message sent with ``mrkdwn`` off, escaped (``&``,
``<``, ``>``); where it sits in ``mrkdwn`` (a card's context, an ephemeral message) its
marks of formatting are escaped too (``mrkdwn``), so no text can mention @channel, make
a link, format itself or break a message. A card holds what will happen and why in
sections, risk and expiry in a context block, and its buttons; fields and a draft too
long for the blocks a message may hold are shown shortened, and whole in the card's
thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from bot.splitting import fit, length, split_text
from graph.cards import UNDO, outcome_parts
from graph.coordinator import COMMAND_NAMES, QUESTION_COMMANDS
from graph.messages import Button, Card, CardOutcome, EditPrompt, Verbatim

Block = dict[str, Any]

MESSAGE_LIMIT = 3900  # characters of text in one message: Slack advises under 4,000
SECTION_LIMIT = 3000  # a section's text
FIELD_LIMIT = 2000  # one of a section's fields
FIELDS_PER_SECTION = 10
HEADER_LIMIT = 150
BUTTON_LIMIT = 75
MOST_BLOCKS = 50
DRAFT_BLOCKS = 12  # sections of a draft on a card; beyond, Details shows the rest
# Slack refuses a message whose blocks hold about 12,000 characters of text or more
# (msg_blocks_too_long, a limit it does not document); a card keeps well under it, and
# shows longer fields and a longer draft in part, whole in its thread.
CARD_TEXT_LIMIT = 10_000
NOTES = 400  # room on a card for its notes (what is cut short) and Reject's confirmation
LABEL_LIMIT = HEADER_LIMIT  # a field's label: a name
# The fields a card's blocks hold: the blocks left by the header, the summary, the
# fields' note, a divider, the draft, the context and the buttons, two fields to a pair.
MOST_FIELDS = (MOST_BLOCKS - 6 - DRAFT_BLOCKS) * FIELDS_PER_SECTION // 2
INPUT_LIMIT = 3000  # a modal's text input holds at most this much

EDIT_VIEW = "steward_edit"  # the Edit modal's callback_id
EDIT_BLOCK = "draft"
EDIT_INPUT = "text"


@dataclass(frozen=True)
class Outgoing:
    """One message: its text (the notification, and all there is without blocks)."""

    text: str
    blocks: list[Block] | None = None


def escape(text: str) -> str:
    """Text as Slack shows it literally in a message's ``text`` sent with ``mrkdwn`` off:
    nothing in it is a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: str) -> str:
    """Text as Slack shows it literally inside ``mrkdwn`` (a block's, an ephemeral
    message's): escaped, and no mark in it formats. Slack has no escape for ``*``, ``_``,
    ``~`` and the backtick: each run of them is the fallback text of a date it cannot
    format, which it shows as plain text; a ``>`` that starts a line follows a soft
    hyphen, or it would start a quote."""
    marked = _MARKS.sub(lambda marks: f"<!date^00000000^{{_}}|{marks.group()}>", escape(text))
    return _QUOTE.sub("\u00ad&gt;", marked)


_MARKS = re.compile(r"[*_~`]+")
_QUOTE = re.compile(r"^&gt;", re.MULTILINE)


def text_parts(text: str) -> list[str]:
    """``text`` in parts that each fit a message."""
    return split_text(text, MESSAGE_LIMIT)


def text_message(part: str, people: Collection[str] = ()) -> Outgoing:
    """A part of a text as a message sent with ``mrkdwn`` off; ``people`` (the operators'
    user ids) named as having done something are mentions."""
    return Outgoing(_people(escape(part), people))


def ephemeral_message(part: str, people: Collection[str] = ()) -> Outgoing:
    """A part of a text as an ephemeral message (or by a ``response_url``), whose text
    Slack always reads as ``mrkdwn``; ``people`` as ``text_message`` names them."""
    return Outgoing(_people(mrkdwn(part), people))


def text_messages(text: str, people: Collection[str] = ()) -> list[Outgoing]:
    return [text_message(part, people) for part in text_parts(text)]


def as_typed_in_slack(text: str) -> str:
    """steward's commands in ``text`` as they are typed in Slack: ``/runs`` would be
    taken for a Slack command of its own there; ``/steward runs`` reaches steward. A
    question's own ``/cancel`` and ``/skip`` are the bare words, which work where it was
    asked, a channel's thread too (a slash command knows no thread). A person's own
    words (``Verbatim``) are not steward's to rewrite: they stay as they are."""
    if isinstance(text, Verbatim):
        return text
    return _COMMAND.sub(r"/steward \1", _QUESTION_COMMAND.sub(r"\1", text))


# Each pattern starts with its literal, and looks behind it only there: one that starts
# with a lookbehind is tried at every character, some 50 times slower on a list of runs.
_QUESTION_COMMAND = re.compile(
    r"/(?<![\w/.:<@&-]/)({})(?=$|[.,;:!?)]| (?:to|or)\b)".format("|".join(QUESTION_COMMANDS))
)
_COMMAND = re.compile(
    r"/(?<![\w/.:<@&-]/)({})(?=\s|$|[.,;:!?)])".format(
        "|".join(map(re.escape, sorted(COMMAND_NAMES, key=len, reverse=True)))
    )
)


def card_message(card: Card) -> Outgoing:
    shown = _shown(card)
    blocks: list[Block] = [_header(card.title), _section(card.summary)]
    for start in range(0, len(shown.fields), FIELDS_PER_SECTION // 2):
        fields: list[Block] = []
        for label, value in shown.fields[start : start + FIELDS_PER_SECTION // 2]:
            fields.append(_mrkdwn(f"*{mrkdwn(label)}*"))
            fields.append(_plain(value or " "))
        blocks.append({"type": "section", "fields": fields})
    if shown.cut:
        note = "Fields cut short or left off here are whole in this card's thread"
        blocks.append({"type": "context", "elements": [_mrkdwn(note)]})
    if card.text:
        blocks.append({"type": "divider"})
        blocks += _draft(card, shown)
    context = [_mrkdwn(mrkdwn(as_typed_in_slack(card.footer)))] if card.footer else []
    if card.risk:
        context.insert(0, _mrkdwn(f"*Risk:* {mrkdwn(card.risk)}"))
    if context:
        blocks.append({"type": "context", "elements": context})
    if card.buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"card:{card.approval_id}",
                "elements": [_button(b) for b in card.buttons],
            }
        )
    return Outgoing(escape(f"{card.title}: {card.summary}"), blocks)


def outcome_message(outcome: CardOutcome, people: Collection[str] = ()) -> Outgoing:
    """The settled card: what it was about and the decision, with no buttons; ``people``
    as ``text_message`` names them."""
    summary, decision = outcome_parts(outcome)
    blocks: list[Block] = [_section(summary)]
    if decision:  # who decided, in bold; a reason after it as it was written
        line = _escaped_within(decision, SECTION_LIMIT - 2, mrkdwn)
        who, said, reason = line.partition(": ")
        decided = _mrkdwn(f"*{_people(who, people)}*{said}{reason}")  # none in the reason
        blocks.append({"type": "context", "elements": [decided]})
    return Outgoing(_people(_escaped_within(outcome.text, MESSAGE_LIMIT), people), blocks)


def edit_view(prompt: EditPrompt, chat_id: str) -> dict[str, Any] | None:
    """The Edit modal, holding the draft; None when the draft will not fit its input."""
    if len(prompt.text) > INPUT_LIMIT:
        return None
    return {
        "type": "modal",
        "callback_id": EDIT_VIEW,
        "private_metadata": json.dumps({"approval": prompt.approval_id, "chat": chat_id}),
        "title": _plain("Edit the draft"),
        "submit": _plain("Approve"),
        "close": _plain("Cancel"),
        "notify_on_close": True,
        "blocks": [
            {
                "type": "input",
                "block_id": EDIT_BLOCK,
                "label": _plain("The text that will be sent"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": EDIT_INPUT,
                    "multiline": True,
                    "max_length": INPUT_LIMIT,
                    "initial_value": prompt.text,
                },
            },
            {
                "type": "context",
                "elements": [_mrkdwn("Approve sends exactly this text. Cancel keeps the card.")],
            },
        ],
    }


def card_overflow(card: Card) -> list[Outgoing]:
    """What of a card will not fit its blocks, whole, as messages in the card's thread:
    its fields cut short or left off, and a draft too long."""
    shown = _shown(card)
    overflow = []
    if shown.cut:
        heading = f"The fields cut short on the card for approval {card.approval_id}, whole:"
        whole = "\n\n".join(f"{label}: {value}" for label, value in shown.cut)
        overflow += [Outgoing(escape(heading)), *text_messages(whole)]
    if card.text and not shown.draft_whole:
        heading = f"The whole text for approval {card.approval_id}:"
        overflow += [Outgoing(escape(heading)), *text_messages(card.text)]
    return overflow


@dataclass(frozen=True)
class _Shown:
    """What of a card its message holds; the rest goes in the card's thread."""

    fields: list[tuple[str, str]]  # label and value, a value cut short where room is short
    cut: list[tuple[str, str]]  # the fields cut short or left off, whole
    draft: list[str]  # the draft's sections on the card
    draft_whole: bool


def _shown(card: Card) -> _Shown:
    """Fits a card within Slack's limits (``CARD_TEXT_LIMIT`` of text, ``MOST_BLOCKS``
    blocks), its buttons always kept. Fields come first, but leave a draft the room it
    needs, or half where it needs more: the longest are cut short to a share each, the
    shorter kept whole. The draft has the room left."""
    told = [  # an undo is steward's words; the rest is data, shown as it is
        (label, as_typed_in_slack(str(value)) if label == UNDO else str(value))
        for label, value in card.fields
    ]
    labels = [fit(label.replace("*", ""), LABEL_LIMIT) for label, _ in told[:MOST_FIELDS]]
    fixed = [fit(card.title, HEADER_LIMIT), fit(card.summary, SECTION_LIMIT), card.risk]
    fixed += [mrkdwn(as_typed_in_slack(card.footer)), *(b.label for b in card.buttons)]
    room = CARD_TEXT_LIMIT - NOTES - sum(map(length, fixed))
    while labels and sum(length(mrkdwn(label)) for label in labels) > room // 2:
        labels.pop()  # labels that would fill the card: the last fields go to the thread
    room -= sum(length(mrkdwn(label)) for label in labels)
    parts = split_text(card.text, SECTION_LIMIT) if card.text else []
    sizes = [min(length(value), FIELD_LIMIT) for _, value in told[: len(labels)]]
    for_fields = max(room - sum(map(length, parts[:DRAFT_BLOCKS])), room // 2)
    most = min(_cap(sizes, max(0, for_fields)), FIELD_LIMIT)
    fields, cut = [], []
    for index, (label, value) in enumerate(told):
        shown = _cut(value, most) if index < len(labels) else None
        if shown is not None:
            fields.append((labels[index], shown))
            room -= length(shown)
        if shown != value:
            cut.append((label, value))
    draft: list[str] = []
    for part in parts:
        if len(draft) == DRAFT_BLOCKS or length(part) > room:
            break
        draft.append(part)
        room -= length(part)
    if len(draft) == len(parts):
        return _Shown(fields, cut, draft, True)
    return _Shown(fields, cut, draft[: DRAFT_BLOCKS - 1], False)  # a block for the note


def _cap(sizes: list[int], room: int) -> int:
    """The most each of ``sizes`` may keep for them all to fit in ``room``: those under
    it are whole, the rest share what they leave."""
    left, count = room, len(sizes)
    for size in sorted(sizes):
        if size * count > left:
            return left // count
        left -= size
        count -= 1
    return max(sizes, default=0)


def _cut(value: str, most: int) -> str:
    """``value`` within ``most`` characters, ending in "…" where it is cut."""
    if length(value) <= most:
        return value
    return fit(value, max(0, most - 2)) + " …"


def _draft(card: Card, shown: _Shown) -> list[Block]:
    blocks = [_section(part) for part in shown.draft]
    if shown.draft_whole:
        return blocks
    more = f"… {len(card.text or '') - sum(map(len, shown.draft)):,} more characters"
    note = f"{more}: the whole text is in this card's thread"
    return [*blocks, {"type": "context", "elements": [_mrkdwn(note)]}]


def _button(button: Button) -> Block:
    verb = button.payload.partition(":")[0]
    element: Block = {
        "type": "button",
        "action_id": verb,
        "text": _plain(fit(button.label, BUTTON_LIMIT)),
        "value": button.payload,
    }
    if button.style != "default":
        element["style"] = button.style
    if verb == "reject":
        element["confirm"] = {
            "title": _plain("Reject this?"),
            "text": _plain("Nothing will be done. You can give a reason afterwards."),
            "confirm": _plain("Reject"),
            "deny": _plain("Keep it"),
            "style": "danger",
        }
    return element


def _header(text: str) -> Block:
    return {"type": "header", "text": _plain(fit(text, HEADER_LIMIT) or " ")}


def _section(text: str) -> Block:
    return {"type": "section", "text": _plain(fit(text, SECTION_LIMIT) or " ")}


def _plain(text: str) -> Block:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _people(text: str, people: Collection[str]) -> str:
    """Text, escaped already, with each of ``people`` steward names as having done
    something ("Approved by slack:U…") as a mention, which Slack shows by their name.
    Anyone else stays as written: a client's words or a webhook's field naming a member
    of the workspace so would have notified them."""

    def named(done_by: re.Match[str]) -> str:
        user = done_by.group(1)
        return f"by <@{user}>" if user in people else done_by.group()

    return _DONE_BY.sub(named, text)


_DONE_BY = re.compile(r"by (?<!\wby )slack:([UW][A-Z0-9]+)\b")


def _escaped_within(text: str, limit: int, escaping: Callable[[str], str] = escape) -> str:
    """``text`` escaped (by ``escaping``), cut short where its escaped form would pass
    ``limit``: the longest start of it whose escaped form fits (never cut inside an
    escape)."""
    escaped = escaping(text)
    if length(escaped) <= limit:
        return escaped
    kept, over = 0, len(text)  # escaped, text[:kept] fits and text[:over] does not
    while over - kept > 1:
        middle = (kept + over) // 2
        if length(escaping(text[:middle])) <= limit:
            kept = middle
        else:
            over = middle
    return escaping(text[:kept])
