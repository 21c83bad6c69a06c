"""Which deliveries a channel had on disk when it told its platform "delivered"."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from memory.ledger import Ledger


class DiskWatch:
    """Records when each delivery was stored (before its handling, or after its answer
    went: ``FrontDoor.claim_unstored``) and when each ``sync`` began and ended.

    ``slow`` seconds are added to every sync, so that a platform told "delivered"
    before the sync ended hears it measurably before."""

    def __init__(self, ledger: Ledger, slow: float = 0.0) -> None:
        self.stored: dict[str, float] = {}
        self.syncs: list[tuple[float, float]] = []
        accept, answered, sync = ledger.accept_inbound, ledger.answered_inbound, ledger.db.sync

        async def accept_inbound(channel: str, external_id: str, *args: Any) -> Any:
            try:
                return await accept(channel, external_id, *args)
            finally:
                self.stored[external_id] = time.monotonic()

        async def answered_inbound(channel: str, external_id: str, *args: Any) -> None:
            try:
                await answered(channel, external_id, *args)
            finally:
                self.stored.setdefault(external_id, time.monotonic())

        async def recorded_sync(everyone: bool = False) -> None:
            began = time.monotonic()
            await asyncio.sleep(slow)
            await sync(everyone)
            self.syncs.append((began, time.monotonic()))

        ledger.accept_inbound = accept_inbound  # type: ignore[method-assign]
        ledger.answered_inbound = answered_inbound  # type: ignore[method-assign]
        ledger.db.sync = recorded_sync  # type: ignore[method-assign]

    def on_disk_by(self, moment: float) -> set[str]:
        """The deliveries a sync that ended by ``moment`` had begun after storing."""
        return {
            external_id
            for external_id, stored_at in self.stored.items()
            if any(stored_at <= began and ended <= moment for began, ended in self.syncs)
        }
