"""The Slack channel end to end: the real slack-bolt app against a local Slack.

Each test runs steward as ``steward run`` would (the service with the Slack channel
configured from settings) against ``FakeSlackAPI``, which speaks the Web API and plays
Slack's side: events, button presses, slash commands and modal submissions, signed as
Slack signs them over HTTP, or sent over Socket Mode.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.http_retry.builtin_async_handlers import AsyncServerErrorRetryHandler

from bot.app import Steward
from bot.pacing import Bucket
from bot.service import Service, configured_channels
from bot.settings import load_settings
from bot.slack import SlackChannel, SlackUnavailable
from bot.slack.render import card_overflow, mrkdwn
from graph.cards import approval_card
from graph.front_door import REFUSAL
from graph.messages import Button, Card, EditPrompt, Inbound, Reply, Sender
from memory.ledger import RunStatus
from tests.bot.disk import DiskWatch
from tests.bot.handling import break_down, slow_down
from tests.bot.test_service import ledger_refuses
from tests.bot.test_telegram import locked, locked_long_enough  # noqa: F401
from tests.fakes.slack_api import FakeSlackAPI
from tests.graph.test_escalation import PING
from tests.homes import home_with
from tests.net import free_port

OPERATOR = "U0OPS"
STRANGER = "U0EVIL"
START = "/run onboarding client=Acme email=jane@acme.com package=basic"


@dataclass
class Running:
    steward: Steward
    service: Service
    channel: SlackChannel
    url: str  # the app's /slack/events, in HTTP mode

    @property
    def home(self) -> Path:
        return self.steward.settings.home

    def inbox(self) -> int:
        with sqlite3.connect(self.home / "steward.db") as db:
            return int(db.execute("select count(*) from inbox").fetchone()[0])

    async def audit_kinds(self) -> list[str]:
        """The audit log's kinds, once the audits under way (of refusals) are written."""
        await self.steward.door.audited()
        with sqlite3.connect(self.home / "steward.db") as db:
            return [row[0] for row in db.execute("select kind from audit_events order by seq")]


@asynccontextmanager
async def running(
    home: Path,
    slack: FakeSlackAPI,
    *,
    socket_mode: bool = False,
    operators: str = f"slack:{OPERATOR}",
) -> AsyncIterator[Running]:
    port = free_port()
    overrides: dict[str, Any] = {
        "home": home,
        "slack_bot_token": slack.bot_token,
        "slack_api_url": slack.base_url,
        "operators": operators,
        "http_port": port,
    }
    if socket_mode:
        overrides["slack_app_token"] = slack.app_token
    else:
        overrides["slack_signing_secret"] = slack.signing_secret
    async with Steward.open(load_settings(**overrides)) as steward:
        (channel,) = configured_channels(steward)
        assert isinstance(channel, SlackChannel)
        async with Service(steward, [channel], tick_seconds=0.2) as service:
            if socket_mode:
                await slack.wait_socket()
            yield Running(steward, service, channel, f"http://127.0.0.1:{port}/slack/events")


def posted(slack: FakeSlackAPI, channel: str) -> list[dict[str, Any]]:
    return slack.messages(channel)


def bot_texts(slack: FakeSlackAPI, channel: str) -> list[str]:
    return [m.get("text", "") for m in slack.messages(channel) if m.get("bot_id")]


def cards(slack: FakeSlackAPI, channel: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages(channel) if actions(m)]


def actions(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message.get("blocks") or [] if b["type"] == "actions" for e in b["elements"]]


def value(card: dict[str, Any], action_id: str) -> str:
    for element in actions(card):
        if element["action_id"] == action_id:
            return str(element["value"])
    raise AssertionError(f"no {action_id} button on {card}")


def outbox(home: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((home / "outbox").glob("*.json"))]


def sent_steps(home: Path) -> list[int]:
    """How far each reply kept is sent, as the ledger holds it."""
    with sqlite3.connect(home / "steward.db") as db:
        return [row[0] for row in db.execute("select sent_steps from replies")]


def ephemerals(slack: FakeSlackAPI, user: str) -> list[str]:
    return [e["text"] for e in slack.ephemerals if e["user"] == user]


async def say(slack: FakeSlackAPI, bot: Running, text: str, user: str = OPERATOR) -> None:
    status, _ = await slack.post_event(bot.url, slack.message_event(user, text))
    assert status == 200


async def press(
    slack: FakeSlackAPI,
    bot: Running,
    card: dict[str, Any],
    action_id: str,
    user: str = OPERATOR,
    channel: str | None = None,
) -> float:
    """Presses a button (on a card in the operator's DM unless ``channel``) as Slack posts
    it; the seconds until Slack had its ack."""
    channel = channel or slack.dm_channel(OPERATOR)
    payload = slack.block_action(user, channel, card["ts"], action_id, value(card, action_id))
    began = time.monotonic()
    status, _ = await slack.post_interaction(bot.url, payload)
    assert status == 200
    return time.monotonic() - began


async def onboarding_card(slack: FakeSlackAPI, bot: Running) -> dict[str, Any]:
    dm = slack.dm_channel(OPERATOR)
    await say(slack, bot, START)
    await slack.wait_for(lambda s: cards(s, dm))
    (card,) = cards(slack, dm)
    return card


async def edit_asked_in_chat(slack: FakeSlackAPI, bot: Running) -> str:
    """An onboarding card in the operator's DM, its Edit pressed, and the new text asked
    for in chat (a test sets ``slack.trigger_ttl = 0.0``, so that no form opens); the
    DM."""
    dm = slack.dm_channel(OPERATOR)
    card = await onboarding_card(slack, bot)
    await press(slack, bot, card, "edit")
    await slack.wait_for(lambda s: any("Send the new text" in t for t in bot_texts(s, dm)))
    return dm


async def opened_edit_form(
    slack: FakeSlackAPI, bot: Running, card: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Presses Edit on ``card``: the modal Slack opened, and its text field."""
    await press(slack, bot, card, "edit")
    await slack.wait_for(lambda s: s.calls_to("views.open"))
    (opened,) = slack.calls_to("views.open")
    assert opened.ok, opened.error
    view = opened.response["view"]
    [field] = [b for b in view["blocks"] if b["type"] == "input"]
    return view, field


def failed(slack: FakeSlackAPI) -> list[str]:
    return [f"{c.method}: {c.error}" for c in slack.calls if not c.ok]


async def test_start_approve_and_the_card_is_updated_in_place(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        assert [e["action_id"] for e in actions(card)] == ["approve", "reject", "edit", "details"]
        assert "jane@acme.com" in json.dumps(card["blocks"])
        assert outbox(bot.home) == []

        acked_in = await press(slack, bot, card, "approve")
        assert acked_in < 3.0
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        settled = slack.message(dm, card["ts"])
        assert not actions(settled)
        assert f"Approved by <@{OPERATOR}> at" in json.dumps(settled["blocks"])
        assert len(outbox(bot.home)) == 1
        assert failed(slack) == []


async def test_a_double_click_resumes_once_and_says_who_decided(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        await asyncio.gather(press(slack, bot, card, "approve"), press(slack, bot, card, "approve"))
        await slack.wait_for(lambda s: ephemerals(s, OPERATOR))
        await bot.channel.idle()
        assert len(outbox(bot.home)) == 1
        [already] = ephemerals(slack, OPERATOR)
        assert already.startswith(f"Already decided — Approved by <@{OPERATOR}> at")
        assert sum("is done" in t for t in bot_texts(slack, dm)) == 1
        assert failed(slack) == []


async def test_a_stranger_gets_an_ephemeral_refusal_and_an_audit_event(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        card = await onboarding_card(slack, bot)
        await say(slack, bot, START, user=STRANGER)
        await press(slack, bot, card, "approve", user=STRANGER)
        await bot.channel.idle()
        assert ephemerals(slack, STRANGER) == [REFUSAL]  # once a day, however often they try
        assert (await bot.audit_kinds()).count("access.denied") == 2
        assert bot_texts(slack, slack.dm_channel(STRANGER)) == []
        assert outbox(bot.home) == []
        assert actions(slack.message(slack.dm_channel(OPERATOR), card["ts"]))  # still open


async def test_a_message_whose_handling_fails_is_answered_to_its_sender(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        break_down(bot.steward)
        await say(slack, bot, "/runs")
        await bot.channel.idle()
        assert ephemerals(slack, OPERATOR) == ["Something went wrong; it is logged."]


async def test_a_server_error_from_slack_is_tried_again_and_the_reply_arrives(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        slack.fail("chat.postMessage", 503, times=2)
        await say(slack, bot, "/runs")
        await bot.channel.idle()
        statuses = [call.status for call in slack.calls if call.method == "chat.postMessage"]
        assert statuses == [503, 503, 200]
        assert bot_texts(slack, slack.dm_channel(OPERATOR)) == ["No runs in progress."]


async def test_a_reply_slack_answers_service_unavailable_to_is_sent_once_it_can(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Slack says it could not take a message now in the body of a 200 too: that is no
    refusal, and the message is tried again."""
    async with running(tmp_path / "home", slack) as bot:
        bot.channel.outbox.first_retry = 0.1
        slack.fail(
            "chat.postMessage", 200, times=2
        )  # {"ok": false, "error": "service_unavailable"}
        await say(slack, bot, "/runs")
        await bot.channel.idle()
        statuses = [call.status for call in slack.calls if call.method == "chat.postMessage"]
        assert statuses == [200, 200, 200]
        assert bot_texts(slack, slack.dm_channel(OPERATOR)) == ["No runs in progress."]
        assert "reply.refused" not in await bot.audit_kinds()


async def test_a_reply_made_while_the_token_is_refused_goes_after_a_start_with_the_new_one(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """The token revoked (the app reinstalled, say): Slack answers invalid_auth to every
    call. The reply waits in the ledger, and steward restarted with the new token sends
    it."""
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        bot.channel.outbox.first_retry = 0.1
        slack.bot_token = "xoxb-the-new-token"
        await bot.channel.send(OPERATOR, Reply().say("the run is done"))
        await slack.wait_for(lambda s: s.calls_to("chat.postMessage"))
        await bot.service.stop(drain_seconds=0)
    assert bot_texts(slack, dm) == []
    async with running(home, slack) as bot:
        await slack.wait_for(lambda s: bot_texts(s, dm))
        await bot.channel.idle()
        assert bot_texts(slack, dm) == ["the run is done"]
        assert "reply.refused" not in await bot.audit_kinds()


def retry_soon(bot: Running) -> None:
    """What Slack cannot take is tried again by the outbox in 0.1 s, without the
    client's own retries after a server error (which wait)."""
    bot.channel.outbox.first_retry = 0.1
    bot.channel.client.retry_handlers = [
        handler
        for handler in bot.channel.client.retry_handlers
        if not isinstance(handler, AsyncServerErrorRetryHandler)
    ]


async def test_a_reply_slack_cannot_take_for_a_while_is_sent_once_it_can(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        retry_soon(bot)
        slack.fail("chat.postMessage", 503, times=3)
        await say(slack, bot, START)
        await bot.channel.idle()
        statuses = [call.status for call in slack.calls if call.method == "chat.postMessage"]
        assert statuses[:4] == [503, 503, 503, 200] and statuses.count(503) == 3
        dm = slack.dm_channel(OPERATOR)
        assert len(cards(slack, dm)) == 1
        assert sum(t.startswith("Started onboarding") for t in bot_texts(slack, dm)) == 1
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []


async def test_a_card_update_slack_cannot_take_for_a_while_is_made_once_it_can(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        retry_soon(bot)
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        slack.fail("chat.update", 503, times=4)
        await press(slack, bot, card, "approve")
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        await bot.channel.idle()
        statuses = [call.status for call in slack.calls if call.method == "chat.update"]
        assert statuses == [503, 503, 503, 503, 200]
        settled = slack.message(dm, card["ts"])
        assert not actions(settled)
        assert f"Approved by <@{OPERATOR}> at" in json.dumps(settled["blocks"])
        assert len(bot_texts(slack, dm)) == 3  # started, the card, done: no outcome beside it
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []


def unpace(bot: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel posts without keeping to a message a second: for tests of a dozen."""
    unpaced = Bucket(rate=1000.0, burst=1000)
    monkeypatch.setattr(bot.channel, "_bucket", lambda channel: unpaced)


def in_thread(slack: FakeSlackAPI, channel: str, ts: str) -> list[dict[str, Any]]:
    """The replies in the thread of message ``ts``, without the message itself."""
    return [m for m in posted(slack, channel) if m["ts"] != ts and m.get("thread_ts") == ts]


def fail_once(client: Any, method: str, after: int = 0) -> None:
    """A call of ``method`` by the client loses its connection (after the client's own
    retries), once ``after`` more calls of it have gone through."""
    call = getattr(client, method)
    calls = iter(range(after + 1))

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if next(calls, None) == after:
            raise aiohttp.ClientConnectionError("connection reset by peer")
        return await call(*args, **kwargs)

    setattr(client, method, flaky)


async def test_a_press_whose_answer_cannot_reach_slack_still_gets_the_rest_of_its_reply(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        fail_once(bot.channel.client, "chat_postEphemeral")
        press = Inbound(Sender("slack", OPERATOR), dm, "action:1", button="approve:a1")
        await bot.channel.send(dm, Reply(["Sent the welcome email."], notice="Approved"), press)
        await bot.channel.idle()
        assert bot_texts(slack, dm) == ["Sent the welcome email."]
        assert not [e for e in await bot.steward.ledger.audit_events() if e.kind == "reply.dropped"]


async def test_a_private_reply_slack_cannot_take_is_sent_again(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        bot.channel.outbox.first_retry = 0.05
        bot.channel.client.retry_handlers = []  # as after the client's own retries
        dm = slack.dm_channel(OPERATOR)
        press = Inbound(Sender("slack", OPERATOR), dm, "action:1", button="approve:a1")
        fail_once(bot.channel.client, "chat_postEphemeral")
        await bot.channel.send(dm, Reply(private=True).say("Something went wrong"), press)
        slack.fail("chat.postEphemeral", 503, times=1)
        await bot.channel.send(dm, Reply(private=True).say("Still wrong"), press)
        await bot.channel.idle()
        assert ephemerals(slack, OPERATOR) == ["Something went wrong", "Still wrong"]


@pytest.mark.slow
async def test_a_card_posted_while_the_ledger_is_down_is_posted_once_and_the_rest_goes(
    tmp_path: Path,
    slack: FakeSlackAPI,
    locked_long_enough: float,  # noqa: F811
) -> None:
    """Noting where a card went failed, the ledger down (its database locked past
    waiting): the whole reply was tried again once the ledger was back, and the card
    was posted a second time."""
    home = tmp_path / "home"
    async with running(home, slack) as bot:
        bot.channel.outbox.first_retry = 0.2
        dm = slack.dm_channel(OPERATOR)
        card = Card("a1", "Approve", "Send it", buttons=[Button("OK", "ok:a1")])
        owed = await bot.steward.door.owe("slack", dm, Reply([card, "after the card"]))
        async with locked(home / "steward.db"):
            bot.channel.outbox.put(owed)
            await asyncio.sleep(locked_long_enough)  # writes fail meanwhile
        await slack.wait_for(lambda s: "after the card" in bot_texts(s, dm), timeout=10)
        await bot.channel.idle()
        assert len(cards(slack, dm)) == 1 and bot_texts(slack, dm).count("after the card") == 1
        assert await bot.channel.shows("a1")


@pytest.mark.parametrize("restart", [False, True], ids=["tried again", "after a restart"])
async def test_a_cards_draft_goes_on_in_its_thread_once(
    tmp_path: Path, slack: FakeSlackAPI, monkeypatch: pytest.MonkeyPatch, restart: bool
) -> None:
    """A message of a card's long draft that Slack could not take goes to the card's
    thread when tried again, in the same process or after a restart, and only once."""
    async with running(tmp_path / "home", slack) as bot:
        bot.channel.outbox.first_retry = 5.0 if restart else 0.05
        unpace(bot, monkeypatch)
        dm = slack.dm_channel(OPERATOR)
        card = Card("a1", "Approve", "Send it", text="word " * 8000, buttons=[Button("OK", "ok")])
        fail_once(bot.channel.client, "chat_postMessage", after=1)  # the draft's rest
        await bot.channel.send(dm, Reply([card]))
        if restart:  # steward stops while the reply waits to be tried again
            await slack.wait_for(lambda _: sent_steps(bot.home) == [1])
            await bot.channel.outbox.stop()
            await bot.channel.outbox.load()  # again, and starts again
        await bot.channel.idle()
        (shown,) = cards(slack, dm)
        thread = in_thread(slack, dm, shown["ts"])
        assert len(thread) == len(card_overflow(card)) > 0


async def test_a_card_with_long_fields_shows_with_its_buttons_and_they_go_on_in_its_thread(
    tmp_path: Path, slack: FakeSlackAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    paragraph = "We will review, design and ship the work in small steps. " * 34  # ~1,950
    names = ("Scope", "Deliverables", "Timeline", "Terms", "Notes", "Risks", "Budget")
    buttons = [Button("Approve", "approve:a1", "primary"), Button("Reject", "reject:a1")]
    card = Card("a1", "Approve the proposal", "Send it", [(n, paragraph) for n in names])
    async with running(tmp_path / "home", slack) as bot:
        unpace(bot, monkeypatch)
        dm = slack.dm_channel(OPERATOR)
        await bot.channel.send(dm, Reply([replace(card, buttons=buttons)]))
        await bot.channel.idle()
        assert failed(slack) == []  # not msg_blocks_too_long
        (shown,) = cards(slack, dm)
        assert [a["action_id"] for a in actions(shown)] == ["approve", "reject"]
        thread = "\n\n".join(m["text"] for m in in_thread(slack, dm, shown["ts"]))
        assert all(f"{name}: {paragraph.strip()}" in thread for name in names)


async def test_an_edit_prompt_too_long_for_a_form_is_asked_in_chat_once(
    tmp_path: Path, slack: FakeSlackAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        bot.channel.outbox.first_retry = 0.05
        unpace(bot, monkeypatch)
        dm = slack.dm_channel(OPERATOR)
        prompt = EditPrompt("a1", "word " * 8000, "Send the new text.")
        fail_once(bot.channel.client, "chat_postMessage", after=1)
        await bot.channel.send(dm, Reply([prompt]))
        await bot.channel.idle()
        said = "".join(bot_texts(slack, dm))
        assert said.count("Send the new text.") == 1 and said.count("word") == 8000


async def test_a_press_is_answered_once_though_steward_restarts_before_the_rest_goes(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        bot.channel.outbox.first_retry = 5.0
        bot.channel.client.retry_handlers = []  # as after the client's own retries
        slack.fail("chat.postMessage", 503, times=1)
        press = Inbound(Sender("slack", OPERATOR), dm, "action:1", button="approve:a1")
        await bot.channel.send(dm, Reply(["Sent the welcome email."], notice="Approved"), press)
        await slack.wait_for(lambda s: s.calls_to("chat.postMessage"))
        await bot.channel.outbox.stop()  # steward stops while the reply waits to be tried again
        await bot.channel.outbox.load()  # and starts again
        await bot.channel.idle()
        assert ephemerals(slack, OPERATOR) == ["Approved"]
        assert bot_texts(slack, dm) == ["Sent the welcome email."]


async def test_an_event_slack_retries_is_handled_once(tmp_path: Path, slack: FakeSlackAPI) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        event = slack.message_event(OPERATOR, START)
        disk = DiskWatch(bot.steward.ledger, slow=0.2)
        assert (await slack.post_event(bot.url, event))[0] == 200
        stored = f"{slack.bot_id}:message:{dm}:{event['event']['ts']}"
        assert disk.on_disk_by(time.monotonic()) == {stored}  # before the ack
        for attempt in (1, 2):
            status, _ = await slack.post_event(bot.url, event, retry_num=attempt)
            assert status == 200
        await bot.channel.idle()
        assert len(cards(slack, dm)) == 1
        assert bot.inbox() == 1


async def test_the_first_request_after_the_start_needs_no_web_api_call(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Bolt asked auth.test again at the first request: with the Web API failing then,
    the message was acknowledged unstored ("reinstall this app"), and lost."""
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        slack.fail("auth.test", 503, times=10)
        assert await slack.post_event(bot.url, slack.message_event(OPERATOR, "/runs")) == (200, "")
        await slack.wait_for(lambda s: bot_texts(s, dm) == ["No runs in progress."])
        assert len(slack.calls_to("auth.test")) == 1 and bot.inbox() == 1


async def test_the_reply_goes_first_and_a_long_handling_does_not_hold_the_ack(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)

        async def at_once(
            everyone: bool = False,
        ) -> None:  # the disk out of the race: the order is the channel's
            return None

        bot.steward.ledger.db.sync = at_once  # type: ignore[method-assign]
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, "/processes")))[0]
        acked = time.monotonic()
        (reply,) = slack.calls_to("chat.postMessage")
        assert reply.at < acked  # answered before Slack heard "delivered"

        slow_down(bot.steward, 2.0)  # say, a model drafting an email
        began = time.monotonic()
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, "/runs")))[0]
        assert time.monotonic() - began < 1.0  # Slack wants its ack within 3 s
        await bot.channel.idle()
        assert len(bot_texts(slack, dm)) == 2


async def test_a_bad_signature_or_a_stale_timestamp_gets_401_and_an_audit_event(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        event = slack.message_event(OPERATOR, START)
        forged = await slack.post_event(bot.url, event, signature="v0=" + "0" * 64)
        stale = await slack.post_event(bot.url, event, timestamp=int(time.time()) - 6 * 60)
        assert forged[0] == 401 and stale[0] == 401
        await bot.channel.idle()
        assert bot.inbox() == 0
        assert bot_texts(slack, slack.dm_channel(OPERATOR)) == []
        assert await bot.audit_kinds() == ["request.refused", "request.refused"]
        with sqlite3.connect(bot.home / "steward.db") as db:
            reasons = [
                json.loads(r[0])["reason"]
                for r in db.execute("select data from audit_events order by seq")
            ]
        assert reasons[0] == "bad or missing signature"
        assert "more than 5 minutes" in reasons[1]
        for _ in range(5):  # a flood from one address: one event a minute
            await slack.post_event(bot.url, event, signature="v0=" + "1" * 64)
        assert await bot.audit_kinds() == ["request.refused", "request.refused"]


async def test_a_request_too_large_to_read_gets_413_and_an_audit_event(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """A body over a megabyte is refused unread, where nothing was in the audit log: a
    flood of them went unseen. One event a minute per address, as a bad signature's."""
    async with running(tmp_path / "home", slack) as bot, aiohttp.ClientSession() as session:
        body = json.dumps(slack.message_event(OPERATOR, "x" * 1024**2)).encode()
        headers = {**slack.sign(body), "Content-Type": "application/json"}
        for _ in range(3):  # signed as Slack signs, though nothing can tell it read unread
            async with session.post(bot.url, data=io.BytesIO(body), headers=headers) as sent:
                assert sent.status == 413
        await bot.channel.idle()
        assert bot.inbox() == 0
        assert await bot.audit_kinds() == ["request.refused"]
        with sqlite3.connect(bot.home / "steward.db") as db:
            [(subject, data)] = db.execute("select subject, data from audit_events").fetchall()
        assert subject == "slack" and json.loads(data)["reason"] == "request body over 1 MiB"


async def test_a_body_or_header_bolt_cannot_read_is_refused_not_a_server_error(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Bolt parses a request's body before it checks its signature: a body that is not
    JSON, or a signature header that is not ASCII, must not be a 500 for anyone."""
    async with running(tmp_path / "home", slack) as bot, aiohttp.ClientSession() as session:
        json_type, form_type = "application/json", "application/x-www-form-urlencoded"
        bodies = [(b"{", json_type), (b"[1]", json_type), (b"\xff", json_type)]
        bodies += [(b"payload=not-json", form_type)]
        for body, content_type in bodies:
            for signed in (False, True):
                headers = {"Content-Type": content_type}
                if signed:
                    headers |= slack.sign(body)
                async with session.post(bot.url, data=body, headers=headers) as response:
                    slack_s = signed and body != b"\xff"  # Slack sends UTF-8 only
                    assert response.status == (400 if slack_s else 401), (body, signed)
        body = b'{"type": "url_verification", "challenge": "c"}'
        unreadable = ({"X-Slack-Signature": "v0=\u00e9"}, {"X-Slack-Request-Timestamp": "now"})
        for wrong in (*unreadable, {"X-Slack-Request-Timestamp": ""}):
            headers = {"Content-Type": json_type, **slack.sign(body), **wrong}
            async with session.post(bot.url, data=body, headers=headers) as response:
                assert response.status == 401
        async with session.post(
            bot.url, data=body, headers={"Content-Type": json_type, **slack.sign(body)}
        ) as response:
            assert response.status == 200 and "c" in await response.text()
        assert bot.inbox() == 0
        assert await bot.audit_kinds() == ["request.refused"]  # one a minute from this address


def bolt_fails_on(slack: FakeSlackAPI) -> dict[str, tuple[str, dict[str, Any]]]:
    """Requests whose ids or routing fields slack-bolt itself fails on (a TypeError or a
    KeyError inside bolt, before any listener of steward's): how each is sent, by name."""
    dm = slack.dm_channel(OPERATOR)

    def event(change: Any) -> tuple[str, dict[str, Any]]:
        envelope = slack.message_event(OPERATOR, "/runs")
        change(envelope)
        return "event", envelope

    def interaction(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "interaction", {"team": {"id": slack.team_id}, "trigger_id": "1.2", **payload}

    press = {"type": "block_actions", "user": {"id": OPERATOR}, "channel": {"id": dm}}
    button = {"action_id": "approve", "value": "approve:x", "type": "button"}
    view = {"id": "V1", "callback_id": "steward_edit", "private_metadata": "{}", "state": {}}
    changed = {
        "type": "message",
        "subtype": "message_changed",
        "channel": dm,
        "message": {"user": 5, "text": "x", "ts": "1.1"},
        "ts": "2.1",
    }
    return {
        "an event's user a number": event(lambda e: e["event"].update(user=5)),
        "an event's channel a number": event(lambda e: e["event"].update(channel=5)),
        "authorizations a number": event(lambda e: e.update(authorizations=5)),
        "a changed message's user a number": event(lambda e: e.update(event=changed)),
        "a press's user a number": interaction({**press, "user": 5, "actions": [button]}),
        "a press's team a number": interaction({**press, "team": 5, "actions": [button]}),
        "a press's action without action_id": interaction(
            {**press, "actions": [{"value": "approve:x"}]}
        ),
        "a view_submission's view without type": interaction(
            {"type": "view_submission", "user": {"id": OPERATOR}, "view": view}
        ),
    }  # fmt: skip


async def send(
    slack: FakeSlackAPI, url: str, how: str, payload: dict[str, Any], signed: bool = True
) -> tuple[int, str]:
    signature = None if signed else "v0=" + "0" * 64
    if how == "event":
        return await slack.post_event(url, payload, signature=signature)
    return await slack.post_interaction(url, payload, signature=signature)


async def test_a_request_bolt_itself_would_fail_on_is_answered_cleanly_and_audited(
    tmp_path: Path, slack: FakeSlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Unsigned, a stranger's: 401 and audited, as any unsigned request, where bolt read
    it before checking its signature and answered 500 with a traceback in the log.
    Signed: 200 and set aside, audited, where it was a 500 that Slack sends three times
    more. Buttons of old attachments and dialogs are no press of steward's: ignored."""
    async with running(tmp_path / "home", slack) as bot:
        for name, (how, payload) in bolt_fails_on(slack).items():
            assert (await send(slack, bot.url, how, payload, signed=False))[0] == 401, name
        assert await bot.audit_kinds() == ["request.refused"]  # one a minute from this address
        for name, (how, payload) in bolt_fails_on(slack).items():
            assert await send(slack, bot.url, how, payload) == (200, ""), name
        legacy = [
            {"type": kind, "callback_id": 5, "actions": [{"name": "a"}], "user": {"id": OPERATOR}}
            for kind in ("interactive_message", "dialog_submission")
        ]
        for payload in legacy:
            assert await send(slack, bot.url, "interaction", payload) == (200, ""), payload
        await bot.channel.idle()
        assert bot.inbox() == 0
        assert set(await bot.audit_kinds()) == {"request.refused", "delivery.unusable"}
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        dm = slack.dm_channel(OPERATOR)
        await say(slack, bot, "/processes")
        await slack.wait_for(lambda s: bot_texts(s, dm))


async def test_a_request_set_aside_is_answered_200_while_the_ledger_is_down(
    tmp_path: Path, slack: FakeSlackAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its audit event raised with the ledger away, and a signed request steward cannot
    use was answered 500, which Slack sends again, though it could never be used. It is
    answered as when the ledger is up; the audit's failure is logged."""
    async with running(tmp_path / "home", slack) as bot:
        with monkeypatch.context() as down:
            down.setattr(bot.steward.ledger.db, "run", ledger_refuses)
            for name, (how, payload) in bolt_fails_on(slack).items():
                assert await send(slack, bot.url, how, payload) == (200, ""), name
            await bot.steward.door.audited()
        assert await bot.audit_kinds() == []


async def test_edit_opens_a_modal_holding_the_draft_and_its_text_is_sent(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        view, field = await opened_edit_form(slack, bot, card)
        assert "Acme" in field["element"]["initial_value"]

        new_text = "Dear Jane, <welcome> & *thanks*!"
        values = {field["block_id"]: {field["element"]["action_id"]: new_text}}
        status, _ = await slack.post_interaction(
            bot.url, slack.view_submission(OPERATOR, view["id"], values)
        )
        assert status == 200
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        (effect,) = outbox(bot.home)
        assert new_text in json.dumps(effect["params"], ensure_ascii=False)
        settled = slack.message(dm, card["ts"])
        assert "(with edits)" in json.dumps(settled["blocks"]) and not actions(settled)
        assert failed(slack) == []


async def test_an_edit_form_submitted_after_someone_decided_stays_open_with_its_text(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        card = await onboarding_card(slack, bot)
        view, field = await opened_edit_form(slack, bot, card)
        approval_id = value(card, "approve").split(":")[1]
        await bot.steward.engine.decide(approval_id, True, "cli:shell")  # meanwhile
        values = {field["block_id"]: {field["element"]["action_id"]: "my long new text"}}
        status, said = await slack.post_interaction(
            bot.url, slack.view_submission(OPERATOR, view["id"], values)
        )
        body = json.loads(said)
        assert status == 200 and body["response_action"] == "errors"
        assert "Approved by cli:shell" in body["errors"][field["block_id"]]
        assert "not sent" in body["errors"][field["block_id"]]
        (effect,) = outbox(bot.home)
        assert "my long new text" not in json.dumps(effect["params"])


async def test_an_edit_form_slack_sends_again_is_closed_not_told_its_text_was_not_sent(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Its first submission took too long to acknowledge, and Approve was pressed again:
    the form said "so this text was not sent", though it was."""
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        view, field = await opened_edit_form(slack, bot, card)
        values = {field["block_id"]: {field["element"]["action_id"]: "Hi Jane!"}}
        for _ in range(2):
            submitted = slack.view_submission(OPERATOR, view["id"], values)
            assert await slack.post_interaction(bot.url, submitted) == (200, "")
            await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        await bot.channel.idle()
        (effect,) = outbox(bot.home)
        assert effect["params"]["body"] == "Hi Jane!"
        assert ephemerals(slack, OPERATOR) == []


async def test_an_edit_form_submitted_while_the_run_is_paused_stays_open_until_it_resumes(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    new_text = "Dear Jane, a carefully rewritten welcome that took ten minutes to type."
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        view, field = await opened_edit_form(slack, bot, card)
        [run] = await bot.steward.ledger.list_runs(None, limit=5)
        await bot.steward.engine.pause(run.id, "cli:shell")  # meanwhile, from a shell
        values = {field["block_id"]: {field["element"]["action_id"]: new_text}}
        submission = slack.view_submission(OPERATOR, view["id"], values)
        status, said = await slack.post_interaction(bot.url, submission)
        body = json.loads(said)
        assert status == 200 and body["response_action"] == "errors"
        error = body["errors"][field["block_id"]]
        assert f"Run {run.id} is paused" in error and f"/steward resume {run.id}" in error
        await bot.steward.engine.resume(run.id, "cli:shell")
        status, said = await slack.post_interaction(bot.url, submission)  # Approve again
        assert status == 200 and not said
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        (effect,) = outbox(bot.home)
        assert new_text in json.dumps(effect["params"])


async def test_a_closed_edit_modal_keeps_the_card(tmp_path: Path, slack: FakeSlackAPI) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        await press(slack, bot, card, "edit")
        await slack.wait_for(lambda s: s.calls_to("views.open"))
        view = slack.calls_to("views.open")[0].response["view"]
        await slack.post_interaction(bot.url, slack.view_closed(OPERATOR, view["id"]))
        await bot.channel.idle()
        await say(slack, bot, "what's the weather like")  # not taken as the new text
        await slack.wait_for(lambda s: any("not sure" in t for t in bot_texts(s, dm)))
        assert outbox(bot.home) == []
        assert actions(slack.message(dm, card["ts"]))


async def test_once_the_edit_modal_is_open_the_next_message_is_not_the_new_text(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        await press(slack, bot, card, "edit")
        await slack.wait_for(lambda s: s.calls_to("views.open"))
        await bot.channel.idle()  # the modal is open, and then the operator's app reloads
        await say(slack, bot, "what's the weather like")
        await slack.wait_for(lambda s: any("not sure" in t for t in bot_texts(s, dm)))
        assert outbox(bot.home) == [] and actions(slack.message(dm, card["ts"]))


async def test_an_edit_press_too_old_for_a_modal_asks_in_chat(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    slack.trigger_ttl = 0.0  # every trigger has expired by the time steward uses it
    async with running(tmp_path / "home", slack) as bot:
        dm = await edit_asked_in_chat(slack, bot)
        await say(slack, bot, "Dear Jane, &lt;welcome&gt; &amp; thanks!")  # as Slack sends it
        await slack.wait_for(lambda s: any("Say yes" in t for t in bot_texts(s, dm)))
        await say(slack, bot, "yes")
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        (effect,) = outbox(bot.home)
        assert "Dear Jane, <welcome> & thanks!" in json.dumps(effect["params"], ensure_ascii=False)


async def test_the_new_text_typed_in_chat_is_shown_exactly_as_it_will_be_sent(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    slack.trigger_ttl = 0.0  # no form: the new text is typed in chat
    new_text = "Hi Jane, type /help in our portal, or /cancel or pause any time."
    async with running(tmp_path / "home", slack) as bot:
        dm = await edit_asked_in_chat(slack, bot)
        await say(slack, bot, new_text)
        await slack.wait_for(lambda s: any("Say yes" in t for t in bot_texts(s, dm)))
        assert new_text in bot_texts(slack, dm)  # not "/steward help", not "cancel or"
        await say(slack, bot, "yes")
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        (effect,) = outbox(bot.home)
        assert new_text in json.dumps(effect["params"])


async def test_in_a_dm_a_reply_in_the_thread_of_a_question_answers_it(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Not taken as a new request, which left the question open for the next word."""
    slack.trigger_ttl = 0.0  # no form: the new text is asked for in chat
    async with running(tmp_path / "home", slack) as bot:
        dm = await edit_asked_in_chat(slack, bot)
        prompt = [m for m in posted(slack, dm) if "Send the new text" in m["text"]][-1]
        new_text = slack.message_event(OPERATOR, "Hi Jane, welcome aboard!", thread_ts=prompt["ts"])
        assert (await slack.post_event(bot.url, new_text))[0] == 200
        await slack.wait_for(lambda s: any("Say yes" in t for t in bot_texts(s, dm)))
        await say(slack, bot, "yes")
        await slack.wait_for(lambda s: outbox(bot.home))
        await say(slack, bot, "runs")
        await slack.wait_for(lambda s: any("No runs in progress" in t for t in bot_texts(s, dm)))
        (effect,) = outbox(bot.home)
        assert effect["params"]["body"] == "Hi Jane, welcome aboard!"


async def test_in_a_dm_a_question_asked_in_a_thread_is_not_answered_at_the_top(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """The top of a DM is where new requests go: a word there is never taken for the
    answer to a question waiting in some thread (an Edit's would become the email)."""
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        await say(slack, bot, "hello")
        [hello] = [m for m in posted(slack, dm) if m["text"] == "hello"]
        start = slack.message_event(OPERATOR, "run onboarding client=Acme", thread_ts=hello["ts"])
        assert (await slack.post_event(bot.url, start))[0] == 200
        await slack.wait_for(lambda s: any("email" in t for t in bot_texts(s, dm)))
        await say(slack, bot, "runs")
        await slack.wait_for(lambda s: any("No runs in progress" in t for t in bot_texts(s, dm)))
        answer = slack.message_event(OPERATOR, "jane@acme.com", thread_ts=hello["ts"])
        assert (await slack.post_event(bot.url, answer))[0] == 200
        await slack.wait_for(lambda s: any("basic, standard" in t for t in bot_texts(s, dm)))


async def test_a_file_shared_as_the_new_text_is_not_read_for_its_message(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    slack.trigger_ttl = 0.0  # no form: the new text is asked for in chat
    async with running(tmp_path / "home", slack) as bot:
        dm = await edit_asked_in_chat(slack, bot)
        shared = slack.message_event(OPERATOR, "corrected version attached")
        shared["event"] |= {"subtype": "file_share", "files": [{"id": "F1", "name": "v2.txt"}]}
        assert (await slack.post_event(bot.url, shared))[0] == 200
        await slack.wait_for(lambda s: any("not v2.txt" in t for t in bot_texts(s, dm)))
        assert outbox(bot.home) == []


async def test_a_message_shared_as_the_new_text_is_not_read_for_its_comment(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Its comment became the draft, as a file's would have, and what was shared was not
    read at all."""
    slack.trigger_ttl = 0.0  # no form: the new text is asked for in chat
    async with running(tmp_path / "home", slack) as bot:
        dm = await edit_asked_in_chat(slack, bot)
        shared = slack.message_event(OPERATOR, "use this one")
        forwarded = {"is_share": True, "text": "Hi Jane, welcome!", "fallback": "[Dec 7] Hi"}
        shared["event"]["attachments"] = [forwarded]
        assert (await slack.post_event(bot.url, shared))[0] == 200
        await slack.wait_for(lambda s: any("not a shared message" in t for t in bot_texts(s, dm)))
        await bot.channel.idle()
        assert not any("use this one" in t for t in bot_texts(slack, dm))


async def test_a_card_sent_to_every_operator_s_dm_loses_its_buttons_in_each(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """News of a run whose channel steward may no longer post in goes to each operator's
    DM; a decision settles every copy, not the first only."""
    other = "U0TWO"
    operators = f"slack:{OPERATOR},slack:{other}"
    async with running(tmp_path / "home", slack, operators=operators) as bot:
        card = await onboarding_card(slack, bot)
        approval = await bot.steward.ledger.get_approval(value(card, "approve").split(":")[1])
        assert approval is not None
        slack.outside.add("C0GONE")
        news = Reply().add(approval_card(approval))
        await bot.channel.deliver(news, {"channel": "slack", "chat_id": "C0GONE"})
        mine, theirs = slack.dm_channel(OPERATOR), slack.dm_channel(other)
        await slack.wait_for(lambda s: cards(s, theirs) and len(cards(s, mine)) == 2)
        await press(slack, bot, card, "approve")
        await slack.wait_for(lambda s: not cards(s, mine) and not cards(s, theirs))

        # A long draft goes on in the thread of each copy, not in the gone thread's ts.
        long = Card("a2b3c4d", "Long", "Send it", text="word " * 8000, buttons=[Button("OK", "ok")])
        await bot.channel.deliver(Reply().add(long), {"channel": "slack", "chat_id": "C0GONE/9.9"})
        for dm in (mine, theirs):
            await slack.wait_for(
                lambda s, dm=dm: any("Long" in json.dumps(m) for m in cards(s, dm))
            )
            [copy] = [m for m in cards(slack, dm) if "Long" in json.dumps(m)]
            await slack.wait_for(lambda s, dm=dm, c=copy: in_thread(s, dm, c["ts"]))


async def test_commands_without_their_slash_work_in_a_dm(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        await say(slack, bot, "run onboarding client=Acme")
        await slack.wait_for(lambda s: any("email" in t for t in bot_texts(s, dm)))
        await say(slack, bot, "cancel")
        await slack.wait_for(lambda s: any("dropped it" in t for t in bot_texts(s, dm)))


async def test_reject_confirms_then_asks_for_a_reason(tmp_path: Path, slack: FakeSlackAPI) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        [reject] = [e for e in actions(card) if e["action_id"] == "reject"]
        assert reject["style"] == "danger" and reject["confirm"]["confirm"]["text"] == "Reject"
        await press(slack, bot, card, "reject")
        await slack.wait_for(lambda s: any(t.startswith("Why?") for t in bot_texts(s, dm)))
        assert "Rejected by" in json.dumps(slack.message(dm, card["ts"])["blocks"])
        await say(slack, bot, "wrong client")
        await slack.wait_for(lambda s: "Noted." in bot_texts(s, dm))
        assert outbox(bot.home) == []


async def test_a_reason_s_marks_show_as_written_on_the_card_and_in_a_notice(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Not bold, italic or struck through: Slack reads a card's context and an
    ephemeral message as mrkdwn."""
    reason = "*too* _formal_ ~late~ `now` & <b>"
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        approval = value(card, "reject").partition(":")[2]
        as_sent = reason.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        await say(slack, bot, f"reject {approval} {as_sent}")
        shown = mrkdwn(reason)
        await slack.wait_for(lambda s: shown in json.dumps(s.message(dm, card["ts"])["blocks"]))
        await press(slack, bot, card, "approve")
        await slack.wait_for(lambda s: ephemerals(s, OPERATOR))
        [already] = ephemerals(slack, OPERATOR)
        assert already.endswith(f": {shown}. Nothing changed.")


async def test_a_payment_recorded_by_hand_in_slack_is_counted(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """/steward paid RUN AMOUNT reaches the coordinator as any command: the run counts the
    part paid and asks, in the sender's DM, to approve the reminder of the rest."""
    channel = "C0TEAM"
    invoice = {"client": "Acme", "email": "ap@acme.com", "invoice": "INV-7"}
    invoice |= {"amount": "€2,500", "due_date": "2026-11-01"}
    async with running(tmp_path / "home", slack) as bot:
        view = await bot.steward.engine.start("invoice_followup", invoice, "cli:shell")
        assert view.approval is not None
        await bot.steward.engine.decide(view.approval.id, True, "cli:shell")
        paid = slack.slash_command(OPERATOR, channel, f"paid {view.run.id} €1,000")
        assert (await slack.post_command(bot.url, paid))[0] == 200
        await slack.wait_for(lambda s: cards(s, slack.dm_channel(OPERATOR)))
        assert f"Recorded for run {view.run.id}: €1,000.00 paid." in ephemerals(slack, OPERATOR)
        assert posted(slack, channel) == []  # the card of a slash command: in the DM
        (card,) = await bot.steward.ledger.pending_approvals([view.run.id])
        assert card.card["fields"]["Still owed"] == "€1,500.00"
        events = await bot.steward.ledger.audit_events()
        assert any(e.kind == "run.event" and e.actor == f"slack:{OPERATOR}" for e in events)


async def test_slash_command_and_mentions_reply_where_they_were_said(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """A slash command's answer only its sender sees, its card in their DM; a mention
    answered in its thread."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        help_call = slack.slash_command(OPERATOR, channel, "")
        assert (await slack.post_command(bot.url, help_call))[0] == 200
        run_call = slack.slash_command(OPERATOR, channel, START.removeprefix("/"))
        assert (await slack.post_command(bot.url, run_call))[0] == 200
        await slack.wait_for(lambda s: cards(s, dm))
        [help_text] = [t for t in ephemerals(slack, OPERATOR) if "Commands:" in t]
        assert "/steward run PROCESS" in help_text  # as it is typed in Slack
        assert not re.search(r"(?<!steward )/runs\b", help_text)
        assert any(t.startswith("Started onboarding") for t in ephemerals(slack, OPERATOR))
        assert "The card is in your DM with steward." in ephemerals(slack, OPERATOR)
        assert posted(slack, channel) == []
        runs_call = slack.slash_command(OPERATOR, channel, "runs")
        assert (await slack.post_command(bot.url, runs_call))[0] == 200
        await slack.wait_for(lambda s: any("Acme" in t for t in ephemerals(s, OPERATOR)))
        assert posted(slack, channel) == []

        mention = slack.mention_event(OPERATOR, f"<@{slack.bot_user_id}> /runs", channel)
        assert (await slack.post_event(bot.url, mention))[0] == 200
        thread = mention["event"]["ts"]
        await slack.wait_for(
            lambda s: any(
                m.get("thread_ts") == thread and m.get("bot_id") for m in posted(s, channel)
            )
        )
        [answer] = [
            m for m in posted(slack, channel) if m.get("thread_ts") == thread and m.get("bot_id")
        ]
        assert "onboarding" in answer["text"]


async def test_a_run_started_by_a_command_in_a_channel_sends_its_news_to_the_senders_dm(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """``/steward run …`` in a channel: its card goes to the sender's DM, and so does its
    run's later news (a card after a wait, its end: the client's name and all), where it
    was posted in the channel for everyone."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        call = slack.slash_command(OPERATOR, channel, START.removeprefix("/"))
        assert (await slack.post_command(bot.url, call))[0] == 200
        await slack.wait_for(lambda s: cards(s, dm))
        [run] = await bot.steward.ledger.list_runs(None, limit=5)
        await bot.service.notify(Reply().say("Jane at Acme replied."), run.reply_to)
        await slack.wait_for(lambda s: "Jane at Acme replied." in bot_texts(s, dm))
        await bot.service.idle()
        assert posted(slack, channel) == []


async def test_a_run_started_by_a_command_in_a_dm_with_someone_else_sends_its_news_to_the_sender(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """``/steward run …`` typed in a DM between two people (steward is no member): its
    answers and card went to the sender's DM, but its run's later news went to the DM it
    was typed in, which steward cannot post in, and so to every operator's DM: another
    operator read the client's name and all. Now it goes to the sender alone, as a
    command's in a channel does."""
    other, between = "U0PAL", "D0BETWEEN"
    slack.outside.add(between)
    operators = f"slack:{OPERATOR},slack:{other}"
    async with running(tmp_path / "home", slack, operators=operators) as bot:
        dm = slack.dm_channel(OPERATOR)
        call = slack.slash_command(OPERATOR, between, START.removeprefix("/"))
        assert (await slack.post_command(bot.url, call))[0] == 200
        await slack.wait_for(lambda s: cards(s, dm))
        [run] = await bot.steward.ledger.list_runs(None, limit=5)
        await bot.service.notify(Reply().say("Jane at Acme replied."), run.reply_to)
        await slack.wait_for(lambda s: "Jane at Acme replied." in bot_texts(s, dm))
        await bot.service.idle()
        assert bot_texts(slack, slack.dm_channel(other)) == []


async def test_the_daily_list_asked_for_in_a_channel_shows_its_cards_in_the_senders_dm(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """``/steward today`` in a channel: its lines only its sender sees, its cards in their
    DM, where a press updates them in place, where the cards were posted in the channel
    for everyone (an ephemeral card could not be updated). The channel sees nothing."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        await onboarding_card(slack, bot)
        today = slack.slash_command(OPERATOR, channel, "today")
        assert (await slack.post_command(bot.url, today))[0] == 200
        await slack.wait_for(lambda s: len(cards(s, dm)) == 2)
        await bot.channel.idle()
        assert posted(slack, channel) == []
        whispered = ephemerals(slack, OPERATOR)
        assert any("1 thing needs you" in t for t in whispered)
        assert "The card is in your DM with steward." in whispered
        listed = cards(slack, dm)[-1]
        await press(slack, bot, listed, "approve")
        await slack.wait_for(lambda s: not actions(s.message(dm, listed["ts"])))
        assert "Approved by" in json.dumps(slack.message(dm, listed["ts"])["blocks"])
        assert posted(slack, channel) == []


async def test_a_decision_typed_in_a_channel_on_a_card_slack_never_showed_is_told_in_the_dm(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """The outcome of ``/steward approve`` on a card shown on no Slack message (its run
    came from another platform) goes to its sender's DM, where it was posted in the
    channel, title, client and all."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        reply_to = {"channel": "telegram", "chat_id": "1"}
        inputs = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}
        view = await bot.steward.engine.start("onboarding", inputs, "telegram:1", reply_to)
        assert view.approval is not None
        approve = slack.slash_command(OPERATOR, channel, f"approve {view.approval.id}")
        assert (await slack.post_command(bot.url, approve))[0] == 200
        await slack.wait_for(lambda s: any("Approved by" in t for t in bot_texts(s, dm)))
        await bot.channel.idle()
        assert posted(slack, channel) == []


async def test_an_escalated_card_is_asked_again_in_the_thread_its_run_was_started_in(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Not in every operator's DM, as a run started outside chat."""
    home = home_with(tmp_path, {"ping": PING})
    async with running(home, slack) as bot:
        mention = slack.mention_event(OPERATOR, "run ping email=jane@acme.com", "C0TEAM")
        assert (await slack.post_event(bot.url, mention))[0] == 200
        thread = str(mention["event"]["ts"])
        await slack.wait_for(lambda s: cards(s, "C0TEAM"))
        [run] = await bot.steward.ledger.list_runs(None, limit=5)
        await bot.steward.ledger.write(lambda tx: tx.postpone_deadlines(run.id, -timedelta(days=4)))
        await slack.wait_for(
            lambda s: any("asking again" in t for t in thread_texts(s, "C0TEAM", thread))
        )
        await bot.service.idle()
    assert not any("asking again" in t for t in bot_texts(slack, slack.dm_channel(OPERATOR)))


async def asked_for_the_email_in_a_thread(slack: FakeSlackAPI, bot: Running) -> str:
    """A mention in C0TEAM starts a run whose email steward asks for in its thread."""
    mention = slack.mention_event(OPERATOR, "run onboarding client=Acme package=basic", "C0TEAM")
    assert (await slack.post_event(bot.url, mention))[0] == 200
    thread = str(mention["event"]["ts"])
    await slack.wait_for(lambda s: any("email" in t for t in thread_texts(s, "C0TEAM", thread)))
    return thread


def thread_texts(slack: FakeSlackAPI, channel: str, thread: str) -> list[str]:
    return [m["text"] for m in in_thread(slack, channel, thread)]


async def test_steward_hears_the_answer_to_its_question_in_a_channel_thread_and_nothing_else(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    channel, colleague = "C0TEAM", "U0COLLEAGUE"
    async with running(tmp_path / "home", slack) as bot:
        thread = await asked_for_the_email_in_a_thread(slack, bot)
        stored = bot.inbox()

        # Someone else in the thread, and a message outside any thread: neither is
        # steward's to read, so neither is stored, refused or answered. A message that
        # mentions steward comes as app_mention too: that one is what it answers.
        for user, text, where in [
            (colleague, "jane@acme.com", thread),
            (OPERATOR, "lunch?", None),
            (OPERATOR, f"<@{slack.bot_user_id}> jane@acme.com", thread),
        ]:
            event = slack.message_event(user, text, channel=channel, thread_ts=where)
            assert (await slack.post_event(bot.url, event))[0] == 200
        await bot.channel.idle()
        assert bot.inbox() == stored and not ephemerals(slack, colleague)

        answer = slack.message_event(OPERATOR, "jane@acme.com", channel=channel, thread_ts=thread)
        assert (await slack.post_event(bot.url, answer))[0] == 200
        await slack.wait_for(lambda s: cards(s, channel))
        assert "jane@acme.com" in json.dumps(cards(slack, channel)[0]["blocks"])

        # Nothing asked any more: the operator talking in the thread is not heard either.
        chatter = slack.message_event(OPERATOR, "thanks!", channel=channel, thread_ts=thread)
        assert (await slack.post_event(bot.url, chatter))[0] == 200
        await bot.channel.idle()
        assert bot.inbox() == stored + 1
        assert "access.denied" not in await bot.audit_kinds()


async def test_in_a_thread_only_the_first_message_after_a_question_is_taken(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        thread = await asked_for_the_email_in_a_thread(slack, bot)
        stored = bot.inbox()
        slow_down(bot.steward, 0.5)  # the answer waits to be handled: the question stands
        for text in ("jane@acme.com", "great, I'll tell Jane"):
            event = slack.message_event(OPERATOR, text, channel=channel, thread_ts=thread)
            assert (await slack.post_event(bot.url, event))[0] == 200
        await slack.wait_for(lambda s: cards(s, channel))
        await bot.channel.idle()
        assert bot.inbox() == stored + 1
        assert not any("not sure" in t for t in thread_texts(slack, channel, thread))


async def steward_says(
    slack: FakeSlackAPI, bot: Running, channel: str, words: str, says: str
) -> str:
    """``@steward WORDS`` in ``channel``; the thread of the mention, where steward answered
    with a message that ``says``."""
    mention = slack.mention_event(OPERATOR, words, channel)
    assert (await slack.post_event(bot.url, mention))[0] == 200
    thread = str(mention["event"]["ts"])
    await slack.wait_for(lambda s: any(says in t for t in thread_texts(s, channel, thread)))
    return thread


async def test_a_question_a_command_asks_in_a_channel_is_its_senders_and_answered_there(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """The answers typed in the channel to what ``/steward`` asked there privately are
    answered as privately: the next question only the sender sees, the card in their DM,
    and the run's later news too, as a command's own. The channel sees the words typed
    and nothing of steward's, where steward posted the rest of the form and the card
    there for all to read."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        call = slack.slash_command(OPERATOR, channel, "run onboarding client=Acme")
        assert (await slack.post_command(bot.url, call))[0] == 200
        await slack.wait_for(lambda s: any("email" in t for t in ephemerals(s, OPERATOR)))
        email = slack.message_event(OPERATOR, "jane@acme.com", channel=channel)
        assert (await slack.post_event(bot.url, email))[0] == 200
        await slack.wait_for(lambda s: any("basic, standard" in t for t in ephemerals(s, OPERATOR)))
        package = slack.message_event(OPERATOR, "basic", channel=channel)
        assert (await slack.post_event(bot.url, package))[0] == 200
        await slack.wait_for(lambda s: cards(s, dm))
        assert "jane@acme.com" in json.dumps(cards(slack, dm)[0]["blocks"])
        assert "The card is in your DM with steward." in ephemerals(slack, OPERATOR)
        [run] = await bot.steward.ledger.list_runs(None, limit=5)
        await bot.service.notify(Reply().say("Jane at Acme replied."), run.reply_to)
        await slack.wait_for(lambda s: "Jane at Acme replied." in bot_texts(s, dm))
        await bot.service.idle()
        assert bot_texts(slack, channel) == []


async def test_what_the_asker_shares_in_a_channel_does_not_take_the_answers_place(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """A file, then a message, the asker shares in the channel while steward waits for an
    email address: neither is the answer (steward read it as one, said it reads only
    typed text, and the typed answer after it was dropped); the address typed after is."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        call = slack.slash_command(OPERATOR, channel, "run onboarding client=Acme")
        assert (await slack.post_command(bot.url, call))[0] == 200
        await slack.wait_for(lambda s: any("email" in t for t in ephemerals(s, OPERATOR)))
        shared_file = slack.message_event(OPERATOR, "the contract", channel=channel)
        shared_file["event"] |= {"subtype": "file_share", "files": [{"id": "F1", "name": "c.pdf"}]}
        shared_message = slack.message_event(OPERATOR, "see this", channel=channel)
        shared_message["event"]["attachments"] = [{"is_share": True, "text": "x@y.com"}]
        for shared in (shared_file, shared_message):
            assert (await slack.post_event(bot.url, shared))[0] == 200
        await bot.channel.idle()
        assert bot_texts(slack, channel) == []
        email = slack.message_event(OPERATOR, "jane@acme.com", channel=channel)
        assert (await slack.post_event(bot.url, email))[0] == 200
        await slack.wait_for(lambda s: any("basic, standard" in t for t in ephemerals(s, OPERATOR)))
        assert not any(
            "typed" in t for t in bot_texts(slack, channel) + ephemerals(slack, OPERATOR)
        )


async def test_a_question_in_a_channel_may_be_answered_mentioning_steward(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        thread = await asked_for_the_email_in_a_thread(slack, bot)
        # At the top of the channel a mention is a request, never an answer.
        await steward_says(slack, bot, channel, "runs", "in progress")
        in_its_thread = slack.mention_event(OPERATOR, "jane@acme.com", channel, thread_ts=thread)
        assert (await slack.post_event(bot.url, in_its_thread))[0] == 200
        await slack.wait_for(lambda s: cards(s, channel))
        assert "jane@acme.com" in json.dumps(cards(slack, channel)[0]["blocks"])


async def test_in_a_thread_an_answer_slack_delivers_again_after_a_failed_store_is_taken(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        thread = await asked_for_the_email_in_a_thread(slack, bot)
        door = bot.channel.door
        accept = door.accept
        calls = 0

        async def down_once(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("the ledger is down for a moment")
            return await accept(*args, **kwargs)

        door.accept = down_once  # type: ignore[method-assign]
        event = slack.message_event(OPERATOR, "jane@acme.com", channel="C0TEAM", thread_ts=thread)
        assert (await slack.post_event(bot.url, event))[0] != 200  # Slack delivers it again
        assert (await slack.post_event(bot.url, event, retry_num=1))[0] == 200
        await slack.wait_for(lambda s: cards(s, "C0TEAM"))
        assert calls == 2


async def test_after_try_again_the_next_answer_is_taken_not_the_wrong_one_delivered_again(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        thread = await asked_for_the_email_in_a_thread(slack, bot)
        wrong = slack.message_event(OPERATOR, "not an email", channel="C0TEAM", thread_ts=thread)
        assert (await slack.post_event(bot.url, wrong))[0] == 200
        await slack.wait_for(
            lambda s: any("Try again, or cancel." in t for t in thread_texts(s, "C0TEAM", thread))
        )
        await bot.channel.idle()
        assert (await slack.post_event(bot.url, wrong, retry_num=1))[0] == 200  # Slack's retry
        await bot.channel.idle()
        right = slack.message_event(OPERATOR, "jane@acme.com", channel="C0TEAM", thread_ts=thread)
        assert (await slack.post_event(bot.url, right))[0] == 200
        await slack.wait_for(lambda s: cards(s, "C0TEAM"))


async def test_a_question_in_a_channel_is_answered_in_its_own_thread_and_no_other(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        older = await steward_says(slack, bot, channel, "help", "Commands:")
        question = await steward_says(slack, bot, channel, "run onboarding client=Acme", "email")
        later = await steward_says(slack, bot, channel, "runs", "in progress")
        stored = bot.inbox()
        for other in (older, later):  # steward's, but not the question's: not its answer
            chatter = slack.message_event(OPERATOR, "thanks!", channel=channel, thread_ts=other)
            assert (await slack.post_event(bot.url, chatter))[0] == 200
        await bot.channel.idle()
        assert bot.inbox() == stored
        answer = slack.message_event(OPERATOR, "jane@acme.com", channel=channel, thread_ts=question)
        assert (await slack.post_event(bot.url, answer))[0] == 200
        await slack.wait_for(lambda s: any("package" in m["text"] for m in posted(s, channel)))


async def test_cancel_in_a_thread_drops_the_question_asked_there(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        thread = await asked_for_the_email_in_a_thread(slack, bot)
        [question] = [t for t in thread_texts(slack, "C0TEAM", thread) if "email" in t]
        assert "(cancel to stop)" in question  # as it works there: no slash command does
        cancel = slack.message_event(OPERATOR, "cancel", channel="C0TEAM", thread_ts=thread)
        assert (await slack.post_event(bot.url, cancel))[0] == 200
        await slack.wait_for(
            lambda s: any("dropped it" in t for t in thread_texts(s, "C0TEAM", thread))
        )


async def test_a_message_slack_refuses_is_audited_and_the_next_goes(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    dm = slack.dm_channel(OPERATOR)
    async with running(tmp_path / "home", slack) as bot:
        slack.outside.add(dm)  # as if steward could no longer post in the DM
        await say(slack, bot, "/runs")
        await bot.channel.idle()
        events = await bot.steward.ledger.audit_events()
        [refused] = [e for e in events if e.kind == "reply.refused"]
        # Refused in the DM, then in the fallback: the DM by the operator's own id.
        assert refused.subject == f"slack:{OPERATOR}" and refused.data["reason"] == "not_in_channel"
        slack.outside.clear()
        await say(slack, bot, "/runs")
        await slack.wait_for(lambda s: bot_texts(s, dm))


async def test_an_edited_mention_starts_nothing_again(tmp_path: Path, slack: FakeSlackAPI) -> None:
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        mention = slack.mention_event(OPERATOR, START.removeprefix("/"), channel)
        assert (await slack.post_event(bot.url, mention))[0] == 200
        await slack.wait_for(lambda s: cards(s, channel))
        edited = slack.edited_mention(mention, START.removeprefix("/") + " (typo fixed)")
        assert (await slack.post_event(bot.url, edited))[0] == 200
        bot_mention = slack.mention_event(OPERATOR, "hello", channel)
        bot_mention["event"] = {**bot_mention["event"], "bot_id": "B0OTHER"}
        bot_mention["event"].pop("user")
        assert (await slack.post_event(bot.url, bot_mention))[0] == 200
        await bot.channel.idle()
        assert len(cards(slack, channel)) == 1
        assert len(await bot.steward.ledger.list_runs(None)) == 1


async def test_a_message_edited_to_mention_steward_is_answered_once(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Slack sends ``app_mention`` for the edit: answered, as the first mention of that
    message; a later edit of it (another ``app_mention``) is not answered again."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        forgot = slack.message_event(OPERATOR, START.removeprefix("/"), channel=channel)
        assert (await slack.post_event(bot.url, forgot))[0] == 200
        await bot.channel.idle()
        assert bot.inbox() == 0  # not steward's to read
        for edit in ("", " (typo fixed)"):
            edited = slack.edited_mention(forgot, START.removeprefix("/") + edit)
            assert (await slack.post_event(bot.url, edited))[0] == 200
            await bot.channel.idle()
        thread = forgot["event"]["ts"]
        assert [c.get("thread_ts") for c in cards(slack, channel)] == [thread]
        assert len(await bot.steward.ledger.list_runs(None)) == 1


async def test_a_message_a_steward_from_before_stored_by_its_event_id_is_not_answered_again(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """A steward from before messages were kept by their ts stored each under the id of
    the event that brought it. After the upgrade, the mention Slack sends for an edit of
    such a message, or a retry of it, finds nothing under the message's id: it was
    answered again, starting the run a second time. A message written since is answered,
    once."""
    channel, home = "C0TEAM", tmp_path / "home"
    answered = slack.mention_event(OPERATOR, START.removeprefix("/"), channel)
    async with running(home, slack) as bot:  # as the steward from before stored it
        said = Inbound(
            Sender("slack", OPERATOR),
            f"{channel}/{answered['event']['ts']}",
            answered["event_id"],
            text=START,
        )
        ledger = bot.steward.ledger
        inbox_id = await ledger.accept_inbound("slack", said.external_id, said.to_payload())
        assert inbox_id is not None
        await ledger.finish_inbound(inbox_id)
    async with running(home, slack) as bot:
        fixed = START.removeprefix("/").replace("basic", "premium")
        edited = slack.edited_mention(answered, fixed)
        assert (await slack.post_event(bot.url, edited))[0] == 200
        assert (await slack.post_event(bot.url, answered, retry_num=1))[0] == 200
        await bot.channel.idle()
        assert bot_texts(slack, channel) == [] and ephemerals(slack, OPERATOR) == []
        assert await bot.steward.ledger.list_runs(None) == []
        since = slack.mention_event(OPERATOR, START.removeprefix("/"), channel)
        assert (await slack.post_event(bot.url, since))[0] == 200
        await slack.wait_for(lambda s: cards(s, channel))
        assert len(await bot.steward.ledger.list_runs(None)) == 1


async def test_commands_without_their_slash_are_known_by_their_shape(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    dm = slack.dm_channel(OPERATOR)
    async with running(tmp_path / "home", slack) as bot:
        await say(slack, bot, "runs")
        await slack.wait_for(lambda s: "No runs in progress." in bot_texts(s, dm))
        await say(slack, bot, "help me onboard Jane from Acme")  # words: a process starts
        await say(slack, bot, "today we are thrilled to welcome you")  # the answer it asked for
        await bot.channel.idle()
        asked, answered = bot_texts(slack, dm)[1:]
        assert "email address?" in asked
        assert "got 'today we are thrilled to welcome you'" in answered
        await say(slack, bot, "cancel")  # on its own, while asked: a command
        await slack.wait_for(lambda s: len(bot_texts(s, dm)) == 4)
        await say(slack, bot, "help")
        await slack.wait_for(lambda s: "Commands:" in bot_texts(s, dm)[-1])

        await say(slack, bot, "help me onboard Jane from Acme")  # asks for the email again
        await slack.wait_for(lambda s: "email address?" in bot_texts(s, dm)[-1])
        call = slack.slash_command(OPERATOR, dm, "runs")  # typed with its slash: a command
        assert (await slack.post_command(bot.url, call))[0] == 200
        await slack.wait_for(lambda s: "No runs in progress." in bot_texts(s, dm)[-1])


async def test_a_message_in_the_dm_that_mentions_steward_is_read_without_the_mention(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Slack sends no app_mention for a DM, only the message: "@steward runs" there was
    read with the mention, as "@U… runs", words steward was not sure about ("Noted; …"),
    and an answer written so held the mention. Now it is read as a mention is."""
    dm, mention = slack.dm_channel(OPERATOR), f"<@{slack.bot_user_id}>"
    async with running(tmp_path / "home", slack) as bot:
        await say(slack, bot, f"{mention} runs")
        await slack.wait_for(lambda s: "No runs in progress." in bot_texts(s, dm))
        await say(slack, bot, "help me onboard Jane from Acme")
        await slack.wait_for(lambda s: "email address?" in bot_texts(s, dm)[-1])
        await say(slack, bot, f"{mention} jane@acme.com")
        await slack.wait_for(lambda s: "package" in bot_texts(s, dm)[-1])
        await say(slack, bot, f"{mention} premium")
        await slack.wait_for(lambda s: cards(s, dm))
        (card,) = cards(slack, dm)
        assert "@" + slack.bot_user_id not in json.dumps(card)
        assert "premium" in json.dumps(card)


async def test_a_429_is_waited_out_and_nothing_is_dropped(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        slack.rate_limit("chat.postMessage", retry_after_seconds=1, times=2)
        for n in range(3):
            await say(slack, bot, f"/cancel r{n}")
        await slack.wait_for(lambda s: len(bot_texts(s, dm)) == 3, timeout=15)
        assert [c.status for c in slack.calls_to("chat.postMessage")].count(429) == 2
        assert all("r0" in t or "r1" in t or "r2" in t for t in bot_texts(slack, dm))


async def test_messages_to_one_channel_are_paced_at_about_one_a_second(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        for n in range(6):
            await say(slack, bot, f"/cancel r{n}")
        await slack.wait_for(lambda s: len(bot_texts(s, dm)) == 6, timeout=15)
        times = slack.send_times(dm)
        assert times[-1] - times[0] >= 2.5  # three in a burst, then one a second


async def test_socket_mode_acks_events_and_presses_and_drops_a_retry(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack, socket_mode=True) as bot:
        dm = slack.dm_channel(OPERATOR)
        event = slack.message_event(OPERATOR, START)
        ack = await slack.socket_send("events_api", event)
        assert "envelope_id" in ack
        await slack.socket_send("events_api", event, retry_attempt=1, retry_reason="timeout")
        await slack.wait_for(lambda s: cards(s, dm))
        (card,) = cards(slack, dm)

        payload = slack.block_action(OPERATOR, dm, card["ts"], "approve", value(card, "approve"))
        began = time.monotonic()
        await slack.socket_send("interactive", payload)
        assert time.monotonic() - began < 3.0
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        await bot.channel.idle()
        assert len(cards(slack, dm)) == 0 and len(outbox(bot.home)) == 1
        assert bot.inbox() == 2


async def test_what_was_stored_but_not_handled_is_handled_after_a_restart(
    tmp_path: Path, slack: FakeSlackAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        hang = asyncio.Event()

        async def never(*args: object) -> None:
            await hang.wait()

        monkeypatch.setattr(bot.steward.door, "answer", never)
        await say(slack, bot, START)  # acknowledged: stored, then the process "dies"
        bot.channel.queue._worker.cancel()  # type: ignore[union-attr]
    monkeypatch.undo()
    assert cards(slack, dm) == []
    async with running(home, slack) as bot:
        await slack.wait_for(lambda s: cards(s, dm))
        await bot.channel.idle()
        assert len(cards(slack, dm)) == 1 and bot.inbox() == 1


async def test_news_goes_to_the_runs_thread_or_else_to_every_operator(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack, operators=f"slack:{OPERATOR},slack:U0TWO") as bot:
        await bot.service.notify(Reply().say("to everyone"), None)
        await bot.service.notify(
            Reply().say("to the thread"),
            {"channel": "slack", "chat_id": "C0TEAM/1700000000.000100"},
        )
        await bot.service.idle()
        assert bot_texts(slack, slack.dm_channel(OPERATOR)) == ["to everyone"]
        assert bot_texts(slack, slack.dm_channel("U0TWO")) == ["to everyone"]
        [threaded] = [m for m in posted(slack, "C0TEAM") if m.get("bot_id")]
        assert threaded["thread_ts"] == "1700000000.000100"


async def test_news_an_operator_cannot_be_sent_is_not_sent_twice_to_the_others(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """An operator steward cannot write to (an id mistyped, a member gone): their copy
    went to every operator's DM instead, so each other one had every card and news twice."""
    slack.outside.add(slack.dm_channel("U0GONE"))
    async with running(tmp_path / "home", slack, operators=f"slack:{OPERATOR},slack:U0GONE") as bot:
        await bot.service.notify(Reply().say("to everyone"), None)
        await bot.service.idle()
        assert bot_texts(slack, slack.dm_channel(OPERATOR)) == ["to everyone"]
        assert [c.error for c in slack.calls_to("chat.postMessage")] == [None, "not_in_channel"]
        assert (await bot.audit_kinds()).count("reply.refused") == 1


async def test_a_refused_token_or_an_unreachable_slack_stops_the_start_clearly(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/api/"
    for token, app_token, url, expected in (
        ("xoxb-wrong", slack.app_token, slack.base_url, "refused SLACK_BOT_TOKEN (invalid_auth)"),
        (slack.bot_token, "xapp-wrong", slack.base_url, "refused SLACK_APP_TOKEN (invalid_auth)"),
        (slack.bot_token, slack.app_token, unreachable, "cannot reach the Slack Web API"),
    ):
        settings = load_settings(
            home=tmp_path / "home",
            slack_bot_token=token,
            slack_api_url=url,
            slack_app_token=app_token,
        )
        async with Steward.open(settings) as steward:
            with pytest.raises(SlackUnavailable) as raised:
                async with Service(steward, configured_channels(steward)):
                    pass
            assert expected in str(raised.value)
            assert token not in str(raised.value) and app_token not in str(raised.value)


async def test_a_command_where_steward_may_not_post_is_answered_in_the_dm(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    slack.outside.add("C0OTHER")
    async with running(tmp_path / "home", slack) as bot:
        call = slack.slash_command(OPERATOR, "C0OTHER", START.removeprefix("/"))
        assert (await slack.post_command(bot.url, call))[0] == 200
        dm = slack.dm_channel(OPERATOR)
        await slack.wait_for(lambda s: cards(s, dm))
        assert posted(slack, "C0OTHER") == []
        (card,) = cards(slack, dm)
        await press(slack, bot, card, "approve")
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        assert not actions(slack.message(dm, card["ts"]))


async def test_every_press_on_a_card_in_a_channel_steward_has_left_is_answered(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Privately, by the press's own response_url, and in the presser's DM once that is
    spent; where the second press was answered nowhere. The card shows its outcome, by
    the press's response_url, where it kept its buttons."""
    channel = "C0TEAM"
    async with running(tmp_path / "home", slack) as bot:
        mention = slack.mention_event(OPERATOR, START.removeprefix("/"), channel)
        assert (await slack.post_event(bot.url, mention))[0] == 200
        await slack.wait_for(lambda s: cards(s, channel))
        (card,) = cards(slack, channel)
        slack.outside.add(channel)
        dm = slack.dm_channel(OPERATOR)
        await press(slack, bot, card, "approve", channel=channel)
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        settled = slack.message(channel, card["ts"])  # by the press's response_url too
        assert not actions(settled) and "Approved by" in json.dumps(settled["blocks"])
        await press(slack, bot, card, "approve", channel=channel)  # on a stale screen
        await slack.wait_for(lambda s: any("Already decided" in t for t in ephemerals(s, OPERATOR)))
        answered = [r.body for r in slack.responses if not r.body.get("replace_original")]
        assert [a["response_type"] for a in answered] == ["ephemeral"]
        approve = value(card, "approve")
        pressed = slack.block_action(OPERATOR, channel, card["ts"], "approve", approve)
        pressed["response_url"] = pressed["response_url"].rsplit("/", 1)[0] + "/spent"
        assert (await slack.post_interaction(bot.url, pressed))[0] == 200
        await slack.wait_for(lambda s: any("Already decided" in t for t in bot_texts(s, dm)))


async def test_a_question_a_command_asked_in_the_dm_instead_is_answered_there(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Steward may not post in the channel: its question went to the DM, where the answer
    was taken for a new request, and the question waited where it could not be seen."""
    slack.outside.add("C0OTHER")
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        call = slack.slash_command(OPERATOR, "C0OTHER", "run onboarding client=Acme")
        assert (await slack.post_command(bot.url, call))[0] == 200
        await slack.wait_for(lambda s: any("email" in t for t in bot_texts(s, dm)))
        await say(slack, bot, "jane@acme.com")
        await slack.wait_for(lambda s: any("basic, standard" in t for t in bot_texts(s, dm)))
        [asked] = [m for m in posted(slack, dm) if "basic, standard" in m["text"]]
        package = slack.message_event(OPERATOR, "basic", thread_ts=asked["ts"])
        assert (await slack.post_event(bot.url, package))[0] == 200
        await slack.wait_for(lambda s: cards(s, dm))
        assert posted(slack, "C0OTHER") == []


async def test_a_stranger_is_refused_where_steward_is_no_member_by_the_commands_response_url(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    slack.outside.add("C0OTHER")
    async with running(tmp_path / "home", slack) as bot:
        call = slack.slash_command(STRANGER, "C0OTHER", "runs")
        assert (await slack.post_command(bot.url, call))[0] == 200
        await bot.channel.idle()
        assert ephemerals(slack, STRANGER) == [REFUSAL]
        [answer] = slack.responses
        assert answer.body["response_type"] == "ephemeral"
        assert (await bot.audit_kinds()).count("access.denied") == 1


async def test_an_answer_a_commands_response_url_refuses_is_audited(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Expired (after 30 minutes) or used up: the log line was all there was of it."""
    slack.outside.add("C0OTHER")
    async with running(tmp_path / "home", slack) as bot:
        call = slack.slash_command(STRANGER, "C0OTHER", "runs")
        call["response_url"] = call["response_url"].rsplit("/", 1)[0] + "/expired"
        assert (await slack.post_command(bot.url, call))[0] == 200
        await bot.channel.idle()
        assert slack.responses == []
        assert (await bot.audit_kinds()).count("reply.refused") == 1


async def test_an_answer_a_commands_response_url_rate_limits_is_sent_after_the_wait(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    slack.outside.add("C0OTHER")
    slack.rate_limit("response_url", 1, times=1)
    async with running(tmp_path / "home", slack) as bot:
        call = slack.slash_command(STRANGER, "C0OTHER", "runs")
        assert (await slack.post_command(bot.url, call))[0] == 200
        await slack.wait_for(lambda s: s.responses)
        await bot.channel.idle()
        [answer] = slack.responses
        assert answer.body["text"] == REFUSAL
        assert "reply.refused" not in await bot.audit_kinds()


async def test_text_from_slack_arrives_as_written(tmp_path: Path, slack: FakeSlackAPI) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        wrapped = (
            'run onboarding client="&lt;Acme&gt; &amp; Co" '
            "email=<mailto:jane@acme.com|jane@acme.com> package=basic"
        )
        await say(slack, bot, wrapped)
        await slack.wait_for(lambda s: cards(s, dm))
        card = json.dumps(cards(slack, dm)[0]["blocks"])
        assert "jane@acme.com" in card and "mailto" not in card
        await bot.channel.idle()
        runs = await bot.steward.ledger.list_runs(None, limit=5)
        assert runs[0].inputs["email"] == "jane@acme.com"
        assert runs[0].inputs["client"] == "<Acme> & Co"


async def test_the_daily_list_acts_right_on_its_items(tmp_path: Path, slack: FakeSlackAPI) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        await say(slack, bot, "today")
        await slack.wait_for(lambda s: len(cards(s, dm)) == 2)
        listed = cards(slack, dm)[1]
        assert "1. Send the welcome email" in json.dumps(listed["blocks"])
        await press(slack, bot, listed, "approve")
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        assert cards(slack, dm) == []  # the card and its entry in the list both settled
        assert len(outbox(bot.home)) == 1 and card["ts"] != listed["ts"]


async def test_the_daily_lists_resume_button_resumes_a_paused_run(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Each verb a button carries is listened for (bolt answers 404 to any other)."""
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        await onboarding_card(slack, bot)
        [run] = await bot.steward.ledger.list_runs(None, limit=5)
        await say(slack, bot, f"/pause {run.id}")
        await slack.wait_for(lambda s: any("Paused run" in t for t in bot_texts(s, dm)))
        await say(slack, bot, "today")

        def resumable(s: FakeSlackAPI) -> list[dict[str, Any]]:
            return [c for c in cards(s, dm) if '"resume"' in json.dumps(c["blocks"])]

        await slack.wait_for(resumable)
        [listed] = resumable(slack)
        payload = slack.block_action(OPERATOR, dm, listed["ts"], "resume", value(listed, "resume"))
        assert (await slack.post_interaction(bot.url, payload))[0] == 200
        await bot.channel.idle()
        resumed = await bot.steward.ledger.get_run(run.id)
        assert resumed is not None and resumed.status is RunStatus.WAITING
        settled = slack.message(dm, listed["ts"])  # the item says so, its buttons gone
        assert not actions(settled) and f"resumed by slack:{OPERATOR}" in json.dumps(settled)

        await say(slack, bot, f"/pause {run.id}")  # paused again, the next list has it again
        await slack.wait_for(lambda s: sum("Paused run" in t for t in bot_texts(s, dm)) == 2)
        await say(slack, bot, "today")
        await slack.wait_for(lambda s: sum("1 paused run" in t for t in bot_texts(s, dm)) == 2)
        await bot.channel.idle()
        assert resumable(slack)  # with its button, not the outcome of the last one


async def test_a_card_is_updated_in_place_after_a_restart(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Where a card shows is kept in the ledger, so a new process finds it."""
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        card = await onboarding_card(slack, bot)
    async with running(home, slack) as bot:  # a new process
        await say(slack, bot, "approve " + value(card, "approve").split(":")[1])
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        assert not actions(slack.message(dm, card["ts"]))  # the old card, edited in place


async def test_a_card_decided_in_a_shell_while_steward_was_down_loses_its_buttons_at_start(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        card = await onboarding_card(slack, bot)
        settings = bot.steward.settings
    approval_id = value(card, "approve").split(":")[1]
    async with Steward.open(settings) as steward:  # `steward approve` in a shell
        await steward.coordinator.decide(approval_id, True, "cli:operator")
    async with running(home, slack):
        await slack.wait_for(lambda s: not actions(s.message(dm, card["ts"])), timeout=5)
    assert "Approved by" in json.dumps(slack.message(dm, card["ts"]))
    assert len([c for c in slack.calls if c.method == "chat.update"]) == 1


async def test_a_card_another_slack_app_on_the_same_ledger_showed_is_its_to_settle(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Two Slack apps (two workspaces, say) in turn on one ledger: a card the first showed
    is decided with the second, whose Slack has no such message. The first updates its
    own card at its next start, where the second took the first's messages as its own,
    tried to update them in its workspace and left the card's buttons live for good."""
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        card = await onboarding_card(slack, bot)
    other = FakeSlackAPI(bot_token="xoxb-other", team_id="T0002", bot_id="B0OTHER")
    async with other, running(home, other) as bot:
        await say(other, bot, "approve " + value(card, "approve").split(":")[1])
        await other.wait_for(lambda s: any("Approved by" in t for t in bot_texts(s, dm)))
        await bot.service.idle()
        assert other.calls_to("chat.update") == []  # none of its messages shows the card
    async with running(home, slack):
        await slack.wait_for(lambda s: not actions(s.message(dm, card["ts"])), timeout=5)
    assert "Approved by" in json.dumps(slack.message(dm, card["ts"]))


async def test_a_reply_another_slack_app_on_the_same_ledger_owes_is_sent_by_that_app_alone(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """An app stopped while Slack could not take its reply; another app (another
    workspace) started on the same ledger took the reply up and posted it in its own
    workspace, where that conversation is none (channel_not_found: dropped). Now each app
    sends only the replies it owes: the first sends it once it is back."""
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        retry_soon(bot)
        slack.fail("chat.postMessage", 503, times=10_000)
        await bot.channel.send(dm, Reply(["a word from the first app"]))
        await slack.wait_for(lambda s: len(s.calls_to("chat.postMessage")) >= 2)
        await bot.service.stop(drain_seconds=0)
    slack.fail("chat.postMessage", 503, times=0)
    other = FakeSlackAPI(bot_token="xoxb-other", team_id="T0002", bot_id="B0OTHER")
    async with other, running(home, other) as bot:
        await bot.channel.idle()
        assert other.calls_to("chat.postMessage") == []
    async with running(home, slack) as bot:
        await slack.wait_for(lambda s: "a word from the first app" in bot_texts(s, dm))
        await bot.channel.idle()
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []


async def test_a_message_another_slack_app_stored_is_handled_by_that_app_alone(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """An app stopped with a message stored and not yet handled; another app (another
    workspace) started on the same ledger took it up and answered it in its own
    workspace, where that conversation is none. Now each app takes up only what was sent
    to it: the first answers it once it is back."""
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        slow_down(bot.steward, 60)
        await say(slack, bot, "/processes")  # acknowledged: stored
        await bot.service.stop(drain_seconds=0)
    other = FakeSlackAPI(bot_token="xoxb-other", team_id="T0002", bot_id="B0OTHER")
    async with other, running(home, other) as bot:
        await bot.channel.idle()
        assert other.calls_to("chat.postMessage") == []
    async with running(home, slack) as bot:
        await slack.wait_for(lambda s: any("onboarding — " in t for t in bot_texts(s, dm)))
        await bot.channel.idle()
        assert await bot.steward.ledger.unhandled_inbound("slack") == []


async def test_a_delivery_stored_before_slack_apps_were_told_apart_is_the_app_s_to_handle(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Where a steward from before stored a message (its id naming no app) and stopped
    before handling it, the app takes it as its own at start and answers it, once: the
    mention Slack sends when it is edited, or a retry, is known for it."""
    home, channel = tmp_path / "home", "C0TEAM"
    mention = slack.mention_event(OPERATOR, "processes", channel)
    async with running(home, slack) as bot:
        slow_down(bot.steward, 60)
        assert (await slack.post_event(bot.url, mention))[0] == 200
        await bot.service.stop(drain_seconds=0)
    bare = f"message:{channel}:{mention['event']['ts']}"
    with sqlite3.connect(home / "steward.db") as db:  # as the older steward kept it
        db.execute("update inbox set external_id = ?", (bare,))
    async with running(home, slack) as bot:
        await slack.wait_for(lambda s: any("onboarding — " in t for t in bot_texts(s, channel)))
        assert (await slack.post_event(bot.url, mention, retry_num=1))[0] == 200
        edited = slack.edited_mention(mention, "processes please")
        assert (await slack.post_event(bot.url, edited))[0] == 200
        await bot.channel.idle()
        assert len(bot_texts(slack, channel)) == 1
        assert await bot.steward.ledger.unhandled_inbound("slack") == []


async def test_a_reply_kept_before_slack_apps_were_told_apart_is_the_app_s_to_send(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Where a steward from before kept a reply (under ``slack`` alone), the app takes it
    as its own at start, and sends it."""
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        retry_soon(bot)
        slack.fail("chat.postMessage", 503, times=10_000)
        await bot.channel.send(dm, Reply(["kept before the upgrade"]))
        await slack.wait_for(lambda s: len(s.calls_to("chat.postMessage")) >= 2)
        await bot.service.stop(drain_seconds=0)
        assert await bot.steward.ledger.rename_replies(f"slack:{slack.bot_id}", "slack") == 1
    slack.fail("chat.postMessage", 503, times=0)
    async with running(home, slack) as bot:
        await slack.wait_for(lambda s: "kept before the upgrade" in bot_texts(s, dm))
        await bot.channel.idle()
        assert await bot.steward.door.owed("slack") == []


async def test_a_card_noted_before_slack_apps_were_told_apart_is_updated_in_place(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Where a steward from before noted a card (under ``slack`` alone), the app takes it
    as its own at start."""
    home = tmp_path / "home"
    dm = slack.dm_channel(OPERATOR)
    async with running(home, slack) as bot:
        card = await onboarding_card(slack, bot)
        await bot.channel.idle()
        assert await bot.steward.ledger.rename_card_messages(f"slack:{slack.bot_id}", "slack")
    async with running(home, slack) as bot:
        await say(slack, bot, "approve " + value(card, "approve").split(":")[1])
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))
        assert not actions(slack.message(dm, card["ts"]))


def unusable_events(slack: FakeSlackAPI) -> dict[str, dict[str, Any]]:
    """Events, signed, whose fields steward reads are missing or of another type."""

    def changed(envelope: dict[str, Any], change: Any) -> dict[str, Any]:
        change(envelope)
        return envelope

    message = partial(slack.message_event, OPERATOR, "/runs")
    mention = partial(slack.mention_event, OPERATOR, "/runs", "C0GENERAL")
    return {
        "no channel": changed(message(), lambda e: e["event"].pop("channel")),
        "text an object": changed(message(), lambda e: e["event"].update(text={"a": 1})),
        "files of strings": changed(message(), lambda e: e["event"].update(files=["x"])),
        "subtype a list": changed(message(), lambda e: e["event"].update(subtype=["x"])),
        "thread_ts a number": changed(message(), lambda e: e["event"].update(thread_ts=5)),
        "event a string": changed(message(), lambda e: e.update(event="x")),
        "mention without ts": changed(mention(), lambda e: e["event"].pop("ts")),
        "mention without channel": changed(mention(), lambda e: e["event"].pop("channel")),
    }


def ignored_events(slack: FakeSlackAPI) -> list[dict[str, Any]]:
    """Events Slack sends that steward has no use for: message subtypes that nest the
    message or carry no user, and event types it does not listen for."""
    dm = slack.dm_channel(OPERATOR)
    nested = {"type": "message", "user": OPERATOR, "text": "/runs", "ts": "1.000001"}
    events = [
        {"type": "message", "subtype": "message_changed", "hidden": True, "channel": dm,
         "message": nested, "previous_message": nested, "ts": "2.000001", "event_ts": "2.1"},
        {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": dm,
         "deleted_ts": "1.000001", "previous_message": nested, "ts": "2.000002"},
        {"type": "message", "subtype": "channel_join", "user": OPERATOR, "channel": "C0GENERAL",
         "text": f"<@{OPERATOR}> has joined the channel", "ts": "2.000003"},
        {"type": "app_home_opened", "user": OPERATOR, "channel": dm, "tab": "messages",
         "event_ts": "2.000004"},
        {"type": "member_joined_channel", "user": OPERATOR, "channel": "C0GENERAL",
         "channel_type": "C", "team": slack.team_id, "event_ts": "2.000005"},
        {"type": "message"},
        {"type": 5},
    ]  # fmt: skip
    return [{**slack.message_event(OPERATOR, "x"), "event": event} for event in events]


async def test_an_event_of_a_shape_steward_cannot_use_is_answered_200_and_audited_once(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Not a 500, which Slack would deliver three times more: what steward does not use
    is ignored, and what it would use but cannot read is set aside, in the audit log."""
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        for envelope in ignored_events(slack):
            assert (await slack.post_event(bot.url, envelope))[0] == 200, envelope["event"]
        assert await bot.audit_kinds() == []
        for name, envelope in unusable_events(slack).items():
            assert (await slack.post_event(bot.url, envelope))[0] == 200, name
        await bot.channel.idle()
        assert bot.inbox() == 0 and bot_texts(slack, dm) == []
        kinds = await bot.audit_kinds()
        assert set(kinds) == {"delivery.unusable"}
        # One a minute for each reason: the two events without a channel make one.
        assert len(kinds) == len(unusable_events(slack)) - 1
        await say(slack, bot, "/processes")
        await slack.wait_for(lambda s: bot_texts(s, dm))


async def test_a_press_form_or_command_of_a_shape_steward_cannot_use_is_answered_200(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        card = await onboarding_card(slack, bot)
        view, field = await opened_edit_form(slack, bot, card)
        await bot.channel.idle()
        values = {field["block_id"]: {field["element"]["action_id"]: "my new text"}}

        def submitted(change: Any) -> dict[str, Any]:
            submission = slack.view_submission(OPERATOR, view["id"], values)
            change(submission)
            return submission

        def closed(change: Any) -> dict[str, Any]:
            closing = slack.view_closed(OPERATOR, view["id"])
            change(closing)
            return closing

        def pressed(change: Any) -> dict[str, Any]:
            payload = slack.block_action(OPERATOR, dm, card["ts"], "approve")
            change(payload)
            return payload

        approval = value(card, "approve").partition(":")[2]
        unusable = [
            submitted(lambda s: s["view"].update(private_metadata="not json")),
            submitted(lambda s: s["view"].update(private_metadata=json.dumps({"approval": "x"}))),
            submitted(lambda s: s["view"].update(private_metadata="[1]")),
            submitted(
                lambda s: s["view"].update(private_metadata=json.dumps({"approval": 5, "chat": dm}))
            ),
            submitted(lambda s: s["view"]["state"].update(values={})),
            submitted(lambda s: s["view"]["state"]["values"][field["block_id"]].clear()),
            submitted(lambda s: s.pop("user")),
            closed(lambda c: c["view"].update(private_metadata="not json")),
            closed(lambda c: c["view"].pop("id")),
            pressed(lambda p: (p.pop("container"), p.pop("channel"))),  # in a modal, say
            pressed(lambda p: p.update(actions=[])),
            pressed(lambda p: p.pop("trigger_id")),
            pressed(lambda p: p["user"].update(id=None)),
            pressed(lambda p: p["actions"][0].update(value=["approve", approval])),
        ]
        for payload in unusable:
            status, said = await slack.post_interaction(bot.url, payload)
            assert (status, said) == (200, ""), payload
        ignored = [
            pressed(lambda p: p["actions"][0].update(action_id="open_link")),
            {"type": "shortcut", "callback_id": "x", "trigger_id": "1.2", "user": {"id": OPERATOR},
             "team": {"id": slack.team_id}, "token": slack.verification_token},
        ]  # fmt: skip
        for payload in ignored:
            assert (await slack.post_interaction(bot.url, payload))[0] == 200, payload
        command = slack.slash_command(OPERATOR, dm, "runs")
        del command["trigger_id"]
        assert (await slack.post_command(bot.url, command))[0] == 200
        other = slack.slash_command(OPERATOR, dm, "runs", command="/other")
        assert (await slack.post_command(bot.url, other))[0] == 200

        await bot.channel.idle()
        assert bot.inbox() == 2  # the /run and the Edit press, nothing after
        assert outbox(bot.home) == [] and actions(slack.message(dm, card["ts"]))
        kinds = {"run.started", "approval.requested", "delivery.unusable"}
        assert set(await bot.audit_kinds()) == kinds
        status, _ = await slack.post_interaction(
            bot.url, slack.view_submission(OPERATOR, view["id"], values)
        )  # the form itself still works
        assert status == 200
        await slack.wait_for(lambda s: any("is done" in t for t in bot_texts(s, dm)))


async def test_socket_mode_acks_a_delivery_of_a_shape_steward_cannot_use(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Not acknowledged, Slack would send it again over the socket."""
    async with running(tmp_path / "home", slack, socket_mode=True) as bot:
        failing = [p for how, p in bolt_fails_on(slack).values() if how == "event"]
        for envelope in [*unusable_events(slack).values(), *ignored_events(slack), *failing]:
            assert "envelope_id" in await slack.socket_send("events_api", envelope)
        command = slack.slash_command(OPERATOR, slack.dm_channel(OPERATOR), "runs")
        del command["trigger_id"]
        assert "envelope_id" in await slack.socket_send("slash_commands", command)
        await bot.channel.idle()
        assert bot.inbox() == 0
        assert set(await bot.audit_kinds()) == {"delivery.unusable"}
