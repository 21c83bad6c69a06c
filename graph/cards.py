"""Approval cards and decision outcomes, rendered once for every channel."""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

from graph.messages import Button, Card, CardOutcome
from memory.ledger import Approval, ApprovalStatus

VERBS = {
    ApprovalStatus.APPROVED: "Approved",
    ApprovalStatus.REJECTED: "Rejected",
    ApprovalStatus.EXPIRED: "Expired",
    ApprovalStatus.CANCELLED: "Cancelled",
}


UNDO = "Undo"  # the field that says how to undo what the card's step does


def approval_card(approval: Approval, spent_usd: float = 0.0, zone: tzinfo = UTC) -> Card:
    """The card of a pending approval; its expiry on the operator's clock (``zone``)."""
    card = approval.card
    fields = list(card.get("fields", {}).items())
    for action in card.get("actions", []):
        fields.append(("Will do", f"{action['connector']} · {action['action']}"))
        for name, value in action["params"].items():
            if value != card.get("text") and (name, value) not in fields:
                fields.append((name, value))
        if action.get("compensate"):
            how = f" (afterwards: /undo {approval.run_id} {action['step']})"
            fields.append((UNDO, action["compensate"] + (how if action.get("undoable") else "")))
    fields.append(
        ("Why", f"step {card['step']} of {card['process_title']} (rule: process definition)")
    )
    if card.get("text_by"):
        fields.append(("Text by", card["text_by"]))
    if spent_usd:
        fields.append(("Model cost so far", f"${spent_usd:.4f}"))
    on_expiry = (
        "it is rejected" if approval.on_expiry == "reject" else "it is escalated to you again"
    )
    deadline = f"if nobody answers by {_when(approval.expires_at, zone)}, {on_expiry}"
    if approval.expires_at is not None and approval.expires_at <= datetime.now(UTC):
        deadline = f"nobody answered by {_when(approval.expires_at, zone)}: it waits for you"
    buttons = [
        Button("Approve", f"approve:{approval.id}", "primary"),
        Button("Reject", f"reject:{approval.id}", "danger"),
    ]
    if approval.editable:
        buttons.append(Button("Edit", f"edit:{approval.id}"))
    buttons.append(Button("Details", f"details:{approval.id}"))
    return Card(
        approval_id=approval.id,
        title=card["title"],
        summary=card["summary"],
        fields=fields,
        text=card.get("text"),
        risk=card.get("risk", "medium"),
        footer=f"Approval {approval.id} · run {approval.run_id} · {deadline}",
        buttons=buttons,
    )


def decision_line(approval: Approval, zone: tzinfo = UTC) -> str:
    """Who decided and when, on the operator's clock (``zone``), with the reason."""
    verb = VERBS.get(approval.status, approval.status.value)
    who = approval.decided_by or "nobody"
    when = _when(approval.decided_at, zone) if approval.decided_at else "?"
    line = f"{verb} by {who} at {when}"
    if approval.edited_text is not None:
        line += " (with edits)"
    if approval.reason:
        line += f": {approval.reason}"
    return line


def outcome(approval: Approval, zone: tzinfo = UTC) -> CardOutcome:
    summary = approval.card.get("summary", approval.id)
    return CardOutcome(approval.id, f"{summary}\n{decision_line(approval, zone)}")


def outcome_parts(outcome: CardOutcome) -> tuple[str, str]:
    """An outcome's summary and its decision line (empty when it has none); a summary
    or a reason may hold line breaks of its own."""
    parts = _DECISION.split(outcome.text, maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (outcome.text, "")


_DECISION = re.compile(r"\n(?=(?:{}) by )".format("|".join(map(re.escape, VERBS.values()))))


def run_outcome(
    run_id: str, done: str, actor: str, at: datetime, zone: tzinfo = UTC
) -> CardOutcome:
    """A run's item of the daily list, pressed (Retry, Confirm, Resume): what was done
    to the run, by whom and when, in place of its buttons."""
    return CardOutcome(run_id, f"Run {run_id}: {done} by {actor} at {_when(at, zone)}")


def _when(moment: datetime, zone: tzinfo = UTC) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
