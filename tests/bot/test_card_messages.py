"""Where cards were posted: every message is handed out until it shows the outcome, and
one posted after the decision learns the outcome at once."""

from __future__ import annotations

import asyncio

import pytest

from bot.card_messages import CardMessages
from bot.outbox import SendLater
from memory.ledger import Ledger


async def test_messages_are_handed_out_until_settled_and_late_ones_get_the_outcome(
    ledger: Ledger,
) -> None:
    cards = CardMessages(ledger, "slack")
    await asyncio.gather(*(cards.remember("a1", f"D{n}", f"{n}.0") for n in range(20)))
    shown = await cards.take("a1", "Approved by slack:U1")
    assert sorted(shown) == sorted((f"D{n}", f"{n}.0") for n in range(20))

    async def update(message: tuple[str, str]) -> None:
        if message == ("D7", "7.0"):
            raise SendLater("the platform is away")

    with pytest.raises(SendLater):
        await cards.settle("a1", shown, update)
    assert await cards.take("a1", "Approved by slack:U1") == [("D7", "7.0")]
    await cards.settle("a1", [("D7", "7.0")], update=lambda message: asyncio.sleep(0))
    assert await cards.take("a1", "Approved by slack:U1") == []
    assert await cards.remember("a1", "D99", "99.0") == "Approved by slack:U1"
    assert await cards.remember("a2", "D1", "1.0") is None


async def test_the_pressed_message_is_settled_once_with_the_others(ledger: Ledger) -> None:
    cards = CardMessages(ledger, "telegram")
    await cards.remember("a1", "42", "7")
    assert await cards.to_settle("a1", "Approved", ("42", "7")) == [("42", "7")]
    await cards.remember("a2", "42", "8")
    assert await cards.to_settle("a2", "Approved", ("99", "1")) == [("42", "8"), ("99", "1")]
    assert await cards.to_settle("a3", "Approved", None) == []  # shown nowhere: post it


async def test_a_message_noted_while_the_card_is_taken_is_settled_either_way(
    ledger: Ledger,
) -> None:
    """However the notes and the take interleave (on PostgreSQL, in transactions of their
    own), every message is handed out by the take or told the outcome: none keeps live
    buttons."""
    cards = CardMessages(ledger, "slack")
    messages = [(f"D{n}", f"{n}.0") for n in range(30)]

    async def note(message: tuple[str, str]) -> tuple[str, str] | None:
        told = await cards.remember("a1", *message)
        return message if told == "Approved" else None

    *noted, taken = await asyncio.gather(
        *(note(message) for message in messages), cards.take("a1", "Approved")
    )
    told = [message for message in noted if message is not None]
    assert sorted(told + taken) == sorted(messages)
    assert not await cards.showing("a1")


async def test_cards_noted_under_the_channel_s_name_alone_become_the_bot_s(ledger: Ledger) -> None:
    """Cards a steward noted before Telegram's bots were told apart still settle after
    the upgrade; a card the bot noted since keeps its own messages."""
    unnamed = CardMessages(ledger, "telegram")
    await unnamed.remember("a1", "42", "7")
    await unnamed.remember("a2", "42", "8")
    bot = CardMessages(ledger, "telegram:4242")
    await bot.remember("a2", "42", "9")
    await bot.take_unnamed("telegram")
    assert await bot.take("a1", "Approved") == [("42", "7")]
    assert await bot.take("a2", "Approved") == [("42", "9")]
    assert not await CardMessages(ledger, "telegram:777").showing("a1")
