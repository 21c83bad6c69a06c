"""Flood control: the token bucket (a burst, then the rate; a 429's hold, then no
burst), the window (so many in any second), and Telegram's limits kept by the rate
limiter python-telegram-bot calls, each on a clock that moves only as they wait."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.pacing import Bucket, Window
from bot.telegram.rate_limit import FloodControl
from tests.waiting import DEADLINE_SECONDS


class Clock:
    """Time that passes only while the pacing sleeps: what it paces, to the microsecond,
    however slow the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-6)  # as a real clock, it moves: a tick at the least
        await asyncio.sleep(0)


async def takes(pacing: Bucket | Window, clock: Clock, count: int) -> list[float]:
    started = clock()
    stamps = []
    async with asyncio.timeout(DEADLINE_SECONDS):  # a pacing that slept in real time
        for _ in range(count):
            await pacing.take()
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


async def test_a_window_lets_its_most_go_at_once_then_one_as_each_is_old_enough() -> None:
    clock = Clock()
    window = Window(3, 1.0, clock=clock, sleep=clock.sleep)
    assert await takes(window, clock, 7) == [0, 0, 0, 1, 1, 1, 2]


async def test_after_a_window_s_hold_one_goes_alone_at_its_end() -> None:
    """A 429's hold: one goes when it ends, and the window is full until a second
    after that one."""
    clock = Clock()
    window = Window(3, 1.0, clock=clock, sleep=clock.sleep)
    window.hold(0.5)
    assert await takes(window, clock, 5) == [0.5, 1.5, 1.5, 1.5, 2.5]


def limiter_with(clock: Clock, **limits: Any) -> FloodControl:
    return FloodControl(**limits, clock=clock, sleep=clock.sleep)


async def sent_at(
    limiter: FloodControl, clock: Clock, chats: list[int], together: bool
) -> list[float]:
    """When a message to each of ``chats`` went out, all sent at once or one after
    another."""
    started = clock()
    stamps: list[float] = []

    async def send() -> bool:
        stamps.append(round(clock() - started, 4))
        return True

    async def to(chat: int) -> None:
        data: dict[str, Any] = {"chat_id": chat, "text": "news"}
        await limiter.process_request(send, (), {}, "sendMessage", data, None)

    async with asyncio.timeout(DEADLINE_SECONDS):
        if together:
            await asyncio.gather(*(to(chat) for chat in chats))
        else:
            for chat in chats:
                await to(chat)
    return stamps


async def test_no_more_than_thirty_messages_go_in_any_second_over_all_chats() -> None:
    """Telegram takes about 30 messages a second over all chats; a full bucket of 30
    let 30 go at once and 30 more by the end of that second."""
    clock = Clock()
    stamps = await sent_at(limiter_with(clock), clock, list(range(1, 46)), together=True)
    assert stamps == [0] * 30 + [1] * 15


async def test_a_reply_of_a_few_messages_goes_at_once() -> None:
    """A line and its card (or a reply in parts) to one chat, or news to a few chats:
    within the overall limit, none waits for another (an overall bucket holding no burst
    spaced them 33 ms apart, every card of a reply 33 ms late)."""
    clock = Clock()
    assert await sent_at(limiter_with(clock), clock, [7, 7, 8, 9], together=False) == [0] * 4


async def test_a_group_gets_no_more_than_its_most_in_any_window_its_burst_among_them() -> None:
    """Telegram takes twenty messages a minute in a group: its burst of three, then one
    every three seconds, let 23 go in the first minute. Here a window of a second, for
    five: the burst of three, then one every half second."""
    clock = Clock()
    limiter = limiter_with(clock, group_most=5, group_window=1.0)
    stamps = await sent_at(limiter, clock, [-100500] * 8, together=False)
    assert stamps == [0, 0, 0, 0.5, 1, 1.5, 2, 2.5]
    assert max(sum(1 for t in stamps if at <= t < at + 1) for at in stamps) <= 5
