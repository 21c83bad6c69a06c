"""A steward scheduler process for the timer tests: ticks until its stdin is closed,
then exits.

python -m tests.bot.scheduler_driver HOME
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.app import Steward
from bot.scheduler import Scheduler
from bot.settings import load_settings
from graph.messages import Reply


async def tick_until_told(home: Path) -> None:
    async def quiet(reply: Reply, reply_to: object) -> None:
        return None

    settings = load_settings(home=home, processes_dir=home / "processes")
    async with Steward.open(settings) as steward:
        scheduler = Scheduler(steward.ledger, steward.engine, steward.coordinator, quiet, 0.1)
        print("ready", flush=True)
        ticking = asyncio.create_task(scheduler.run())
        await asyncio.to_thread(sys.stdin.read)  # until the test closes it
        ticking.cancel()


if __name__ == "__main__":
    asyncio.run(tick_until_told(Path(sys.argv[1])))
