"""Waiting in tests for what a background task does in its own time: polled, within a
deadline no machine misses, never a sleep that a slow machine outlasts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEADLINE_SECONDS = 30.0


async def until(condition: Callable[[], bool], seconds: float = DEADLINE_SECONDS) -> None:
    """Returns once ``condition`` holds; fails after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.01)
