"""What an incoming webhook may do: start a process, or wake a run waiting for an event.

Sources are configured in a YAML file (``STEWARD_HOOKS_FILE``, default
``STEWARD_HOME/hooks.yaml``)::

    form:                        # POST /hooks/form
      secret: a-long-random-string
      start: onboarding          # each delivery starts onboarding; its fields fill the inputs
    payments:
      secret: another-long-random-string
      event: payment             # each delivery wakes the run waiting for `payment` …
      match: {invoice: invoice}  # … whose input `invoice` equals the delivery's `invoice`
                                 # (a run that does not wait for it yet keeps it for then)
      minor_units: true          # optional: its amounts are in cents, 250000 is 2,500.00

A delivery's content is data, never instructions: its fields are checked as the
process's typed inputs, or handed to the woken run as the event's data. It cannot
approve, skip a gate or choose an action — a started run stops at its first gate like
any other, for the operator.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graph.catalog import Catalog
from graph.coordinator import Coordinator
from graph.definitions import WaitStep
from graph.engine import InputProblem, ProcessEngine
from graph.errors import (
    AMOUNTS_READ,
    OfferedBefore,
    StewardError,
    UncountedPayment,
    UnreadableAmount,
)
from graph.inputs import Money, currency_code
from graph.messages import Reply, cut
from graph.routing import format_argument
from graph.timeline import more_than_owed
from memory.ledger import Ledger, NewAuditEvent, Run, RunStatus, RunTakenOver, TakenOver, cause

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Steward-Signature"
# The runs a payment matched by all but its amount that its news names, each with /paid.
MOST_NAMED = 3
# A source's name is a path segment, and with "hook:" before it (``hook_channel``) the
# ledger's inbox channel, 32 characters at most.
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,26}")


def hook_channel(name: str) -> str:
    """The inbox channel of the deliveries from source ``name``, and the actor they act as."""
    return f"hook:{name}"


class HookSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=16)
    start: str | None = None
    event: str | None = None
    match: dict[str, str] = Field(default_factory=dict)
    minor_units: bool = False  # its amounts are in hundredths: 250000 is 2,500.00
    signature_header: str = SIGNATURE_HEADER

    @model_validator(mode="after")
    def _one_thing_to_do(self) -> HookSource:
        if (self.start is None) == (self.event is None):
            raise ValueError("a source either starts a process (`start`) or wakes runs (`event`)")
        if self.event is not None and not self.match:
            raise ValueError("an `event` source needs `match` to find its run")
        if self.minor_units and self.event is None:
            raise ValueError("`minor_units` is for an `event` source: the payments it brings")
        return self


class HookConfigError(StewardError):
    """The hooks file is unreadable or wrong: one line naming the file and field."""


def load_hooks(
    path: Path, catalog: Catalog, signs_outgoing: str | None = None
) -> dict[str, HookSource]:
    """The sources ``path`` describes. None may share ``signs_outgoing``
    (STEWARD_WEBHOOK_SECRET), the secret steward signs its own calls with: a ``post`` to
    its own hook, a URL filled from an input, would pass for a delivery."""
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise HookConfigError(f"{path}: cannot read it: {_unquoted(exc)}") from None
    if not isinstance(raw, dict):
        raise HookConfigError(f"{path}: expected sources by name, like `form: {{secret: …}}`")
    sources = {}
    for name, body in raw.items():
        try:
            source = HookSource.model_validate(body)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in (name, *problem["loc"]))
            raise HookConfigError(
                f"{path}: {where}: {problem['msg'].removeprefix('Value error, ')}"
            ) from None
        if not SOURCE_NAME.fullmatch(str(name)):
            raise HookConfigError(
                f"{path}: {name!r}: a source's name is up to 27 letters, digits, _ and -, "
                "starting with a letter or a digit (it is the URL's last part)"
            )
        if cannot := _what_it_cannot_do(source, catalog):
            raise HookConfigError(f"{path}: {name}.{cannot}")
        if signs_outgoing is not None and hmac.compare_digest(
            source.secret.encode(), signs_outgoing.encode()
        ):
            raise HookConfigError(
                f"{path}: {name}.secret: it is STEWARD_WEBHOOK_SECRET, which signs steward's "
                "own calls, so a call steward makes could pass for a delivery: give the "
                "source a secret of its own"
            )
        sources[str(name)] = source
    return sources


def _unquoted(exc: OSError | UnicodeDecodeError | yaml.YAMLError) -> str:
    """Why the file cannot be read, and where, without the line PyYAML quotes: the
    secret on it."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return str(exc)
    said = f"{_at(exc.problem_mark)}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        said += f" ({exc.context} at {_at(exc.context_mark)})"
    return said


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _what_it_cannot_do(source: HookSource, catalog: Catalog) -> str | None:
    """Why ``source`` could never do what it says with these processes; None if it can."""
    if source.start is not None:
        if catalog.get(source.start) is None:
            return f"start: no process {source.start!r}"
        return None
    waiting = [
        definition
        for definition in catalog
        if any(isinstance(s, WaitStep) and s.event == source.event for s in definition.steps)
    ]
    if not waiting:
        events = sorted(
            {s.event for d in catalog for s in d.steps if isinstance(s, WaitStep) and s.event}
        )
        known = ", ".join(events) if events else "none"
        return f"event: no process waits for {source.event!r} (events waited for: {known})"
    for field in source.match:
        if not any(field in definition.inputs for definition in waiting):
            names = ", ".join(sorted({n for d in waiting for n in d.inputs}))
            return f"match.{field}: no input of a run waiting for {source.event} ({names})"
    return None


async def unhandled_events(ledger: Ledger, sources: dict[str, HookSource]) -> dict[str, datetime]:
    """When the oldest delivery of each event that is not handled yet was received: a
    wait for that event due after then may have had it in time (the queue is behind)."""
    channels = {hook_channel(name): s.event for name, s in sources.items() if s.event is not None}
    oldest: dict[str, datetime] = {}
    if not channels:
        return oldest
    for channel, received in (await ledger.oldest_unhandled(list(channels))).items():
        event = channels[channel]
        oldest[event] = min(received, oldest.get(event, received))
    return oldest


@dataclass
class Handled:
    """What a delivery did: news for the operators, and a line for each run it could
    not be offered to (the offer failed unexpectedly), which may take it later."""

    reply: Reply
    missed: tuple[str, ...] = ()


@dataclass
class HookRouter:
    engine: ProcessEngine
    coordinator: Coordinator

    async def handle(
        self, name: str, source: HookSource, payload: dict[str, Any], delivery: int | None = None
    ) -> Handled:
        """What a stored delivery does. An event is offered to each run it matches that
        ``delivery`` (its inbox item) was not offered to before: handled again, it
        reaches the runs it missed, and no other."""
        if source.start is not None:
            return Handled(await self._start(name, source, payload))
        return await self._offer_all(name, source, payload, delivery)

    async def _start(self, name: str, source: HookSource, payload: dict[str, Any]) -> Reply:
        actor = hook_channel(name)
        process = source.start
        assert process is not None
        definition = self.engine.definition(process)
        inputs = {k: v for k, v in payload.items() if k in definition.inputs}
        try:
            view = await self.engine.start(process, inputs, actor)
        except InputProblem as exc:  # the operator may start it with what came right
            wrong = {error.field for error in exc.errors}
            given = " ".join(
                format_argument(k, str(v)) for k, v in inputs.items() if k not in wrong
            )
            return Reply().say(
                f"A delivery from {name} could not start {process}: {exc.problems}\n"
                f"To start it with what came, add what is missing or wrong to: "
                f"/run {process} {given}".rstrip()
            )
        except StewardError as exc:
            return Reply().say(f"A delivery from {name} could not start {process}: {exc}")
        reply = Reply().say(f"A delivery from {name} started {process}.")
        reply.items.extend(self.coordinator.describe(view).items)
        return reply

    async def _offer_all(
        self, name: str, source: HookSource, payload: dict[str, Any], delivery: int | None
    ) -> Handled:
        event = source.event
        assert event is not None
        wanted = {field: payload.get(key) for field, key in source.match.items()}
        runs = [
            run
            for run in await self.engine.expecting(event)
            if all(self._matches(run, f, v, source.minor_units) for f, v in wanted.items())
        ]
        described = ", ".join(f"{k}={_as_data(v)}" for k, v in wanted.items())
        offered = await self.engine.ledger.offered(delivery) if delivery is not None else set()
        if any(v is None for v in wanted.values()) or not (runs or offered):
            said = f"A {event} delivery from {name} matched no run waiting for it ({described})."
            if all(v is not None for v in wanted.values()):
                expecting = await self.engine.expecting(event)
                said += self._if_a_part(expecting, wanted, source, payload)
            return Handled(Reply().say(said))
        reply, missed = Reply(), []
        for run in (run for run in runs if run.id not in offered):
            try:
                offer = await self._offer(name, source, run, payload, described, delivery)
                reply.items.extend(offer.items)
            except OfferedBefore:  # by another worker, which tells of it
                continue
            except RunTakenOver:  # took it, then looked gone: another worker moves it on
                reply.say(f"Run {run.id} ({run.process}) got its {event} ({described}).")
            except TakenOver:  # the delivery is another worker's now, for all its runs
                raise
            except Exception as exc:  # one run's failure keeps the event from no other
                missed.append(await self._offer_failed(name, event, run, described, exc))
        return Handled(reply, tuple(missed))

    async def _offer(
        self,
        name: str,
        source: HookSource,
        run: Run,
        payload: dict[str, Any],
        described: str,
        delivery: int | None,
    ) -> Reply:
        """Offers ``run`` the event a delivery from ``name`` brought; what came of it."""
        reply, event = Reply(), source.event
        assert event is not None
        try:
            woken = await self.engine.offer_event(
                run.id,
                event,
                payload,
                hook_channel(name),
                delivery,
                minor_units=source.minor_units,
            )
        except UncountedPayment as exc:
            told = (
                f"A {event} delivery from {name} ({described}) {exc.said}. Run {run.id} "
                f"({run.process}) counts none of it and keeps waiting for its {event}. If all "
                f"it is owed is paid, /cancel {run.id}; else nothing: it chases what was owed "
                "before this came."
            )
            if isinstance(exc, UnreadableAmount) and source.minor_units:
                told += f" {name} sends amounts in minor units: 250000 is 2,500.00."
            elif isinstance(exc, UnreadableAmount):
                told += f" {AMOUNTS_READ}"
            return reply.say(told)
        except OfferedBefore:
            raise
        except StewardError as exc:  # it ended meanwhile
            return reply.say(f"Run {run.id} ({run.process}) did not take its {event}: {exc}")
        if woken is not None:
            counted = await self._counted(run, payload.get("amount") is None)
            reply.say(f"Run {run.id} ({run.process}) got its {event} ({described}){counted}.")
            reply.items.extend(self.coordinator.describe(woken).items)
            return reply
        if behind := await self.engine.waits_behind(run, event):
            reply.say(
                f"A {event} delivery from {name} ({described}) came after run {run.id} "
                f"({run.process}) went past its wait for it: it is kept, and the run "
                f"takes it only if replayed from that wait (/replay {run.id} {behind[0]})."
            )
        else:
            reply.say(
                f"A {event} delivery from {name} ({described}) came before run {run.id} "
                f"({run.process}) waits for it: it is kept, and the run takes it when it "
                "gets there."
            )
        if run.status is RunStatus.FAILED and not behind:
            reply.say(f"Run {run.id} failed: /retry goes on to the steps before its wait.")
        if run.status is not RunStatus.WAITING:
            return reply
        return await self.coordinator.tell_still_waiting(reply, run.id, f"{event} received")

    async def _counted(self, run: Run, no_amount: bool) -> str:
        """What the payment ``run`` woke with left owed, as its wait noted it, when that
        is a part of what it is owed, or that it was taken for all of it as it names
        ``no_amount``; empty for all of it named, and for a wait that pays none."""
        counted = await self.coordinator.payment_counted(run.id)
        paid, owed = counted.get("paid"), counted.get("owed")
        if paid is None or owed is None:
            return ""
        if Money.read(owed).amount:
            return f": a part, {paid} paid so far and {owed} still owed"
        if "over" in counted:
            return f": {counted['came']} paid{more_than_owed(counted)}"
        return ": it names no amount, so it is taken for all of it paid" if no_amount else ""

    async def _offer_failed(
        self, name: str, event: str, run: Run, described: str, exc: Exception
    ) -> str:
        """Logs and audits an offer that failed unexpectedly; what the operator hears of
        it, the failure alone (whether it is tried again is the caller's)."""
        log.error("offering run %s a %s from %s failed", run.id, event, name, exc_info=exc)
        error = cut(cause(exc), 200)
        data = {"event": event, "error": error}
        failed = NewAuditEvent(hook_channel(name), "hook.offer_failed", run.id, data)
        try:
            await self.engine.ledger.audit(failed)
        except Exception:
            log.exception("could not audit it")
        return (
            f"Offering run {run.id} ({run.process}) a {event} delivery from {name} "
            f"({described}) failed: {_as_data(error, 200)}."
        )

    def _if_a_part(
        self, expecting: list[Run], wanted: dict[str, Any], source: HookSource, payload: Any
    ) -> str:
        """How to count a payment that matched no run by its amount, which may pay a part
        of what one is owed (a part names no run): with /paid, for the runs it matches
        but for its amount, or any run when it matches none so; empty when the source
        matches by no amount."""
        money = [
            (run, [f for f in wanted if f in definition.money_inputs])
            for run in expecting
            if (definition := self.engine.catalog.get(run.process)) is not None
        ]
        if not any(fields for _, fields in money):
            return ""
        by_amount = {f for _, fields in money for f in fields}
        paid = _paid_argument(
            next(wanted[f] for f in wanted if f in by_amount), source.minor_units, payload
        )
        if by_amount.issuperset(wanted):  # by the amount alone: any run may be the one
            return f" If it pays a part of what a run is owed, /paid RUN {paid} counts it."
        but_the_amount = [
            run
            for run, fields in money
            if any(f in run.inputs for f in fields)  # an optional amount may be left out
            and all(
                self._matches(run, f, v, source.minor_units)
                for f, v in wanted.items()
                if f not in fields
            )
        ]
        if not but_the_amount:
            return f" If it pays a part of what a run is owed, /paid RUN {paid} counts it."
        told = []
        for run in but_the_amount[:MOST_NAMED]:
            field = next(f for f in wanted if f in by_amount and f in run.inputs)
            owed = (run.owed or {}).get(field) or run.inputs[field]
            told.append(
                f" Run {run.id} ({run.process}) matches it but for its {field}: it is owed "
                f"{owed}. If this pays a part of it, /paid {run.id} {paid} counts it."
            )
        if len(but_the_amount) > MOST_NAMED:
            told.append(f" ({len(but_the_amount) - MOST_NAMED} more such runs: /runs lists them.)")
        return "".join(told)

    def _matches(self, run: Run, field: str, given: Any, minor_units: bool) -> bool:
        """Whether ``run``'s input ``field`` is what a delivery gives: a money input is
        the same amount ("1200", or 120000 in ``minor_units``, is its "€1,200.00"), in
        its currency if both name one, or what is still owed of it once a part is paid
        (the rest its reminder asks for)."""
        if field not in run.inputs:
            return False
        definition = self.engine.catalog.get(run.process)
        if definition is None or field not in definition.money_inputs:
            return str(run.inputs[field]) == str(given)
        try:
            came = Money.of_minor_units(given) if minor_units else Money.read(str(given))
        except ValueError:
            return False
        left = (run.owed or {}).get(field)
        return any(_same_amount(came, amount) for amount in (run.inputs[field], left) if amount)


def _paid_argument(given: Any, minor_units: bool, payload: Any) -> str:
    """The amount a delivery paid as /paid takes it ("€500.00"), with the currency its
    ``currency`` names apart; AMOUNT when it cannot be read."""
    named = payload.get("currency") if isinstance(payload, dict) else None
    code = currency_code(named) if isinstance(named, str) else None
    try:
        came = Money.of_minor_units(given) if minor_units else Money.read(str(given), code)
    except ValueError:
        return "AMOUNT"
    return str(Money(came.amount, came.currency or code))


def _same_amount(came: Money, amount: Any) -> bool:
    """Whether ``came`` is ``amount`` as a run keeps it ("€1,200.00"), in its currency
    if both name one."""
    try:
        kept = Money.read(str(amount))
    except ValueError:
        return False
    currencies = {kept.currency, came.currency} - {None}
    return kept.amount == came.amount and len(currencies) <= 1


def _as_data(value: Any, most: int = 80) -> str:
    """A delivery's value as the operator's news names it: as it is when it is one line
    of plain text, else as Python writes it (quoted, its line breaks and its controls
    escaped); cut short past ``most`` characters."""
    return cut(value if isinstance(value, str) and value.isprintable() else repr(value), most)
