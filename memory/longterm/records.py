"""What long-term memory holds and how it is asked: records, queries, hits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Record ids are uuid5 under this namespace, from the record's source in the ledger:
# the same source always gives the same id, so a retried write never duplicates.
NAMESPACE = uuid.UUID("5d3c2a7e-2f5b-4f0c-9a43-7b1f3e8c6d10")


class RecordKind(StrEnum):
    MESSAGE = "message"  # what an operator said
    REPLY = "reply"  # what steward answered
    DECISION = "decision"  # an approval decided, with its reason
    OUTCOME = "outcome"  # how a run ended
    ARTIFACT = "artifact"  # a text steward drafted: an email, an invoice reminder …
    NOTE = "note"  # anything else worth finding later


def record_id(source: str) -> str:
    """The id of the record that ``source`` (e.g. ``inbox:42``) produces."""
    return str(uuid.uuid5(NAMESPACE, source))


@dataclass(frozen=True)
class MemoryRecord:
    id: str
    kind: RecordKind
    text: str
    at: datetime
    actor: str = ""  # who: telegram:42, steward, slack:U1 …
    run_id: str | None = None
    entity: str | None = None  # what it is about: "client:Acme Bakery", "invoice:INV-7"
    chat: str | None = None  # channel/chat id where it was said
    source: str = ""  # where in the ledger it came from, for the citation

    @classmethod
    def create(
        cls, source: str, kind: RecordKind, text: str, at: datetime, **fields: Any
    ) -> MemoryRecord:
        return cls(record_id(source), kind, text, at, source=source, **fields)

    @property
    def indexed_text(self) -> str:
        """What is embedded: the text, led by the name of what it is about, so that a
        message that does not name its client is still near questions that do."""
        about = self.entity.partition(":")[2] if self.entity else ""
        return f"{about}: {self.text}" if about else self.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "text": self.text,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "run_id": self.run_id,
            "entity": self.entity,
            "chat": self.chat,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryRecord:
        at = datetime.fromisoformat(data["at"])
        return cls(
            id=data["id"],
            kind=RecordKind(data["kind"]),
            text=data["text"],
            at=at if at.tzinfo else at.replace(tzinfo=UTC),
            actor=data.get("actor") or "",
            run_id=data.get("run_id"),
            entity=data.get("entity"),
            chat=data.get("chat"),
            source=data.get("source") or "",
        )


@dataclass(frozen=True)
class Filters:
    kinds: tuple[RecordKind, ...] = ()
    entities: tuple[str, ...] = ()  # about any of these: a name, each way it was typed
    run_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    @property
    def empty(self) -> bool:
        return self == Filters()


@dataclass(frozen=True)
class Query:
    """A hybrid search: ``alpha`` 0 is keywords only, 1 vectors only (Weaviate's
    convention). With no ``vector`` the search is by keywords alone."""

    text: str
    vector: list[float] | None = None
    filters: Filters = field(default_factory=Filters)
    limit: int = 10
    alpha: float = 0.5
    # Keywords find only the records holding every word of ``text``, not any of them:
    # whether a name of two words is mentioned, where the records holding one of its
    # words would outnumber, and outrank, those holding both.
    every_word: bool = False

    def keywords_only(self) -> Query:
        return replace(self, vector=None, alpha=0.0)


@dataclass(frozen=True)
class Hit:
    record: MemoryRecord
    score: float  # higher is better; comparable within one search only
