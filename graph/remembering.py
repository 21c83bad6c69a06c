"""What long-term memory keeps of what happens, and about whom.

Audit events become records as long-term memory is fed from the audit log
(``MemorySync``): a run started or replayed (with the inputs the event gives, not the
run's now), a draft put up for approval, a decision and its reason, an effect done, a
run's outcome. The coordinator journals the operator's own words and
steward's answers. Each record's id comes from its source, so writing it twice keeps one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from memory.ledger import ENDINGS, AuditEvent, LedgerTx, Run
from memory.longterm import MemoryRecord, RecordKind

# Inputs that name what a run is about, most telling first: (input, entity kind).
ENTITY_INPUTS = (
    ("client", "client"),
    ("customer", "client"),
    ("company", "client"),
    ("invoice", "invoice"),
    ("project", "project"),
    ("topic", "topic"),
)
DECIDED = {"approved": "Approved", "rejected": "Rejected", "expired": "Expired"}
GIVEN_FOR = {"approved": "approving", "rejected": "rejecting"}
ENDED = {"succeeded": "succeeded", "failed": "failed", "cancelled": "was cancelled"}


MAX_ENTITY = 200


def entity_of(inputs: dict[str, Any]) -> str | None:
    """``client:Acme Bakery`` for a run started with client="Acme Bakery"."""
    for name, kind in ENTITY_INPUTS:
        value = inputs.get(name)
        if isinstance(value, str) and value.strip():
            return f"{kind}:{' '.join(value.split())}"[:MAX_ENTITY]
    return None


def entity_name(entity: str) -> str:
    return entity.partition(":")[2]


def records_for_event(tx: LedgerTx, event: AuditEvent) -> list[dict[str, Any]]:
    """The memory records an audit event makes (most make none)."""
    found = _describe(tx, event)
    if found is None:
        return []
    kind, text, run, inputs = found
    if run is not None and inputs is None:
        inputs = inputs_then(tx, run, event.seq)
    record = MemoryRecord.create(
        f"audit:{event.seq}",
        kind,
        text,
        event.at,
        actor=event.actor,
        run_id=run.id if run else None,
        entity=entity_of(inputs) if inputs is not None else None,
    )
    return [record.to_dict()]


def inputs_then(tx: LedgerTx, run: Run, seq: int) -> dict[str, Any]:
    """The run's inputs when audit event ``seq`` was written: each replay since that
    changed them says what they were before it, and which replay gave those."""
    inputs, since = dict(run.inputs), run.inputs_since
    while since is not None and since > seq:
        replay = tx.audit_event(since)
        if replay is None:
            break
        for name, value in replay.data.get("before", {}).items():
            if value is None:
                inputs.pop(name, None)
            else:
                inputs[name] = value
        since = replay.data.get("inputs_since")
    return inputs


# What an event makes: its record's kind and text, its run, and the inputs the record is
# about when the event carries them (a run's inputs now may be a replay's, not the event's).
Described = tuple[RecordKind, str, Run | None, dict[str, Any] | None]


def _describe(tx: LedgerTx, event: AuditEvent) -> Described | None:
    found = _describe_run(tx, event) or _describe_ended(tx, event)
    if found is not None:
        return found
    described = _describe_other(tx, event)
    return None if described is None else (*described, None)


def _describe_run(tx: LedgerTx, event: AuditEvent) -> Described | None:
    """A run started or replayed, from what the event says: not from the run as it is now."""
    if event.kind not in ("run.started", "run.replayed"):
        return None
    run = tx.get_run(event.subject)
    if run is None:
        return None
    data = event.data
    if event.kind == "run.started":
        inputs = data.get("inputs")
        inputs = inputs if isinstance(inputs, dict) else inputs_then(tx, run, event.seq)
        text = f"Started {data.get('process', run.process)} (run {run.id}): {_fields(inputs)}"
        return RecordKind.NOTE, text, run, inputs
    changes = data.get("changes")
    changes = changes if isinstance(changes, dict) else {}
    text = f"Replayed run {run.id} ({run.process}) from {data.get('from')}"
    if given := _fields(changes):
        text += f" with {given}"
    return RecordKind.NOTE, text + ".", run, changes if entity_of(changes) else None


def _describe_ended(tx: LedgerTx, event: AuditEvent) -> Described | None:
    """A run's outcome, about what the run was about then."""
    group, _, verb = event.kind.partition(".")
    if group != "run" or verb not in ENDED:
        return None
    run = tx.get_run(event.subject)
    if run is None:
        return None
    why = event.data.get("error") or event.data.get("outcome") or run.error  # as it was then
    ended = ENDED[verb]
    if verb == "cancelled" and why and why.startswith(ENDINGS):
        ended, why = f"was {why}", None  # "was rejected at approve_welcome"
    inputs = inputs_then(tx, run, event.seq)
    text = f"Run {run.id} ({run.process}, {_about(inputs)}) {ended}"
    if verb != "succeeded" and why:
        text += f": {why}"
    return RecordKind.OUTCOME, text + ".", run, inputs


def _describe_other(tx: LedgerTx, event: AuditEvent) -> tuple[RecordKind, str, Run | None] | None:
    group, _, verb = event.kind.partition(".")
    data = event.data
    if group == "approval":
        approval = tx.get_approval(event.subject)
        if approval is None:
            return None
        run = tx.get_run(approval.run_id)
        summary = approval.card.get("summary", approval.step_id)
        if verb == "requested":
            draft = approval.card.get("text")
            text = f"Asked for approval: {summary}"
            return RecordKind.ARTIFACT, text + (f"\n{draft}" if draft else ""), run
        if verb in DECIDED:
            text = f"{DECIDED[verb]} by {event.actor}: {summary}"
            if data.get("reason"):
                text += f". Reason: {data['reason']}"
            if approval.edited_text and data.get("edited"):
                text += f"\nWith the text changed to:\n{approval.edited_text}"
            return RecordKind.DECISION, text, run
        if verb == "reason":  # given after the decision: "why?" answered
            decision = GIVEN_FOR.get(approval.status.value, "deciding")
            text = (
                f"Reason given by {event.actor} for {decision} {summary}: {data.get('reason', '')}"
            )
            return RecordKind.DECISION, text, run
        return None
    if event.kind == "effect.done":
        run = tx.get_run(str(data.get("run", "")))
        effect = tx.get_effect(event.subject)
        what = f"{data.get('connector')}.{data.get('action')}"
        detail = _fields(effect.request) if effect else ""
        return RecordKind.ARTIFACT, f"Done: {what} ({data.get('step')}): {detail}", run
    return None


def _about(inputs: dict[str, Any]) -> str:
    entity = entity_of(inputs)
    return entity.replace(":", " ", 1) if entity else "no client"


def _fields(values: dict[str, Any], limit: int = 1500) -> str:
    parts = [f"{key}: {value}" for key, value in values.items() if _plain(value)]
    return "; ".join(parts)[:limit]


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""


def said_record(
    source: str,
    kind: RecordKind,
    text: str,
    at: datetime,
    actor: str,
    chat: str,
    entity: str | None,
) -> dict[str, Any]:
    """What an operator said (MESSAGE) or steward answered (REPLY) in a chat."""
    record = MemoryRecord.create(source, kind, text, at, actor=actor, chat=chat, entity=entity)
    return record.to_dict()
