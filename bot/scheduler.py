"""The scheduler: fires due timers (waits, approval expiry) and reports what changed."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from graph.coordinator import Coordinator
from graph.engine import Decision, ProcessEngine, RunView
from graph.messages import Reply
from memory.ledger import Ledger, utcnow

log = logging.getLogger(__name__)

# Where a run's news goes: the reply, and the chat the run was started from (None for a
# run started from the CLI): {"channel": "telegram", "chat_id": "12345"}.
Notify = Callable[[Reply, dict[str, Any] | None], Awaitable[None]]


class Scheduler:
    def __init__(
        self,
        ledger: Ledger,
        engine: ProcessEngine,
        coordinator: Coordinator,
        notify: Notify,
        interval: float = 5.0,
    ) -> None:
        self.ledger = ledger
        self.engine = engine
        self.coordinator = coordinator
        self.notify = notify
        self.interval = interval
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    async def tick(self) -> int:
        """Fires every due timer once; returns how many this worker fired."""
        fired = 0
        for timer in await self.ledger.due_timers(utcnow()):
            try:
                result = await self.engine.fire_timer(timer, self.worker)
            except Exception:
                log.exception("timer %s failed", timer.key)
                continue
            if result is None:
                continue
            fired += 1
            reply = self._reply(result)
            if reply.items:
                await self.notify(reply, _reply_to(result))
        return fired

    def _reply(self, result: RunView | Decision) -> Reply:
        if isinstance(result, Decision):
            return self.coordinator.decision_reply(result)
        return self.coordinator.describe(result)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again")
            await asyncio.sleep(self.interval)


def _reply_to(result: RunView | Decision) -> dict[str, Any] | None:
    view = result.view if isinstance(result, Decision) else result
    return view.run.reply_to if view is not None else None
