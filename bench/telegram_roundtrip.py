"""Telegram round trip: an operator's message in → steward's first reply out.

Through the real python-telegram-bot and a local Bot API server (tests/fakes), p50 and
p99 ms from the moment the update is queued on the server to the moment the reply's
sendMessage reaches it. Beside it, in the same run and against the same server, a bare
python-telegram-bot echo bot (Application, Updater, one MessageHandler). Target: ratio
≤ 1.5. The two bots take turns in blocks, since only one client may poll at a time.

Each message comes from the operator in a chat of its own, 20 a second, so that steward's
flood control (about one message a second per chat, 30 a second overall) is in place but
never the thing measured.

    uv run python -m bench.telegram_roundtrip [--rounds 200] [--blocks 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from itertools import count
from pathlib import Path

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bench.common import START_RUN, as_after_start, print_round_trips, round_trip_contest
from bot.app import Steward
from bot.service import Service, configured_channels
from bot.settings import load_settings
from tests.fakes.bot_api import FakeBotAPI

TOKEN = "4242:bench-token"
OPERATOR = 1001
SPACING = 0.05  # seconds between messages: 20 a second
Bot = Callable[[FakeBotAPI], AbstractAsyncContextManager[None]]
_chats = count(10_000_000)


@asynccontextmanager
async def echo_bot(api: FakeBotAPI) -> AsyncIterator[None]:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        await update.message.reply_text(update.message.text)

    app = Application.builder().token(TOKEN).base_url(api.base_url).build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=10)
    try:
        yield
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


@asynccontextmanager
async def steward_bot(api: FakeBotAPI) -> AsyncIterator[None]:
    with tempfile.TemporaryDirectory(prefix="steward-bench-") as home:
        settings = load_settings(
            home=Path(home),
            database_url=None,
            llm_model=None,
            telegram_bot_token=TOKEN,
            telegram_api_url=api.root,
            operators=f"telegram:{OPERATOR}",
        )
        async with (
            Steward.open(settings) as steward,
            Service(steward, configured_channels(steward)),
        ):
            await as_after_start(steward)
            yield


async def round_trips(
    api: FakeBotAPI, bot: Bot, text: str, rounds: int, cards: list[float] | None = None
) -> list[float]:
    """Each message's time to its first reply; with ``cards``, to the approval card too."""
    samples = []
    async with bot(api):
        await api.wait_for(lambda a: a.polls_waiting > 0, timeout=30)
        for _ in range(rounds):
            chat = next(_chats)
            queued = time.monotonic()
            api.send_text(OPERATOR, text, chat_id=chat)
            await api.wait_for(lambda a, c=chat: a.sent(c), timeout=30)  # type: ignore[misc]
            first = min(
                call.at for call in api.calls_to("sendMessage") if call.params["chat_id"] == chat
            )
            samples.append((first - queued) * 1000)
            if cards is not None:
                await api.wait_for(lambda a, c=chat: _card(a, c), timeout=30)  # type: ignore[misc]
                cards.append((_card(api, chat) - queued) * 1000)  # type: ignore[operator]
            await asyncio.sleep(SPACING)
    return samples


def _card(api: FakeBotAPI, chat: int) -> float | None:
    times = [
        call.at
        for call in api.calls_to("sendMessage")
        if call.params["chat_id"] == chat and "reply_markup" in call.params
    ]
    return min(times) if times else None


async def main(rounds: int, blocks: int) -> None:
    cards: list[float] = []
    async with FakeBotAPI(token=TOKEN) as api:

        async def measure(bot: Bot, text: str, count: int) -> list[float]:
            return await round_trips(api, bot, text, count, cards if text == START_RUN else None)

        echo, ours = await round_trip_contest(measure, echo_bot, steward_bot, rounds, blocks)
    print_round_trips(
        f"telegram round trip: message in → first reply out, {len(echo)} messages each",
        ("bare PTB echo bot", echo),
        ours,
        cards,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=2)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.blocks))
