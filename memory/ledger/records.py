"""Plain records the ledger reads and writes; no SQL here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

# How a cancelled run's error begins when it tells how the run ended, not what failed.
ENDINGS = ("cancelled by ", "rejected at ")
# When a timer falls due that waits for an event, or is set aside while its run is paused.
NEVER = datetime(9999, 1, 1, tzinfo=UTC)
# A message showing an approval card: its chat and its id there, as the platform names them.
CardMessage = tuple[str, str]


class RunStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Each status by its stored value: a dict lookup, where RunStatus(value) goes through
# the enum's own lookup (ten times the time, for each row of a list).
RUN_STATUSES = {status.value: status for status in RunStatus}


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Run:
    id: str
    process: str
    version: str
    status: RunStatus
    inputs: dict[str, Any]
    started_by: str
    created_at: datetime
    updated_at: datetime
    reply_to: dict[str, Any] | None = None
    current_step: str | None = None
    steps_logged: int = 0
    error: str | None = None
    error_class: str | None = None
    replaying: str | None = None  # the step a replay goes on from, until it first stops
    inputs_since: int | None = None  # the audit event of the replay that changed them last
    owed: dict[str, str] | None = None  # what is left of each money input paid in part


class RunLine(NamedTuple):
    """What a list of runs shows of one: no inputs, no card, but its pending approval. (A
    named tuple, made in a fraction of a frozen dataclass's time: /runs makes 31.)"""

    id: str
    process: str
    status: RunStatus
    current_step: str | None = None
    error: str | None = None
    error_class: str | None = None
    approval_id: str | None = None  # the approval it waits for, if any
    approval_summary: str = ""


@dataclass(frozen=True)
class Approval:
    id: str
    run_id: str
    step_id: str
    visit: int
    status: ApprovalStatus
    card: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    on_expiry: str
    editable: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    edited_text: str | None = None

    @property
    def is_pending(self) -> bool:
        return self.status is ApprovalStatus.PENDING


@dataclass(frozen=True)
class StepEntry:
    """One executed step of a run, as the run's timeline shows it."""

    seq: int
    step_id: str
    kind: str
    status: str
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: datetime
    actor: str
    kind: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class NewAuditEvent:
    """An audit event before the ledger gives it a place in the chain."""

    actor: str
    kind: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    run_id: str
    step_id: str
    connector: str
    status: str  # "started" | "done" | "failed"
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class KeptEvent:
    """An event delivered to a run before it waited for it."""

    event: str
    data: dict[str, Any]
    by: str
    received_at: datetime


@dataclass(frozen=True)
class InboxItem:
    id: int
    channel: str
    external_id: str
    payload: dict[str, Any]
    status: str
    received_at: datetime


@dataclass(frozen=True)
class OwedReply:
    key: str
    channel: str
    chat_id: str
    payload: dict[str, Any]
    sent_steps: int
    created_at: datetime


@dataclass(frozen=True)
class Timer:
    id: int
    key: str
    kind: str
    due_at: datetime
    run_id: str | None
    payload: dict[str, Any]
    status: str


@dataclass(frozen=True)
class Place:
    """Where a reader's cursor stands: read up to ``seq``, after ``rewinds`` rewinds. A
    cursor rewound to where it stood (0) is at another place: a feeder that read it
    before the rewind does not move it on as if it had not been rewound."""

    seq: int
    rewinds: int = 0


@dataclass(frozen=True)
class ModelCall:
    run_id: str | None
    step_id: str | None
    purpose: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float


@dataclass(frozen=True)
class ModelHold:
    """Room a model call under way holds in the budgets: the most it may cost, till
    ``until`` at the latest."""

    id: str
    process: str | None  # the process of the call's run; None for a call of no run
    worst_usd: float
    until: datetime


@dataclass(frozen=True)
class SpendLimit:
    """A budget: what model calls may spend from ``since`` on (all of them, or the runs of
    ``process``)."""

    since: datetime
    limit: float
    process: str | None = None


@dataclass(frozen=True)
class NoHold:
    """Why a hold was not taken: ``limit`` is spent (``spent``, recorded, reaches it),
    or the calls under way hold the room the call needs."""

    limit: SpendLimit
    spent: float
    spent_out: bool


@dataclass(frozen=True)
class OpenWork:
    """The open work the daily list ranks, as lean rows, times in seconds since the
    epoch and money at stake summed from the run's inputs: approvals (id, run id,
    created, expires, risk, money), failed, running or paused runs (id, status, updated,
    money),
    waits due (timer key, run id, due, money)."""

    approvals: list[tuple[str, str, float, float, str, float]]
    runs: list[tuple[str, str, float, float]]
    timers: list[tuple[str, str, float, float]]
