"""Undoing an action that has happened, where the definition says how.

``/undo RUN STEP`` starts a run of its own, generated from the step's ``compensate``:
an approval gate showing what the compensating action will do (its text editable), then
the action, with the same guard as every effect — idempotency key, retries, breaker. The
run's id is derived from the step it undoes, so a step is undone once, however often
``/undo`` is said.
"""

from __future__ import annotations

import hashlib

from graph.definitions import CORRECTION, ActionStep, Compensation, ProcessDefinition
from graph.templating import placeholders

GATE = "approve_undo"
ACTION = "undo"


def undo_run_id(run_id: str, step_id: str, visit: int = 1) -> str:
    """The one run that undoes what a step did on a visit (its effect's key)."""
    return "u" + hashlib.sha256(effect_key(run_id, step_id, visit).encode()).hexdigest()[:11]


def effect_key(run_id: str, step_id: str, visit: int, approved_on: int | None = None) -> str:
    """The idempotency key of what an action does on a visit: RUN:STEP, then RUN:STEP:2 …
    One acting on an approval of another visit of its gate than its own (a replay from
    the gate after its attempt failed, a gate asked again) says which: RUN:STEP@2. A new
    approval is a new effect: the attempt before it may have gone out, with the old text,
    and a key of its own it must not share."""
    key = f"{run_id}:{step_id}" + (f":{visit}" if visit > 1 else "")
    return key if approved_on in (None, visit) else f"{key}@{approved_on}"


def visit_of(key: str) -> int:
    """The visit of its step an effect's key was made on."""
    _, _, rest = key.partition(":")
    _, _, visit = rest.partition("@")[0].partition(":")
    return int(visit) if visit.isdigit() else 1


def undo_definition(definition: ProcessDefinition, step: ActionStep) -> ProcessDefinition:
    """The process that undoes ``step``: its inputs are the values its templates use."""
    compensation = step.compensate
    assert isinstance(compensation, Compensation)
    used = set().union(*(placeholders(t) for t in compensation.templates().values()))
    inputs = {name: {"type": "text", "required": False} for name in sorted(used)}
    fields = {
        name.replace("_", " ").capitalize(): template
        for name, template in compensation.params.items()
        if f"{{{CORRECTION}}}" not in template
    }
    gate: dict[str, object] = {
        "id": GATE,
        "kind": "approval",
        "title": f"Undo: {step.label}",
        "summary": compensation.summary,
        "fields": fields,
        "risk": "high",
    }
    if compensation.text is not None:
        inputs[CORRECTION] = {"type": "text", "required": False}
        gate |= {"text": f"{{{CORRECTION}}}", "editable": CORRECTION}
    name = f"undo_{definition.name}_{step.id}"[:63]
    return ProcessDefinition.model_validate(
        {
            "name": name,
            "title": f"Undo {step.label} ({definition.title})",
            "description": f"Compensates step {step.id} of {definition.name}",
            "inputs": inputs,
            "steps": [
                gate,
                {
                    "id": ACTION,
                    "kind": "action",
                    "title": compensation.summary,
                    "gate": GATE,
                    "connector": compensation.connector or step.connector,
                    "action": compensation.action,
                    "with": compensation.params,
                },
            ],
        }
    )
