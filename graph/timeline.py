"""A run's timeline: each step with what went in, what was decided and by what (a rule,
a model, a person), with what confidence, at what cost, and how long it took."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from graph.messages import cut
from memory.ledger import Ledger, Run, StepEntry


@dataclass(frozen=True)
class TimelineRow:
    seq: int
    step: str
    kind: str
    status: str
    at: datetime
    took_seconds: float  # since the step before it ended (for a gate: the wait for a person)
    inputs: str
    decision: str
    by: str  # the rule, the model or the person
    confidence: str
    cost_usd: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"at": self.at.isoformat()}


async def timeline(ledger: Ledger, run: Run) -> list[TimelineRow]:
    steps = await ledger.run_steps(run.id)
    costs = _costs_by_visit(steps, await ledger.step_costs(run.id))
    rows = []
    previous = run.created_at
    for entry, cost in zip(steps, costs, strict=True):
        inputs, decision, by, confidence = _explain(entry)
        rows.append(
            TimelineRow(
                seq=entry.seq,
                step=entry.step_id,
                kind=entry.kind,
                status=entry.status,
                at=entry.at,
                took_seconds=max(0.0, (entry.at - previous).total_seconds()),
                inputs=inputs,
                decision=decision,
                by=by,
                confidence=confidence,
                cost_usd=cost,
            )
        )
        previous = entry.at
    return rows


def _costs_by_visit(
    steps: list[StepEntry], calls: list[tuple[str, datetime, float]]
) -> list[float]:
    """What each entry cost: the calls made for its step since that step's entry before
    it. A step run again (a loop, a replay) shows its own calls, not all of them; those
    of an attempt that failed count with the visit that came through."""
    left: dict[str, list[tuple[datetime, float]]] = {}
    for step, at, cost in calls:
        left.setdefault(step, []).append((at, cost))
    costs = []
    for entry in steps:
        mine = left.get(entry.step_id, [])
        made = 0
        while made < len(mine) and mine[made][0] <= entry.at:
            made += 1
        costs.append(sum(cost for _, cost in mine[:made]))
        left[entry.step_id] = mine[made:]
    return costs


def render_timeline(run: Run, rows: list[TimelineRow], zone: tzinfo = UTC) -> str:
    """The timeline as text, each step's time on the operator's clock (``zone``)."""
    lines = [f"Run {run.id} · {run.process} · {run.status.value}"]
    lines += [f"  {name}: {value}" for name, value in run.inputs.items()]
    if not rows:
        lines.append("  no steps yet")
    for row in rows:
        cost = f" · ${row.cost_usd:.4f}" if row.cost_usd else ""
        lines.append(
            f"  {row.seq}. {row.at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} {row.step} ({row.kind})"
            f" {row.status}"
            f" · {_took(row.took_seconds)}{cost}"
        )
        if row.inputs:
            lines.append(f"     in: {row.inputs}")
        lines.append(
            f"     {row.decision} — by {row.by}" + (f", {row.confidence}" if row.confidence else "")
        )
    if run.error:
        why = f"{run.error_class}: " if run.error_class else ""
        lines.append(f"  stopped: {why}{run.error}")
    return "\n".join(lines)


def _explain(entry: StepEntry) -> tuple[str, str, str, str]:
    """What went in, what came out, who or what decided, how sure."""
    d = entry.detail
    match entry.kind:
        case "agent":
            source = str(d.get("source") or "template")
            by = source.replace("model:", "model ") if source.startswith("model:") else "template"
            note = f" ({d['note']})" if d.get("note") else ""
            return "", f"drafted the text{note}", by, ""
        case "approval":
            decision = entry.status + (" with edits" if d.get("edited") else "")
            if d.get("reason"):
                decision += f": {d['reason']}"
            return "", decision, str(d.get("by") or "?"), ""
        case "action":
            params = d.get("params") or {}
            shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
            what = (
                f"{d.get('connector')}.{d.get('action')}"
                if d.get("action")
                else str(d.get("connector"))
            )
            return shown, f"{what} done, key {d.get('key')}", "its approval", ""
        case "branch":
            target = str(d.get("went_to"))
            target = "the end" if target == "__end__" else target
            held = "" if "held" not in d else " (true)" if d["held"] else " (false)"
            return "", f"went to {target}", f"rule: {d.get('condition')}{held}", "certain"
        case "wait":
            paid = f": {d['paid']} paid, {d['owed']} still owed" if d.get("paid") else ""
            paid += more_than_owed(d)
            for said in d.get("uncounted") or []:  # a payment kept before it was refused
                paid += f"; a payment that counted for nothing {said}"
            return "", f"woke{paid}", str(d.get("woken_by") or "?"), ""
    return "", entry.status, "?", ""


def _short(value: Any, limit: int = 60) -> str:
    return cut(str(value).replace("\n", " "), limit)


def _took(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def more_than_owed(counted: dict[str, Any]) -> str:
    """How much more than was owed a payment paid, as its wait noted it, to follow what
    it paid; empty when it paid no more: a mistyped zero is never silent."""
    return f", {counted['over']} more than was owed" if counted.get("over") else ""
