"""Handling that takes its time, as a model drafting or a connector waiting would."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.app import Steward


def slow_down(steward: Steward, seconds: float) -> None:
    """Every message from now on takes ``seconds`` longer to handle."""
    handle = steward.coordinator.handle

    async def slow(inbound: Any) -> Any:
        await asyncio.sleep(seconds)
        return await handle(inbound)

    steward.door.coordinator.handle = slow  # type: ignore[method-assign]
