"""Process definitions: YAML data validated into typed steps.

A definition names its inputs and a list of steps. Each step goes to the next one
unless it says otherwise (``next``, a branch's ``then``/``else``, a gate's
``on_reject``); ``end`` finishes the run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from graph.conditions import Condition
from graph.durations import parse_duration, refuse_months
from graph.inputs import InputError, InputSpec, InputType, Money, parse_input
from graph.templating import mistyped, placeholders

IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"
END = "end"
BUILTIN_NAMES = frozenset({"run_id", "process", "today"})
Where = tuple[str, ...]  # a place in a step, as its file names it: ("with", "body")


# The validation context of a definition read from a file (not one the ledger stored):
# what it must not say any more is refused there alone, and a run goes on as it began.
WRITTEN = {"written": True}


def _no_placeholder(wrong: str) -> str:
    """``wrong`` (``{Client}``, ``{amount:,.2f}``), why it is no placeholder, and the one
    meant."""
    meant = re.findall(r"\w+", wrong)[0].lower()
    return (
        f"{wrong}, which is no placeholder: write {{{meant}}}, lower case and without "
        "spaces, or {{ and }} for a brace"
    )


def written(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("written"))


class ReferenceProblem(ValueError):
    """A mistake that only the whole definition shows, with where in the file it is."""

    def __init__(self, message: str, *loc: str | int) -> None:
        super().__init__(message)
        self.loc = loc


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=IDENTIFIER)
    title: str | None = None
    next: str | None = None

    def templates(self) -> dict[Where, str]:
        """Each template, by where in the step it is written."""
        return {}

    def targets(self) -> list[str]:
        return [self.next] if self.next else []

    @property
    def label(self) -> str:
        return self.title or self.id.replace("_", " ")


class AgentStep(_Step):
    """Produces a text: a model drafts it from ``prompt``, or ``template`` fills it in."""

    kind: Literal["agent"]
    output: str = Field(pattern=IDENTIFIER)
    template: str
    prompt: str | None = None
    model: Literal["fast", "strong"] = "strong"

    def templates(self) -> dict[Where, str]:
        written: dict[Where, str] = {("template",): self.template}
        if self.prompt:
            written["prompt",] = self.prompt
        return written


class ApprovalStep(_Step):
    """A gate: the run waits here until an operator approves, rejects or edits."""

    kind: Literal["approval"]
    summary: str
    fields: dict[str, str] = Field(default_factory=dict)
    text: str | None = None
    editable: str | None = Field(default=None, pattern=IDENTIFIER)
    risk: Literal["low", "medium", "high"] = "medium"
    expires_in: str = "72h"
    on_expiry: Literal["reject", "escalate"] = "reject"
    on_reject: str = END

    @field_validator("expires_in")
    @classmethod
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        parse_duration(value)
        if written(info):
            refuse_months(value)
        return value

    @property
    def expiry(self) -> timedelta:
        return parse_duration(self.expires_in)

    def templates(self) -> dict[Where, str]:
        written: dict[Where, str] = {("summary",): self.summary}
        written |= {("fields", label): template for label, template in self.fields.items()}
        if self.text:
            written["text",] = self.text
        return written

    def targets(self) -> list[str]:
        return [*super().targets(), self.on_reject]


CORRECTION = "correction"  # the value a compensation's editable text is known by
UNDOES = "undoes"  # what a compensation knows the step it undoes by: its key, RUN:STEP


class Compensation(BaseModel):
    """What undoes an action, where something can: a correction email, a cancellation.
    ``/undo RUN STEP`` runs it after its own approval; ``text`` is the draft the operator
    edits there, known to ``with`` as ``{correction}``; ``{undoes}`` is the undone step's
    idempotency key (``RUN:STEP``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    summary: str
    connector: str | None = None  # the step's own connector unless named
    action: str
    params: dict[str, str] = Field(default_factory=dict, alias="with")
    text: str | None = None

    def templates(self) -> dict[Where, str]:
        written: dict[Where, str] = {("summary",): self.summary}
        written |= {("with", name): template for name, template in self.params.items()}
        if self.text:
            written["text",] = self.text
        return written


class ActionStep(_Step):
    """Acts on the outside world through a connector, once, after its gate approved."""

    kind: Literal["action"]
    gate: str = Field(pattern=IDENTIFIER)
    connector: str
    action: str
    params: dict[str, str] = Field(default_factory=dict, alias="with")
    output: str | None = Field(default=None, pattern=IDENTIFIER)
    # What undoes it: a description only, or an action /undo can run.
    compensate: str | Compensation | None = None

    def templates(self) -> dict[Where, str]:
        written: dict[Where, str] = {("with", n): t for n, t in self.params.items()}
        if isinstance(self.compensate, str):
            written["compensate",] = self.compensate
        return written

    @property
    def undo_summary(self) -> str | None:
        if isinstance(self.compensate, Compensation):
            return self.compensate.summary
        return self.compensate


class WaitStep(_Step):
    """Waits durably: for a time (``for``), an external event, or an event with a timeout."""

    kind: Literal["wait"]
    duration: str | None = Field(default=None, alias="for")
    event: str | None = Field(default=None, pattern=IDENTIFIER)
    output: str | None = Field(default=None, pattern=IDENTIFIER)
    pays: str | None = Field(default=None, pattern=IDENTIFIER)  # a money input the event pays

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            parse_duration(value)
            if written(info):
                refuse_months(value)
        return value

    @model_validator(mode="after")
    def _something_to_wait_for(self) -> WaitStep:
        if self.duration is None and self.event is None:
            raise ValueError("a wait step needs `for` (a duration), `event`, or both")
        if self.pays is not None and self.event is None:
            raise ValueError("`pays` needs the `event` that pays")
        return self

    @property
    def delay(self) -> timedelta | None:
        return parse_duration(self.duration) if self.duration else None

    @property
    def filled(self) -> list[str]:
        """What an event paying ``pays`` fills: the total paid so far, what is left."""
        return [f"{self.pays}_paid", f"{self.pays}_owed"] if self.pays else []


class BranchStep(_Step):
    """Chooses the next step from a condition over the run's data."""

    kind: Literal["branch"]
    condition: str = Field(alias="if")
    then: str
    otherwise: str = Field(default=END, alias="else")

    @field_validator("condition")
    @classmethod
    def _parses(cls, value: str) -> str:
        Condition(value)
        return value

    @field_validator("next")
    @classmethod
    def _goes_by_then_and_else(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and written(info):  # it was never read: `else` went on
            raise ValueError("a branch goes on by `then` and `else`, not `next`")
        return value

    def targets(self) -> list[str]:
        return [self.then, self.otherwise]


def _target_field(step: _Step, target: str) -> str:
    if isinstance(step, BranchStep):
        return "then" if step.then == target else "else"
    if isinstance(step, ApprovalStep) and step.on_reject == target and step.next != target:
        return "on_reject"
    return "next"


Step = Annotated[
    AgentStep | ApprovalStep | ActionStep | WaitStep | BranchStep, Field(discriminator="kind")
]


class ProcessDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=IDENTIFIER)
    title: str
    description: str
    aliases: list[str] = Field(default_factory=list)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    max_visits: int = Field(default=20, ge=1, le=1000)

    @field_validator("aliases")
    @classmethod
    def _aliases_are_words(cls, aliases: list[str], info: ValidationInfo) -> list[str]:
        for alias in aliases:
            if not re.search(r"\w", alias) and written(info):  # "" was in every message
                raise ValueError(f"alias {alias!r} holds no word: a message would be it")
        return aliases

    @field_validator("inputs")
    @classmethod
    def _input_names(
        cls, inputs: dict[str, InputSpec], info: ValidationInfo
    ) -> dict[str, InputSpec]:
        for name in inputs:
            if not re.fullmatch(IDENTIFIER, name) or name in BUILTIN_NAMES:  # "email\n" too
                raise ValueError(f"input name {name!r} must be lower_snake_case and not reserved")
        before: set[str] = set()
        for name, spec in inputs.items():
            wrong = mistyped(spec.default) if isinstance(spec.default, str) else None
            if wrong and written(info):  # as in a step's template: not sent as written
                raise ReferenceProblem(
                    f"the default of {name!r} has {_no_placeholder(wrong)}",
                    "inputs",
                    name,
                    "default",
                )
            named = placeholders(spec.default) if isinstance(spec.default, str) else set()
            if unknown := named - before:
                raise ValueError(
                    f"the default of {name!r} uses {{{sorted(unknown)[0]}}}, which is not "
                    "an input listed before it"
                )
            before.add(name)
        return inputs

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> ProcessDefinition:
        ids = [s.id for s in self.steps]
        for index, step in enumerate(self.steps):
            if ids.index(step.id) != index:
                raise ReferenceProblem(
                    f"step ids must be unique: {step.id!r} is used twice", "steps", index, "id"
                )
            if step.id == END and written(info):  # `next: end` finishes the run instead
                raise ReferenceProblem(
                    f"{END!r} is where a run finishes: name the step otherwise",
                    "steps",
                    index,
                    "id",
                )
        known_steps = set(ids) | {END}
        for index, step in enumerate(self.steps):
            if isinstance(step, WaitStep) and step.pays and step.pays not in self.money_inputs:
                raise ReferenceProblem(
                    f"step {step.id!r} pays {step.pays!r}, which is no money input",
                    "steps",
                    index,
                    "pays",
                )
            for filled in step.filled if isinstance(step, WaitStep) else []:
                if filled in self.inputs:
                    raise ReferenceProblem(
                        f"step {step.id!r} fills {filled!r} with what is paid, the name of "
                        "an input: name the input otherwise",
                        "steps",
                        index,
                        "pays",
                    )
            output = getattr(step, "output", None)
            if output in self.inputs or output in BUILTIN_NAMES:
                what = "an input" if output in self.inputs else "one steward fills in"
                raise ReferenceProblem(
                    f"step {step.id!r} puts its output in {output!r}, the name of {what}: it "
                    "would overwrite it for every step after; name the output otherwise",
                    "steps",
                    index,
                    "output",
                )
        values = set(self.inputs) | BUILTIN_NAMES
        values |= {o for o in (getattr(s, "output", None) for s in self.steps) if o}
        values |= set(self.filled_by_payments)
        gates = {s.id for s in self.steps if isinstance(s, ApprovalStep)}
        for index, step in enumerate(self.steps):
            self._check_step(index, step, known_steps, values, gates, ids, written(info))
            if isinstance(step, ApprovalStep) and any(
                action.id == step.on_reject for action in self.actions_behind(step.id)
            ):
                raise ReferenceProblem(
                    f"step {step.id!r} goes on a rejection to {step.on_reject!r}, which acts "
                    "only on its approval",
                    "steps",
                    index,
                    "on_reject",
                )
        return self

    @staticmethod
    def _check_step(
        index: int,
        step: Step,
        known_steps: set[str],
        values: set[str],
        gates: set[str],
        ids: list[str],
        from_file: bool,
    ) -> None:
        for target in step.targets():
            if target not in known_steps:
                raise ReferenceProblem(
                    f"step {step.id!r} goes to unknown step {target!r}",
                    "steps",
                    index,
                    _target_field(step, target),
                )
        for where, template in step.templates().items():
            # A run's own copy, kept in the ledger, passed the checks of its day: one
            # added since must not strand it (a Python-style placeholder, say).
            if (wrong := mistyped(template)) and from_file:
                raise ReferenceProblem(
                    f"step {step.id!r} has {_no_placeholder(wrong)}",
                    "steps",
                    index,
                    *where,
                )
            missing = placeholders(template) - values
            if missing:
                raise ReferenceProblem(
                    f"step {step.id!r} uses {{{sorted(missing)[0]}}}, "
                    "which is not an input or any step's output",
                    "steps",
                    index,
                    *where,
                )
        if isinstance(step, BranchStep):
            unknown = Condition(step.condition).names - values
            if unknown:
                raise ReferenceProblem(
                    f"step {step.id!r} tests unknown value {sorted(unknown)[0]!r}",
                    "steps",
                    index,
                    "if",
                )
        if isinstance(step, ActionStep) and isinstance(step.compensate, Compensation):
            for where, template in step.compensate.templates().items():
                missing = placeholders(template) - values - {CORRECTION, UNDOES}
                if missing:
                    raise ReferenceProblem(
                        f"step {step.id!r} undoes with {{{sorted(missing)[0]}}}, "
                        "which is not an input or any step's output",
                        "steps",
                        index,
                        "compensate",
                        *where,
                    )
        if isinstance(step, ActionStep):
            if step.gate not in gates:
                raise ReferenceProblem(
                    f"step {step.id!r} names gate {step.gate!r}, which is not an approval step",
                    "steps",
                    index,
                    "gate",
                )
            if ids.index(step.gate) > index:
                raise ReferenceProblem(
                    f"step {step.id!r} must come after its gate {step.gate!r}",
                    "steps",
                    index,
                    "gate",
                )
        if isinstance(step, ApprovalStep) and step.editable and step.editable not in values:
            raise ReferenceProblem(
                f"step {step.id!r} edits {step.editable!r}, which is never set",
                "steps",
                index,
                "editable",
            )

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def goes_on_to(self, step: Step) -> str:
        """Where ``step`` goes once done (a branch goes by its ``then`` and ``else``): its
        ``next``, else the step after it, else the end."""
        if step.next:
            return step.next
        index = self.steps.index(step)
        return self.steps[index + 1].id if index + 1 < len(self.steps) else END

    def ahead(self, step_ids: Iterable[str]) -> list[Step]:
        """The steps a run about to take ``step_ids`` may yet take, those included."""
        known = {s.id: s for s in self.steps}
        seen: set[str] = set()
        waiting = [step_id for step_id in step_ids if step_id in known]
        while waiting:
            step = known[waiting.pop()]
            if step.id in seen:
                continue
            seen.add(step.id)
            targets = step.targets()
            if not isinstance(step, BranchStep):
                targets.append(self.goes_on_to(step))
            waiting.extend(target for target in targets if target in known)
        return [step for step in self.steps if step.id in seen]

    def read_input(
        self, name: str, raw: Any, now: datetime | None = None, currency: str | None = None
    ) -> Any:
        """Input ``name`` as a run takes it (``parse_input``; ``now`` and ``currency`` as
        there), whoever reads it: a command, a form's answer, plain words. A money input
        a wait's payments pay (the invoice follow-up's ``amount``) is what is owed: of
        nothing, there is nothing to chase, and its reminder would ask for €0.00. Raises
        InputError."""
        spec = self.inputs[name]
        value = parse_input(name, spec, raw, now, currency)
        paid_by_a_wait = any(isinstance(s, WaitStep) and s.pays == name for s in self.steps)
        if paid_by_a_wait and Money.read(str(value)).amount == 0:  # parse_input kept it so
            raise InputError(name, spec, str(raw), "an amount owed of nothing has nothing to chase")
        return value

    def left_out(self, name: str, raw: Any) -> bool:
        """Whether ``raw``, given for input ``name``, leaves it out: an optional input given
        empty (``kickoff=`` in a script, a web form's blank field, JSON's null) is one not
        given, its default applying, where it was refused as no date and time, and the
        whole start with it. A required input given empty is still wrong."""
        spec = self.inputs.get(name)
        empty = raw is None or (isinstance(raw, str) and not raw.strip())
        return spec is not None and not spec.required and empty

    @property
    def money_inputs(self) -> list[str]:
        return [name for name, spec in self.inputs.items() if spec.type is InputType.MONEY]

    @property
    def filled_by_payments(self) -> list[str]:
        """What the events that pay a money input fill (see ``WaitStep.filled``)."""
        return [name for s in self.steps if isinstance(s, WaitStep) for name in s.filled]

    @property
    def amounts(self) -> list[str]:
        """The names that hold money: the money inputs, and what payments fill."""
        return self.money_inputs + self.filled_by_payments

    def actions_behind(self, gate_id: str) -> list[ActionStep]:
        return [s for s in self.steps if isinstance(s, ActionStep) and s.gate == gate_id]

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)

    @property
    def version(self) -> str:
        canonical = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
