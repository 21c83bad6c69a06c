"""How every channel paces its messages to the platform's limits: a token bucket for a
steady rate with a short burst, a window for "at most so many in any second"."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[None]]


class Bucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``; it reads the
    time from ``clock`` and waits with ``sleep``, which a test may give it together."""

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
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
                await self._sleep(wait)

    def hold(self, seconds: float) -> None:
        """Nothing goes out before ``seconds`` from now (a 429's retry_after)."""
        self._held_until = max(self._held_until, self._clock() + seconds)
        self._tokens = 1  # one goes out when the hold ends, and no burst saves up meanwhile
        self._stamp = self._held_until


class Window:
    """At most ``most`` takes in any ``seconds``: up to ``most`` go at once, and the next
    when the first of them is ``seconds`` old. A bucket refilling at that rate saves up
    a burst of ``most`` on top of the rate; one holding none spaces every take. It reads
    the time from ``clock`` and waits with ``sleep``, as a bucket does."""

    def __init__(
        self,
        most: int,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ):
        self.most = most
        self.seconds = seconds
        self._clock = clock
        self._sleep = sleep
        self._taken: deque[float] = deque()
        self._held_until = 0.0
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._taken and self._taken[0] + self.seconds <= now:
                    self._taken.popleft()
                wait = self._held_until - now
                if len(self._taken) >= self.most:
                    wait = max(wait, self._taken[0] + self.seconds - now)
                if wait <= 0:
                    self._taken.append(now)
                    return
                await self._sleep(max(wait, 0.001))

    def hold(self, seconds: float) -> None:
        """Nothing goes out before ``seconds`` from now (a 429's retry_after), and then
        one alone: the window is full until a second after it."""
        self._held_until = max(self._held_until, self._clock() + seconds)
        self._taken = deque([self._held_until] * (self.most - 1))
