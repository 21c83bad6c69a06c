"""Working memory: short-lived per-chat state with a time to live.

It may be lost without losing anything that matters: the ledger holds the truth.
The in-process backend is the embedded default.
"""

from __future__ import annotations

import time
from typing import Any, Protocol


class WorkingMemory(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None: ...

    async def delete(self, key: str) -> None: ...


class InProcessWorkingMemory:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}
        self._clock = clock

    async def get(self, key: str) -> dict[str, Any] | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._items[key]
            return None
        return value

    async def set(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        self._items[key] = (self._clock() + ttl_seconds, value)
        if len(self._items) > 10_000:
            now = self._clock()
            self._items = {k: v for k, v in self._items.items() if v[0] > now}

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)
