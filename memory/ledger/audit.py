"""The audit log's hash chain: each event's hash covers its content and the hash before it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memory.ledger.records import AuditEvent

GENESIS = "0" * 64


def as_stored(data: Any) -> Any:
    """``data`` with its numbers as PostgreSQL's JSON gives them back, so that an event's
    hash covers what verification will read: a whole float Python writes with an
    exponent (1e16) comes back as the integer, and -0.0 as 0.0."""
    if isinstance(data, float):
        if data == 0.0:
            return 0.0
        return int(data) if data.is_integer() and "e" in repr(data) else data
    if isinstance(data, dict):
        return {key: as_stored(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [as_stored(item) for item in data]
    return data


def event_hash(
    prev_hash: str, at: datetime, actor: str, kind: str, subject: str, data: dict[str, Any]
) -> str:
    body = json.dumps(
        [prev_hash, at.isoformat(), actor, kind, subject, data],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(events: Iterable[AuditEvent], head: tuple[int, str] | None) -> ChainReport:
    """Walks the log in order; any edited, inserted or deleted event breaks a link."""
    problems: list[str] = []
    prev = GENESIS
    last: AuditEvent | None = None
    checked = 0
    for event in events:
        checked += 1
        if event.prev_hash != prev:
            problems.append(
                f"event {event.seq} ({event.kind}): does not follow the event before it"
                " (an event was deleted or inserted before it)"
            )
        expected = event_hash(
            event.prev_hash, event.at, event.actor, event.kind, event.subject, event.data
        )
        if expected != event.hash:
            problems.append(f"event {event.seq} ({event.kind}): content was changed")
        prev = event.hash
        last = event
    if head is not None:
        head_seq, head_hash = head
        if last is None or last.seq != head_seq or last.hash != head_hash:
            problems.append(
                f"the log should end at event {head_seq}, but it ends at "
                f"{last.seq if last else 'nothing'} (events at the end were deleted)"
            )
    elif last is not None:
        problems.append("the log's head record is missing")
    return ChainReport(checked, problems)
