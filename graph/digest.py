"""The daily action list: what needs the operator today, ranked, each in one line.

It holds pending approvals (with Approve and Reject on the item), failed runs (with
Retry), runs stuck mid-step, paused runs (with Resume), the follow-ups and waits due
today, and budgets at 80 % or more of their limit (scored 25, or 45 once spent). Each
item gets a score, and the list is sorted by it, highest first:

    score = 10 * risk                      low 1, medium 2, high 3; a failed run 2.5,
                                           a stuck one 2, a follow-up due today or a
                                           paused run 1
          + 5 * log10(1 + money at stake)  the run's money inputs (what is still owed of
                                           one paid in part): 1,200 adds 15
          + urgency                        expires or is due within a day +20, within
                                           three days +10, is overdue +30
          + 2 * days waiting               at most 20

and it is explained in one line: "waiting 3 days · €1,200.00 at stake · expires tomorrow
at 09:00".
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from graph.budget import Budgets, dollars
from graph.catalog import Catalog
from graph.inputs import SIGNS, Money
from graph.messages import Button, Card, Reply
from memory.ledger import Approval, Ledger, Run, RunStatus, Timer

MOST = 20  # more items than this: the top ones, the count, and how to see the rest
TOP = 10
STUCK_AFTER = timedelta(hours=1)  # a running run not moved for this long is stuck
RISK = {"low": 1.0, "medium": 2.0, "high": 3.0}
ZERO = Decimal(0)
DAY = 86_400.0
FAILED = RunStatus.FAILED.value
PAUSED = RunStatus.PAUSED.value

SIGN_CHARACTERS = "".join(SIGNS.values())


@dataclass(frozen=True)
class Item:
    score: float
    kind: str  # approval, failed, stuck, paused, due, budget
    title: str
    why: str
    buttons: list[Button] = field(default_factory=list)
    key: str = ""  # what the item is about: an approval id, a run id, a timer key


@dataclass(frozen=True)
class DailyList:
    items: list[Item]  # the ones to show, ranked: all of them, or the top ones of many
    day: str  # the operator's date, e.g. "Sunday 22 November"
    total: int = 0  # how many there are in all
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def heading(self) -> str:
        if not self.total:
            return f"{self.day}: nothing needs you today."
        things = "1 thing needs" if self.total == 1 else f"{self.total} things need"
        return f"{self.day}: {things} you — {_counted(self.kinds)}."

    @property
    def more(self) -> str | None:
        """What says how many are left out, if any are."""
        if len(self.items) >= self.total:
            return None
        rest = self.total - len(self.items)
        return f"…and {rest} more, ranked lower. /today all shows every one."

    def reply(self) -> Reply:
        """The top items with buttons as cards, each a message of its own; the rest as
        lines, as few messages as they fit in (the commands that do what the buttons
        would): ``/today all`` of thousands would hold a chat up for hours, a message
        a second."""
        reply = Reply().say(self.heading)
        lines: list[str] = []
        for rank, item in enumerate(self.items, 1):
            if item.buttons and rank <= MOST:
                if lines:
                    reply.say("\n".join(lines))
                    lines = []
                reply.add(
                    Card(
                        approval_id=item.key,
                        title=f"{rank}. {item.title}",
                        summary=item.why,
                        buttons=item.buttons,
                    )
                )
                continue
            lines.append(f"{rank}. {item.title}\n   {item.why}")
            if commands := [command for button in item.buttons if (command := _command(button))]:
                lines.append("   " + " · ".join(commands))
        if self.more is not None:
            lines.append(self.more)
        if lines:
            reply.say("\n".join(lines))
        return reply


def _command(button: Button) -> str | None:
    """The chat command that does what ``button`` does; None for Details, which has none."""
    verb, _, about = button.payload.partition(":")
    return None if verb == "details" else f"/{verb} {about}"


async def daily_list(
    ledger: Ledger,
    catalog: Catalog,
    now: datetime,
    zone: ZoneInfo,
    budgets: Budgets | None = None,
    show_all: bool = False,
) -> DailyList:
    """Everything that needs the operator on their day ``now`` falls in, ranked. All of
    it is scored from lean rows; only the items shown are written out."""
    local = now.astimezone(zone)
    end_of_day = datetime.combine(local.date() + timedelta(days=1), time(), zone)
    fields = _money_fields(catalog)
    work = await ledger.open_work(end_of_day, fields, _worth)
    at = now.timestamp()
    # (-score, kind, key, run id): sorted as they are, highest score first
    candidates: list[tuple[float, str, str, str]] = []
    add = candidates.append
    for approval_id, run_id, created, expires, risk, worth in work.approvals:
        score = _points(RISK.get(risk, 2.0), worth, expires - at, at - created)
        add((-score, "approval", approval_id, run_id))
    stuck = STUCK_AFTER.total_seconds()
    for run_id, status, updated, worth in work.runs:
        if status == FAILED:
            add((-_points(2.5, worth, None, at - updated), "failed", run_id, run_id))
        elif status == PAUSED:  # its approvals and waits wait with it, deadlines too
            add((-_points(1.0, worth, None, at - updated), "paused", run_id, run_id))
        elif at - updated > stuck:  # running, and has not moved
            add((-_points(2.0, worth, None, at - updated), "stuck", run_id, run_id))
    for key, run_id, due, worth in work.timers:
        add((-_points(1.0, worth, due - at, 0.0), "due", key, run_id))
    budget_items = await _budget_items(budgets, catalog, now) if budgets is not None else []
    candidates += [(-i.score, i.kind, i.key, "") for i in budget_items]
    if show_all or len(candidates) <= MOST:
        shown = sorted(candidates)
    else:  # the top ones only: no need to order the thousands below them
        shown = heapq.nsmallest(TOP, candidates)
    budget_by_key = {item.key: item for item in budget_items}
    context = _Context(ledger, catalog, fields, now, local)
    items = [await _written(c, context, budget_by_key) for c in shown]
    kinds = dict(Counter(kind for _, kind, _, _ in candidates))
    return DailyList(
        [item for item in items if item is not None],
        f"{local:%A} {local.day} {local:%B}",
        len(candidates),
        kinds,
    )


@dataclass(frozen=True)
class _Context:
    """What writing an item out needs: where to read, and the operator's now."""

    ledger: Ledger
    catalog: Catalog
    money_fields: dict[str, list[str]]
    now: datetime
    local: datetime

    def money(self, run: Run | None) -> list[Money]:
        """The money a run is about: its money inputs, or what is still owed of them."""
        if run is None:
            return []
        return _money_of(self.money_fields.get(run.process), {**run.inputs, **(run.owed or {})})


async def _written(
    candidate: tuple[float, str, str, str], context: _Context, budget_items: dict[str, Item]
) -> Item | None:
    """The item with its title, line and buttons, from its full records; its score is
    the one it was ranked by."""
    negated, kind, key, run_id = candidate
    if kind == "budget":
        return budget_items[key]
    ledger, score = context.ledger, -negated
    run = await ledger.get_run(run_id)
    if kind == "approval":
        approval = await ledger.get_approval(key)
        return _approval_item(approval, run, score, context) if approval else None
    if run is None:
        return None
    if kind == "due":
        timer = await ledger.get_timer(key)
        return _timer_item(timer, run, score, context) if timer else None
    return _run_item(run, kind, score, context)


def next_digest_at(now: datetime, zone: ZoneInfo, at: time) -> datetime:
    """The first moment after ``now`` when the clock in ``zone`` shows ``at``: a day's
    digest keeps its local time across daylight-saving changes."""
    local_day = now.astimezone(zone).date()
    for offset in range(3):
        moment = datetime.combine(local_day + timedelta(days=offset), at, zone)
        if moment > now:
            return moment
    raise AssertionError("a day has passed")  # pragma: no cover


# -- items -------------------------------------------------------------------------------


def _approval_item(approval: Approval, run: Run | None, score: float, context: _Context) -> Item:
    card = approval.card
    money = context.money(run)
    left = approval.expires_at - context.now
    if left > timedelta():
        deadline = _expires(approval.expires_at, context.local, left)
    elif approval.on_expiry == "escalate":  # asked again: no timer is coming
        deadline = f"nobody answered by {_when(approval.expires_at, context.local)}"
    else:
        deadline = "expired, waiting for its timer"
    parts = [_waiting(context.now - approval.created_at), *_amount(money), deadline]
    buttons = [
        Button("Approve", f"approve:{approval.id}", "primary"),
        Button("Reject", f"reject:{approval.id}", "danger"),
        Button("Details", f"details:{approval.id}"),
    ]
    if left <= timedelta() and approval.on_expiry == "reject":
        buttons = buttons[1:]  # too late to approve: an Approve would only expire it
    return Item(
        score=score,
        kind="approval",
        title=str(card.get("summary") or card.get("title") or approval.id),
        why=" · ".join(parts) + f" · {approval.id} in run {approval.run_id}",
        buttons=buttons,
        key=approval.id,
    )


def _run_item(run: Run, kind: str, score: float, context: _Context) -> Item:
    stopped = context.now - run.updated_at
    where = run.current_step or "its start"
    advice = []
    if kind == "failed":
        reason = f"failed ({run.error_class}): {run.error}"
    elif kind == "paused":
        reason = f"is paused at {where}"
    else:
        reason = f"has not moved for {_duration(stopped)} at {where}"
        advice = [f"/runs {run.id} shows its steps, /cancel {run.id} stops it"]
    return Item(
        score=score,
        kind=kind,
        title=f"{_process_title(run, context.catalog)} {run.id} {reason}",
        why=" · ".join([f"since {_duration(stopped)}", *_amount(context.money(run)), *advice]),
        buttons=_run_buttons(run, kind),
        key=run.id,
    )


def _run_buttons(run: Run, kind: str) -> list[Button]:
    """Retry; for a run stopped as uncertain, Confirm first: the attempt happened.
    Resume for a paused run; none for a stuck one (nothing is sure to move it)."""
    if kind == "paused":
        return [Button("Resume", f"resume:{run.id}", "primary")]
    if kind != "failed":
        return []
    if run.error_class == "uncertain":
        return [
            Button("Confirm", f"confirm:{run.id}", "primary"),
            Button("Retry", f"retry:{run.id}"),
        ]
    return [Button("Retry", f"retry:{run.id}", "primary")]


def _timer_item(timer: Timer, run: Run, score: float, context: _Context) -> Item:
    due = timer.due_at.astimezone(context.local.tzinfo)
    when = "now" if due <= context.now else f"at {due:%H:%M}"
    process = _process_title(run, context.catalog)
    return Item(
        score=score,
        kind="due",
        title=f"{process} {run.id} goes on {when} ({run.current_step})",
        why=" · ".join(["due today", *_amount(context.money(run))]),
        key=timer.key,
    )


async def _budget_items(budgets: Budgets, catalog: Catalog, now: datetime) -> list[Item]:
    """A budget at 80 % or more of its limit: model calls are about to stop, or have.
    A limit of nothing is no alert: it says no model is to be called."""
    items = []
    for usage in await budgets.usage(now):
        if usage.limit <= 0 or usage.spent < 0.8 * usage.limit:
            continue
        over = usage.spent >= usage.limit
        definition = catalog.get(usage.key)  # a process's budget: by its title
        what = f"{definition.title}'s model spend this month" if definition else usage.what
        what = what[0].upper() + what[1:]
        items.append(
            Item(
                score=45.0 if over else 25.0,
                kind="budget",
                title=f"{what}: {dollars(usage.spent)} of {dollars(usage.limit)}",
                why="model calls are stopped: runs that need one wait for /retry"
                if over
                else f"{usage.spent / usage.limit:.0%} used: model calls stop at the limit",
                key=f"budget:{usage.key}",
            )
        )
    return items


def _points(risk: float, money: float, left: float | None, waiting: float) -> float:
    """The documented score, from seconds: ``left`` until due or expiry, ``waiting``."""
    urgency = 0.0
    if left is not None:
        if left <= 0:
            urgency = 30.0
        elif left <= DAY:
            urgency = 20.0
        elif left <= 3 * DAY:
            urgency = 10.0
    days = min(waiting / DAY, 10.0)
    return 10 * risk + 5 * math.log10(1 + money) + urgency + 2 * days


def _money_fields(catalog: Catalog) -> dict[str, list[str]]:
    """Each process's money inputs, where it has any."""
    return {d.name: d.money_inputs for d in catalog if d.money_inputs}


def _money_of(names: list[str] | None, inputs: dict[str, Any]) -> list[Money]:
    amounts = []
    for name in names or ():
        if inputs.get(name) is not None:
            with suppress(ValueError):
                amounts.append(Money.read(str(inputs[name])))
    return amounts


def _worth(stored: str) -> float:
    """A stored amount as a number, for the score: "€1,200.00" is 1200. A run keeps it
    as ``Money`` writes it, a sign and the figures, read here without ``Money.read``:
    the list reads thousands, and that took a sixth of its time."""
    with suppress(ValueError):
        number = float(stored.lstrip(SIGN_CHARACTERS).replace(",", ""))
        if math.isfinite(number) and number >= 0:
            return number
    return float(Money.read(stored).amount)  # written otherwise: it says what is wrong


def _amount(money: list[Money]) -> list[str]:
    """The money at stake, summed in each currency: "€1,200.00 at stake"."""
    totals: dict[str | None, Decimal] = {}
    for each in money:
        totals[each.currency] = totals.get(each.currency, ZERO) + each.amount
    shown = [str(Money(total, currency)) for currency, total in totals.items() if total]
    return [" + ".join(shown) + " at stake"] if shown else []


def _waiting(waited: timedelta) -> str:
    return "new today" if waited < timedelta(hours=1) else f"waiting {_duration(waited)}"


def _when(moment: datetime, local: datetime) -> str:
    """A moment on the operator's clock: "09:00" today, else "Mon 7 Dec 09:00"."""
    shown = moment.astimezone(local.tzinfo)
    return (
        f"{shown:%H:%M}"
        if shown.date() == local.date()
        else f"{shown:%a} {shown.day} {shown:%b %H:%M}"
    )


def _expires(expires_at: datetime, local: datetime, left: timedelta) -> str:
    day = (expires_at.astimezone(local.tzinfo).date() - local.date()).days
    clock = f"{expires_at.astimezone(local.tzinfo):%H:%M}"
    if day == 0:
        return f"expires today at {clock}"
    if day == 1:
        return f"expires tomorrow at {clock}"
    return f"expires in {day} days"


def _duration(span: timedelta) -> str:
    if span >= timedelta(days=1):
        days = span.days
        return f"{days} day{'s' if days != 1 else ''}"
    hours = int(span / timedelta(hours=1))
    if hours >= 1:
        return f"{hours} h"
    return f"{max(1, int(span / timedelta(minutes=1)))} min"


def _process_title(run: Run, catalog: Catalog) -> str:
    definition = catalog.get(run.process)
    return definition.title if definition is not None else run.process


def _counted(counts: dict[str, int]) -> str:
    names = {
        "approval": "approval",
        "failed": "failed run",
        "stuck": "stuck run",
        "paused": "paused run",
        "budget": "budget alert",
    }
    return ", ".join(
        f"{count} due today" if kind == "due" else f"{count} {names[kind]}{'s' * (count != 1)}"
        for kind, count in counts.items()
    )
