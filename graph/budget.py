"""Model spend: the price table, the budgets that stop model calls, the spend report.

Every model call's tokens, latency and cost are in the ledger (``graph.models``; a
remote embedding model's calls too, priced by their text's length). A
daily budget (``STEWARD_BUDGET_DAILY``, US dollars, the operator's day) caps all model
spend; a process budget (``STEWARD_PROCESS_BUDGETS``, dollars a calendar month) caps one
process's runs. Once a budget is spent no call is made (a call's cost is known only
when it answers, so the call that spends a budget may take it past its limit; calls
running at once hold their worst cost meanwhile, in the ledger, so that together they
cannot, whichever of the stewards sharing it makes them, and a steward's calls that wait
for room take it in the order they asked): the run
stops, failed as ``budget``, and tells the operator; ``/retry`` goes on from that step
once there is room (a new day or month, or a raised budget). Nothing is lost. An
embedding that finds no room is not made either: long-term memory stores its records for
keyword search and embeds them once there is room, and a question is searched by
keywords alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Container, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from graph.errors import StewardError
from memory.embeddings import EmbeddingFailed
from memory.ledger import Ledger, ModelCall, ModelHold, SpendLimit, utcnow

log = logging.getLogger(__name__)

# US dollars per million tokens (input, output); unknown models are recorded at zero.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
}
# How long a call waits for room in the budgets, behind calls under way that might
# spend it, before it is not made.
ROOM_SECONDS = 300.0
# How long a call's room is held at most: an attempt is waited for a minute at most
# (graph.models' RETRY). A steward that dies mid-call leaves its hold till then.
HOLD_SECONDS = 120.0
# Calls of other stewards on the ledger settle without a word to this one: a call waiting
# for room looks again this often.
LOOK_AGAIN_SECONDS = 0.5
SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # OpenAI's dated model names end so
# Where /budget counts the model calls that belong to no run, by their purpose: choosing
# a process, answering a question about history, embedding texts for long-term memory.
ROUTING = "(routing)"
HISTORY_PURPOSE = "history"
HISTORY = "(history)"
EMBEDDING = "embedding"
MEMORY = "(memory)"
NO_RUN = {HISTORY_PURPOSE: HISTORY, EMBEDDING: MEMORY}  # any other purpose is ROUTING's


class BudgetExceeded(StewardError):
    kind = "budget"

    def __init__(self, message: str, spent: str | None = None) -> None:
        super().__init__(message)
        self.spent = spent or message  # "the daily model budget is spent ($0.01 of $0.01 today)"

    @classmethod
    def of(cls, spent: str, advice: str) -> BudgetExceeded:
        return cls(f"{spent}, so no model call was made; {advice}", spent)


class NoRoom(StewardError):
    """A call waited its patience for room in the budgets, behind calls under way that
    might spend it, and was not made."""


@dataclass(frozen=True)
class Usage:
    what: str  # "today's model spend"
    spent: float
    limit: float
    key: str  # the setting, or the process, it belongs to


def estimated_tokens(text: str) -> int:
    """About how many tokens ``text`` is: four bytes of UTF-8 each, as English runs
    (a character of Chinese or Japanese, three bytes, is about one token)."""
    return -(-len(text.encode(errors="replace")) // 4)  # (a lone surrogate counts too)


def dollars(amount: float) -> str:
    """Cents, or the first figures of a sum under ten cents: "$0.004", not "$0.00"."""
    return f"${amount:,.2f}" if amount == 0 or amount >= 0.1 else f"${amount:.2g}"


def parse_prices(text: str) -> dict[str, tuple[float, float]]:
    """``model=IN/OUT,…`` in dollars per million tokens, e.g. ``llama3=0/0``."""
    prices: dict[str, tuple[float, float]] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, pair = entry.partition("=")
        given, _, taken = pair.partition("/")
        _once(name.strip(), prices)
        try:
            prices[name.strip()] = (float(given), float(taken))
        except ValueError:
            raise ValueError(f"{entry!r} should look like gpt-4o=2.50/10.00") from None
        if not name.strip() or not all(_a_sum(price) for price in prices[name.strip()]):
            raise ValueError(f"{entry!r} should look like gpt-4o=2.50/10.00")
    return prices


def parse_process_budgets(text: str) -> dict[str, float]:
    """``process=DOLLARS,…``: each process's model spend a month."""
    budgets: dict[str, float] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, _, amount = entry.partition("=")
        _once(name.strip(), budgets)
        try:
            budgets[name.strip()] = float(amount)
        except ValueError:
            raise ValueError(f"{entry!r} should look like onboarding=10.00") from None
        if not name.strip() or not _a_sum(budgets[name.strip()]):
            raise ValueError(f"{entry!r} should look like onboarding=10.00")
    return budgets


def _once(name: str, named: Container[str]) -> None:
    """A name given twice (onboarding=10,onboarding=5) is refused, naming it: the one
    written last was taken in silence, whichever was meant."""
    if name in named:
        raise ValueError(f"{name!r} is given twice: give each once")


def _a_sum(amount: float) -> bool:
    """Whether ``amount`` is a sum of money: float() also reads nan and inf, and a budget of
    nan is never reached, a price of nan makes every cost nan."""
    return math.isfinite(amount) and amount >= 0


@dataclass(eq=False)
class _Waiting:
    """A call of this steward's waiting for room in the budgets, of ``process``'s run."""

    process: str | None


@dataclass
class Budgets:
    ledger: Ledger
    zone: ZoneInfo
    daily: float | None = None
    per_process: dict[str, float] = field(default_factory=dict)
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(PRICES))
    patience: float = ROOM_SECONDS
    # This steward's calls waiting for room (first come, first in).
    _waiting: list[_Waiting] = field(default_factory=list, init=False)
    _settled: asyncio.Condition = field(default_factory=asyncio.Condition, init=False)
    _letting_go: set[asyncio.Future[None]] = field(default_factory=set, init=False)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price_in, price_out = self.price(model) or (0.0, 0.0)
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6

    def price(self, model: str) -> tuple[float, float] | None:
        """``model``'s price; a dated snapshot (``gpt-4o-2024-08-06``) is its model's,
        unless priced itself."""
        return self.prices.get(model) or self.prices.get(SNAPSHOT.sub("", model))

    async def usage(self, now: datetime | None = None) -> list[Usage]:
        """Every budget set, with what is spent against it."""
        now = now or utcnow()
        found = []
        if self.daily is not None:
            spent = await self.ledger.model_spend_since(self.day_start(now))
            found.append(Usage("today's model spend", spent, self.daily, "STEWARD_BUDGET_DAILY"))
        for process, limit in self.per_process.items():
            spent = await self.ledger.model_spend_since(self.month_start(now), process)
            found.append(Usage(f"{process}'s model spend this month", spent, limit, process))
        return found

    async def check(self, process: str | None, now: datetime | None = None) -> None:
        """Raises BudgetExceeded when a budget that applies is spent."""
        now = now or utcnow()
        for limit in self._limits(process, now):
            spent = await self.ledger.model_spend_since(limit.since, limit.process)
            if spent >= limit.limit:
                raise _exceeded(limit, spent)

    @asynccontextmanager
    async def room(
        self, process: str | None, worst: float, waits: bool = True
    ) -> AsyncIterator[None]:
        """Room for a call that may cost up to ``worst``, held while it runs, in the
        ledger: the calls of every steward on it count. Raises BudgetExceeded when a
        budget that applies is spent; a call that may take one past its limit waits for
        the calls under way against it to settle, and then goes alone. A call waiting
        goes before the calls of this steward that share a budget with it and asked
        later, though they would fit: a steady stream of small calls kept a large one
        waiting for good. NoRoom when it has waited ``patience``, or at once if it
        ``waits`` not."""
        if not self._limits(process, utcnow()):
            yield  # no budget applies: nothing to hold
            return
        call = _Waiting(process)
        hold_id = uuid.uuid4().hex
        async with self._settled:
            self._waiting.append(call)
            try:
                async with asyncio.timeout(self.patience):
                    while True:
                        if self._behind(call):
                            await self.check(process)
                        elif await self._held(hold_id, process, worst):
                            break
                        if not waits:
                            raise NoRoom(
                                "the model was not asked: the model calls under way left the "
                                "budget no room for it"
                            )
                        with contextlib.suppress(TimeoutError):  # other stewards' calls
                            async with asyncio.timeout(LOOK_AGAIN_SECONDS):  # settle unsaid
                                await self._settled.wait()
            except TimeoutError:
                raise NoRoom(
                    f"the model was not asked: for {self.patience:g} s the model calls under "
                    "way left the budget no room for it"
                ) from None
            finally:
                self._waiting.remove(call)
                self._settled.notify_all()  # the next in line may go
        try:
            yield
        finally:
            # Let go at once, on its own: a second cancellation may cut what follows.
            letting_go = asyncio.ensure_future(self._let_go(hold_id))
            self._letting_go.add(letting_go)
            letting_go.add_done_callback(self._letting_go.discard)
            await asyncio.shield(letting_go)
            async with self._settled:
                self._settled.notify_all()

    async def _held(self, hold_id: str, process: str | None, worst: float) -> bool:
        """Takes room for a call in the ledger; False when the calls under way leave it
        none. BudgetExceeded when a budget is spent."""
        now = utcnow()
        hold = ModelHold(hold_id, process, worst, now + timedelta(seconds=HOLD_SECONDS))
        refused = await self.ledger.hold_model_room(hold, self._limits(process, now), now)
        if refused is not None and refused.spent_out:
            raise _exceeded(refused.limit, refused.spent)
        return refused is None

    async def _let_go(self, hold_id: str) -> None:
        try:
            await self.ledger.let_go_model_hold(hold_id, utcnow())
        except Exception as exc:  # the call is done: its hold lapses by itself
            log.warning("a model call's room in the budgets lapses in %g s: %s", HOLD_SECONDS, exc)

    def _limits(self, process: str | None, now: datetime) -> list[SpendLimit]:
        """The budgets that apply to a call of ``process``'s."""
        limits = []
        if self.daily is not None:
            limits.append(SpendLimit(self.day_start(now), self.daily))
        limit = self.per_process.get(process or "")
        if process is not None and limit is not None:
            limits.append(SpendLimit(self.month_start(now), limit, process))
        return limits

    def _shares(self, process: str | None, other: str | None) -> bool:
        """Whether ``other``'s calls count against a budget that ``process``'s do."""
        return self.daily is not None or other == process

    def _behind(self, call: _Waiting) -> bool:
        """Whether a call that asked before ``call`` waits for room in a budget it shares."""
        ahead = self._waiting[: self._waiting.index(call)]
        return any(self._shares(call.process, other.process) for other in ahead)

    def day_start(self, now: datetime) -> datetime:
        return datetime.combine(now.astimezone(self.zone).date(), time(), self.zone)

    def month_start(self, now: datetime) -> datetime:
        return datetime.combine(now.astimezone(self.zone).date().replace(day=1), time(), self.zone)

    async def spending(self, now: datetime | None = None) -> Spending:
        now = now or utcnow()
        calls = await self.ledger.model_calls_since(self.month_start(now))
        today = self.day_start(now)
        by_day: dict[str, float] = defaultdict(float)
        by_process: dict[str, float] = defaultdict(float)
        by_process.update(dict.fromkeys(self.per_process, 0.0))  # each budget, spent or not
        for at, process, _, cost, purpose in calls:
            by_day[at.astimezone(self.zone).date().isoformat()] += cost
            by_process[process or NO_RUN.get(purpose, ROUTING)] += cost
        return Spending(
            today=sum(cost for at, _, _, cost, _ in calls if at >= today),
            daily_limit=self.daily,
            month=sum(by_process.values()),
            calls=len(calls),
            by_process={
                name: (cost, self.per_process.get(name))
                for name, cost in sorted(by_process.items(), key=lambda item: -item[1])
            },
            by_day=dict(sorted(by_day.items())),
            unpriced=sorted({model for _, _, model, _, _ in calls if self.price(model) is None}),
        )

    @asynccontextmanager
    async def embedding_room(self, model: str, texts: Sequence[str]) -> AsyncIterator[None]:
        """Room for an attempt at embedding ``texts`` with ``model``, as a call that belongs
        to no run: held to the daily budget alone, and not waited for (the records are
        stored for keyword search and embedded later: a feeder or a question waiting
        behind a draft would hold up the records after them). A model priced at nothing
        is never stopped: it spends nothing. EmbeddingFailed when there is no room."""
        worst = self.cost(model, sum(estimated_tokens(text) for text in texts), 0)
        if worst == 0:
            yield
            return
        async with AsyncExitStack() as held:
            try:
                await held.enter_async_context(self.room(None, worst, waits=False))
            except BudgetExceeded as exc:
                raise EmbeddingFailed(f"{model} was not asked: {exc.spent}") from exc
            except NoRoom as exc:
                raise EmbeddingFailed(f"{model}: {exc}") from exc
            yield

    async def record_embedding(self, model: str, texts: Sequence[str], seconds: float) -> None:
        """Records an attempt at a call that embedded ``texts`` with ``model`` (none, when
        it was refused), priced by their length: the clients give no token counts for it."""
        tokens = sum(estimated_tokens(text) for text in texts)
        await self.ledger.record_model_call(
            ModelCall(
                run_id=None,
                step_id=None,
                purpose=EMBEDDING,
                model=model,
                prompt_tokens=tokens,
                completion_tokens=0,
                latency_ms=seconds * 1000,
                cost_usd=self.cost(model, tokens, 0),
            )
        )

    async def report(self, now: datetime | None = None) -> str:
        return (await self.spending(now)).report()


def _exceeded(limit: SpendLimit, spent: float) -> BudgetExceeded:
    if limit.process is None:
        return BudgetExceeded.of(
            f"the daily model budget is spent ({dollars(spent)} of {dollars(limit.limit)} today)",
            "raise STEWARD_BUDGET_DAILY, or /retry tomorrow",
        )
    return BudgetExceeded.of(
        f"{limit.process}'s model budget for the month is spent ({dollars(spent)} of "
        f"{dollars(limit.limit)})",
        "raise it in STEWARD_PROCESS_BUDGETS, or /retry next month",
    )


@dataclass(frozen=True)
class Spending:
    """Model spend in US dollars: today, this calendar month (the operator's), by
    process this month (with its limit, if it has one) and by day."""

    today: float
    daily_limit: float | None
    month: float
    calls: int
    by_process: dict[str, tuple[float, float | None]]
    by_day: dict[str, float]
    unpriced: list[str]  # models of this month's calls with no price: counted at 0

    def report(self) -> str:
        lines = ["Model spend (US dollars):"]
        limit = self.daily_limit
        daily = f" of {limit:.4f} (STEWARD_BUDGET_DAILY)" if limit is not None else ""
        lines.append(f"  today       {self.today:.4f}{daily}")
        lines.append(f"  this month  {self.month:.4f} in {self.calls} call(s)")
        if self.by_process:
            lines.append("  by process this month:")
            for name, (cost, limit) in self.by_process.items():
                of = f" of {limit:.4f}" if limit is not None else ""
                lines.append(f"    {name:<20} {cost:.4f}{of}")
        if self.by_day:
            lines.append("  by day:")
            lines += [f"    {day}  {cost:.4f}" for day, cost in list(self.by_day.items())[-7:]]
        if self.unpriced:
            unpriced = ", ".join(self.unpriced)
            lines.append(f"  no price for {unpriced}: counted at 0 (STEWARD_MODEL_PRICES)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "today": self.today,
            "daily_limit": self.daily_limit,
            "month": self.month,
            "calls": self.calls,
            "by_process": [
                {"process": name, "spent": cost, "monthly_limit": limit}
                for name, (cost, limit) in self.by_process.items()
            ],
            "by_day": [{"day": day, "spent": cost} for day, cost in self.by_day.items()],
            "unpriced_models": self.unpriced,
        }
