"""A steward process for the daily list's crash test: sends the list of 24 October 2026
to two Telegram chats, by way of the ledger, as a channel does.

    python -m tests.bot.digest_driver HOME STALL

STALL says where it stops and waits for the test's SIGKILL: ``before`` the first chat's
reply is kept, ``between`` the two chats', or ``none``: it sends, prints "done" and exits.
Telegram never answers here: what each chat was owed stays in the ledger, to be counted.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.app import Steward
from bot.outbox import Outbox
from bot.scheduler import DigestTime, Scheduler
from bot.settings import load_settings
from graph.messages import Owed, Reply

CHATS = ("1", "2")
DUE = datetime(2026, 10, 24, 8, 0, tzinfo=UTC)


async def stall() -> None:
    print("stalled", flush=True)
    await asyncio.Event().wait()


async def drive(home: Path, stall_at: str) -> None:
    async with Steward.open(load_settings(home=home)) as steward:

        async def never_answers(owed: Owed) -> None:
            await asyncio.Event().wait()

        outbox = Outbox(steward.door, "telegram", never_answers)
        owe = steward.ledger.owe_reply
        kept = 0

        async def owe_stalling(*args: Any) -> bool:
            nonlocal kept
            if stall_at == "before":
                await stall()
            taken = await owe(*args)
            kept += 1
            if stall_at == "between" and kept == 1:
                await stall()
            return taken

        steward.ledger.owe_reply = owe_stalling  # type: ignore[method-assign]

        async def deliver(reply: Reply, reply_to: object) -> bool:
            for chat in CHATS:  # as Telegram's channel gives news to each operator's chat
                await outbox.owe(chat, reply)
            return True

        await steward.ledger.plan_timer("digest:2026-10-24", "digest", DUE)
        scheduler = Scheduler(
            steward.ledger,
            steward.engine,
            steward.coordinator,
            deliver,
            digest=DigestTime(time(8, 0), ZoneInfo("UTC")),
            clock=lambda: DUE + timedelta(seconds=1),
        )
        await scheduler.tick()
        await outbox.stop()
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(drive(Path(sys.argv[1]), sys.argv[2]))
