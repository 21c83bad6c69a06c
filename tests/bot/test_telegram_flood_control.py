"""Flood control's token bucket: a burst, then the rate; a 429's hold, then no burst."""

from __future__ import annotations

import asyncio
import itertools
import time

from bot.pacing import Bucket


async def takes(bucket: Bucket, count: int) -> list[float]:
    started = time.monotonic()
    stamps = []
    for _ in range(count):
        await bucket.take()
        stamps.append(time.monotonic() - started)
    return stamps


async def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    stamps = await takes(Bucket(rate=20, burst=3), 6)
    assert stamps[2] < 0.03  # the burst
    gaps = [b - a for a, b in itertools.pairwise(stamps[2:])]
    assert all(gap >= 0.045 for gap in gaps)  # then one per 50 ms


async def test_after_a_hold_one_goes_at_its_end_and_no_burst_was_saved() -> None:
    bucket = Bucket(rate=20, burst=3)
    bucket.hold(0.2)
    stamps = await takes(bucket, 3)
    assert 0.19 <= stamps[0] < 0.26
    assert stamps[1] - stamps[0] >= 0.045 and stamps[2] - stamps[1] >= 0.045


async def test_takers_queue_in_order() -> None:
    bucket = Bucket(rate=50, burst=1)
    order: list[int] = []

    async def one(i: int) -> None:
        await bucket.take()
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
