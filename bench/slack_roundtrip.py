"""Slack round trip: an event in → the first Web API call out.

Through the real slack-bolt, in HTTP mode, against a local Slack (tests/fakes): p50 and
p99 ms from the moment a signed ``message.im`` event is posted to the app to the moment
its first ``chat.postMessage`` reaches the Web API. Beside it, in the same run and against
the same Slack, a bare slack-bolt echo app (``AsyncApp``, one ``message`` listener that
says the text back, served by bolt's aiohttp adapter, with the same pooled Web API
client). Target: ratio ≤ 1.5. The two apps take turns in blocks.

Each message comes from the operator in a DM of its own, 20 a second, so that steward's
pacing (about one message a second per channel) is in place but never the thing measured.

    uv run python -m bench.slack_roundtrip [--rounds 200] [--blocks 2]
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
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncSay
from slack_sdk.web.async_client import AsyncWebClient

from bench.common import START_RUN, as_after_start, print_round_trips, round_trip_contest
from bot.app import Steward
from bot.service import Service, configured_channels
from bot.settings import load_settings
from tests.fakes.slack_api import FakeSlackAPI
from tests.net import free_port

OPERATOR = "U0OPS"
SPACING = 0.05  # seconds between messages: 20 a second
App = Callable[[FakeSlackAPI, int], AbstractAsyncContextManager[None]]
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


async def round_trips(
    slack: FakeSlackAPI, app: App, text: str, rounds: int, cards: list[float] | None = None
) -> list[float]:
    """Each event's time to its first post; with ``cards``, to the approval card too."""
    samples = []
    port = free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    async with app(slack, port):
        for _ in range(rounds):
            channel = f"D{next(_channels):08d}"
            event = slack.message_event(OPERATOR, text, channel=channel, channel_type="im")
            began = time.monotonic()
            status, _ = await slack.post_event(url, event)
            assert status == 200, status
            await slack.wait_for(lambda s, c=channel: _first_post(s, c), timeout=30)  # type: ignore[misc]
            samples.append((_first_post(slack, channel) - began) * 1000)  # type: ignore[operator]
            if cards is not None:
                await slack.wait_for(lambda s, c=channel: _first_post(s, c, card=True), timeout=30)  # type: ignore[misc]
                cards.append((_first_post(slack, channel, card=True) - began) * 1000)  # type: ignore[operator]
            await asyncio.sleep(SPACING)
    return samples


def _first_post(slack: FakeSlackAPI, channel: str, card: bool = False) -> float | None:
    """When the first message (``card``: the first with buttons) reached the Web API."""
    times = [
        call.at
        for call in slack.calls_to("chat.postMessage")
        if call.params.get("channel") == channel
        and (not card or any(b.get("type") == "actions" for b in call.params.get("blocks") or []))
    ]
    return min(times) if times else None


async def main(rounds: int, blocks: int) -> None:
    cards: list[float] = []
    async with FakeSlackAPI() as slack:

        async def measure(app: App, text: str, count: int) -> list[float]:
            return await round_trips(slack, app, text, count, cards if text == START_RUN else None)

        echo, ours = await round_trip_contest(measure, echo_app, steward_app, rounds, blocks)
    print_round_trips(
        f"slack round trip: event in → first Web API call out, {len(echo)} events each",
        ("bare slack-bolt echo app", echo),
        ours,
        cards,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=2)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.blocks))
