"""Telegram and Slack in one steward: both run, and a card decided on one platform loses
its buttons on the other."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.http_retry.builtin_async_handlers import AsyncServerErrorRetryHandler

from bot.app import Steward
from bot.channel import SETTLING
from bot.service import Service, configured_channels
from bot.settings import load_settings
from bot.slack import SlackChannel
from graph.engine import RunView
from tests.bot.test_telegram import button
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


@dataclass
class Together:
    steward: Steward
    service: Service
    slack_channel: SlackChannel
    slack_url: str  # the app's /slack/events
    slack_card: dict[str, Any]  # a card shown to the operator on both platforms
    telegram_card: dict[str, Any]


def both_configured(home: Path, telegram: FakeBotAPI, slack: FakeSlackAPI, port: int) -> Any:
    return load_settings(
        home=home,
        telegram_bot_token=TELEGRAM_TOKEN,
        telegram_api_url=telegram.root,
        slack_bot_token=slack.bot_token,
        slack_signing_secret=slack.signing_secret,
        slack_api_url=slack.base_url,
        operators=f"telegram:{TELEGRAM_OPERATOR},slack:{SLACK_OPERATOR}",
        http_port=port,
    )


async def card_everywhere(steward: Steward, service: Service) -> RunView:
    """A run started outside chat (a shell, a webhook): its card goes to every operator."""
    view = await steward.engine.start(
        "onboarding", {"client": "Acme", "email": "jane@acme.com", "package": "basic"}, "cli"
    )
    await service.notify(steward.coordinator.describe(view), None)
    await service.idle()
    return view


@asynccontextmanager
async def card_on_both(
    home: Path, telegram: FakeBotAPI, slack: FakeSlackAPI
) -> AsyncIterator[Together]:
    """Both channels running, and a run started outside chat (a shell, a webhook), whose
    card goes to everyone: the operator's on Telegram and on Slack."""
    port = free_port()
    settings = both_configured(home, telegram, slack, port)
    async with Steward.open(settings) as steward:
        channels = configured_channels(steward)
        assert [c.name for c in channels] == ["telegram", "slack"]
        async with Service(steward, channels, tick_seconds=0.2) as service:
            assert "Telegram" in service.summary() and "Slack" in service.summary()
            await card_everywhere(steward, service)
            dm = slack.dm_channel(SLACK_OPERATOR)
            [slack_card] = [m for m in slack.messages(dm) if m.get("blocks")]
            [telegram_card] = [m for m in telegram.sent(TELEGRAM_OPERATOR) if "reply_markup" in m]
            slack_channel = next(c for c in channels if isinstance(c, SlackChannel))
            url = f"http://127.0.0.1:{port}/slack/events"
            yield Together(steward, service, slack_channel, url, slack_card, telegram_card)


async def approve_in_slack(slack: FakeSlackAPI, both: Together) -> None:
    dm = slack.dm_channel(SLACK_OPERATOR)
    payload = slack.block_action(SLACK_OPERATOR, dm, both.slack_card["ts"], "approve")
    assert (await slack.post_interaction(both.slack_url, payload))[0] == 200


def settled_in_telegram(both: Together) -> Any:
    def settled(api: FakeBotAPI) -> bool:
        message = api.message(TELEGRAM_OPERATOR, both.telegram_card["message_id"])
        return "reply_markup" not in message

    return settled


async def test_a_card_decided_in_slack_is_settled_in_telegram(
    tmp_path: Path, fakes: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    telegram, slack = fakes
    async with card_on_both(tmp_path / "home", telegram, slack) as both:
        await approve_in_slack(slack, both)
        await telegram.wait_for(settled_in_telegram(both))
        edited = telegram.message(TELEGRAM_OPERATOR, both.telegram_card["message_id"])
        assert f"Approved by slack:{SLACK_OPERATOR}" in edited["text"]
        dm = slack.dm_channel(SLACK_OPERATOR)
        assert "Approved by" in json.dumps(slack.message(dm, both.slack_card["ts"])["blocks"])


async def test_a_card_slack_cannot_update_now_is_settled_in_telegram_meanwhile(
    tmp_path: Path, fakes: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    telegram, slack = fakes
    async with card_on_both(tmp_path / "home", telegram, slack) as both:
        client = both.slack_channel.client
        client.retry_handlers = [  # the client's own retries, without waiting
            h for h in client.retry_handlers if not isinstance(h, AsyncServerErrorRetryHandler)
        ]
        both.slack_channel.outbox.first_retry = 30.0  # Slack stays down for this test
        slack.fail("chat.update", 503, times=100)
        await approve_in_slack(slack, both)
        await telegram.wait_for(settled_in_telegram(both), timeout=10)
        dm = slack.dm_channel(SLACK_OPERATOR)
        assert "Approved by" not in json.dumps(slack.message(dm, both.slack_card["ts"]))
        await both.slack_channel.outbox.stop()  # what Slack still owes waits for the next start


async def test_a_card_decided_in_telegram_is_settled_in_slack_once_slack_can_take_it(
    tmp_path: Path, fakes: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    telegram, slack = fakes
    async with card_on_both(tmp_path / "home", telegram, slack) as both:
        both.slack_channel.outbox.first_retry = 0.05
        client = both.slack_channel.client
        client.retry_handlers = [  # the client's own retries, without waiting
            h for h in client.retry_handlers if not isinstance(h, AsyncServerErrorRetryHandler)
        ]
        slack.fail("chat.update", 503, times=3)
        card = both.telegram_card
        telegram.press(TELEGRAM_OPERATOR, card, button(card, "Approve"))
        await telegram.wait_for(settled_in_telegram(both))
        dm = slack.dm_channel(SLACK_OPERATOR)
        await slack.wait_for(
            lambda s: "Approved by" in json.dumps(s.message(dm, both.slack_card["ts"])), timeout=10
        )
        statuses = [call.status for call in slack.calls if call.method == "chat.update"]
        assert statuses == [503, 503, 503, 200]


async def test_a_card_slack_could_not_update_before_a_stop_is_settled_after_it(
    tmp_path: Path, fakes: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    """Where a card shows is kept in the ledger, across a restart."""
    telegram, slack = fakes
    home = tmp_path / "home"
    async with card_on_both(home, telegram, slack) as both:
        client = both.slack_channel.client
        client.retry_handlers = [  # the client's own retries, without waiting
            h for h in client.retry_handlers if not isinstance(h, AsyncServerErrorRetryHandler)
        ]
        both.slack_channel.outbox.first_retry = 60.0  # not again before the stop
        slack.fail("chat.update", 503, times=1_000)  # down until the stop
        card = both.telegram_card
        telegram.press(TELEGRAM_OPERATOR, card, button(card, "Approve"))
        await telegram.wait_for(settled_in_telegram(both))
        await slack.wait_for(lambda s: any(c.method == "chat.update" for c in s.calls))
        slack_card = both.slack_card
    [actions] = [b for b in slack_card["blocks"] if b["type"] == "actions"]
    card_id = actions["block_id"].removeprefix("card:")
    dm = slack.dm_channel(SLACK_OPERATOR)
    assert "Approved by" not in json.dumps(slack.message(dm, slack_card["ts"]))
    with sqlite3.connect(home / "steward.db") as db:  # what Slack still owes is kept
        kept = db.execute("select channel, chat_id from replies").fetchall()
    assert kept == [(f"slack:{slack.bot_id}", f"{SETTLING}:{card_id}")]  # the app's own

    slack.fail("chat.update", 503, times=0)  # up again
    settings = both_configured(home, telegram, slack, free_port())
    async with (
        Steward.open(settings) as steward,
        Service(steward, configured_channels(steward)),
    ):
        await slack.wait_for(
            lambda s: "Approved by" in json.dumps(s.message(dm, slack_card["ts"])), timeout=10
        )
    assert "actions" not in json.dumps(slack.message(dm, slack_card["ts"])["blocks"])


async def test_a_card_decided_by_a_reply_owed_from_before_a_start_is_settled_on_both(
    tmp_path: Path, fakes: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    """A press's reply kept but not sent when steward stopped goes out as Telegram
    starts, before Slack has: Slack settles the card once it starts too."""
    telegram, slack = fakes
    settings = both_configured(tmp_path / "home", telegram, slack, free_port())
    async with Steward.open(settings) as steward:  # one working memory: the cards' records
        async with Service(steward, configured_channels(steward), tick_seconds=0.2) as service:
            view = await card_everywhere(steward, service)
        assert view.approval is not None
        dm = slack.dm_channel(SLACK_OPERATOR)
        [slack_card] = [m for m in slack.messages(dm) if m.get("blocks")]
        decided = await steward.coordinator.decide(
            view.approval.id, True, f"telegram:{TELEGRAM_OPERATOR}"
        )
        await steward.door.owe("telegram", str(TELEGRAM_OPERATOR), decided)  # not yet sent
        async with Service(steward, configured_channels(steward), tick_seconds=0.2) as service:
            await slack.wait_for(
                lambda s: "Approved by" in json.dumps(s.message(dm, slack_card["ts"])), timeout=5
            )
            await service.idle()
        updates = [c for c in slack.calls if c.method == "chat.update"]
        assert len(updates) == 1


async def test_a_card_decided_while_its_steward_was_down_is_settled_though_another_read_on(
    tmp_path: Path, fakes: tuple[FakeBotAPI, FakeSlackAPI]
) -> None:
    """A steward serving Slack on the same ledger read the audit log past the decision
    while the one serving Telegram was down; they shared where reading stopped, so the
    Telegram one started after the decision, and its card kept its buttons for good."""
    telegram, slack = fakes
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = load_settings(
        home=tmp_path / "telegram",
        database_url=ledger,
        telegram_bot_token=TELEGRAM_TOKEN,
        telegram_api_url=telegram.root,
        operators=f"telegram:{TELEGRAM_OPERATOR}",
    )
    beside = load_settings(
        home=tmp_path / "slack",
        database_url=ledger,
        slack_bot_token=slack.bot_token,
        slack_signing_secret=slack.signing_secret,
        slack_api_url=slack.base_url,
        operators=f"slack:{SLACK_OPERATOR}",
        http_port=free_port(),
    )
    async with Steward.open(settings) as steward:
        async with Service(steward, configured_channels(steward), tick_seconds=0.2) as service:
            view = await card_everywhere(steward, service)
        assert view.approval is not None
        (card,) = [m for m in telegram.sent(TELEGRAM_OPERATOR) if "reply_markup" in m]
        async with (
            Steward.open(beside) as other,
            Service(other, configured_channels(other), tick_seconds=0.2),
        ):
            await other.coordinator.decide(view.approval.id, True, "cli:shell")
            await asyncio.sleep(1.5)  # past the two ticks left to the chat deciding
        async with Service(steward, configured_channels(steward), tick_seconds=0.2):
            await telegram.wait_for(
                lambda a: "reply_markup" not in a.message(TELEGRAM_OPERATOR, card["message_id"])
            )
