"""The ledger: the durable, append-only record of runs, approvals, effects and audit."""

from memory.ledger.errors import (
    LedgerError,
    LedgerUnavailable,
    RunCancelled,
    TakenOver,
    cannot_store,
    cause,
    ledger_down,
)
from memory.ledger.ledger import LEASE, Ledger, LedgerTx, utcnow
from memory.ledger.records import (
    Approval,
    ApprovalStatus,
    AuditEvent,
    IdempotencyRecord,
    InboxItem,
    ModelCall,
    NewAuditEvent,
    OpenWork,
    OwedReply,
    Run,
    RunLine,
    RunStatus,
    StepEntry,
    Timer,
)
from memory.ledger.storable import storable

__all__ = [
    "LEASE",
    "Approval",
    "ApprovalStatus",
    "AuditEvent",
    "IdempotencyRecord",
    "InboxItem",
    "Ledger",
    "LedgerError",
    "LedgerTx",
    "LedgerUnavailable",
    "ModelCall",
    "NewAuditEvent",
    "OpenWork",
    "OwedReply",
    "Run",
    "RunCancelled",
    "RunLine",
    "RunStatus",
    "StepEntry",
    "TakenOver",
    "Timer",
    "cannot_store",
    "cause",
    "ledger_down",
    "storable",
    "utcnow",
]
