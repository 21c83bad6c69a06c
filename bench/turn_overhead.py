"""Operator turns that each advance a run by one step, against bare LangGraph.

Each turn is an approval pressed in chat: the coordinator stores the delivery in the
durable inbox, checks the sender, records the decision, resumes the run through its
step and back to a gate, and answers with the next card. The baseline is a bare
LangGraph graph on the same checkpointer doing the same step per turn: resume one
interrupted node, which interrupts again. For context it also runs bare LangGraph on
its stock AsyncSqliteSaver. The contenders take turns in rounds, so the machine's
noise falls on all of them alike.

    uv run python -m bench.turn_overhead [--turns 1000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from langgraph.types import Command

from bench.common import Saver, bare_gate_loop, percentile, steward_home, summary
from graph.messages import Inbound, Sender

RUNS = 20
LOOP = """
name: bench_loop
title: Benchmark loop
description: asks for approval again after every approval
steps:
  - id: gate
    kind: approval
    summary: Approve turn {run_id}
    next: gate
max_visits: 1000
"""

Turn = Callable[[], Awaitable[None]]


@asynccontextmanager
async def steward_turn() -> AsyncIterator[Turn]:
    async with steward_home({"bench_loop": LOOP}) as steward:
        operator = Sender("console", "bench")
        pending: list[str] = []
        for _ in range(RUNS):
            view = await steward.engine.start("bench_loop", {}, operator.key)
            assert view.approval is not None
            pending.append(view.approval.id)
        count = 0

        async def turn() -> None:
            nonlocal count
            slot = count % RUNS
            count += 1
            press = Inbound(operator, "bench", f"turn-{count}", button=f"approve:{pending[slot]}")
            reply = await steward.door.receive(press)
            assert reply is not None and reply.cards, reply
            pending[slot] = reply.cards[0].approval_id

        yield turn


@asynccontextmanager
async def bare_turn(durability: Any, saver: Saver = "steward") -> AsyncIterator[Turn]:
    async with bare_gate_loop(saver) as graph:
        for run in range(RUNS):
            await graph.ainvoke({"turns": 0}, {"configurable": {"thread_id": f"t{run}"}})
        count = 0

        async def turn() -> None:
            nonlocal count
            config = {"configurable": {"thread_id": f"t{count % RUNS}"}}
            count += 1
            result = await graph.ainvoke(Command(resume="ok"), config, durability=durability)
            assert "__interrupt__" in result

        yield turn


async def timed(turn: Turn, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await turn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def main(turns: int, rounds: int) -> None:
    async with AsyncExitStack() as stack:
        enter = stack.enter_async_context
        contenders = {
            "steward: inbox, identity, decision, step, audit, card": await enter(steward_turn()),
            "bare LangGraph, same checkpointer, default durability": await enter(
                bare_turn("async")
            ),
            "bare LangGraph, same checkpointer, durability=exit": await enter(bare_turn("exit")),
            "bare LangGraph, stock AsyncSqliteSaver, default": await enter(
                bare_turn("async", "stock")
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for turn in contenders.values():
            await timed(turn, 20)  # warm up
        per_round = max(1, turns // rounds)
        for _ in range(rounds):
            for name, turn in contenders.items():
                samples[name] += await timed(turn, per_round)
    ours, bare, _, stock = samples.values()
    print(f"turn overhead: {len(ours)} operator turns, each advancing a run by one step")
    for name, values in samples.items():
        print(f"  {name:<54} {summary(values)}")
    for name, baseline in (("same checkpointer", bare), ("stock AsyncSqliteSaver", stock)):
        p50 = percentile(ours, 50) / percentile(baseline, 50)
        p99 = percentile(ours, 99) / percentile(baseline, 99)
        print(f"  ratio to bare LangGraph ({name}): p50 {p50:.2f}  p99 {p99:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.turns, arguments.rounds))
