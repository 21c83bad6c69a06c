"""Compiles a process definition into a LangGraph graph, one node per step.

Nodes are pure until an action: drafts and cards are computed from state, gates and
waits are ``interrupt()``s, and the only effects go through the guard with the key
``run id : step id`` (``: visit`` after the first pass through a loop).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from graph.compensation import effect_key
from graph.conditions import Condition
from graph.definitions import (
    END as END_STEP,
)
from graph.definitions import (
    ActionStep,
    AgentStep,
    ApprovalStep,
    BranchStep,
    Compensation,
    ProcessDefinition,
    Step,
    WaitStep,
)
from graph.errors import (
    DecisionForAnotherGate,
    GateNotApproved,
    LoopLimit,
    NothingPaid,
    PaymentInAnotherCurrency,
    PaymentInTwoCurrencies,
    UncountedPayment,
    UnreadableAmount,
)
from graph.inputs import Money, currency_code
from graph.messages import cut
from graph.state import RunState, StepContext
from graph.templating import placeholders, render

Node = Callable[[RunState, Runtime[StepContext]], Awaitable[Command[str]]]
Graph = CompiledStateGraph[RunState, StepContext, RunState, RunState]


def compile_definition(
    definition: ProcessDefinition, checkpointer: BaseCheckpointSaver[str]
) -> Graph:
    builder: StateGraph[RunState, StepContext, RunState, RunState] = StateGraph(
        RunState, context_schema=StepContext
    )
    for step in definition.steps:
        node = _node(definition, step, _target(definition.goes_on_to(step)) or END)
        builder.add_node(step.id, node)  # type: ignore[call-overload]
    builder.add_edge(START, definition.steps[0].id)
    return builder.compile(checkpointer=checkpointer, name=definition.name)


def render_card(
    definition: ProcessDefinition,
    gate: ApprovalStep,
    values: dict[str, Any],
    drafted: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What the operator is asked to approve: exactly what the gated actions will do,
    and who wrote its text (``drafted``: per output of an agent step). The values the
    actions' parameters name are kept with it: the actions render their parameters from
    them (see ``_as_approved``)."""
    writers = [(drafted or {}).get(name) for name in sorted(placeholders(gate.text or ""))]
    actions = definition.actions_behind(gate.id)
    used = {
        name for a in actions for template in a.params.values() for name in placeholders(template)
    }
    return {
        "values": {name: value for name, value in values.items() if name in used},
        "process": definition.name,
        "process_title": definition.title,
        "step": gate.id,
        "title": gate.label,
        "summary": render(gate.summary, values),
        "fields": {
            label: shown
            for label, template in gate.fields.items()
            if (shown := render(template, values))  # a value left out: no empty line
        },
        "text": render(gate.text, values) if gate.text else None,
        "text_by": ", ".join(dict.fromkeys(w for w in writers if w)) or None,
        "risk": gate.risk,
        "editable": gate.editable is not None,
        "actions": [
            {
                "step": a.id,
                "connector": a.connector,
                "action": a.action,
                "params": {k: render(v, values) for k, v in a.params.items()},
                "compensate": render(a.undo_summary, values) if a.undo_summary else None,
                "undoable": isinstance(a.compensate, Compensation),
            }
            for a in actions
        ],
        "on_expiry": gate.on_expiry,
        "expires_in": gate.expires_in,
    }


def _target(step_id: str | None) -> str | None:
    if step_id is None:
        return None
    return END if step_id == END_STEP else step_id


def _values(state: RunState, ctx: StepContext, definition: ProcessDefinition) -> dict[str, Any]:
    """What a step's templates are filled from; a money input as a client reads it,
    "€2,500.00", from a run that kept a bare "2500.00" (before amounts kept their
    currency) too; what is still owed of it, of the amount as it is now (a replay may
    have corrected it since the last payment)."""
    data = state.get("data", {})
    money = {
        name: str(Money.read(data[name]))
        for name in definition.money_inputs
        if isinstance(data.get(name), str)
    }
    owed = {step.filled[1]: left for step, left in _owed(definition, data)}
    return {
        **data,
        **money,
        **owed,
        "run_id": ctx.run_id,
        "process": definition.name,
        "today": datetime.now(ctx.zone).date().isoformat(),  # on the operator's clock
    }


def still_owed(definition: ProcessDefinition, data: Mapping[str, Any]) -> dict[str, str]:
    """What is still owed of each money input a part of which is paid, by its name."""
    return {step.pays: left for step, left in _owed(definition, data) if step.pays}


def _owed(definition: ProcessDefinition, data: Mapping[str, Any]) -> list[tuple[WaitStep, str]]:
    """Each wait that pays a money input some of which is paid, and what is left of the
    amount as it is now (a replay may have corrected it since the last payment)."""
    owed = []
    for step in definition.steps:
        if isinstance(step, WaitStep) and step.pays:
            due, paid = data.get(step.pays), data.get(step.filled[0])
            if isinstance(due, str) and isinstance(paid, str):
                owed.append((step, _left(due, paid)))
    return owed


def _visit(state: RunState, step: Step, definition: ProcessDefinition) -> int:
    visit = state.get("visits", {}).get(step.id, 0) + 1
    if visit > definition.max_visits:
        raise LoopLimit(
            f"step {step.id!r} ran {definition.max_visits} times; the run stopped to avoid a loop"
        )
    return visit


def _entry(step: Step, visit: int, status: str, **detail: Any) -> dict[str, Any]:
    return {
        "step": step.id,
        "kind": step.kind,
        "visit": visit,
        "status": status,
        "at": datetime.now(UTC).isoformat(),
        "detail": detail,
    }


def _node(definition: ProcessDefinition, step: Step, following: str) -> Node:
    if isinstance(step, AgentStep):
        return _agent(definition, step, following)
    if isinstance(step, ApprovalStep):
        return _approval(definition, step, following)
    if isinstance(step, ActionStep):
        return _action(definition, step, following)
    if isinstance(step, WaitStep):
        return _wait(definition, step, following)
    return _branch(definition, step)


def _agent(definition: ProcessDefinition, step: AgentStep, following: str) -> Node:
    async def agent(state: RunState, runtime: Runtime[StepContext]) -> Command[str]:
        ctx = runtime.context
        visit = _visit(state, step, definition)
        draft = await ctx.drafter.draft(step, _values(state, ctx, definition), ctx.run_id)
        ctx.log.append(_entry(step, visit, "done", source=draft.source, note=draft.note))
        return Command(
            goto=following,
            update={
                "data": {step.output: draft.text},
                "visits": {step.id: visit},
                "drafted": {step.output: draft.written_by},
            },
        )

    return agent


def _approval(definition: ProcessDefinition, step: ApprovalStep, following: str) -> Node:
    on_reject = _target(step.on_reject) or END

    async def approval(state: RunState, runtime: Runtime[StepContext]) -> Command[str]:
        ctx = runtime.context
        visit = _visit(state, step, definition)
        values = _values(state, ctx, definition)
        card = render_card(definition, step, values, state.get("drafted"))
        decision: dict[str, Any] = interrupt(
            {"type": "approval", "step": step.id, "visit": visit, "card": card}
        )
        made_for = (decision.get("step", step.id), decision.get("visit", visit))
        if made_for != (step.id, visit):
            raise DecisionForAnotherGate(
                f"a decision for {made_for[0]} (visit {made_for[1]}) reached {step.id} "
                f"(visit {visit})"
            )
        status = decision["status"]
        ctx.log.append(
            _entry(
                step,
                visit,
                status,
                by=decision.get("by"),
                reason=decision.get("reason"),
                edited=decision.get("edited_text") is not None,
            )
        )
        update: dict[str, Any] = {
            "visits": {step.id: visit},
            "decisions": {step.id: {**decision, "visit": visit}},
        }
        if status == "approved":
            if step.editable and decision.get("edited_text") is not None:
                update["data"] = {step.editable: decision["edited_text"]}
                update["drafted"] = {step.editable: f"{decision.get('by')}, in an edit"}
            return Command(goto=following, update=update)
        if on_reject == END:
            update["outcome"] = f"{status} at {step.id}"
        return Command(goto=on_reject, update=update)

    return approval


def acted_on_its_approval(state: Mapping[str, Any], step: ActionStep) -> bool:
    """Whether ``step`` acted on the approval its gate gave last: each allows one action."""
    gate = state.get("decisions", {}).get(step.gate)
    return gate is not None and state.get("spent", {}).get(step.id) == gate.get("visit")


def _action(definition: ProcessDefinition, step: ActionStep, following: str) -> Node:
    async def action(state: RunState, runtime: Runtime[StepContext]) -> Command[str]:
        ctx = runtime.context
        visit = _visit(state, step, definition)
        gate = state.get("decisions", {}).get(step.gate)
        if gate is None or gate.get("status") != "approved":
            raise GateNotApproved(f"action {step.id!r} reached without approval at {step.gate!r}")
        if acted_on_its_approval(state, step):
            raise GateNotApproved(
                f"action {step.id!r} already acted on this approval of {step.gate!r}; "
                "each approval allows one action"
            )
        values = _as_approved(state, ctx, definition, step, gate)
        params = {name: render(template, values) for name, template in step.params.items()}
        key = effect_key(ctx.run_id, step.id, visit, gate["visit"])
        result = await ctx.effects.perform(
            key=key,
            run_id=ctx.run_id,
            step_id=step.id,
            connector_name=step.connector,
            action=step.action,
            params=params,
        )
        ctx.log.append(
            _entry(
                step,
                visit,
                "done",
                key=key,
                connector=step.connector,
                action=step.action,
                params=params,
                result=result,
            )
        )
        update: dict[str, Any] = {"visits": {step.id: visit}, "spent": {step.id: gate["visit"]}}
        if step.output:
            update["data"] = {step.output: result}
        return Command(goto=following, update=update)

    return action


def _as_approved(
    state: RunState,
    ctx: StepContext,
    definition: ProcessDefinition,
    step: ActionStep,
    decision: dict[str, Any],
) -> dict[str, Any]:
    """What an action renders its parameters from: the values its gate's card was
    rendered from — what the operator saw and approved — with the operator's edit, and
    what the actions before it behind the same gate gave. A step between the gate and
    the action (a draft written again, a wait's data) changes nothing the action does,
    nor does the clock (``{today}`` after midnight)."""
    shown = decision.get("values")
    if shown is None:  # approved before cards kept their values
        return _values(state, ctx, definition)
    data = state.get("data", {})
    siblings = definition.actions_behind(step.gate)
    given = {a.output: data[a.output] for a in siblings if a.output and a.output in data}
    gate, edit = definition.step(step.gate), decision.get("edited_text")
    if isinstance(gate, ApprovalStep) and gate.editable and edit is not None:
        given[gate.editable] = edit
    return {**shown, **given}


def _wait(definition: ProcessDefinition, step: WaitStep, following: str) -> Node:
    async def wait(state: RunState, runtime: Runtime[StepContext]) -> Command[str]:
        ctx = runtime.context
        visit = _visit(state, step, definition)
        delay = step.delay
        woken: dict[str, Any] = interrupt(
            {
                "type": "wait",
                "step": step.id,
                "visit": visit,
                "event": step.event,
                "pays": step.pays is not None,
                "seconds": delay.total_seconds() if delay else None,
            }
        )
        data: dict[str, Any] = {step.output: woken.get("data")} if step.output else {}
        noted: dict[str, Any] = {}
        kept = state.get("data", {})
        if step.pays and isinstance(kept.get(step.pays), str) and woken.get("data") is not None:
            payments = woken.get("payments") or [woken["data"]]
            before = kept.get(step.filled[0])
            paid, uncounted = _paid(kept[step.pays], before, payments)
            if paid is not None:
                owed = _left(kept[step.pays], paid)
                data |= dict(zip(step.filled, (paid, owed), strict=True))
                noted = {"paid": paid, "owed": owed, **_came(kept[step.pays], before, paid)}
            if uncounted:
                noted["uncounted"] = uncounted
        ctx.log.append(_entry(step, visit, "done", woken_by=woken.get("by"), **noted))
        update: dict[str, Any] = {"visits": {step.id: visit}}
        if data:
            update["data"] = data
        return Command(goto=following, update=update)

    return wait


def _paid(due: str, before: Any, events: list[Any]) -> tuple[str | None, list[str]]:
    """What payment events make of the amount ``due``, paid ``before`` (None: nothing
    yet): the total paid so far, in its currency (None while nothing is), and what each
    event that counts for nothing says (see ``payment_amount``: one kept before such a
    payment was refused). An event that names no amount pays it all, as any payment did
    before amounts were compared."""
    owed = Money.read(due)
    kept = Money.read(before) if isinstance(before, str) else None
    total = kept.amount if kept is not None else None
    # An amount owed in no currency is paid in the one its first payment names, if any:
    # $1,000 and then €1,000 are no 2,000.00.
    currency = owed.currency or (kept.currency if kept is not None else None)
    uncounted = []
    for event in events:
        try:
            came = payment_amount(event, currency)
        except UncountedPayment as exc:
            uncounted.append(exc.said)
            continue
        if came is None:
            total = owed.amount
            break
        currency = currency or _currency_named(event)
        total = (total or Decimal(0)) + came
    return (None if total is None else str(Money(total, currency))), uncounted


def _currency_named(event: Any) -> str | None:
    """The currency a payment ``payment_amount`` counted names, when steward writes it."""
    named = event.get("currency")
    code = currency_code(named) if isinstance(named, str) else None
    try:
        return Money.read(str(event.get("amount")).strip(), code).currency
    except ValueError:
        return None


def _came(due: str, before: Any, paid: str) -> dict[str, str]:
    """What a wake paid of the amount ``due``, paid ``before``, to come to ``paid`` in
    all ("came"), and how much more than it was owed that is ("over"), when it is: a
    mistyped 25000 of 2,500 still ends the run as paid, and is said."""
    owed, total = Money.read(due), Money.read(paid)
    currency = owed.currency or total.currency
    earlier = Money.read(before).amount if isinstance(before, str) else Decimal(0)
    noted = {"came": str(Money(total.amount - earlier, currency))}
    if total.amount > owed.amount:
        noted["over"] = str(Money(total.amount - owed.amount, currency))
    return noted


def _left(due: str, paid: str) -> str:
    """What is left of the amount ``due`` once ``paid`` is paid, nothing below nothing."""
    owed, total = Money.read(due), Money.read(paid)
    left = max(owed.amount - total.amount, Decimal(0))
    return str(Money(left, owed.currency or total.currency))  # as paid, when owed in none


def payment_amount(event: Any, currency: str | None) -> Decimal | None:
    """The amount an event's ``amount`` (and ``currency``, if it names it apart: "eur")
    pays of one owed in ``currency`` (in any, when None); None when it names no amount.
    One steward cannot set against what is owed raises UncountedPayment, being neither
    a part of it nor all of it: an amount it cannot read ("1.000", "-500";
    UnreadableAmount), one of nothing ("0"; NothingPaid), one in another currency,
    steward converting none (PaymentInAnotherCurrency), or one whose amount names a currency and its
    ``currency`` another ("€1,000" and "USD"; PaymentInTwoCurrencies)."""
    given = event.get("amount") if isinstance(event, dict) else None
    if given is None:
        return None
    if not isinstance(given, str | int | float) or isinstance(given, bool):
        raise UnreadableAmount(given)
    named = event.get("currency")
    code = currency_code(named) if isinstance(named, str) else None
    try:
        paid = Money.read(str(given).strip(), code)
    except ValueError:
        raise UnreadableAmount(given) from None
    apart = named.strip() if isinstance(named, str) and named.strip() else None
    if apart is not None and paid.currency is not None and paid.currency != code:
        raise PaymentInTwoCurrencies(given, named)
    paid_in = paid.currency
    if paid_in is None and apart is not None:  # "CHF": none steward writes a sign for
        paid_in = apart if apart.isprintable() else repr(named)
    if currency is not None and paid_in is not None and paid_in != currency:
        raise PaymentInAnotherCurrency(given, cut(paid_in, 20), currency)
    if paid.amount == 0:
        raise NothingPaid(given)
    return paid.amount


def in_major_units(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with its ``amount``, given in minor units (250000), as steward reads an
    amount ("2,500.00"); UnreadableAmount when it is no whole number of them."""
    given = event.get("amount")
    if given is None:
        return event
    try:
        return {**event, "amount": str(Money.of_minor_units(given))}
    except ValueError:
        raise UnreadableAmount(given) from None


def _branch(definition: ProcessDefinition, step: BranchStep) -> Node:
    condition = Condition(step.condition)
    then, otherwise = _target(step.then) or END, _target(step.otherwise) or END
    money = definition.amounts

    async def branch(state: RunState, runtime: Runtime[StepContext]) -> Command[str]:
        visit = _visit(state, step, definition)
        chosen = condition.evaluate(_typed(_values(state, runtime.context, definition), money))
        target = then if chosen else otherwise
        runtime.context.log.append(
            _entry(step, visit, "done", condition=step.condition, held=chosen, went_to=target)
        )
        return Command(goto=target, update={"visits": {step.id: visit}})

    return branch


def _typed(values: dict[str, Any], money: list[str]) -> dict[str, Any]:
    """``values`` with each amount (a money input, or what a payment filled) as a number
    (kept as text, "€5,000.00", so that a card shows it with its currency), for a
    condition to compare with ``>= 1000``."""
    amounts = {
        name: Money.read(values[name]).amount for name in money if isinstance(values.get(name), str)
    }
    return {**values, **amounts}
