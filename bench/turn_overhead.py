"""Operator turns that each advance a run by one step, against bare LangGraph.

Each turn is an approval pressed in chat: the coordinator stores the delivery in the
durable inbox, checks the sender, records the decision, resumes the run through its
step and back to a gate, and answers with the next card. The baseline is a bare
LangGraph graph on the same checkpointer (AsyncSqliteSaver) doing the same step per
turn: resume one interrupted node, which interrupts again. For context it also runs
bare LangGraph on its stock AsyncSqliteSaver.

    uv run python -m bench.turn_overhead [--turns 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
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


async def steward_turns(turns: int) -> list[float]:
    async with steward_home({"bench_loop": LOOP}) as steward:
        operator = Sender("console", "bench")
        pending: list[str] = []
        for _ in range(RUNS):
            view = await steward.engine.start("bench_loop", {}, operator.key)
            assert view.approval is not None
            pending.append(view.approval.id)
        samples = []
        for turn in range(turns):
            slot = turn % RUNS
            inbound = Inbound(operator, "bench", f"turn-{turn}", button=f"approve:{pending[slot]}")
            started = time.perf_counter()
            reply = await steward.coordinator.receive(inbound)
            samples.append((time.perf_counter() - started) * 1000)
            assert reply is not None and reply.cards, reply
            pending[slot] = reply.cards[0].approval_id
        return samples


async def bare_turns(turns: int, durability: Any, saver: Saver = "steward") -> list[float]:
    async with bare_gate_loop(saver) as graph:
        for run in range(RUNS):
            await graph.ainvoke({"turns": 0}, {"configurable": {"thread_id": f"t{run}"}})
        samples = []
        for turn in range(turns):
            config = {"configurable": {"thread_id": f"t{turn % RUNS}"}}
            started = time.perf_counter()
            result = await graph.ainvoke(Command(resume="ok"), config, durability=durability)
            samples.append((time.perf_counter() - started) * 1000)
            assert "__interrupt__" in result
        return samples


async def main(turns: int) -> None:
    # Warm up every path, then measure them one after another in the same process.
    await bare_turns(50, "async")
    await steward_turns(50)
    bare = await bare_turns(turns, "async")
    ours = await steward_turns(turns)
    bare_exit = await bare_turns(turns, "exit")
    stock = await bare_turns(turns, "async", "stock")
    print(f"turn overhead: {turns} operator turns, each advancing a run by one step")
    print(f"  steward: inbox, identity, decision, step, audit, card  {summary(ours)}")
    print(f"  bare LangGraph, same checkpointer, default durability  {summary(bare)}")
    print(f"  bare LangGraph, same checkpointer, durability=exit     {summary(bare_exit)}")
    print(f"  bare LangGraph, stock AsyncSqliteSaver, default        {summary(stock)}")
    for name, baseline in (("same checkpointer", bare), ("stock AsyncSqliteSaver", stock)):
        p50 = percentile(ours, 50) / percentile(baseline, 50)
        p99 = percentile(ours, 99) / percentile(baseline, 99)
        print(f"  ratio to bare LangGraph ({name}): p50 {p50:.2f}  p99 {p99:.2f}  (target <= 1.3)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=1000)
    asyncio.run(main(parser.parse_args().turns))
