"""Start runs up to their approval gate, then approve them all: runs per second, per phase.

The work is the built-in newsletter process (draft → gate → publish to the outbox),
driven through the engine with many runs in flight, as a chat with many operators'
messages would. The baseline is bare LangGraph on the same checkpointer running a
three-node graph (draft → gate → publish) with no ledger, no audit and no effect; for
context, also on LangGraph's stock AsyncSqliteSaver.

    uv run python -m bench.approvals [--runs 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt

from bench.common import Saver, bare_saver, steward_home
from memory.ledger import RunStatus

INPUTS = {"topic": "Pricing update", "audience": "customers", "notes": "new plans in May"}


async def in_flight(count: int, concurrency: int, work: Callable[[int], Awaitable[Any]]) -> float:
    """Runs ``work(i)`` for every i with ``concurrency`` in flight; returns items per second."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await work(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def steward_phases(runs: int, concurrency: int) -> tuple[float, float]:
    async with steward_home() as steward:
        approvals: list[str] = [""] * runs

        async def start(i: int) -> None:
            view = await steward.engine.start("newsletter_issue", INPUTS, "console:bench")
            assert view.approval is not None
            approvals[i] = view.approval.id

        async def approve(i: int) -> None:
            decision = await steward.engine.decide(approvals[i], True, "console:bench")
            assert decision.view is not None
            assert decision.view.run.status is RunStatus.SUCCEEDED, decision.view.run

        started = await in_flight(runs, concurrency, start)
        approved = await in_flight(runs, concurrency, approve)
        sent = len(list(steward.settings.outbox_dir.glob("*.json")))
        assert sent == runs, f"{sent} effects for {runs} approvals"
        return started, approved


class Newsletter(TypedDict, total=False):
    text: str
    decision: Any


async def _draft(state: Newsletter) -> dict[str, Any]:
    return {"text": "Hello readers"}


async def _gate(state: Newsletter) -> dict[str, Any]:
    return {"decision": interrupt({"summary": "publish?"})}


async def _publish(state: Newsletter) -> dict[str, Any]:
    return {}


async def bare_phases(
    runs: int, concurrency: int, durability: Any, saver_kind: Saver = "steward"
) -> tuple[float, float]:
    async with bare_saver(saver_kind) as saver:
        builder = StateGraph(Newsletter)
        builder.add_node("draft", _draft)  # type: ignore[call-overload]
        builder.add_node("gate", _gate)  # type: ignore[call-overload]
        builder.add_node("publish", _publish)  # type: ignore[call-overload]
        builder.add_edge(START, "draft")
        builder.add_edge("draft", "gate")
        builder.add_edge("gate", "publish")
        graph = builder.compile(checkpointer=saver)

        async def start(i: int) -> None:
            config = {"configurable": {"thread_id": f"t{i}"}}
            await graph.ainvoke({"text": ""}, config, durability=durability)

        async def approve(i: int) -> None:
            config = {"configurable": {"thread_id": f"t{i}"}}
            await graph.ainvoke(Command(resume="ok"), config, durability=durability)

        return await in_flight(runs, concurrency, start), await in_flight(
            runs, concurrency, approve
        )


async def main(runs: int, concurrency: int) -> None:
    await steward_phases(50, concurrency)  # warm up
    ours = await steward_phases(runs, concurrency)
    bare = await bare_phases(runs, concurrency, "async")
    bare_exit = await bare_phases(runs, concurrency, "exit")
    stock = await bare_phases(runs, concurrency, "async", "stock")
    print(
        f"approvals: {runs} runs, {concurrency} in flight, embedded SQLite (target >= 300/s each)"
    )
    rows = [
        ("steward (ledger, audit, effect)", ours),
        ("bare LangGraph, same checkpointer", bare),
        ("bare, same checkpointer, exit", bare_exit),
        ("bare, stock AsyncSqliteSaver", stock),
    ]
    for name, (start, approve) in rows:
        print(f"  {name:<34} start→gate {start:7.1f} runs/s   approve→done {approve:7.1f} runs/s")
    for name, (start, approve) in rows[1:2] + rows[3:]:
        print(f"  ratio to {name}: start {ours[0] / start:.2f}  approve {ours[1] / approve:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.concurrency))
