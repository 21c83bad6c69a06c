"""Waiting in tests for what a background task does in its own time: polled, within a
deadline no machine misses, never a sleep that a slow machine outlasts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEADLINE_SECONDS = 30.0


async def until(condition: Callable[[], bool]) -> None:
    """Returns once ``condition`` holds; fails after DEADLINE_SECONDS."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {DEADLINE_SECONDS} s"
        await asyncio.sleep(0.01)
