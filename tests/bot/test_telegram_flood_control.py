"""Flood control: the token bucket (a burst, then the rate; a 429's hold, then no
burst), and Telegram's limits kept by the rate limiter python-telegram-bot calls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.pacing import Bucket
from bot.telegram.rate_limit import FloodControl


class Clock:
    """Time that passes only while the bucket sleeps: what it paces, to the microsecond,
    however slow the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-6)  # as a real clock, it moves: a tick at the least
        await asyncio.sleep(0)


async def takes(bucket: Bucket, clock: Clock, count: int) -> list[float]:
    started = clock()
    stamps = []
    for _ in range(count):
        await bucket.take()
        stamps.append(round(clock() - started, 4))
    return stamps


async def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    clock = Clock()
    stamps = await takes(Bucket(rate=20, burst=3, clock=clock, sleep=clock.sleep), clock, 6)
    assert stamps == [0, 0, 0, 0.05, 0.1, 0.15]  # the burst, then one per 50 ms


async def test_after_a_hold_one_goes_at_its_end_and_no_burst_was_saved() -> None:
    clock = Clock()
    bucket = Bucket(rate=20, burst=3, clock=clock, sleep=clock.sleep)
    bucket.hold(0.2)
    assert await takes(bucket, clock, 3) == [0.2, 0.25, 0.3]


async def test_takers_queue_in_order() -> None:
    bucket = Bucket(rate=50, burst=1)
    order: list[int] = []

    async def one(i: int) -> None:
        await bucket.take()
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]


async def test_no_more_than_thirty_messages_go_in_any_second_over_all_chats() -> None:
    """Telegram takes about 30 messages a second over all chats; a full bucket of 30
    let 30 go at once and 30 more by the end of that second."""
    limiter = FloodControl()
    started = time.monotonic()
    stamps: list[float] = []

    async def send() -> bool:
        stamps.append(time.monotonic() - started)
        return True

    async def to(chat: int) -> None:
        data: dict[str, Any] = {"chat_id": chat, "text": "news"}
        await limiter.process_request(send, (), {}, "sendMessage", data, None)

    await asyncio.gather(*(to(chat) for chat in range(1, 46)))
    assert len(stamps) == 45
    assert max(sum(1 for t in stamps if at <= t < at + 0.999) for at in stamps) <= 30


async def test_a_reply_of_a_few_messages_goes_at_once() -> None:
    """A line and its card (or a reply in parts) to one chat, or news to a few chats:
    within the overall limit, none waits for another (an overall bucket holding no burst
    spaced them 33 ms apart, every card of a reply 33 ms late)."""
    limiter = FloodControl()
    started = time.monotonic()
    stamps: list[float] = []

    async def send() -> bool:
        stamps.append(time.monotonic() - started)
        return True

    for chat in (7, 7, 8, 9):
        data: dict[str, Any] = {"chat_id": chat, "text": "news"}
        await limiter.process_request(send, (), {}, "sendMessage", data, None)
    assert stamps[-1] < 0.02


async def test_a_group_gets_no_more_than_its_most_in_any_window_its_burst_among_them() -> None:
    """Telegram takes twenty messages a minute in a group: its burst of three, then one
    every three seconds, let 23 go in the first minute. Here a window of a second, for
    five."""
    limiter = FloodControl(group_most=5, group_window=1.0)
    started = time.monotonic()
    stamps: list[float] = []

    async def send() -> bool:
        stamps.append(time.monotonic() - started)
        return True

    data: dict[str, Any] = {"chat_id": -100500, "text": "news"}
    for _ in range(8):
        await limiter.process_request(send, (), {}, "sendMessage", data, None)
    assert max(sum(1 for t in stamps if at <= t < at + 0.999) for at in stamps) <= 5
