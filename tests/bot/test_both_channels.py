"""Telegram and Slack side by side: a card shown on both is settled on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slack_sdk.http_retry.builtin_async_handlers import AsyncServerErrorRetryHandler

from bot.app import Steward
from bot.service import Service, configured_channels
from bot.settings import load_settings
from bot.slack import SlackChannel
from graph.cards import approval_card
from graph.messages import Reply
from tests.bot.test_slack import OPERATOR as SLACK_OPERATOR
from tests.bot.test_slack import actions, value
from tests.bot.test_telegram import OPERATOR as TELEGRAM_OPERATOR
from tests.bot.test_telegram import TOKEN, cards
from tests.fakes.bot_api import FakeBotAPI
from tests.fakes.slack_api import FakeSlackAPI
from tests.net import free_port

ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}


@pytest.fixture
async def both(tmp_path: Path) -> AsyncIterator[tuple[FakeBotAPI, FakeSlackAPI]]:
    async with (
        FakeBotAPI(token=TOKEN) as telegram,
        FakeSlackAPI(bot_token="xoxb-test", app_token="xapp-test") as slack,
    ):
        yield telegram, slack


async def test_a_card_slack_cannot_update_now_is_settled_on_telegram_meanwhile(
    tmp_path: Path, both: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    telegram, slack = both
    port = free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    settings = load_settings(
        home=tmp_path / "home",
        telegram_bot_token=TOKEN,
        telegram_api_url=telegram.root,
        slack_bot_token=slack.bot_token,
        slack_api_url=slack.base_url,
        slack_signing_secret=slack.signing_secret,
        http_port=port,
        operators=f"telegram:{TELEGRAM_OPERATOR},slack:{SLACK_OPERATOR}",
    )
    async with Steward.open(settings) as steward:
        channels = configured_channels(steward)
        async with Service(steward, channels, tick_seconds=0.2) as service:
            slack_channel = next(c for c in channels if isinstance(c, SlackChannel))
            slack_channel.client.retry_handlers = [
                h
                for h in slack_channel.client.retry_handlers
                if not isinstance(h, AsyncServerErrorRetryHandler)
            ]
            slack_channel.outbox.first_retry = 30.0  # Slack stays down for this test
            await telegram.wait_for(lambda a: a.polls_waiting > 0)
            view = await steward.engine.start("onboarding", ONBOARD, "cli:shell")
            assert view.approval is not None
            await service.notify(Reply([approval_card(view.approval)]), None)  # both platforms
            await service.idle()
            dm = slack.dm_channel(SLACK_OPERATOR)
            [slack_card] = [m for m in slack.messages(dm) if actions(m)]
            [telegram_card] = cards(telegram, TELEGRAM_OPERATOR)

            slack.fail("chat.update", 503, times=100)  # Slack cannot update its card
            payload = slack.block_action(
                SLACK_OPERATOR, dm, slack_card["ts"], "approve", value(slack_card, "approve")
            )
            assert (await slack.post_interaction(url, payload))[0] == 200
            message = telegram_card["message_id"]
            await telegram.wait_for(
                lambda a: "reply_markup" not in a.message(TELEGRAM_OPERATOR, message), timeout=10
            )  # settled on Telegram, though Slack's update waits to be tried again
            assert actions(slack.message(dm, slack_card["ts"]))
            await slack_channel.outbox.stop()  # what Slack still owes waits for the next start
