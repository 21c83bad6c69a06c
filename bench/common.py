"""What the benchmarks share: percentiles, a throwaway home, the bare-LangGraph baseline."""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypedDict

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from bot.app import Steward
from bot.settings import load_settings
from memory.checkpoints import open_checkpointer
from memory.database_url import DatabaseURL
from memory.ledger import Ledger

# "steward": the checkpointer steward runs on; "stock": LangGraph's AsyncSqliteSaver.
Saver = Literal["steward", "stock"]


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


START_RUN = "/run onboarding client=Acme email=jane@acme.com package=basic"


# One message to a running app: its text, and whether to wait for an approval card too;
# the ms to the first reply, and to the card (None when not waited for).
Send = Callable[[str, bool], Awaitable[tuple[float, float | None]]]
WARM_UP = 20  # messages to each app before any is measured
# Seconds between messages, each from a chat of its own: 20 a second, so that steward's
# pacing (about one message a second per chat) is in place but never the thing measured.
SPACING = 0.05


class Arrivals:
    """When each chat's first reply, and its first card, reached a fake platform, read
    from the fake's call log as it grows, each call once. Waiting for a reply then costs
    the same at the thousandth message as at the first: a scan of the whole log, on the
    loop the apps share, would slow the later messages down, and the echo app's the
    more (its wait begins before it replies, steward's after)."""

    def __init__(
        self,
        calls: list[Any],
        method: str,
        chat: Callable[[Any], Any],
        is_card: Callable[[Any], bool],
    ) -> None:
        self._calls, self._method, self._chat, self._is_card = calls, method, chat, is_card
        self._read = 0
        self._first: dict[Any, float] = {}
        self._card: dict[Any, float] = {}

    def first(self, chat: Any) -> float | None:
        self._catch_up()
        return self._first.get(chat)

    def card(self, chat: Any) -> float | None:
        self._catch_up()
        return self._card.get(chat)

    def _catch_up(self) -> None:
        for call in self._calls[self._read :]:
            if call.method == self._method:
                chat = self._chat(call)
                self._first.setdefault(chat, call.at)
                if self._is_card(call):
                    self._card.setdefault(chat, call.at)
        self._read = len(self._calls)


async def reply_times(
    fake: Any, arrivals: Arrivals, chat: Any, since: float, card: bool
) -> tuple[float, float | None]:
    """ms from ``since`` (``time.monotonic()``) to ``chat``'s first reply and, with
    ``card``, to its first card, as ``fake`` (a local platform) received them; then the
    pause between messages."""
    await fake.wait_for(lambda _: arrivals.first(chat) is not None, timeout=30)
    first = ((arrivals.first(chat) or 0.0) - since) * 1000
    shown = None
    if card:
        await fake.wait_for(lambda _: arrivals.card(chat) is not None, timeout=30)
        shown = ((arrivals.card(chat) or 0.0) - since) * 1000
    await asyncio.sleep(SPACING)
    return first, shown


async def round_trip_contest(
    echo: Send, steward: Send, cycles: int
) -> tuple[list[float], dict[str, list[float]], list[float]]:
    """The bare echo app and steward, both running, take turns message by message, so
    that the machine's drift from one second to the next falls on both alike: each
    cycle sends the echo app a message, steward ``/runs``, the echo app another, and
    steward a ``/run``. Returns the echo app's round trips, steward's by command, and
    the time to each started run's card (all in ms)."""
    for _ in range(WARM_UP):
        await echo("warm up", False)
        await steward("/runs", False)
    for _ in range(WARM_UP // 4):
        await steward(START_RUN, True)
    base: list[float] = []
    ours: dict[str, list[float]] = {"/runs": [], "/run onboarding …": []}
    cards: list[float] = []
    for _ in range(cycles):
        base.append((await echo("hello there", False))[0])
        ours["/runs"].append((await steward("/runs", False))[0])
        base.append((await echo("hello there", False))[0])
        first, card = await steward(START_RUN, True)
        ours["/run onboarding …"].append(first)
        assert card is not None
        cards.append(card)
    return base, ours, cards


def print_round_trips(
    heading: str,
    baseline: tuple[str, list[float]],
    steward: dict[str, list[float]],
    cards: list[float],
) -> None:
    """Each contender's percentiles, then steward's ratios to the baseline (target 1.5).
    ``cards``: how long the approval card of each run started took, for the record."""
    name, base = baseline
    print(heading)
    print(f"  {name:<28}{summary(base)}")
    for command, samples in steward.items():
        print(f"  {'steward, ' + command:<28}{summary(samples)}")
    print(f"  {'  … and to its card':<28}{summary(cards)}")
    base50, base99 = percentile(base, 50), percentile(base, 99)
    for command, samples in steward.items():
        print(
            f"  ratio {command:<22} p50 {percentile(samples, 50) / base50:.2f}  "
            f"p99 {percentile(samples, 99) / base99:.2f}   (target ≤ 1.5)"
        )


def summary(samples_ms: list[float]) -> str:
    return (
        f"p50 {percentile(samples_ms, 50):6.2f} ms  p99 {percentile(samples_ms, 99):6.2f} ms  "
        f"mean {statistics.fmean(samples_ms):6.2f} ms"
    )


async def as_after_start(steward: Steward) -> None:
    """As `steward run` is a while after it started: the embedding model loaded (the
    service only began loading it) and the objects of the start frozen."""
    if steward.history.embedder is not None:
        await steward.history.embedder.warm_up()
    gc.freeze()


@asynccontextmanager
async def steward_home(processes: dict[str, str] | None = None) -> AsyncIterator[Steward]:
    """A fresh steward on embedded SQLite in a temporary home, with extra definitions."""
    with tempfile.TemporaryDirectory(prefix="steward-bench-") as home:
        user_dir = Path(home) / "processes"
        user_dir.mkdir()
        for name, text in (processes or {}).items():
            (user_dir / f"{name}.yaml").write_text(text)
        settings = load_settings(home=Path(home), database_url=None, llm_model=None)
        async with Steward.open(settings) as steward:
            gc.freeze()  # as `steward run` does once it has started
            yield steward


class GateState(TypedDict, total=False):
    turns: int
    decision: Any


async def _gate(state: GateState) -> Command[str]:
    decision = interrupt({"ask": "approve?"})
    return Command(goto="gate", update={"turns": state.get("turns", 0) + 1, "decision": decision})


@asynccontextmanager
async def bare_saver(kind: Saver) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """A checkpointer on a file of its own: steward's, or LangGraph's stock async one."""
    with tempfile.TemporaryDirectory(prefix="langgraph-bench-") as home:
        path = Path(home) / "bare.db"
        if kind == "stock":
            async with aiosqlite.connect(path) as conn:
                stock = AsyncSqliteSaver(conn)
                await stock.setup()
                yield stock
            return
        ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(path))
        try:
            async with open_checkpointer(ledger) as saver:
                yield saver
        finally:
            await ledger.close()


@asynccontextmanager
async def bare_gate_loop(kind: Saver) -> AsyncIterator[CompiledStateGraph[Any, Any, Any, Any]]:
    """Bare LangGraph: one node that asks for approval again after each answer."""
    async with bare_saver(kind) as saver:
        builder = StateGraph(GateState)
        builder.add_node("gate", _gate)  # type: ignore[call-overload]
        builder.add_edge(START, "gate")
        yield builder.compile(checkpointer=saver)
