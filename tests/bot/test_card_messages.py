"""Where cards were posted: every message is handed out once, and one posted after the
decision learns the outcome at once."""

from __future__ import annotations

import asyncio

from bot.card_messages import CardMessages
from memory.working import InProcessWorkingMemory


async def test_messages_are_handed_out_once_and_late_ones_get_the_outcome() -> None:
    cards = CardMessages(InProcessWorkingMemory(), "slack")
    await asyncio.gather(*(cards.remember("a1", f"D{n}", f"{n}.0") for n in range(20)))
    shown = await cards.take("a1", "Approved by slack:U1")
    assert sorted(shown) == sorted((f"D{n}", f"{n}.0") for n in range(20))
    assert await cards.take("a1", "Approved by slack:U1") == []
    assert await cards.remember("a1", "D99", "99.0") == "Approved by slack:U1"
    assert await cards.remember("a2", "D1", "1.0") is None


async def test_the_pressed_message_is_settled_once_with_the_others() -> None:
    cards = CardMessages(InProcessWorkingMemory(), "telegram")
    await cards.remember("a1", "42", "7")
    assert await cards.to_settle("a1", "Approved", ("42", "7")) == [("42", "7")]
    await cards.remember("a2", "42", "8")
    assert await cards.to_settle("a2", "Approved", ("99", "1")) == [("42", "8"), ("99", "1")]
    assert await cards.to_settle("a3", "Approved", None) == []  # shown nowhere: post it
