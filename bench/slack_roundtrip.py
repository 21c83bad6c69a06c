"""Slack round trip: an event in → the first Web API call out.

Through the real slack-bolt, in HTTP mode, against a local Slack (tests/fakes): p50 and
p99 ms from the moment a signed ``message.im`` event is posted to the app to the moment
its first ``chat.postMessage`` reaches the Web API. Beside it, in the same run and against
the same Slack, a bare slack-bolt echo app (``AsyncApp``, one ``message`` listener that
says the text back, served by bolt's aiohttp adapter, with the same pooled Web API
client). Target: ratio ≤ 1.5. Both apps run side by side on their own ports and take
turns message by message (see ``bench.common.round_trip_contest``).

Each message comes from the operator in a DM of its own, 20 a second, so that steward's
pacing (about one message a second per channel) is in place but never the thing measured.

    uv run python -m bench.slack_roundtrip [--cycles 200]
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
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncSay
from slack_sdk.web.async_client import AsyncWebClient

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
from tests.fakes.slack_api import FakeSlackAPI
from tests.net import free_port

OPERATOR = "U0OPS"
_channels = count(1)


@asynccontextmanager
async def echo_app(slack: FakeSlackAPI, port: int) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url, session=session)
        app = AsyncApp(client=client, signing_secret=slack.signing_secret)

        @app.event("message")
        async def echo(event: dict[str, Any], say: AsyncSay) -> None:
            await say(event["text"])

        async def receive(request: web.Request) -> web.Response:
            return await to_aiohttp_response(
                await app.async_dispatch(await to_bolt_request(request))
            )

        web_app = web.Application()
        web_app.router.add_post("/slack/events", receive)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield
        finally:
            await runner.cleanup()


@asynccontextmanager
async def steward_app(slack: FakeSlackAPI, port: int) -> AsyncIterator[None]:
    with tempfile.TemporaryDirectory(prefix="steward-bench-") as home:
        settings = load_settings(
            home=Path(home),
            database_url=None,
            llm_model=None,
            slack_bot_token=slack.bot_token,
            slack_signing_secret=slack.signing_secret,
            slack_api_url=slack.base_url,
            operators=f"slack:{OPERATOR}",
            http_port=port,
        )
        async with (
            Steward.open(settings) as steward,
            Service(steward, configured_channels(steward)),
        ):
            await as_after_start(steward)
            yield


def sender(slack: FakeSlackAPI, port: int, arrivals: Arrivals) -> Send:
    """Sends one event to the app on ``port`` and times its first post (and card)."""
    url = f"http://127.0.0.1:{port}/slack/events"

    async def send(text: str, card: bool) -> tuple[float, float | None]:
        channel = f"D{next(_channels):08d}"
        event = slack.message_event(OPERATOR, text, channel=channel, channel_type="im")
        began = time.monotonic()
        status, _ = await slack.post_event(url, event)
        assert status == 200, status
        return await reply_times(slack, arrivals, channel, began, card)

    return send


def posts(slack: FakeSlackAPI) -> Arrivals:
    """Each channel's first post, and its first with buttons (a card)."""
    return Arrivals(
        slack.calls,
        "chat.postMessage",
        lambda call: call.params.get("channel"),
        lambda call: any(b.get("type") == "actions" for b in call.params.get("blocks") or []),
    )


async def main(cycles: int) -> None:
    echo_port, steward_port = free_port(), free_port()
    async with (
        FakeSlackAPI() as slack,
        echo_app(slack, echo_port),
        steward_app(slack, steward_port),
    ):
        arrivals = posts(slack)
        echo, ours, cards = await round_trip_contest(
            sender(slack, echo_port, arrivals), sender(slack, steward_port, arrivals), cycles
        )
    print_round_trips(
        f"slack round trip: event in → first Web API call out, {len(echo)} echo events, "
        f"{cycles} of each steward command",
        ("bare slack-bolt echo app", echo),
        ours,
        cards,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=200)
    asyncio.run(main(parser.parse_args().cycles))
