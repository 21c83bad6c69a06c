"""The neutral message model where channels and the coordinator meet.

Channels turn platform updates into ``Inbound`` and render ``Reply`` items back;
neither side sees the other's types.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from datetime import datetime
from typing import Any, Literal, TypeVar

from memory.ledger.storable import storable


@dataclass(frozen=True)
class Sender:
    channel: str  # "telegram", "slack", "console", "cli"
    user_id: str
    name: str = ""

    @property
    def key(self) -> str:
        """As written in STEWARD_OPERATORS: ``telegram:12345``."""
        return f"{self.channel}:{self.user_id}"

    @property
    def label(self) -> str:
        return self.name or self.key


@dataclass(frozen=True)
class Inbound:
    """A message or a button press from someone in a chat.

    Its strings are storable (``memory.ledger.storable``): a NUL character or a lone
    surrogate typed, pasted or forged into a delivery becomes U+FFFD.
    """

    sender: Sender
    chat_id: str
    external_id: str  # the platform's own id for this delivery; duplicates are dropped
    text: str | None = None
    button: str | None = None  # a button's payload, e.g. "approve:a3k9m2p"
    # What came with the message instead of typed text ("notes.txt", "a photo"): steward
    # reads no files, and a file's caption is not its content.
    attachment: str | None = None
    # The platform's clients split a longer text into several messages, and this one is
    # as long as a part gets: the text may go on in the next message.
    may_go_on: bool = False
    # The channel's own note on how to answer this delivery (which message holds the
    # pressed button, the press's id); stored with it, never read by the coordinator.
    context: dict[str, Any] = field(default_factory=dict)
    # Where the later news of a run this starts goes, when not this chat: the sender's
    # own chat with steward, for a request only they saw (Slack's ``/steward`` in a
    # channel), whose run is theirs alone too.
    news_to: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "sender",
            "chat_id",
            "external_id",
            "text",
            "button",
            "attachment",
            "context",
            "news_to",
        ):
            value = getattr(self, name)
            if (cleaned := storable(value)) is not value:
                object.__setattr__(self, name, cleaned)

    def to_payload(self) -> dict[str, Any]:
        sender = self.sender
        return {
            "sender": {"channel": sender.channel, "user_id": sender.user_id, "name": sender.name},
            "chat_id": self.chat_id,
            "external_id": self.external_id,
            "text": self.text,
            "button": self.button,
            "attachment": self.attachment,
            "may_go_on": self.may_go_on,
            "context": copy.deepcopy(self.context),
            "news_to": self.news_to,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Inbound:
        return cls(**{**payload, "sender": Sender(**payload["sender"])})

    @property
    def news_address(self) -> dict[str, Any]:
        """Where the later news of a run this starts goes (a run's ``reply_to``)."""
        return {"channel": self.sender.channel, "chat_id": self.news_to or self.chat_id}


@dataclass(frozen=True)
class Button:
    label: str
    payload: str  # short: Telegram allows 64 bytes of callback data
    style: Literal["primary", "danger", "default"] = "default"


@dataclass(frozen=True)
class Card:
    """An approval card: what will happen, why, and what happens if nobody answers."""

    approval_id: str
    title: str
    summary: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    risk: str = ""  # low, medium or high
    footer: str = ""
    buttons: list[Button] = field(default_factory=list)


@dataclass(frozen=True)
class CardOutcome:
    """Edit the card for ``approval_id`` in place: show the outcome, drop its buttons.
    Where the card shows nowhere, the outcome is a message of its own, unless it was
    ``decided_elsewhere`` (on another platform, whose chat tells it)."""

    approval_id: str
    text: str
    decided_elsewhere: bool = False


@dataclass(frozen=True)
class EditPrompt:
    """Ask for a replacement of an approval's draft: a form holding ``text`` where the
    platform has forms, else ``prompt`` and the text as a message; the answer approves."""

    approval_id: str
    text: str
    prompt: str

    @property
    def as_message(self) -> str:
        return f"{self.prompt}\n\nCurrent text:\n{self.text}"


class Verbatim(str):
    """Text that is a person's own words, shown back to them (the new text for an Edit,
    before it goes): a channel shows it exactly as it is, and rewrites none of it as it
    may steward's own wording (a command as it is typed there, say)."""

    __slots__ = ()


ReplyItem = str | Card | CardOutcome | EditPrompt
T = TypeVar("T")

# Unicode's embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069): in a
# client's words or a webhook's field they reorder how what follows them shows, an
# amount or an IBAN read backwards ("\u202e00.005,1€" shows as "€1,500.00").
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def shown(value: T) -> T:
    """``value`` as the operator is shown it: U+FFFD for each bidi control
    (``BIDI_CONTROLS``) in its strings, within lists, tuples and dataclasses (a card, its
    fields and buttons); the very same object when it holds none."""
    if isinstance(value, str):
        if BIDI_CONTROLS.search(value) is None:
            return value
        cleaned = BIDI_CONTROLS.sub("\ufffd", value)
        return Verbatim(cleaned) if isinstance(value, Verbatim) else cleaned  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        items = [shown(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: shown(getattr(value, f.name)) for f in fields(value) if f.init}
        if all(new is getattr(value, name) for name, new in changes.items()):
            return value
        return replace(value, **changes)
    return value


def as_shown(submitted: str, draft: str) -> bool:
    """Whether ``submitted`` (the new text from an Edit) is ``draft`` as the operator was
    shown it (``shown``: a mark for each bidi control), sent back unchanged; then it means
    the draft as it is, and no text of marks."""
    return submitted == draft or submitted == shown(draft)


@dataclass
class Reply:
    """What steward answers: messages, cards, a card's outcome, an edit's form. All it
    shows is ``shown``, however it was given: the text of a reply is steward's, and
    others' words within it (a client's name, a webhook's amount) cannot reorder it."""

    items: list[ReplyItem] = field(default_factory=list)
    # One short line answering a button press ("Approved", "Already approved by …"):
    # a toast where the platform has one, a line of text where it has not.
    notice: str | None = None
    # Only the person answered should see it (a refusal to a stranger in a shared
    # channel): an ephemeral message where the platform has them.
    private: bool = False
    # How many of its first items went out already (``send_ahead``).
    sent_ahead: int = 0
    # Meant once per chat under this key (the daily list of a day): a chat it was owed
    # to before is not owed it again, however often its sending starts again.
    once: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("items", "notice"):  # as made, or a notice set after
            value = shown(value)
        super().__setattr__(name, value)

    def say(self, text: str) -> Reply:
        """Adds a message; made storable, as words from an error or a service may be."""
        self.items.append(shown(storable(text)))
        return self

    def quote(self, text: str) -> Reply:
        """Adds a person's own words as a message, ``Verbatim``; made storable too."""
        self.items.append(shown(Verbatim(storable(text))))
        return self

    def add(self, item: ReplyItem) -> Reply:
        self.items.append(shown(item))
        return self

    def send_ahead(self) -> Awaitable[None]:
        """Sends the items so far ahead of the rest, where the channel sends while the
        message is handled: they go once the handling's next write commits, so what they
        say has happened ("Started onboarding as run …"). Elsewhere (a terminal shows the
        whole reply at once), or after the handling's first write, they stay where they
        are.

        Awaited after that write, it returns once they are sent, or a moment has passed:
        the handling goes on then, so that its work does not hold them up."""
        send = _sending_ahead.get()
        if send is None or len(self.items) == self.sent_ahead:
            return _nothing_to_wait_for()
        going = send(Reply(self.items[self.sent_ahead :], private=self.private))
        if going is None:  # too late: they go with the rest
            return _nothing_to_wait_for()
        self.sent_ahead = len(self.items)
        return going

    def unsent(self) -> Reply:
        """What is left to send of it, after what went ahead."""
        if not self.sent_ahead:
            return self
        return Reply(self.items[self.sent_ahead :], self.notice, self.private)

    def to_payload(self) -> dict[str, Any]:
        return {
            "items": [_item_payload(item) for item in self.items],
            "notice": self.notice,
            "private": self.private,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Reply:
        items = [_item(entry) for entry in payload["items"]]
        return cls(items, payload.get("notice"), bool(payload.get("private")))

    @property
    def texts(self) -> list[str]:
        return [i for i in self.items if isinstance(i, str)]

    @property
    def cards(self) -> list[Card]:
        return [i for i in self.items if isinstance(i, Card)]


# While the front door handles a channel's message: how a reply goes ahead of the rest.
SendAhead = Callable[[Reply], Awaitable[None] | None]  # None: not taken
_sending_ahead: ContextVar[SendAhead | None] = ContextVar("steward_sending_ahead", default=None)


def cut(text: str, most: int) -> str:
    """``text``, or its start and "…" where it runs past ``most`` characters."""
    return text if len(text) <= most else text[: most - 1] + "…"


@contextmanager
def sending_ahead(send: SendAhead) -> Iterator[None]:
    """Within it, ``Reply.send_ahead`` hands what goes ahead to ``send``."""
    token = _sending_ahead.set(send)
    try:
        yield
    finally:
        _sending_ahead.reset(token)


def _nothing_to_wait_for() -> asyncio.Future[None]:
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


@dataclass
class Owed:
    """A reply a channel owes a chat, kept in the ledger until all of it is sent."""

    key: str
    channel: str
    chat_id: str
    reply: Reply
    answering: Inbound | None  # the delivery it answers; None for a run's news
    created_at: datetime
    sent: int = 0  # steps of the reply done so far: messages, edits, a press's answer
    noted: int = 0  # of those, how many the ledger knows of
    # What each step done in this process gave (a posted message's id, say), by step.
    results: dict[int, Any] = field(default_factory=dict)
    # How many lapses of this worker's lease (``Ledger.lapses``) the reply is known to have
    # stayed this worker's through; after another, the ledger is asked before it is sent.
    held_through: int = 0
    # False for the answer to a command that only shows something, made before its
    # delivery was stored (``FrontDoor.answer_unstored``): neither is in the ledger
    # until the answer is sent, or is kept with the delivery where it cannot go at once.
    kept: bool = True

    def to_payload(self) -> dict[str, Any]:
        """The reply, the delivery it answers, and what its steps done gave, where that
        can be kept (a posted card's place, a press answered or not)."""
        answering = self.answering.to_payload() if self.answering is not None else None
        results = {str(k): v for k, v in self.results.items() if isinstance(v, _KEPT)}
        return {"reply": self.reply.to_payload(), "answering": answering, "results": results}

    @classmethod
    def from_payload(
        cls,
        key: str,
        channel: str,
        chat_id: str,
        payload: dict[str, Any],
        created_at: datetime,
        sent: int,
    ) -> Owed:
        answering = payload["answering"]
        return cls(
            key,
            channel,
            chat_id,
            Reply.from_payload(payload["reply"]),
            Inbound.from_payload(answering) if answering else None,
            created_at,
            sent=sent,
            noted=sent,
            results={int(step): result for step, result in payload.get("results", {}).items()},
        )


_KEPT = (bool, str, int, dict)


def _item_payload(item: ReplyItem) -> dict[str, Any]:
    if isinstance(item, Verbatim):
        return {"text": item, "verbatim": True}
    if isinstance(item, str):
        return {"text": item}
    kind = {Card: "card", CardOutcome: "outcome", EditPrompt: "edit"}[type(item)]
    return {kind: asdict(item)}


def _item(entry: dict[str, Any]) -> ReplyItem:
    if "text" in entry:
        return Verbatim(entry["text"]) if entry.get("verbatim") else str(entry["text"])
    if "card" in entry:
        card = entry["card"]
        return Card(
            **{
                **card,
                "fields": [(str(name), str(value)) for name, value in card["fields"]],
                "buttons": [Button(**button) for button in card["buttons"]],
            }
        )
    if "outcome" in entry:
        return CardOutcome(**entry["outcome"])
    return EditPrompt(**entry["edit"])
