"""The neutral message model where channels and the coordinator meet.

Channels turn platform updates into ``Inbound`` and render ``Reply`` items back;
neither side sees the other's types.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


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
    """A message or a button press from someone in a chat."""

    sender: Sender
    chat_id: str
    external_id: str  # the platform's own id for this delivery; duplicates are dropped
    text: str | None = None
    button: str | None = None  # a button's payload, e.g. "approve:a3k9m2p"
    # The channel's own note on how to answer this delivery (which message holds the
    # pressed button, the press's id); stored with it, never read by the coordinator.
    context: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Inbound:
        return cls(**{**payload, "sender": Sender(**payload["sender"])})


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
    """Edit the card for ``approval_id`` in place: show the outcome, drop its buttons."""

    approval_id: str
    text: str


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


ReplyItem = str | Card | CardOutcome | EditPrompt


@dataclass
class Reply:
    items: list[ReplyItem] = field(default_factory=list)
    # One short line answering a button press ("Approved", "Already approved by …"):
    # a toast where the platform has one, a line of text where it has not.
    notice: str | None = None
    # Only the person answered should see it (a refusal to a stranger in a shared
    # channel): an ephemeral message where the platform has them.
    private: bool = False

    def say(self, text: str) -> Reply:
        self.items.append(text)
        return self

    def add(self, item: ReplyItem) -> Reply:
        self.items.append(item)
        return self

    @property
    def texts(self) -> list[str]:
        return [i for i in self.items if isinstance(i, str)]

    @property
    def cards(self) -> list[Card]:
        return [i for i in self.items if isinstance(i, Card)]
