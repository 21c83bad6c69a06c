"""Telegram and Slack in one steward: both run, and a card decided on one platform loses
its buttons on the other."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import Steward
from bot.service import Service, configured_channels
from bot.settings import load_settings
from tests.fakes.bot_api import FakeBotAPI
from tests.fakes.slack_api import FakeSlackAPI
from tests.net import free_port

TELEGRAM_TOKEN = "4242:steward-test-token"
TELEGRAM_OPERATOR = 1001
SLACK_OPERATOR = "U0OPS"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeBotAPI, FakeSlackAPI]]:
    async with FakeBotAPI(token=TELEGRAM_TOKEN) as telegram, FakeSlackAPI() as slack:
        yield telegram, slack


async def test_a_card_decided_in_slack_is_settled_in_telegram(
    tmp_path: Path, fakes: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    telegram, slack = fakes
    port = free_port()
    settings = load_settings(
        home=tmp_path / "home",
        telegram_bot_token=TELEGRAM_TOKEN,
        telegram_api_url=telegram.root,
        slack_bot_token=slack.bot_token,
        slack_signing_secret=slack.signing_secret,
        slack_api_url=slack.base_url,
        operators=f"telegram:{TELEGRAM_OPERATOR},slack:{SLACK_OPERATOR}",
        http_port=port,
    )
    async with Steward.open(settings) as steward:
        channels = configured_channels(steward)
        assert [c.name for c in channels] == ["telegram", "slack"]
        async with Service(steward, channels, tick_seconds=0.2) as service:
            assert "Telegram" in service.summary() and "Slack" in service.summary()
            # a run started outside chat (a shell, a webhook): its card goes to everyone
            view = await steward.engine.start(
                "onboarding",
                {"client": "Acme", "email": "jane@acme.com", "package": "basic"},
                "cli",
            )
            await service.notify(steward.coordinator.describe(view), None)
            await service.idle()
            dm = slack.dm_channel(SLACK_OPERATOR)
            [slack_card] = [m for m in slack.messages(dm) if m.get("blocks")]
            [telegram_card] = [m for m in telegram.sent(TELEGRAM_OPERATOR) if "reply_markup" in m]

            approve = next(
                e
                for b in slack_card["blocks"]
                if b["type"] == "actions"
                for e in b["elements"]
                if e["action_id"] == "approve"
            )
            payload = slack.block_action(SLACK_OPERATOR, dm, slack_card["ts"], "approve")
            url = f"http://127.0.0.1:{port}/slack/events"
            assert (await slack.post_interaction(url, payload))[0] == 200
            assert approve["value"].startswith("approve:")

            def settled_in_telegram(api: FakeBotAPI) -> bool:
                message = api.message(TELEGRAM_OPERATOR, telegram_card["message_id"])
                return "reply_markup" not in message

            await telegram.wait_for(settled_in_telegram)
            edited = telegram.message(TELEGRAM_OPERATOR, telegram_card["message_id"])
            assert f"Approved by slack:{SLACK_OPERATOR}" in edited["text"]
            assert "Approved by" in json.dumps(slack.message(dm, slack_card["ts"])["blocks"])
