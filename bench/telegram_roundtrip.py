"""Telegram round trip: an operator's message in → steward's first reply out.

Through the real python-telegram-bot and a local Bot API server (tests/fakes), p50 and
p99 ms from the moment the update is queued on the server to the moment the reply's
sendMessage reaches it. Beside it, in the same run and against the same server, a bare
python-telegram-bot echo bot (Application, Updater, one MessageHandler). Target: ratio
≤ 1.5. Each bot polls a Bot API server of its own (one server lets one client poll at a
time), both run side by side, and they take turns message by message (see
``bench.common.round_trip_contest``).

Each message comes from the operator in a chat of its own, 20 a second, so that steward's
flood control (about one message a second per chat, 30 a second overall) is in place but
never the thing measured.

    uv run python -m bench.telegram_roundtrip [--cycles 200]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bench.common import (
    Arrivals,
    Send,
    as_after_start,
    print_round_trips,
    reply_times,
    round_trip_contest,
)
from bot.app import Steward
from bot.service import Service, configured_channels
from bot.settings import load_settings
from tests.fakes.bot_api import FakeBotAPI

TOKEN = "4242:bench-token"
OPERATOR = 1001
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


async def sender(api: FakeBotAPI) -> Send:
    """Sends one message to the bot polling ``api`` and times its first reply (and card)."""
    await api.wait_for(lambda a: a.polls_waiting > 0, timeout=30)
    arrivals = Arrivals(
        api.calls,
        "sendMessage",
        lambda call: call.params["chat_id"],
        lambda call: "reply_markup" in call.params,
    )

    async def send(text: str, card: bool) -> tuple[float, float | None]:
        chat = next(_chats)
        queued = time.monotonic()
        api.send_text(OPERATOR, text, chat_id=chat)
        return await reply_times(api, arrivals, chat, queued, card)

    return send


async def main(cycles: int) -> None:
    async with (
        FakeBotAPI(token=TOKEN) as echo_api,
        FakeBotAPI(token=TOKEN) as steward_api,
        echo_bot(echo_api),
        steward_bot(steward_api),
    ):
        echo, ours, cards = await round_trip_contest(
            await sender(echo_api), await sender(steward_api), cycles
        )
    print_round_trips(
        f"telegram round trip: message in → first reply out, {len(echo)} echo messages, "
        f"{cycles} of each steward command",
        ("bare PTB echo bot", echo),
        ours,
        cards,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=200)
    asyncio.run(main(parser.parse_args().cycles))
