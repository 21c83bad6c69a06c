"""What the benchmarks share: percentiles, a throwaway home, the bare-LangGraph baseline."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from bot.app import Steward
from bot.settings import load_settings


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_ms: list[float]) -> str:
    return (
        f"p50 {percentile(samples_ms, 50):6.2f} ms  p99 {percentile(samples_ms, 99):6.2f} ms  "
        f"mean {statistics.fmean(samples_ms):6.2f} ms"
    )


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
            yield steward


class GateState(TypedDict, total=False):
    turns: int
    decision: Any


async def _gate(state: GateState) -> Command[str]:
    decision = interrupt({"ask": "approve?"})
    return Command(goto="gate", update={"turns": state.get("turns", 0) + 1, "decision": decision})


@asynccontextmanager
async def bare_saver() -> AsyncIterator[AsyncSqliteSaver]:
    """The checkpointer steward uses, on a file of its own, as bare LangGraph would."""
    with tempfile.TemporaryDirectory(prefix="langgraph-bench-") as home:
        async with aiosqlite.connect(Path(home) / "bare.db") as conn:
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
            yield saver


@asynccontextmanager
async def bare_gate_loop() -> AsyncIterator[CompiledStateGraph[Any, Any, Any, Any]]:
    """Bare LangGraph: one node that asks for approval again after each answer."""
    async with bare_saver() as saver:
        builder = StateGraph(GateState)
        builder.add_node("gate", _gate)  # type: ignore[call-overload]
        builder.add_edge(START, "gate")
        yield builder.compile(checkpointer=saver)
