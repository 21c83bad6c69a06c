"""The process engine: starts runs, stops them at gates, resumes them on decisions.

Each run is a LangGraph thread (``thread_id`` = run id) on the durable checkpointer.
The ledger decides: an approval is resumed only by the one caller whose decision was
recorded first, and every change of a run's state commits with its audit event.

Durability: nothing before a gate has effects and every effect is guarded by its own
durable idempotency record, so a run persists its checkpoint when it stops (at a gate,
a wait, or the end: LangGraph's ``durability="exit"``) instead of after every step.
After a crash, ``recover()`` continues each run from its last checkpoint, replaying a
decision the ledger already holds. A run whose stop the ledger could not record while
the process lives (the database failed or was down) stays running, its checkpoint
where it was; ``resume_stalled()`` continues it the same way once the ledger takes
writes again.

For the same reason a run's start and a decision commit without waiting for the disk:
the run goes on at once to a durable write — an effect's idempotency record, or the
record of where it stopped — and that write puts every commit before it on disk too,
before anything acts on them or the operator is answered. Only a read in that moment
(a /runs elsewhere) can show them early; a decision that lost to one syncs before it
says so. A chat channel tells the operator that a run started before its first stop
(graph/front_door.py): the start commits with the delivery's done mark, so a power cut
that undid it has the message handled again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from time import monotonic
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.graph import END
from langgraph.types import Command, Interrupt, StateSnapshot

from connectors.base import ConnectorError
from graph.catalog import Catalog
from graph.compensation import GATE as UNDO_GATE
from graph.compensation import undo_definition, undo_run_id, visit_of
from graph.compiler import (
    Graph,
    acted_on_its_approval,
    compile_definition,
    in_major_units,
    payment_amount,
    still_owed,
)
from graph.conditions import Condition
from graph.definitions import (
    CORRECTION,
    UNDOES,
    ActionStep,
    AgentStep,
    ApprovalStep,
    BranchStep,
    Compensation,
    ProcessDefinition,
    WaitStep,
)
from graph.drafting import Drafter
from graph.effects import EffectGuard
from graph.errors import (
    DecisionForAnotherGate,
    InvalidState,
    NotFound,
    OfferedBefore,
    StewardError,
    UncountedPayment,
)
from graph.ids import new_approval_id, new_run_id
from graph.inputs import InputError, Money
from graph.remembering import entity_of
from graph.routing import format_argument
from graph.state import RunState, StepContext
from graph.templating import placeholders, render
from memory.checkpoints import LedgerSqliteSaver
from memory.ledger import (
    ENDINGS,
    LEASE,
    NEVER,
    Approval,
    ApprovalStatus,
    IdempotencyRecord,
    KeptEvent,
    Ledger,
    LedgerTx,
    NewAuditEvent,
    Run,
    RunStatus,
    RunTakenOver,
    StepEntry,
    Timer,
    ledger_down,
    storable,
    utcnow,
)
from memory.ledger.ledger import decide as record_decision
from memory.ledger.ledger import expiry_key

Durability = Literal["exit", "async", "sync"]
_Decided = tuple[Approval | None, bool, Run | None]  # as the ledger's decide returns it
# What an expiry did: nothing (the gate was decided), asked again (the approval), or a
# decision won, its checkpoint read ahead.
_Expired = Approval | tuple[_Decided, CheckpointTuple | None] | None
# A run in these may yet wait for an event: one delivered early is kept for it.
EXPECTING = (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED, RunStatus.FAILED)
log = logging.getLogger(__name__)

RECURSION_LIMIT = 200
STALLED_FIRST_RETRY = 5.0  # seconds; doubled after every failed resume of a stalled run
STALLED_LAST_RETRY = 300.0


class InputProblem(StewardError):
    def __init__(
        self,
        process: str,
        missing: list[str],
        errors: list[InputError],
        unknown: str | None = None,
        known: list[str] | None = None,
    ) -> None:
        self.missing = missing
        self.errors = errors
        parts = (
            [f"no input {unknown!r}; its inputs are {', '.join(known or [])}"] if unknown else []
        )
        parts += [str(e) for e in errors]
        if missing:
            parts.append("missing " + ", ".join(missing))
        self.problems = "; ".join(parts)  # without the process's name
        super().__init__(f"{process}: {self.problems}")


@dataclass(frozen=True)
class RunView:
    """A run as it stands, with the approval it waits for, if any."""

    run: Run
    approval: Approval | None = None


@dataclass(frozen=True)
class Decision:
    approval: Approval
    decided_now: bool  # False: someone decided first, and nothing changed
    view: RunView | None = None


@dataclass
class _Compiled:
    definition: ProcessDefinition
    graph: Graph


class RunLocks:
    """One lock per run, kept only while someone holds it or waits for it: a steward
    that has run a million runs keeps no million locks."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, run_id: str) -> AsyncIterator[None]:
        lock, users = self._held.get(run_id) or (asyncio.Lock(), 0)
        self._held[run_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._held[run_id]
            if users == 1:
                del self._held[run_id]
            else:
                self._held[run_id] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._held)


@dataclass(frozen=True)
class _Stalled:
    """A run whose stop could not be recorded: as the ledger had it then (running, last
    changed at ``updated_at``), and when to resume it."""

    updated_at: datetime
    wait: float  # seconds between the noting and the next try
    due: float  # that try, on the monotonic clock

    @classmethod
    def tried_in(cls, wait: float, updated_at: datetime) -> _Stalled:
        return cls(updated_at, wait, monotonic() + wait)

    @property
    def delay(self) -> float:
        """The wait before the try after this one, should this one fail."""
        return min(self.wait * 2, STALLED_LAST_RETRY)

    def left_as(self, run: Run) -> bool:
        """Whether ``run`` is still as its stall left it: running, unchanged since."""
        return run.status is RunStatus.RUNNING and run.updated_at == self.updated_at


@dataclass
class ProcessEngine:
    ledger: Ledger
    checkpointer: BaseCheckpointSaver[str]
    catalog: Catalog
    effects: EffectGuard
    drafter: Drafter
    durability: Durability = "exit"
    zone: tzinfo = UTC  # STEWARD_TIMEZONE: the clock a ``future`` input is read on
    currency: str | None = None  # STEWARD_CURRENCY: an amount's when it names none
    _compiled: dict[str, _Compiled] = field(default_factory=dict)
    _locks: RunLocks = field(default_factory=RunLocks)
    _stalled: dict[str, _Stalled] = field(default_factory=dict)  # by run

    def _now(self) -> datetime:
        """Now on the operator's clock."""
        return utcnow().astimezone(self.zone)

    async def setup(self) -> None:
        """Records every loadable definition version, so runs can always reload theirs."""
        for definition in self.catalog:
            source = self.catalog.sources.get(definition.name)
            await self.ledger.save_definition(
                self.catalog.versions[definition.name],
                definition.name,
                definition.body(),
                str(source or ""),
            )

    def definition(self, name: str) -> ProcessDefinition:
        definition = self.catalog.get(name)
        if definition is None:
            skipped = [p for p in self.catalog.problems if p.file.stem == name]
            if skipped:  # the operator's own file, which could not be read
                raise NotFound(
                    f"no process named {name!r}: {skipped[0].file.name} was skipped at the "
                    f"start ({skipped[0]}); steward reads it again at its next start"
                )
            known = ", ".join(d.name for d in self.catalog)
            raise NotFound(f"no process named {name!r}; try one of: {known}")
        return definition

    def read_input(self, definition: ProcessDefinition, name: str, raw: Any) -> Any:
        """One input of ``definition`` as a run takes it, on the operator's clock and in
        STEWARD_CURRENCY; raises InputError."""
        return definition.read_input(name, raw, self._now(), self.currency)

    def validate_inputs(self, definition: ProcessDefinition, raw: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        errors: list[InputError] = []
        unknown = sorted(set(raw) - set(definition.inputs))
        if unknown:
            raise InputProblem(definition.name, [], [], unknown[0], list(definition.inputs))
        raw = {name: value for name, value in raw.items() if not definition.left_out(name, value)}
        for name, spec in definition.inputs.items():
            if name in raw:
                try:
                    values[name] = self.read_input(definition, name, raw[name])
                except InputError as exc:
                    errors.append(exc)
            elif spec.default is not None:
                values[name] = spec.default_for(values)
        missing = [
            n
            for n, s in definition.inputs.items()
            if s.required and n not in values and n not in raw
        ]
        if errors or missing:
            raise InputProblem(definition.name, missing, errors)
        return storable(values)

    # -- starting and deciding ---------------------------------------------------------

    async def start(
        self,
        process: str,
        inputs: dict[str, Any],
        started_by: str,
        reply_to: dict[str, Any] | None = None,
        recording: Callable[[Run], Awaitable[None]] | None = None,
    ) -> RunView:
        """Starts a run and runs it to its first stop.

        ``recording`` is called with the run just before its record is written: what it
        defers in the ledger rides that write, and what it returns is awaited once that
        has committed, before the run goes on (the word that the run started, on its way).
        """
        definition = self.definition(process)
        values = self.validate_inputs(definition, inputs)
        version = self.catalog.versions[definition.name]
        run = _new_run(new_run_id(), definition, version, values, started_by, reply_to)
        recorded = recording(run) if recording is not None else None
        started = {"process": run.process, "inputs": values}
        audit = NewAuditEvent(started_by, "run.started", run.id, started)
        return await self._begin(run, audit, recorded)

    async def _begin(
        self,
        run: Run,
        audit: NewAuditEvent,
        recorded: Awaitable[None] | None = None,
        first: Callable[[LedgerTx], None] | None = None,
    ) -> RunView:
        """Records a new run and its audit event together, then, once ``recorded`` is
        done, runs it to its first stop. ``first`` checks, in that transaction, that the
        run may start (raising if not)."""

        about = entity_of(run.inputs)

        def record_start(tx: LedgerTx) -> None:
            if first is not None:
                first(tx)
            tx.insert_run(run)
            tx.audit(audit, at=run.created_at)
            if about is not None:
                tx.note_entity(about)

        await self.ledger.write(record_start, durable=False)  # see the module's docstring
        async with self._locks.hold(run.id):
            if recorded is not None:
                await recorded
            return await self._advance(run, {"data": dict(run.inputs)})

    async def decide(
        self,
        approval_id: str,
        approve: bool,
        actor: str,
        reason: str | None = None,
        edited_text: str | None = None,
    ) -> Decision:
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
        reason, edited_text = storable(reason), storable(edited_text)

        def check(approval: Approval, run: Run) -> None:
            if run.status is RunStatus.PAUSED:
                raise _paused(run.id)
            if edited_text is not None and not approval.editable:
                raise InvalidState(f"approval {approval_id} has no text to edit")

        def record(tx: LedgerTx) -> tuple[_Decided, CheckpointTuple | None]:
            if approve and (lapsed := self._lapsed(tx, approval_id)) is not None:
                return lapsed
            return self._read_ahead(
                tx, record_decision(tx, approval_id, status, actor, reason, edited_text, check)
            )

        # Not durable: see the module's docstring.
        decided, latest = await self.ledger.write(record, durable=False)
        if decided[0] is None:
            raise NotFound(f"no approval {approval_id!r}", "approvals")
        return await self._decided(decided, latest)

    def _lapsed(
        self, tx: LedgerTx, approval_id: str
    ) -> tuple[_Decided, CheckpointTuple | None] | None:
        """A gate rejected at its expiry, approved after it but before its timer fired
        (a tick later, or once steward is back up): expired now, as the timer would."""
        approval = tx.get_approval(approval_id)
        if approval is None or not approval.is_pending or approval.on_expiry != "reject":
            return None
        if approval.expires_at > utcnow():
            return None
        run = tx.lock_run(approval.run_id)
        if run is None or run.status is RunStatus.PAUSED:  # its deadline moves at resume
            return None
        expired = self._expire(tx, approval_id)
        # None: decided while the run's lock was awaited (its timer, say); told as any
        # decision that came second.
        return expired if isinstance(expired, tuple) else None

    async def expire(self, approval_id: str) -> Decision | None:
        """Applies a pending gate's expiry policy, as its timer does: rejects it, or asks
        again (a decision not won, with its run's view). None when it was decided."""
        expired = await self.ledger.write(lambda tx: self._expire(tx, approval_id), durable=False)
        return await self._expired(expired)

    def _expire(self, tx: LedgerTx, approval_id: str) -> _Expired:
        """In one transaction with what fires it: a crash before it commits leaves the
        timer due, and one after leaves the run running, which recovery moves on."""
        approval = tx.get_approval(approval_id)
        if approval is None or not approval.is_pending:
            return None
        if approval.on_expiry == "escalate":
            data = {"run": approval.run_id}
            tx.audit(NewAuditEvent("steward", "approval.escalated", approval_id, data))
            return approval
        reason = "nobody answered before it expired"
        decided = record_decision(tx, approval_id, ApprovalStatus.EXPIRED, "steward", reason)
        return self._read_ahead(tx, decided)

    async def _expired(self, expired: _Expired) -> Decision | None:
        if expired is None:
            return None
        if isinstance(expired, Approval):  # escalated: asked again where its run was asked
            return Decision(expired, False, await self.view(expired.run_id))
        return await self._decided(*expired)

    def _read_ahead(
        self, tx: LedgerTx, decided: _Decided
    ) -> tuple[_Decided, CheckpointTuple | None]:
        """The run of a decision won is resumed next: its checkpoint is read now, in the
        transaction that decided it, instead of in one of its own."""
        _, won, run = decided
        if won and run is not None and isinstance(self.checkpointer, LedgerSqliteSaver):
            return decided, self.checkpointer.read_latest(tx.conn, run.id)
        return decided, None

    async def _decided(self, decided: _Decided, latest: CheckpointTuple | None) -> Decision:
        """Resumes the run of a decision this caller won; the ledger already holds it."""
        approval, won, run = decided
        assert approval is not None and run is not None
        if not won:
            # The winner's decision may not be on disk yet (it waits for its run's next
            # durable write), and this caller is about to tell someone of it.
            await self.ledger.sync(everyone=True)
            return Decision(approval, False)
        # A cancel that lands before or during this resume stands: the ledger refuses
        # effects for a cancelled run and never moves it out of cancelled.
        try:
            with self._resuming(run.id, latest):
                async with self._locks.hold(run.id):
                    view = await self._advance(run, Command(resume=_decision_payload(approval)))
        except DecisionForAnotherGate as exc:  # another process resumed it first
            log.warning("run %s: %s; it stays where that resume left it", run.id, exc)
            view = await self.view(run.id)
        return Decision(approval, True, view)

    def _resuming(
        self, run_id: str, latest: CheckpointTuple | None
    ) -> AbstractContextManager[None]:
        if latest is None or not isinstance(self.checkpointer, LedgerSqliteSaver):
            return nullcontext()  # nothing read ahead: the resume reads it
        return self.checkpointer.resuming(run_id, latest)

    # -- waits -------------------------------------------------------------------------

    async def fire_timer(self, timer: Timer, worker: str) -> RunView | Decision | None:
        """Runs a due timer once; None when it is not this worker's to run (now)."""
        if timer.kind == "wait" and timer.run_id:
            woken = {"by": "timer", "data": None}
            return await self._wake(timer.run_id, timer.id, worker, woken, None)
        if timer.kind == "approval_expiry":

            def expire(tx: LedgerTx) -> _Expired:
                run = tx.lock_run(timer.run_id) if timer.run_id else None
                if run is not None and run.status is RunStatus.PAUSED:
                    # A paused run's gate does not expire until it resumes, which sets
                    # its time again: out of the way of the timers due meanwhile.
                    tx.set_aside_timer(timer.id, NEVER)
                    return None
                if not tx.claim_timer(timer.id, worker, None):
                    return None
                return self._expire(tx, str(timer.payload["approval"]))

            return await self._expired(await self.ledger.write(expire, durable=False))
        await self.ledger.write(lambda tx: tx.claim_timer(timer.id, worker, None))
        return None

    async def expecting(self, event: str) -> list[Run]:
        """The runs that wait for ``event`` now or may later: those not ended whose
        process has a wait for it."""
        runs = []
        for run in await self.ledger.list_runs(list(EXPECTING), limit=10_000):
            try:
                definition = (await self._compiled_for(run.version)).definition
            except Exception:  # one run's definition unread holds up no other's event
                log.exception("run %s: its definition %s cannot be read", run.id, run.version)
                continue
            if any(isinstance(s, WaitStep) and s.event == event for s in definition.steps):
                runs.append(run)
        return runs

    async def waits_behind(self, run: Run, event: str) -> list[str]:
        """The waits for ``event`` that ``run`` went past, when it comes to none from
        where it stands; empty when it may (or it stands at no step yet)."""
        compiled = await self._compiled_for(run.version)
        at = (await compiled.graph.aget_state(_config(run.id))).next
        steps = compiled.definition.steps
        waits = [s for s in steps if isinstance(s, WaitStep) and s.event == event]
        if not at or not {s.id for s in steps}.issuperset(at):
            return []
        if any(step in waits for step in compiled.definition.ahead(at)):
            return []
        return [step.id for step in waits]

    async def offer_event(
        self,
        run_id: str,
        event: str,
        data: dict[str, Any],
        actor: str,
        delivery: int | None = None,
        minor_units: bool = False,
    ) -> RunView | None:
        """Wakes a run waiting for ``event``; or, when it does not wait for it yet (its
        reminder waits for approval, say), keeps the event for its wait to take: None.
        External data never decides anything else. A payment for a wait that it pays
        (its ``amount`` in ``minor_units``, 250000 for 2,500.00, when the source says so),
        which steward cannot set against what is owed (an amount it cannot read, one in
        another currency), is neither: it is audited, and UncountedPayment says why; the
        run waits on. The ``delivery`` (an inbox item) that brought it is noted offered to
        the run in the same transaction, and is never offered to it again: OfferedBefore."""
        owing = await self._run(run_id)
        if owing.status not in EXPECTING:  # checked again as it is offered: it may end meanwhile
            raise InvalidState(f"run {run_id} has ended: it waits for nothing")
        inputs, definition = owing.inputs, (await self._compiled_for(owing.version)).definition
        paid = [
            step.pays
            for step in definition.steps
            if isinstance(step, WaitStep) and step.event == event and step.pays
        ]
        try:
            if paid and minor_units:
                data = in_major_units(data)
            for name in paid:
                owed = (owing.owed or {}).get(name)  # in its first payment's currency
                payment_amount(data, _currency_of(inputs.get(name)) or _currency_of(owed))
        except UncountedPayment as exc:  # what it comes to for this run: told once
            said = {"event": event, "said": exc.said}
            uncounted = NewAuditEvent(actor, "run.payment_uncounted", run_id, said)

            def told_once(tx: LedgerTx) -> bool:
                if delivery is not None and not tx.note_offer(delivery, run_id):
                    return False
                tx.audit(uncounted)
                return True

            if not await self.ledger.write(told_once):
                raise OfferedBefore(
                    f"run {run_id} was offered delivery {delivery} before"
                ) from None
            raise
        now = utcnow()
        woken = {"by": f"event:{event}", "data": data}

        def offer(tx: LedgerTx) -> Run | None:
            run = tx.lock_run(run_id)
            if run is None or run.status not in EXPECTING:
                raise InvalidState(f"run {run_id} has ended: it waits for nothing")
            if delivery is not None and not tx.note_offer(delivery, run_id):
                raise OfferedBefore(f"run {run_id} was offered delivery {delivery} before")
            waiting = tx.open_wait(run_id)
            audit = NewAuditEvent(actor, "run.event", run_id, {"event": event})
            if (
                run.status is RunStatus.WAITING
                and waiting is not None
                and waiting.payload.get("event") == event
                and _claim_wake(tx, run_id, waiting.id, actor, woken, audit, now)
            ):
                return replace(run, status=RunStatus.RUNNING, updated_at=now)
            tx.keep_event(run_id, KeptEvent(event, data, actor, now))
            tx.audit(NewAuditEvent(actor, "run.event_kept", run_id, {"event": event}), at=now)
            return None

        async with self._locks.hold(run_id):
            run = await self.ledger.write(offer)
            if run is None:
                return None
            return await self._advance(run, Command(resume=woken))

    async def record_payment(self, run_id: str, amount: str | None, actor: str) -> RunView | None:
        """A payment the operator records by hand (a cheque, a transfer they saw): offered
        to the run as the event its wait that pays a money input waits for, ``amount`` as
        such an event's (None: all that is owed), and so counted, kept or refused
        (UncountedPayment, audited) as a webhook's payment is."""
        run = await self._run(run_id)
        definition = (await self._compiled_for(run.version)).definition
        events = [s.event for s in definition.steps if isinstance(s, WaitStep) and s.pays]
        if not events or events[0] is None:
            raise InvalidState(f"run {run_id} ({run.process}) waits for no payment")
        data: dict[str, Any] = {"recorded_by": actor}
        if amount is not None:
            data["amount"] = amount
        return await self.offer_event(run_id, events[0], data, actor)

    async def _wake(
        self,
        run_id: str,
        timer_id: int,
        worker: str,
        woken: dict[str, Any],
        audit: NewAuditEvent | None,
    ) -> RunView | None:
        """Claims a wait's timer and moves the run on in one transaction, then resumes it.

        A paused run is not woken (its timer stays due); a crash after the claim is
        replayed by ``recover()`` from the wake kept with the timer.
        """

        def claim(tx: LedgerTx) -> Run | None:
            run = tx.lock_run(run_id)  # before its timer: as every write that moves both
            if run is None or run.status is RunStatus.PAUSED:
                return None
            if run.status is not RunStatus.WAITING:
                tx.claim_timer(timer_id, worker, None)  # cancelled or finished: retire it
                return None
            now = utcnow()
            if not _claim_wake(tx, run_id, timer_id, worker, woken, audit, now):
                return None
            return replace(run, status=RunStatus.RUNNING, updated_at=now)  # as now stored

        run = await self.ledger.write(claim)
        if run is None:
            return None
        async with self._locks.hold(run_id):
            return await self._advance(run, Command(resume=woken))

    # -- operator controls -------------------------------------------------------------

    async def compensate(
        self,
        run_id: str,
        step_id: str,
        actor: str,
        reply_to: dict[str, Any] | None = None,
    ) -> RunView:
        """Starts the run that undoes an action which has happened: its own gate first.
        A step is undone once: a second call finds the first undo run."""
        run = await self._run(run_id)
        compiled = await self._compiled_for(run.version)
        definition = compiled.definition
        try:
            step = definition.step(step_id)
        except KeyError:
            raise NotFound(f"run {run_id} ({run.process}) has no step {step_id!r}") from None
        if not isinstance(step, ActionStep) or not isinstance(step.compensate, Compensation):
            by_hand = step.undo_summary if isinstance(step, ActionStep) else None
            if isinstance(step, ActionStep) and not await self.ledger.effects_of(run_id, step_id):
                raise _not_acted(run_id, step_id)
            if by_hand:  # "send a correction to the {audience} list": each list it went to
                by_hand = await self._by_hand(compiled, run, step_id, by_hand)
            raise InvalidState(
                f"step {step_id} has no compensating action I can run"
                + (f"; to undo it by hand: {by_hand}" if by_hand else "")
            )
        key = await self._to_undo(run, step_id)
        visit = visit_of(key)
        undo_id = undo_run_id(run_id, step_id, visit)
        undo = undo_definition(definition, step)
        version = undo.version
        await self.ledger.save_definition(
            version, undo.name, undo.body(), f"compensation of {definition.name}.{step_id}"
        )
        # The values the action acted with: a replay since may have changed them.
        data = {**run.inputs, **await self._data_of_visit(compiled, run_id, step_id, visit)}
        data["run_id"] = run_id
        data[UNDOES] = key
        values = {name: data[name] for name in undo.inputs if data.get(name) is not None}
        values[UNDOES] = data[UNDOES]  # the run says what it undoes
        if step.compensate.text is not None:
            values[CORRECTION] = render(step.compensate.text, data)
        undo_run = _new_run(undo_id, undo, version, values, actor, reply_to)
        audit = NewAuditEvent(actor, "run.compensating", run_id, {"step": step_id, "run": undo_id})

        def once(tx: LedgerTx) -> None:
            """An /undo said at once elsewhere (the shell, another chat) started it first."""
            tx.lock_run(run_id)  # one undo of a step at a time, on PostgreSQL too
            if (earlier := tx.get_run(undo_id)) is not None:
                raise InvalidState(
                    f"step {step_id} of run {run_id} is being undone: run {undo_id} is "
                    f"{earlier.status.value}"
                )

        return await self._begin(undo_run, audit, first=once)

    async def _by_hand(self, compiled: _Compiled, run: Run, step_id: str, how: str) -> str:
        """How to undo by hand what a step did, with the values of each time it acted."""
        effects = await self.ledger.effects_of(run.id, step_id)
        if not effects:
            raise _not_acted(run.id, step_id)
        acted = [e for e in effects if e.status == "done"]
        told = []
        for effect in reversed(acted):  # the first first
            data = await self._data_of_visit(compiled, run.id, step_id, visit_of(effect.key))
            told.append(render(how, {**run.inputs, **data}))
        if not told:
            state = (await compiled.graph.aget_state(_config(run.id))).values
            told.append(render(how, {**run.inputs, **state.get("data", {})}))
        return "; ".join(dict.fromkeys(told))

    async def _to_undo(self, run: Run, step_id: str) -> str:
        """The key of the step's effect undone next: the latest that acted, once the
        undo of every later one is done (a replay makes a step act again)."""
        run_id = run.id
        effects = await self.ledger.effects_of(run_id, step_id)
        acted = [e for e in effects if e.status == "done"]
        if not acted and any(e.status == "started" for e in effects):  # it may have acted
            stopped_there = run.status is RunStatus.FAILED and run.error_class == "uncertain"
            raise InvalidState(
                f"step {step_id} of run {run_id} may have acted: its attempt's outcome is "
                "not known"
                + (f"; if it did, /confirm {run_id}, then undo it" if stopped_there else "")
            )
        if not acted:
            raise _not_acted(run_id, step_id)
        undone = None
        for effect in acted:
            visit = visit_of(effect.key)
            undo_id = undo_run_id(run_id, step_id, visit)
            earlier = await self.ledger.get_run(undo_id)
            if earlier is None:
                return effect.key
            if earlier.status in (RunStatus.CANCELLED, RunStatus.FAILED):
                raise InvalidState(
                    f"step {step_id} of run {run_id} was not undone: its undo (run {undo_id}) "
                    f"was {_ended(earlier)}; "
                    f"/replay {undo_id} {UNDO_GATE} asks for it again"
                )
            if earlier.status is not RunStatus.SUCCEEDED:
                raise InvalidState(
                    f"step {step_id} of run {run_id} is being undone: run {undo_id} is "
                    f"{earlier.status.value}"
                )
            undone = undone or undo_id
        raise InvalidState(f"step {step_id} of run {run_id} is undone already: run {undone}")

    @staticmethod
    async def _data_of_visit(
        compiled: _Compiled, run_id: str, step_id: str, visit: int
    ) -> dict[str, Any]:
        """The run's values once ``step_id`` had acted on ``visit``: the first checkpoint
        that counts that visit (the latest state, should none be found)."""
        found: dict[str, Any] | None = None
        async for snapshot in compiled.graph.aget_state_history(_config(run_id)):
            if snapshot.values.get("visits", {}).get(step_id) == visit:
                found = snapshot.values.get("data", {})  # newest first: the last is the first
            elif found is not None:
                break
        if found is None:
            found = (await compiled.graph.aget_state(_config(run_id))).values.get("data", {})
        return dict(found)

    async def replay(
        self, run_id: str, from_step: str, changes: dict[str, str], actor: str
    ) -> RunView:
        """Runs a run again from ``from_step``, with changed inputs; the earlier
        checkpoints stay in its history. Every step from there runs as a new visit, so a
        gate asks again before its action acts again; an action that already acted on
        its approval is refused rather than repeated, and one is never replayed with
        inputs its approval did not show. A decision that lands first goes first. Until
        the replay first stops, the run says it replays (``Run.replaying``): cut short,
        it replays again, and never goes on from the state before it."""
        async with self._locks.hold(run_id):
            run = await self._run(run_id)
            _may_replay(run)
            compiled = await self._compiled_for(run.version)
            definition = compiled.definition
            if from_step not in {step.id for step in definition.steps}:
                known = ", ".join(step.id for step in definition.steps)
                raise NotFound(f"{run.process} has no step {from_step!r}; its steps: {known}")
            values = self._changed_inputs(definition, changes)
            values |= _defaults_again(definition, run.inputs, values)
            if any(s.pays in values for s in definition.steps if isinstance(s, WaitStep)):
                state = (await compiled.graph.aget_state(_config(run_id))).values
                _paid_in_its_currency(definition, state.get("data", {}), values, run_id)
            step = definition.step(from_step)
            if values and isinstance(step, ActionStep):
                raise InvalidState(
                    f"{from_step} would act on inputs its approval never showed: "
                    f"/replay {run_id} {step.gate} with the changes, so that it asks again"
                )
            taken = [entry.step_id for entry in await self.ledger.run_steps(run_id)]
            if isinstance(step, AgentStep) and (shown := _shown_instead(definition, step, taken)):
                again = " ".join(format_argument(k, v) for k, v in changes.items())
                stale = _drafted_before(definition, shown.id, set(values), taken)
                raise InvalidState(
                    f"{from_step} is not the draft run {run_id} shows (its {step.output} is "
                    f"{shown.id}'s, as its steps chose): "
                    f"/replay {run_id} {(stale or shown).id} {again}".rstrip()
                    + ", so that it drafts again"
                )
            if stale := _drafted_before(definition, from_step, set(values), taken):
                again = " ".join(format_argument(k, v) for k, v in changes.items())
                did = "drafted its text with"
                if isinstance(stale, BranchStep):
                    did = "chose its draft by"
                raise InvalidState(
                    f"{stale.id} {did} the inputs you change, before "
                    f"{from_step}: /replay {run_id} {stale.id} {again}, so that it drafts again"
                )
            if isinstance(step, ActionStep):
                state = (await compiled.graph.aget_state(_config(run_id))).values
                decided = state.get("decisions", {}).get(step.gate) or {}
                if decided.get("status") != "approved":  # never asked, rejected, cancelled
                    raise InvalidState(
                        f"{from_step} has no approval to act on: /replay {run_id} {step.gate}, "
                        "so that it asks"
                    )
                if acted_on_its_approval(state, step):
                    raise InvalidState(
                        f"{from_step} acted on its approval already, and each approval "
                        f"allows one action: /replay {run_id} {step.gate}, so that it asks again"
                    )
            inputs = {**run.inputs, **values}

            def record(tx: LedgerTx) -> Run:
                locked = _found(tx.lock_run(run_id), run_id)
                _may_replay(locked)  # a decision or a pause since the check above goes first
                cancelled = tx.cancel_pending_approvals(run_id, actor)
                tx.cancel_timers(run_id)
                detail: dict[str, Any] = {
                    "from": from_step,
                    "changes": values,
                    "approvals": cancelled,
                }
                if values:  # what they were, for what the run did before (graph.remembering)
                    detail["before"] = {name: locked.inputs.get(name) for name in values}
                    detail["inputs_since"] = locked.inputs_since
                replayed = tx.audit(NewAuditEvent(actor, "run.replayed", run_id, detail))
                tx.update_run(
                    run_id,
                    status=RunStatus.RUNNING.value,
                    inputs=inputs,
                    inputs_since=replayed.seq if values else locked.inputs_since,
                    current_step=from_step,
                    error=None,
                    error_class=None,
                    replaying=from_step,
                )
                return _found(tx.get_run(run_id), run_id)

            replayed = await self.ledger.write(record)
            with self._stalls_if_the_ledger_fails(replayed):
                return await self._replay_from(replayed, values)

    def _decided_at_replayed_gate(self, tx: LedgerTx, run: Run) -> Approval | None:
        """A replay straight into a gate leaves its stop off LangGraph's state: the
        decision of that gate's last visit, if it has one."""
        step = run.current_step
        visit = _stop_visits(tx, run.id).get(step) if step is not None else None
        if step is None or visit is None:
            return None
        approval = tx.approval_for_gate(run.id, step, visit)
        if approval is None or approval.is_pending:
            return None
        return None if approval.status is ApprovalStatus.CANCELLED else approval

    async def _replay_from(
        self, run: Run, values: dict[str, Any], snapshot: StateSnapshot | None = None
    ) -> RunView:
        """Goes on with a replay the ledger has recorded: from ``run.current_step``, every
        gate and wait at a visit after any it stopped at before. The steps the run stopped
        or failed at are cleared first, so that none runs beside it (a failed action would
        act at once, before its gate asks again). Recovery calls this too, with the state
        it read, for a replay a crash cut short, and /retry for one whose first step
        failed."""
        compiled = await self._compiled_for(run.version)
        config = _config(run.id)
        snapshot = snapshot or await compiled.graph.aget_state(config)
        visits = await self.ledger.read(lambda tx: _stop_visits(tx, run.id))
        for pending in snapshot.interrupts:  # the open gate or wait is left behind
            step = pending.value["step"]
            visits[step] = max(visits.get(step, 0), pending.value["visit"])
        # Committed at once, in a handling too: the replay goes on from this state.
        with self.ledger.unbatched():
            await compiled.graph.aupdate_state(config, None, as_node=END)
            # A step that failed stays triggered (LangGraph keeps what sent it there, with
            # the failure): it is let go as if it had run and done nothing, or it would run
            # again beside the replay — an action would fail again, and the replay with it.
            for stale in (await compiled.graph.aget_state(config)).next:
                await compiled.graph.aupdate_state(config, None, as_node=stale)
        assert run.current_step is not None
        # How the run ended before (rejected at a gate, say) ends with the replay.
        update = {"data": values, "visits": visits, "outcome": ""}
        command = Command(goto=run.current_step, update=update)
        return await self._advance(run, command)

    def _changed_inputs(
        self, definition: ProcessDefinition, changes: dict[str, str]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in changes.items():
            spec = definition.inputs.get(name)
            if spec is None:
                raise InputProblem(definition.name, [], [], name, list(definition.inputs))
            try:
                values[name] = self.read_input(definition, name, raw)
            except InputError as exc:
                raise InputProblem(definition.name, [], [exc]) from None
        return storable(values)

    async def cancel(self, run_id: str, actor: str) -> Run:
        async with self._locks.hold(run_id):

            def record_cancel(tx: LedgerTx) -> Run:
                run = _found(tx.lock_run(run_id), run_id)
                if run.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED):
                    raise InvalidState(f"run {run_id} already {run.status.value}")
                cancelled = tx.cancel_pending_approvals(run_id, actor)
                tx.cancel_timers(run_id)
                ended = f"cancelled by {actor}"
                if run.status is RunStatus.FAILED and run.error:  # its failure stays told
                    ended += f" after it failed ({run.error_class}: {run.error})"
                tx.update_run(
                    run_id, status=RunStatus.CANCELLED.value, error=ended, error_class=None
                )
                data = {"approvals": cancelled, "error": ended}
                tx.audit(NewAuditEvent(actor, "run.cancelled", run_id, data))
                return _found(tx.get_run(run_id), run_id)

            return await self.ledger.write(record_cancel)

    async def pause(self, run_id: str, actor: str) -> Run:
        async with self._locks.hold(run_id):
            return await self._transition(run_id, RunStatus.WAITING, RunStatus.PAUSED, actor)

    async def resume(self, run_id: str, actor: str) -> RunView:
        async with self._locks.hold(run_id):
            woken: dict[str, Any] = {}
            run = await self._transition(
                run_id, RunStatus.PAUSED, RunStatus.WAITING, actor, woken=woken
            )
            if woken:  # an event came while it was paused: it goes on with it
                return await self._advance(run, Command(resume=woken))
            return await self.view(run_id)

    async def retry(self, run_id: str, actor: str) -> RunView:
        """Continues a failed run from its last checkpoint; done effects are not repeated.
        A run left mid-step by a steward gone (killed, with none beside it to take the run
        over) goes on here, as the next steward's start would move it on."""
        async with self._locks.hold(run_id):
            failed = await self._run(run_id)
            if failed.status is RunStatus.RUNNING:
                for left in await self.ledger.take_over_runs(own=False, run_id=run_id):
                    await self.ledger.audit(NewAuditEvent(actor, "run.retried", run_id))
                    with self._stalls_if_the_ledger_fails(left):
                        return await self._continue(left)
                raise InvalidState(  # "only a failed run can be retried" left it at that
                    f"run {run_id} is running: the steward moving it lives, or was stopped "
                    f"less than {LEASE.seconds} s ago; once it has been silent that long, "
                    f"/retry {run_id} takes the run over"
                )
            run = await self._transition(
                run_id, RunStatus.FAILED, RunStatus.RUNNING, actor, error=None, error_class=None
            )
            with self._stalls_if_the_ledger_fails(run):
                if failed.error_class == "uncertain":
                    await self.ledger.release_unfinished_effects(run_id, actor)
                return await self._continue(run)

    async def confirm(self, run_id: str, actor: str) -> RunView:
        """A run stopped as uncertain goes on as if its attempt succeeded: the operator
        found it happened (the email was in the sent mail), so it is not made again. Its
        output is what a real answer holds, as far as it is known (see
        ``EffectGuard.confirmed``)."""
        async with self._locks.hold(run_id):
            stopped = await self._run(run_id)
            if stopped.status is not RunStatus.FAILED or stopped.error_class != "uncertain":
                raise InvalidState(
                    f"run {run_id} did not stop as uncertain: nothing to confirm "
                    f"(it is {stopped.status.value})"
                )
            definition = (await self._compiled_for(stopped.version)).definition

            def as_answered(record: IdempotencyRecord) -> dict[str, Any]:
                step = definition.step(record.step_id)
                assert isinstance(step, ActionStep)
                return self.effects.confirmed(record, step.action, actor)

            await self.ledger.confirm_unfinished_effects(run_id, actor, as_answered)
            run = await self._transition(
                run_id, RunStatus.FAILED, RunStatus.RUNNING, actor, error=None, error_class=None
            )
            with self._stalls_if_the_ledger_fails(run):
                return await self._continue(run)

    async def recover(self, own: bool = True) -> list[RunView]:
        """Continues the runs left mid-step by a worker gone — one that died, or stopped
        before it could finish them — and (``own``, at a start) those a crashed process of
        this worker's id left. A run another worker moves while it lives is its own."""
        views = []
        for run in await self.ledger.take_over_runs(own):
            async with self._locks.hold(run.id):
                try:
                    try:
                        views.append(await self._continue(run))
                    except Exception as exc:  # one run's failure never stops a start
                        if ledger_down(exc) or isinstance(exc, RunTakenOver):
                            raise
                        log.exception("run %s could not go on after the crash", run.id)
                        views.append(await self._fail(run, exc, "error"))
                except RunTakenOver:
                    continue  # this worker looked gone meanwhile: the run is another's now
        return views

    async def view(self, run_id: str) -> RunView:
        run = await self._run(run_id)
        pending = await self.ledger.pending_approvals([run_id])
        return RunView(run, pending[0] if pending else None)

    # -- the one path every run takes --------------------------------------------------

    async def _continue(self, run: Run) -> RunView:
        compiled = await self._compiled_for(run.version)
        config = _config(run.id)
        snapshot = await compiled.graph.aget_state(config)
        if run.replaying is not None:  # cut short before it first stopped: from its start,
            # never from the state before it (a failed action would act on the old approval)
            return await self._replay_from(run, dict(run.inputs), snapshot)
        if not snapshot.values:
            return await self._advance(run, {"data": dict(run.inputs)})
        if snapshot.interrupts:
            pending = snapshot.interrupts[0]
            value = pending.value
            if value["type"] == "approval":
                approval = await self.ledger.approval_for_gate(
                    run.id, value["step"], value["visit"]
                )
                if approval is not None and approval.status is ApprovalStatus.CANCELLED:
                    return await self._replay_from(run, dict(run.inputs), snapshot)  # replayed
                if approval is not None and not approval.is_pending:
                    return await self._advance(run, Command(resume=_decision_payload(approval)))
            else:
                timer = await self.ledger.get_timer(_wait_key(run.id, value))
                if timer is not None and timer.status == "cancelled":
                    return await self._replay_from(run, dict(run.inputs), snapshot)  # replayed
                if timer is not None and "woken" in timer.payload:
                    return await self._advance(run, Command(resume=timer.payload["woken"]))
            stopped = await self._settle(run, compiled, dict(snapshot.values), [pending], [])
            return await self._went_on(*stopped)
        if snapshot.next:
            return await self._advance(run, None)
        if _cleared_by_replay(snapshot):  # nothing ran after it that LangGraph shows
            decided = await self.ledger.read(lambda tx: self._decided_at_replayed_gate(tx, run))
            if decided is not None:  # the replay stopped at its gate, since decided
                return await self._advance(run, Command(resume=_decision_payload(decided)))
            return await self._replay_from(run, dict(run.inputs), snapshot)  # crashed, or failed
        return await self._went_on(
            *await self._settle(run, compiled, dict(snapshot.values), [], [])
        )

    async def _advance(self, run: Run, command: Any) -> RunView:
        """Runs the graph to its next stop; the checkpoint commits with the stop's record.
        If the ledger cannot take that record (or the run's failure), the run stays
        running and is noted stalled, for ``resume_stalled``; any other error in
        recording it fails the run, visibly."""
        with self._stalls_if_the_ledger_fails(run):
            compiled = await self._compiled_for(run.version)
            context = StepContext(
                run_id=run.id, effects=self.effects, drafter=self.drafter, zone=self.zone
            )
            async with self.ledger.batching():
                try:
                    result = await compiled.graph.ainvoke(
                        command, _config(run.id), context=context, durability=self.durability
                    )
                except DecisionForAnotherGate:
                    raise  # nothing of it is kept: the run is where the other resume left it
                except (ConnectorError, StewardError) as exc:
                    kind = getattr(exc, "kind", "error")
                    return await self._fail(run, exc, kind, context.log)
                except Exception as exc:  # a bug or an outage: it fails visibly, nothing lost
                    return await self._fail(run, exc, "error", context.log)
                interrupts: list[Interrupt] = list(result.pop("__interrupt__", []))
                try:
                    stopped = await self._settle(run, compiled, result, interrupts, context.log)
                except Exception as exc:
                    if ledger_down(exc) or isinstance(exc, RunTakenOver):
                        raise
                    self.ledger.drop_droppable()  # a checkpoint of it may be what failed
                    return await self._fail(run, exc, "error")
        return await self._went_on(*stopped)

    async def _went_on(self, view: RunView, woken: dict[str, Any]) -> RunView:
        """A run that stopped at a wait and took the event kept for it goes on with it."""
        if woken:
            return await self._advance(view.run, Command(resume=woken))
        return view

    @contextmanager
    def _stalls_if_the_ledger_fails(self, run: Run) -> Iterator[None]:
        """Notes ``run`` — running, as the ledger has it now — stalled, for
        ``resume_stalled``, if what this wraps fails because the ledger is down."""
        try:
            yield
        except Exception as exc:
            if ledger_down(exc):
                stalled = _Stalled.tried_in(STALLED_FIRST_RETRY, run.updated_at)
                self._stalled.setdefault(run.id, stalled)
            raise

    async def resume_stalled(self) -> list[RunView]:
        """Continues each run whose stop could not be recorded, from its last checkpoint,
        as after a crash (its effects are not repeated: each has its idempotency record).
        A run that moved meanwhile (its stop was recorded after all, and it went on), or
        that another worker took over while the ledger was away from this one, is
        forgotten; one whose resume fails is tried again later, each time twice as late,
        up to STALLED_LAST_RETRY."""
        views: list[RunView] = []
        for run_id, stalled in list(self._stalled.items()):
            if monotonic() < stalled.due:
                continue
            try:
                async with self._locks.hold(run_id):
                    run = await self.ledger.get_run(run_id)
                    if run is not None and stalled.left_as(run) and await self.ledger.moves(run_id):
                        views.append(await self._continue(run))
            except RunTakenOver:
                pass  # forgotten: its new worker moves it
            except Exception as exc:
                delay = stalled.delay
                log.warning("run %s is stalled still (%s); next try in %.0f s", run_id, exc, delay)
                self._stalled[run_id] = _Stalled.tried_in(delay, stalled.updated_at)
            else:
                del self._stalled[run_id]
        return views

    async def _settle(
        self,
        run: Run,
        compiled: _Compiled,
        state: dict[str, Any],
        interrupts: list[Interrupt],
        log: list[dict[str, Any]],
    ) -> tuple[RunView, dict[str, Any]]:
        """Records where the run stopped — a gate, a wait, or the end — in one transaction;
        with the wake of an event kept for the wait it stopped at, which it took."""
        now = utcnow()
        entries = _step_entries(run, log)
        stop: dict[str, Any] | None = interrupts[0].value if interrupts else None
        gate = _new_gate(run, compiled.definition, stop, now) if stop else None
        outcome = state.get("outcome") or None  # "" once a replay cleared it
        if stop is not None:
            status = RunStatus.WAITING
        else:
            status = RunStatus.CANCELLED if outcome else RunStatus.SUCCEEDED
        owed = still_owed(compiled.definition, state.get("data", {})) or None
        settled = replace(
            run,
            status=status,
            owed=owed,
            current_step=stop["step"] if stop else None,
            steps_logged=run.steps_logged + len(entries),
            error=run.error if stop else outcome,
            updated_at=now,
            replaying=None,
        )

        def record(tx: LedgerTx) -> tuple[Approval | None, Run | None]:
            tx.append_steps(run.id, entries)
            _audit_overpaid(tx, run.id, log, now)
            moved = tx.update_running_run(
                run.id,
                status=status.value,
                current_step=settled.current_step,
                steps_logged=settled.steps_logged,
                error=settled.error,
                owed=owed,
                updated_at=now,
                replaying=None,  # a replay's first stop: from here it goes on as any run
            )
            if not moved:  # cancelled meanwhile: the cancel stands, nothing new opens
                return None, tx.get_run(run.id)
            approval = None
            if gate is not None:
                approval = _open_gate(tx, gate, now)
            elif stop is not None:
                waiting = _open_wait(tx, run, stop, now)
                if woken := _take_kept_event(tx, run.id, waiting, now):
                    took.update(woken)
                    return None, replace(settled, status=RunStatus.RUNNING)
            else:
                tx.audit(
                    NewAuditEvent("steward", f"run.{status.value}", run.id, {"outcome": outcome}),
                    at=now,
                )
            return approval, None

        took: dict[str, Any] = {}  # the wake of an event kept for the wait it stops at
        approval, current = await self.ledger.write(record)
        return RunView(current or settled, approval), took

    async def _fail(
        self, run: Run, exc: BaseException, kind: str, log: Sequence[dict[str, Any]] = ()
    ) -> RunView:
        """Records the run failed, with the steps it took before (its gate's decision)."""
        message = storable(str(exc)) or type(exc).__name__
        entries = _step_entries(run, log)

        def record(tx: LedgerTx) -> Run | None:
            failed = RunStatus.FAILED.value
            logged = run.steps_logged + len(entries)
            if tx.update_running_run(
                run.id, status=failed, error=message, error_class=kind, steps_logged=logged
            ):
                tx.append_steps(run.id, entries)
                _audit_overpaid(tx, run.id, log)
                tx.audit(
                    NewAuditEvent(
                        "steward", "run.failed", run.id, {"class": kind, "error": message}
                    )
                )
            return tx.get_run(run.id)

        return RunView(_found(await self.ledger.write(record), run.id))

    async def _transition(
        self,
        run_id: str,
        source: RunStatus,
        target: RunStatus,
        actor: str,
        woken: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Run:
        """Moves a run from ``source`` to ``target``, checked and recorded in one transaction.
        Resumed at a wait whose event came meanwhile, it takes the event: running again,
        the wake in ``woken``."""
        verb = {
            RunStatus.PAUSED: "paused",
            RunStatus.WAITING: "resumed",
            RunStatus.RUNNING: "retried",
        }[target]

        def record(tx: LedgerTx) -> Run:
            run = _found(tx.lock_run(run_id), run_id)
            if run.status is not source:
                raise InvalidState(
                    f"only a {source.value} run can be {verb}; {run_id} is {run.status.value}"
                )
            if source is RunStatus.PAUSED:  # since then: its gates' time did not run
                tx.postpone_deadlines(run_id, max(timedelta(0), utcnow() - run.updated_at))
            tx.update_run(run_id, status=target.value, **changes)
            tx.audit(NewAuditEvent(actor, f"run.{verb}", run_id))
            if woken is not None and (waiting := tx.open_wait(run_id)) is not None:
                woken.update(_take_kept_event(tx, run_id, waiting, utcnow()) or {})
            return _found(tx.get_run(run_id), run_id)

        return await self.ledger.write(record)

    async def _run(self, run_id: str) -> Run:
        return _found(await self.ledger.get_run(run_id), run_id)

    async def _compiled_for(self, version: str) -> _Compiled:
        compiled = self._compiled.get(version)
        if compiled is None:
            versions = self.catalog.versions
            definition = next((d for d in self.catalog if versions[d.name] == version), None)
            if definition is None:
                body = await self.ledger.get_definition(version)
                if body is None:
                    raise NotFound(f"definition version {version} is not in the ledger")
                definition = ProcessDefinition.model_validate(body)
            compiled = _Compiled(definition, compile_definition(definition, self.checkpointer))
            self._compiled[version] = compiled
        return compiled


def _new_run(
    run_id: str,
    definition: ProcessDefinition,
    version: str,
    values: dict[str, Any],
    started_by: str,
    reply_to: dict[str, Any] | None,
) -> Run:
    now = utcnow()
    return Run(
        id=run_id,
        process=definition.name,
        version=version,
        status=RunStatus.RUNNING,
        inputs=values,
        started_by=started_by,
        created_at=now,
        updated_at=now,
        reply_to=reply_to,
    )


def _cleared_by_replay(snapshot: StateSnapshot) -> bool:
    """The checkpoint a replay writes to clear the steps a run stopped or failed at:
    the only state update steward makes."""
    return snapshot.metadata is not None and snapshot.metadata.get("source") == "update"


def _ended(run: Run) -> str:
    """How a run ended, to end a sentence: "rejected at approve_undo", "failed (…)"."""
    if run.error and run.error.startswith(ENDINGS):
        return run.error
    return f"{run.status.value} ({run.error or 'no reason given'})"


def _found(run: Run | None, run_id: str) -> Run:
    if run is None:
        raise NotFound(f"no run {run_id!r}", "runs")
    return run


def _new_gate(
    run: Run, definition: ProcessDefinition, stop: dict[str, Any], now: datetime
) -> Approval | None:
    """The approval a gate's interrupt asks for; None when the run stopped at a wait."""
    if stop["type"] != "approval":
        return None
    gate = definition.step(stop["step"])
    assert isinstance(gate, ApprovalStep)
    return Approval(
        id=new_approval_id(),
        run_id=run.id,
        step_id=gate.id,
        visit=stop["visit"],
        status=ApprovalStatus.PENDING,
        card=stop["card"],
        created_at=now,
        expires_at=now + gate.expiry,
        on_expiry=gate.on_expiry,
        editable=gate.editable,
    )


def _open_gate(tx: LedgerTx, approval: Approval, now: datetime) -> Approval:
    existing = tx.approval_for_gate(approval.run_id, approval.step_id, approval.visit)
    if existing is not None:  # recovery settling a stop that was recorded before
        return existing
    tx.insert_approval(approval)
    tx.add_timer(
        expiry_key(approval.id),
        "approval_expiry",
        approval.expires_at,
        approval.run_id,
        {"approval": approval.id},
    )
    tx.audit(
        NewAuditEvent(
            "steward",
            "approval.requested",
            approval.id,
            {"run": approval.run_id, "step": approval.step_id, "summary": approval.card["summary"]},
        ),
        at=now,
    )
    return approval


def _defaults_again(
    definition: ProcessDefinition, inputs: dict[str, Any], changed: dict[str, Any]
) -> dict[str, Any]:
    """The inputs that took a default made from others ("{client} team") which a replay
    changes: made again from the new values, unless the replay sets them itself."""
    old, new = dict(inputs), {**inputs, **changed}
    again: dict[str, Any] = {}
    for name, spec in definition.inputs.items():
        if name in changed or not isinstance(spec.default, str):
            continue
        if not placeholders(spec.default) or inputs.get(name) != spec.default_for(old):
            continue  # typed in, or a plain default: it stands
        remade = spec.default_for(new)
        if remade != inputs.get(name):
            again[name] = new[name] = remade
    return again


def _paused(run_id: str) -> InvalidState:
    return InvalidState(f"run {run_id} is paused; /resume {run_id} first")


def _may_replay(run: Run) -> None:
    """A running run is replayed once it stops; a paused one once it is resumed: a
    replay runs its steps, which a pause holds back."""
    if run.status is RunStatus.RUNNING:
        raise InvalidState(f"run {run.id} is running; replay it once it stops")
    if run.status is RunStatus.PAUSED:
        raise _paused(run.id)


def _not_acted(run_id: str, step_id: str) -> InvalidState:
    return InvalidState(f"step {step_id} of run {run_id} has not acted: nothing to undo")


def _currency_of(amount: Any) -> str | None:
    """The currency of an amount as a run keeps it ("€2,500.00"); None when it names none
    (a run started before amounts kept theirs, "2500.00")."""
    try:
        return Money.read(amount).currency if isinstance(amount, str) else None
    except ValueError:
        return None


def _drafted_before(
    definition: ProcessDefinition, step_id: str, changed: set[str], log: list[str]
) -> AgentStep | BranchStep | None:
    """The first step the run took before ``step_id`` that drafted from any of the
    ``changed`` inputs, or chose by them which step drafts (a branch that, the last time
    the run took it, went straight on to a draft it shows): a replay from there would
    show the old draft beside the new values. (A draft the run did not take, its branch
    choosing another, made nothing to show; nor did one whose output a draft it took
    later, by its ``log`` of steps, wrote again; nor did a branch whose draft another,
    chosen since by other branches, wrote again: the invoice follow-up's ``overdue``,
    once a part payment has the reminder of what is still owed drafted.)"""
    ids = [step.id for step in definition.steps]
    last = {taken: seq for seq, taken in enumerate(log)}
    written = [s for s in definition.steps if isinstance(s, AgentStep) and s.id in last]
    shown = {d.output: d for d in sorted(written, key=lambda d: last[d.id])}  # wrote it last
    taken = [
        s
        for s in definition.steps[: ids.index(step_id)]
        if s.id in last and (not isinstance(s, AgentStep) or shown[s.output] is s)
    ]
    branches = {s.id for s in definition.steps if isinstance(s, BranchStep)}
    showing = {d.id for d in shown.values()}
    chose = set()  # the branches that, the last time they were taken, led to a draft shown
    for branch in branches & last.keys():
        seq = last[branch] + 1
        while seq < len(log) and log[seq] in branches:
            seq += 1
        if seq < len(log) and log[seq] in showing:
            chose.add(branch)
    for step in taken:
        used = set().union(*(placeholders(t) for t in step.templates().values()))
        if isinstance(step, AgentStep) and used & changed:
            return step
        if not isinstance(step, BranchStep) or step.id not in chose:
            continue
        if Condition(step.condition).names & changed:
            return step
    return None


def _paid_in_its_currency(
    definition: ProcessDefinition, data: dict[str, Any], values: dict[str, Any], run_id: str
) -> None:
    """Refuses an amount a replay gives in another currency than what is paid of it
    (€1,000.00 paid of €2,500, corrected to $3,000): steward converts none, and what is
    still owed would be dollars less euros."""
    for step in definition.steps:
        if not isinstance(step, WaitStep) or step.pays not in values:
            continue
        paid = data.get(step.filled[0])
        if not isinstance(paid, str) or not isinstance(values[step.pays], str):
            continue
        was, given = Money.read(paid).currency, Money.read(values[step.pays]).currency
        if was is not None and given is not None and was != given:
            raise InvalidState(
                f"{step.pays} cannot be {values[step.pays]}: {paid} of it is paid, in {was}, "
                f"and steward converts no currency. Give it in {was}, or /cancel {run_id}"
            )


def _shown_instead(
    definition: ProcessDefinition, draft: AgentStep, log: list[str]
) -> AgentStep | None:
    """The draft that wrote ``draft``'s output last, by the run's ``log`` of steps, when
    it is another: the text the run shows, which its branches chose (the invoice
    follow-up's reminder of what is still owed, once a part is paid, where ``draft`` is
    the first reminder, asking for all of it). None when ``draft`` wrote it last, or no
    draft did."""
    last = {taken: seq for seq, taken in enumerate(log)}
    writers = [
        s
        for s in definition.steps
        if isinstance(s, AgentStep) and s.output == draft.output and s.id in last
    ]
    shown = max(writers, key=lambda s: last[s.id], default=None)
    return None if shown is None or shown is draft else shown


def _audit_overpaid(
    tx: LedgerTx, run_id: str, log: Sequence[dict[str, Any]], now: datetime | None = None
) -> None:
    """A payment of more than was owed, among the steps ``log`` holds: the ledger says
    so, whether the run stops or fails after it."""
    for entry in log:
        if over := entry.get("detail", {}).get("over"):
            paid = {"step": entry["step"], "paid": entry["detail"]["paid"], "over": over}
            tx.audit(NewAuditEvent("steward", "run.overpaid", run_id, paid), at=now)


def _step_entries(run: Run, log: Sequence[dict[str, Any]]) -> list[StepEntry]:
    """The steps a run took since it last stopped, numbered after those logged."""
    return [
        StepEntry(
            seq=run.steps_logged + i + 1,
            step_id=e["step"],
            kind=e["kind"],
            status=e["status"],
            at=datetime.fromisoformat(e["at"]),
            detail={"visit": e["visit"], **e["detail"]},
        )
        for i, e in enumerate(log)
    ]


def _open_wait(tx: LedgerTx, run: Run, stop: dict[str, Any], now: datetime) -> Timer:
    seconds = stop.get("seconds")
    due = now + timedelta(seconds=seconds) if seconds else NEVER
    key = _wait_key(run.id, stop)
    if (opened := tx.timer(key)) is not None:
        return opened
    payload = {"step": stop["step"], "event": stop["event"]}
    if stop.get("pays"):
        payload["pays"] = True
    tx.add_timer(key, "wait", due, run.id, payload)
    tx.audit(
        NewAuditEvent(
            "steward", "run.waiting", run.id, {"step": stop["step"], "until": due.isoformat()}
        ),
        at=now,
    )
    return _found_timer(tx.timer(key), key)


def _take_kept_event(
    tx: LedgerTx, run_id: str, waiting: Timer, now: datetime
) -> dict[str, Any] | None:
    """Wakes a run that waits for an event delivered before it waited, with the oldest
    such event, in the transaction that opened the wait (or resumed the run): it is
    running again, and the wake, kept with the timer as any wake is, is returned. A wait
    that a payment pays takes every payment kept, each a part of what is owed."""
    event = waiting.payload.get("event")
    if not event or waiting.status != "pending":
        return None
    kept = tx.take_kept_event(run_id, event)
    if kept is None:
        return None
    woken: dict[str, Any] = {"by": f"event:{event}", "data": kept.data}
    later = []
    while waiting.payload.get("pays") and (another := tx.take_kept_event(run_id, event)):
        later.append(another)
    if later:
        woken["payments"] = [kept.data, *(each.data for each in later)]
    audit = _taken_kept(kept, run_id, event)
    if not _claim_wake(tx, run_id, waiting.id, kept.by, woken, audit, now):
        # The take above rolls back with this transaction: the event stays kept.
        raise InvalidState(f"run {run_id}'s wait for {event} was taken meanwhile")
    for each in later:
        tx.audit(_taken_kept(each, run_id, event), at=now)
    return woken


def _taken_kept(kept: KeptEvent, run_id: str, event: str) -> NewAuditEvent:
    """The audit event of a run taking an event kept for it since it came."""
    since = kept.received_at.isoformat()
    return NewAuditEvent(kept.by, "run.event", run_id, {"event": event, "kept_since": since})


def _claim_wake(
    tx: LedgerTx,
    run_id: str,
    timer_id: int,
    by: str,
    woken: dict[str, Any],
    audit: NewAuditEvent | None,
    now: datetime,
) -> bool:
    """Claims a wait's timer with the wake that ends it, kept with it for recovery, and
    sets the run running again; False when the timer was claimed already."""
    if not tx.claim_timer(timer_id, by, woken):
        return False
    tx.update_run(run_id, status=RunStatus.RUNNING.value, updated_at=now)
    if audit is not None:
        tx.audit(audit, at=now)
    return True


def _found_timer(timer: Timer | None, key: str) -> Timer:
    if timer is None:
        raise InvalidState(f"no timer {key}")
    return timer


def _wait_key(run_id: str, stop: dict[str, Any]) -> str:
    return f"wait:{run_id}:{stop['step']}:{stop['visit']}"


def _stop_visits(tx: LedgerTx, run_id: str) -> dict[str, int]:
    """The last visit of each gate and wait a run has stopped at, cancelled ones too."""
    visits = tx.gate_visits(run_id)
    for key in tx.timer_keys(run_id, "wait"):  # as _wait_key writes them
        step, _, visit = key.removeprefix(f"wait:{run_id}:").rpartition(":")
        if visit.isdigit():
            visits[step] = max(visits.get(step, 0), int(visit))
    return visits


def _config(run_id: str) -> Any:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": RECURSION_LIMIT}


def _decision_payload(approval: Approval) -> dict[str, Any]:
    return {
        "step": approval.step_id,  # the gate it was made for, and no other
        "visit": approval.visit,
        "status": approval.status.value,
        "by": approval.decided_by,
        "at": approval.decided_at.isoformat() if approval.decided_at else None,
        "reason": approval.reason,
        "edited_text": approval.edited_text,
        "values": approval.card.get("values"),  # what the card showed: the actions act on it
    }


__all__ = ["Decision", "InputProblem", "ProcessEngine", "RunState", "RunView"]
