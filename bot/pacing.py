"""A token bucket: how every channel paces its messages to the platform's limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Bucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()
        self._held_until = 0.0
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                elapsed = max(0.0, now - self._stamp)  # a hold puts the stamp in the future
                self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
                self._stamp = max(now, self._stamp)
                wait = max(self._held_until - now, (1 - self._tokens) / self.rate)
                if wait <= 0:
                    self._tokens -= 1
                    return
                await asyncio.sleep(wait)

    def hold(self, seconds: float) -> None:
        """Nothing goes out before ``seconds`` from now (a 429's retry_after)."""
        self._held_until = max(self._held_until, self._clock() + seconds)
        self._tokens = 1  # one goes out when the hold ends, and no burst saves up meanwhile
        self._stamp = self._held_until
