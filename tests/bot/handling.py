"""Handling that takes its time, as a model drafting or a connector waiting would, or
that fails, as a bug would."""

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


def break_down(steward: Steward) -> None:
    """Every message from now on fails to be handled."""

    async def broken(inbound: Any) -> Any:
        raise RuntimeError("a bug")

    steward.door.coordinator.handle = broken  # type: ignore[method-assign]
