"""The Telegram channel end to end: the real python-telegram-bot against a local Bot API.

Each test runs steward as ``steward run`` would (the service with the Telegram channel
configured from settings) against ``FakeBotAPI``, which speaks the Bot API's wire
format, and acts as the operator or a stranger would in the Telegram app.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.exc import DataError, OperationalError
from telegram import Update

from bot.app import Steward
from bot.service import Service, configured_channels
from bot.settings import load_settings
from bot.splitting import split_text
from bot.telegram import TelegramChannel
from bot.telegram.channel import SEND_ATTEMPTS, inbound_from
from graph.coordinator import COMMANDS
from graph.messages import Button, Card, CardOutcome, EditPrompt, Reply
from memory.ledger import database
from tests.bot.disk import DiskWatch
from tests.bot.handling import break_down, slow_down
from tests.bot.test_service import ledger_refuses
from tests.fakes.bot_api import Call, FakeBotAPI
from tests.net import free_port

TOKEN = "4242:steward-test-token"
OPERATOR = 1001
STRANGER = 6666
SECRET = "s3cret-token_for-webhooks"
START = "/run onboarding client=Acme email=jane@acme.com package=basic"
SENDS = ("sendMessage", "sendDocument", "editMessageText", "answerCallbackQuery")


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(token=TOKEN) as fake:
        yield fake


@dataclass
class Running:
    steward: Steward
    service: Service
    channel: TelegramChannel

    async def settled(self, api: FakeBotAPI, updates: int) -> None:
        """Waits until ``updates`` updates are stored, then until all are answered."""
        database = self.steward.settings.home / "steward.db"

        def stored(_: FakeBotAPI) -> bool:
            with sqlite3.connect(database) as db:
                return int(db.execute("select count(*) from inbox").fetchone()[0]) >= updates

        await api.wait_for(stored)
        await self.channel.idle()


@asynccontextmanager
async def running(
    home: Path, api: FakeBotAPI, *, webhook: bool = False, operators: str = f"telegram:{OPERATOR}"
) -> AsyncIterator[Running]:
    overrides: dict[str, Any] = {
        "home": home,
        "telegram_bot_token": api.token,
        "telegram_api_url": api.root,
        "operators": operators,
    }
    if webhook:
        port = free_port()
        overrides |= {
            "http_port": port,
            "telegram_webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
            "telegram_webhook_secret": SECRET,
        }
    async with Steward.open(load_settings(**overrides)) as steward:
        (channel,) = configured_channels(steward)
        assert isinstance(channel, TelegramChannel)
        async with Service(steward, [channel], tick_seconds=0.2) as service:
            if not webhook:
                await api.wait_for(lambda a: a.polls_waiting > 0)
            yield Running(steward, service, channel)


def cards(api: FakeBotAPI, chat: int = OPERATOR) -> list[dict[str, Any]]:
    return [m for m in api.sent(chat) if "reply_markup" in m]


async def edit_pressed(api: FakeBotAPI) -> dict[str, Any]:
    """An onboarding card with its Edit pressed, once the new text is asked for."""
    card = await onboarding_card(api)
    api.press(OPERATOR, card, button(card, "Edit"))
    await api.wait_for(lambda a: any("Send the new text" in t for t in texts(a)))
    return card


async def said_yes_once_shown(api: FakeBotAPI) -> None:
    """The new text typed is shown whole; the operator says yes, and the run is done."""
    await api.wait_for(lambda a: any("Say yes" in t for t in texts(a)))
    api.send_text(OPERATOR, "yes")
    await api.wait_for(lambda a: any("is done" in t for t in texts(a)))


async def onboarding_card(api: FakeBotAPI) -> dict[str, Any]:
    """The operator starts an onboarding; its approval card, once it is there."""
    api.send_text(OPERATOR, START)
    await api.wait_for(lambda a: cards(a))
    (card,) = cards(api)
    return card


def update_id(delivery: str) -> int:
    """The update's own id in a Telegram delivery's id (the bot's id, then it)."""
    return int(delivery.rpartition(":")[2])


def texts(api: FakeBotAPI, chat: int = OPERATOR) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in api.sent(chat)]


def button(card: dict[str, Any], label: str) -> str:
    for row in card["reply_markup"]["inline_keyboard"]:
        for key in row:
            if key["text"] == label:
                return str(key["callback_data"])
    raise AssertionError(f"no {label} button on {card}")


async def only_answered(api: FakeBotAPI, bot: Running, user: int, card: dict[str, Any]) -> Call:
    """``user`` presses Approve on ``card``: the press's one answer, once it is handled and
    nothing was posted in the operator's chat."""
    before = len(api.sent(OPERATOR))
    api.press(user, card, button(card, "Approve"))
    await bot.settled(api, 2)
    assert len(api.sent(OPERATOR)) == before
    (answer,) = api.calls_to("answerCallbackQuery")
    return answer


def outbox(home: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((home / "outbox").glob("*.json"))]


def failed_sends(api: FakeBotAPI) -> list[str]:
    """Failed sends, but for re-settling a card that shows its outcome already."""
    return [
        f"{c.method}: {c.description}"
        for c in api.calls
        if c.method in SENDS and not c.ok and "not modified" not in (c.description or "")
    ]


async def test_start_approve_on_the_card_and_the_card_settles(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    async with running(home, api):
        assert [c["command"] for c in api.commands()] == [name for name, _ in COMMANDS]
        card = await onboarding_card(api)
        assert "jane@acme.com" in card["text"]
        keys = [key["text"] for key in card["reply_markup"]["inline_keyboard"][0]]
        assert keys == ["Approve", "Reject", "Edit", "Details"]
        assert all(len(button(card, k).encode()) <= 64 for k in keys)
        assert outbox(home) == []

        api.press(OPERATOR, card, button(card, "Approve"))
        await api.wait_for(
            lambda a: (
                "reply_markup" not in a.message(OPERATOR, card["message_id"])
                and any("is done" in t for t in texts(a))
            )
        )
        settled = api.message(OPERATOR, card["message_id"])
        assert f"Approved by telegram:{OPERATOR} at" in settled["text"]
        (answer,) = api.calls_to("answerCallbackQuery")
        assert answer.ok
        assert len(outbox(home)) == 1
        assert failed_sends(api) == []


async def test_a_second_press_changes_nothing_and_says_who_decided(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    async with running(home, api) as bot:
        card = await onboarding_card(api)
        approve = button(card, "Approve")
        api.press(OPERATOR, card, approve)
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 1)
        await api.wait_for(lambda a: any("is done" in t for t in texts(a)))
        sent_before = len(api.sent(OPERATOR))

        api.press(OPERATOR, card, approve)  # another device still showing the buttons
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 2)
        second = api.calls_to("answerCallbackQuery")[1]
        assert second.ok
        assert f"Already decided — Approved by telegram:{OPERATOR} at" in second.params["text"]
        assert len(outbox(home)) == 1
        await bot.settled(api, 3)
        assert len(api.sent(OPERATOR)) == sent_before  # no new messages, only the toast


async def test_reject_asks_for_a_reason_and_edit_resumes_with_the_new_text(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    async with running(home, api):
        card = await edit_pressed(api)
        api.send_text(OPERATOR, "Dear Jane, <welcome> & *thanks*!")
        await said_yes_once_shown(api)
        (effect,) = outbox(home)
        assert "Dear Jane, <welcome> & *thanks*!" in json.dumps(effect["params"])
        settled = api.message(OPERATOR, card["message_id"])
        assert "(with edits)" in settled["text"] and "reply_markup" not in settled

        api.send_text(OPERATOR, START.replace("Acme", "Beta"))
        await api.wait_for(lambda a: any("Beta" in m["text"] for m in cards(a)))
        (second,) = cards(api)  # the first card has lost its buttons

        # Reject asks first, in place; Back puts the card as it was; only Yes rejects.
        def labels(a: FakeBotAPI) -> list[str]:
            keyboard = a.message(OPERATOR, second["message_id"])["reply_markup"]
            return [key["text"] for row in keyboard["inline_keyboard"] for key in row]

        api.press(OPERATOR, second, button(second, "Reject"))
        await api.wait_for(lambda a: labels(a)[1:3] == ["Yes, Reject", "Back"])
        shown = api.message(OPERATOR, second["message_id"])
        api.press(OPERATOR, shown, button(shown, "Back"))
        await api.wait_for(lambda a: labels(a) == ["Approve", "Reject", "Edit", "Details"])
        assert not any("Why?" in t for t in texts(api))  # nothing decided
        api.press(OPERATOR, second, button(second, "Reject"))
        await api.wait_for(lambda a: "Yes, Reject" in labels(a))
        shown = api.message(OPERATOR, second["message_id"])
        api.press(OPERATOR, shown, button(shown, "Yes, Reject"))
        await api.wait_for(lambda a: any("Why?" in t for t in texts(a)))
        api.send_text(OPERATOR, "wrong client")
        await api.wait_for(lambda a: any(t == "Noted." for t in texts(a)))
        assert "Rejected by" in api.message(OPERATOR, second["message_id"])["text"]
        assert len(outbox(home)) == 1
        assert failed_sends(api) == []

        # What happened is in memory, with its reason, and answers a plain question.
        api.send_text(OPERATOR, "why did we reject the Beta welcome email?")
        await api.wait_for(lambda a: any("Best matching records" in t for t in texts(a)))
        answer = next(t for t in texts(api) if "Best matching records" in t)
        assert "Reason: wrong client" in answer or "wrong client" in answer


async def test_a_double_tap_on_reject_asks_once_and_answers_both_presses(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api):
        card = await onboarding_card(api)
        api.press(OPERATOR, card, button(card, "Reject"))
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 1)
        api.press(OPERATOR, card, button(card, "Reject"))  # the second tap of a double tap
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 2, timeout=3)
        keyboard = api.message(OPERATOR, card["message_id"])["reply_markup"]
        labels = [key["text"] for row in keyboard["inline_keyboard"] for key in row]
        assert labels == ["Approve", "Yes, Reject", "Back", "Edit", "Details"]
        assert all(call.ok for call in api.calls_to("answerCallbackQuery"))


async def test_a_reject_press_whose_keyboard_telegram_is_slow_to_change_holds_up_nothing(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        api.stall("editMessageReplyMarkup")  # a chat held by flood control, say
        api.press(OPERATOR, card, button(card, "Reject"))
        await api.wait_for(lambda a: a.stalled_calls)
        api.send_text(STRANGER, "/runs")  # another chat goes on meanwhile
        await api.wait_for(lambda a: a.sent(STRANGER), timeout=3)
        api.unstall()
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 1)
        await bot.channel.idle()
        keyboard = api.message(OPERATOR, card["message_id"])["reply_markup"]
        assert "Yes, Reject" in [key["text"] for row in keyboard["inline_keyboard"] for key in row]


async def test_a_card_settled_while_reject_changes_its_keyboard_stays_settled(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Approved on another device while Reject's keyboard change was on its way, the card
    showed its outcome, and then the change landed: Yes, Reject and Back were back on
    it, and a press of either said only "Already decided"."""
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        api.stall("editMessageReplyMarkup")
        api.press(OPERATOR, card, button(card, "Reject"))
        await api.wait_for(lambda a: a.stalled_calls)
        api.press(OPERATOR, card, button(card, "Approve"))
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 1)
        with suppress(AssertionError):  # the outcome lands now, unless it waits for the change
            await api.wait_for(lambda a: a.calls_to("editMessageText"), timeout=3)
        api.unstall()
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 2)
        await bot.channel.idle()
        settled = api.message(OPERATOR, card["message_id"])
        assert f"Approved by telegram:{OPERATOR}" in settled["text"]
        assert "reply_markup" not in settled


async def test_a_reject_press_under_way_at_a_stop_is_answered(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A stop cut off the press's keyboard change and its answer, after telling Telegram
    the update had arrived: the operator's app spun on, and nothing came of the press."""
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        api.stall("editMessageReplyMarkup")
        api.press(OPERATOR, card, button(card, "Reject"))
        await api.wait_for(lambda a: a.stalled_calls)
        stopping = asyncio.create_task(bot.service.stop(drain_seconds=5))
        await asyncio.sleep(0.2)
        api.unstall()
        await stopping
    assert len(api.calls_to("answerCallbackQuery")) == 1


async def test_a_file_sent_as_the_new_text_is_not_read_for_its_caption(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    async with running(home, api):
        await edit_pressed(api)
        private = {"id": OPERATOR, "type": "private", "first_name": "Olivia"}
        document = {"file_id": "F1", "file_unique_id": "U1", "file_name": "welcome-v2.txt"}
        api.inject(
            {
                "message": {
                    "message_id": 900,
                    "from": {"id": OPERATOR, "is_bot": False, "first_name": "Olivia"},
                    "chat": private,
                    "date": int(time.time()),
                    "document": document,
                    "caption": "here is the corrected version",
                }
            }
        )
        await api.wait_for(lambda a: any("not welcome-v2.txt" in t for t in texts(a)))
        assert "still waiting for your answer" in texts(api)[-1]
        assert outbox(home) == []
        api.send_text(OPERATOR, "Dear Jane, welcome!")  # the question still waits for it
        await said_yes_once_shown(api)
        (effect,) = outbox(home)
        assert effect["params"]["body"] == "Dear Jane, welcome!"


async def test_a_forwarded_message_is_not_taken_for_the_operator_s_words(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A client's words forwarded were read as the operator's: a request in them opened
    a form, and an answer in them became the new text, approved with a yes."""
    client = 7007
    home = tmp_path / "home"
    async with running(home, api):
        request = "onboard Jane from Acme (jane@acme.com) on the basic package"
        api.send_text(OPERATOR, request, forwarded_from=client)
        await api.wait_for(lambda a: any("not a forwarded message" in t for t in texts(a)))
        assert cards(api) == []
        await edit_pressed(api)
        api.send_text(OPERATOR, "Dear Jane, welcome aboard!", forwarded_from=client)
        await api.wait_for(lambda a: "still waiting for your answer" in texts(a)[-1])
        api.send_text(OPERATOR, "Dear Jane, welcome!")  # the question still waits for it
        await said_yes_once_shown(api)
        (effect,) = outbox(home)
        assert effect["params"]["body"] == "Dear Jane, welcome!"


async def test_a_message_sent_through_an_inline_bot_is_not_taken_for_the_operator_s_words(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """What another bot made, sent with it inline (``@some_bot …``, a result chosen), was
    read as the operator's typed words: a command in it ran, and its text became the new
    text of a draft, approved with a yes."""
    home = tmp_path / "home"
    async with running(home, api):
        api.send_text(OPERATOR, START, via_bot="quotes_bot")
        await api.wait_for(
            lambda a: any("not a message sent through @quotes_bot" in t for t in texts(a))
        )
        assert cards(api) == []
        await edit_pressed(api)
        api.send_text(OPERATOR, "Dear Jane, welcome aboard!", via_bot="quotes_bot")
        await api.wait_for(lambda a: "still waiting for your answer" in texts(a)[-1])
        api.send_text(OPERATOR, "Dear Jane, welcome!")  # the question still waits for it
        await said_yes_once_shown(api)
        (effect,) = outbox(home)
        assert effect["params"]["body"] == "Dear Jane, welcome!"


async def test_in_a_group_a_command_for_another_bot_is_not_steward_s(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    group = -100500
    async with running(tmp_path / "home", api):
        api.send_text(OPERATOR, "/run onboarding client=Acme", chat_id=group)
        await api.wait_for(lambda a: any("email" in t for t in texts(a, group)))
        api.send_text(OPERATOR, "/cancel@other_bot", chat_id=group)  # not to steward
        api.send_text(OPERATOR, "/help@Steward_Bot", chat_id=group)  # to steward, any case
        await api.wait_for(lambda a: any("/runs" in t for t in texts(a, group)))
        api.send_text(OPERATOR, "jane@acme.com", chat_id=group)  # the form was not dropped
        await api.wait_for(
            lambda a: any("basic, standard or premium" in t for t in texts(a, group))
        )
        assert not any("dropped" in t for t in texts(api, group))


async def test_in_a_group_a_message_mentioning_steward_first_is_read_without_it(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """With privacy mode on (the default), a group's messages reach steward only as
    commands, replies to it and mentions of it."""
    group = -100500
    async with running(tmp_path / "home", api):
        api.send_text(OPERATOR, "/run onboarding client=Acme", chat_id=group)
        await api.wait_for(lambda a: any("email" in t for t in texts(a, group)))
        api.send_text(OPERATOR, f"@{api.username} jane@acme.com", chat_id=group)
        await api.wait_for(
            lambda a: any("basic, standard or premium" in t for t in texts(a, group))
        )
        api.send_text(OPERATOR, f"@{api.username.upper()}, basic", chat_id=group)
        await api.wait_for(lambda a: cards(a, group))
        (card,) = cards(api, group)
        assert "jane@acme.com" in card["text"]


def stored(bot: Running) -> int:
    """How many deliveries the inbox holds."""
    with sqlite3.connect(bot.steward.settings.home / "steward.db") as db:
        return int(db.execute("select count(*) from inbox").fetchone()[0])


async def test_in_a_group_steward_reads_only_what_is_meant_for_it(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """With privacy mode off, every message in a group reaches steward: each was read
    as a request (the operator's talk with the group was answered), and each stranger
    there was refused, in the group, once a day."""
    group = -100500
    async with running(tmp_path / "home", api) as bot:
        api.send_text(OPERATOR, "morning all, the Acme call moved to 3pm", chat_id=group)
        api.send_text(STRANGER, "thanks, see you there", chat_id=group)
        api.send_text(OPERATOR, "/runs", chat_id=group)  # a command
        await api.wait_for(lambda a: len(texts(a, group)) == 1)
        await bot.channel.idle()
        assert stored(bot) == 1 and "No runs" in texts(api, group)[0]

        api.send_text(OPERATOR, f"what is waiting, @{api.username}?", chat_id=group)
        await api.wait_for(lambda a: len(texts(a, group)) == 2)  # a mention
        api.send_text(OPERATOR, "help", chat_id=group, reply_to=api.sent(group)[-1])
        await api.wait_for(lambda a: len(texts(a, group)) == 3)  # a reply to steward's
        assert "/runs" in texts(api, group)[-1]
        api.send_text(STRANGER, "help", chat_id=group, reply_to=api.sent(group)[-1])
        await api.wait_for(lambda a: len(texts(a, group)) == 4)
        assert "only work for the operator" in texts(api, group)[-1]

        api.send_text(OPERATOR, "/run onboarding client=Acme", chat_id=group)
        await api.wait_for(lambda a: "email" in texts(a, group)[-1], timeout=15)
        api.send_text(STRANGER, "jane@acme.com", chat_id=group)  # not asked
        api.send_text(OPERATOR, "jane@acme.com", chat_id=group)  # the answer steward waits for
        await api.wait_for(lambda a: "premium" in texts(a, group)[-1], timeout=15)
        api.send_text(OPERATOR, "premium", chat_id=group)
        await api.wait_for(lambda a: cards(a, group), timeout=15)
        shown = len(texts(api, group))
        api.send_text(OPERATOR, "great, that's Acme done", chat_id=group)  # nothing asked
        api.send_text(OPERATOR, "/runs", chat_id=group)
        await api.wait_for(lambda a: len(texts(a, group)) == shown + 1, timeout=15)
        await bot.channel.idle()
        assert stored(bot) == 8
        assert "jane@acme.com" in cards(api, group)[0]["text"]


async def test_in_a_group_only_the_asker_s_typed_words_answer_a_question(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A question waits for the asker's next message in the group; a client's message
    the asker forwarded there for the others, or one sent through an inline bot, took
    that place: steward told the group it reads only typed text, and the typed answer
    after it was overheard talk, dropped."""
    group, client, colleague = -100500, 7007, 1002
    async with running(
        tmp_path / "home", api, operators=f"telegram:{OPERATOR},telegram:{colleague}"
    ) as bot:
        api.send_text(OPERATOR, "/run onboarding client=Acme", chat_id=group)
        await api.wait_for(lambda a: any("email" in t for t in texts(a, group)), timeout=15)
        api.send_text(colleague, "jo@acme.com", chat_id=group)  # an operator, not asked
        api.send_text(OPERATOR, "Jane wrote this:", chat_id=group, forwarded_from=client)
        api.send_text(OPERATOR, "ha", chat_id=group, via_bot="gif_bot")
        api.send_text(OPERATOR, "jane@acme.com", chat_id=group)  # the answer steward waits for
        await api.wait_for(lambda a: "premium" in texts(a, group)[-1], timeout=15)
        api.send_text(OPERATOR, "premium", chat_id=group)
        await api.wait_for(lambda a: cards(a, group), timeout=15)
        await bot.channel.idle()
        assert not any("typed text" in t for t in texts(api, group))
        assert "jane@acme.com" in cards(api, group)[0]["text"]


async def test_a_run_started_in_a_forum_topic_asks_and_shows_its_card_in_that_topic(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    group, topic = -1001234567890, 77
    home = tmp_path / "home"
    async with running(home, api) as bot:
        api.send_text(OPERATOR, START.rpartition(" ")[0], chat_id=group, topic=topic)
        await api.wait_for(lambda a: any("premium" in t for t in texts(a, group)))
        api.send_text(OPERATOR, "basic", chat_id=group, topic=topic)  # answered in the topic
        await api.wait_for(lambda a: cards(a, group))
        (card,) = cards(api, group)
        api.press(OPERATOR, card, button(card, "Approve"))
        await api.wait_for(lambda a: "reply_markup" not in a.message(group, card["message_id"]))
        await bot.settled(api, 3)
        assert len(outbox(home)) == 1
        assert all(m.get("message_thread_id") == topic for m in api.sent(group))
        assert failed_sends(api) == []


async def test_a_card_decided_from_a_shell_loses_its_buttons_in_chat(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    async with running(home, api) as bot:
        card = await onboarding_card(api)
        approval_id = button(card, "Approve").partition(":")[2]
        async with Steward.open(load_settings(home=home)) as shell:  # `steward approve ID`
            decided = await shell.coordinator.decide(approval_id, True, "cli:shell")
        assert "is done" in "\n".join(decided.texts)
        await api.wait_for(lambda a: "reply_markup" not in a.message(OPERATOR, card["message_id"]))
        assert "Approved by cli:shell" in api.message(OPERATOR, card["message_id"])["text"]
        assert len(outbox(home)) == 1 and failed_sends(api) == []

        api.send_text(OPERATOR, START.replace("Acme", "Beta"))
        await api.wait_for(lambda a: any("Beta" in m["text"] for m in cards(a)))
        (second,) = cards(api)
        approval_id = button(second, "Details").partition(":")[2]
        approval = await bot.steward.ledger.get_approval(approval_id)
        assert approval is not None
        async with Steward.open(load_settings(home=home)) as shell:  # `steward cancel RUN`
            await shell.engine.cancel(approval.run_id, "cli:shell")
        await api.wait_for(
            lambda a: "reply_markup" not in a.message(OPERATOR, second["message_id"])
        )


async def test_a_card_decided_from_a_shell_while_steward_was_down_loses_its_buttons_at_start(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Where the cards show, and how far their decisions were read, are kept in working
    memory; with Redis both outlive a restart (here one Steward, and its in-process
    memory, serves both starts)."""
    home = tmp_path / "home"
    settings = load_settings(
        home=home,
        telegram_bot_token=TOKEN,
        telegram_api_url=api.root,
        operators=f"telegram:{OPERATOR}",
    )
    async with Steward.open(settings) as steward:
        async with Service(steward, configured_channels(steward), tick_seconds=0.2):
            card = await onboarding_card(api)
        approval_id = button(card, "Approve").partition(":")[2]
        async with Steward.open(load_settings(home=home)) as shell:  # `steward approve ID`
            await shell.coordinator.decide(approval_id, True, "cli:shell")
        async with Service(steward, configured_channels(steward), tick_seconds=0.2):
            await api.wait_for(
                lambda a: "reply_markup" not in a.message(OPERATOR, card["message_id"])
            )
        assert "Approved by cli:shell" in api.message(OPERATOR, card["message_id"])["text"]


async def test_a_reply_of_many_messages_buzzes_the_phone_once(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api):
        for client in ("Acme", "Beta"):
            api.send_text(OPERATOR, START.replace("Acme", client))
            await api.wait_for(lambda a, c=client: any(c in m["text"] for m in cards(a)))
        sent_before = len(api.sent(OPERATOR))
        api.send_text(OPERATOR, "/today")
        await api.wait_for(lambda a: len(api.sent(OPERATOR)) == sent_before + 3)
        listed = [c for c in api.calls if c.method == "sendMessage"][-3:]
        assert "2 things need you" in listed[0].params["text"]
        quiet = [str(c.params.get("disable_notification")).lower() == "true" for c in listed]
        assert quiet == [False, True, True]


async def test_news_for_a_group_upgraded_to_a_supergroup_goes_to_the_supergroup(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    group, supergroup = -100500, -1001234500
    async with running(tmp_path / "home", api) as bot:
        api.migrated[group] = supergroup
        for said in ("the run is done", "and the next one waits"):
            await bot.channel.send(str(group), Reply().say(said))
        await api.wait_for(lambda a: len(texts(a, supergroup)) == 2)
        assert texts(api, supergroup) == ["the run is done", "and the next one waits"]
        assert texts(api, group) == []
        tried_old = [c for c in api.calls if c.params.get("chat_id") in (group, str(group))]
        assert len(tried_old) == 1  # learnt once


async def test_a_card_posted_after_its_group_was_upgraded_is_settled_in_the_supergroup(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    group, supergroup = -100500, -1001234500
    card = Card("a1", "Approve", "Send it", buttons=[Button("Approve", "approve:a1")])
    async with running(tmp_path / "home", api) as bot:
        api.migrated[group] = supergroup
        await bot.channel.send(str(group), Reply([card]))
        await api.wait_for(lambda a: cards(a, supergroup))
        (posted,) = cards(api, supergroup)
        await bot.channel.settle(CardOutcome("a1", "Send it\nApproved by cli:op at 09:00"))
        await bot.channel.idle()
        settled = api.message(supergroup, posted["message_id"])
        assert "reply_markup" not in settled and "Approved by" in settled["text"]


async def test_a_message_telegram_refuses_is_audited_and_the_next_goes(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        api.blocked.add(OPERATOR)
        api.send_text(OPERATOR, "/runs")
        api.send_text(OPERATOR, "/runs")  # refused again: one event a day at most
        await bot.settled(api, 2)
        [refused] = [
            e for e in await bot.steward.ledger.audit_events() if e.kind == "reply.refused"
        ]
        assert refused.subject == f"telegram:{OPERATOR}"
        assert refused.data["reason"] == "Forbidden: bot was blocked by the user"
        api.blocked.clear()
        api.send_text(OPERATOR, "/runs")
        await api.wait_for(lambda a: a.sent(OPERATOR))
        assert len(api.calls_to("sendMessage")) == 3


async def test_a_reply_made_while_the_token_is_refused_goes_after_a_start_with_the_new_one(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """The token revoked in BotFather: Telegram answers 401 to every send. The reply
    waits in the ledger, and steward restarted with the new token sends it."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        bot.channel.outbox.first_retry = 0.1
        api.token = "4242:the-new-token"  # the bot keeps its id
        await bot.channel.send(str(OPERATOR), Reply().say("the run is done"))
        await api.wait_for(lambda a: [c for c in a.calls_to("sendMessage") if c.status == 401])
        await bot.service.stop(drain_seconds=0)
    assert texts(api) == []
    async with running(home, api) as bot:
        await api.wait_for(lambda a: a.sent(OPERATOR))
        await bot.channel.idle()
        assert texts(api) == ["the run is done"]


async def test_a_stranger_is_refused_once_audited_and_never_decides(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    async with running(home, api) as bot:
        steward = bot.steward
        card = await onboarding_card(api)

        api.send_text(STRANGER, "/runs")
        await api.wait_for(lambda a: a.sent(STRANGER))
        api.send_text(STRANGER, "/run onboarding client=Evil email=x@evil.com package=basic")
        api.press(STRANGER, card, button(card, "Approve"))
        await bot.settled(api, 4)

        (refusal,) = api.sent(STRANGER)
        (answer,) = api.calls_to("answerCallbackQuery")
        assert answer.ok and not answer.params.get("text")
        assert "only work for the operator" in refusal["text"]
        assert "reply_markup" in api.message(OPERATOR, card["message_id"])  # still pending
        assert outbox(home) == []
        runs = await steward.ledger.list_runs(None, limit=10)
        assert [r.inputs["client"] for r in runs] == ["Acme"]
        denied = [e for e in await steward.ledger.audit_events() if e.kind == "access.denied"]
        assert len(denied) == 3
        assert {e.actor for e in denied} == {f"telegram:{STRANGER}"}


async def test_a_strangers_first_press_is_refused_in_its_answer_not_in_the_chat(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        answer = await only_answered(api, bot, STRANGER, card)  # a card in a shared chat, say
        assert "only work for the operator" in answer.params["text"]
        assert api.sent(STRANGER) == []
        assert "reply_markup" in api.message(OPERATOR, card["message_id"])


async def test_a_message_whose_handling_fails_is_answered_and_set_aside(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        break_down(bot.steward)
        api.send_text(OPERATOR, "/runs")
        await bot.settled(api, 1)

        assert texts(api) == ["Something went wrong; it is logged."]
        [item] = await bot.steward.ledger.unhandled_inbound() or [None]
        assert item is None  # failed, never replayed in a loop


async def test_a_press_whose_handling_fails_hears_it_in_its_answer(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        break_down(bot.steward)
        answer = await only_answered(api, bot, OPERATOR, card)
        assert answer.params["text"] == "Something went wrong; it is logged."


async def test_a_press_that_fails_after_its_answer_went_hears_it_in_a_message(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        break_down(bot.steward)
        slow_down(bot.steward, 1.5)  # fails only after the press was answered
        api.press(OPERATOR, card, button(card, "Approve"))
        await bot.settled(api, 2)
        (answer,) = api.calls_to("answerCallbackQuery")
        assert "text" not in answer.params
        assert texts(api)[-1] == "Something went wrong; it is logged."


async def test_flood_control_429_is_waited_out_and_nothing_is_dropped(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api):
        api.flood("sendMessage", retry_after=1, times=1)
        api.send_text(OPERATOR, "/processes")
        await api.wait_for(lambda a: a.sent(OPERATOR), timeout=10)
        first, second = api.calls_to("sendMessage")[:2]
        assert first.status == 429 and second.ok
        assert second.at - first.at >= 1.0
        assert "onboarding" in texts(api)[0]


async def test_a_chat_held_by_flood_control_holds_up_no_other_chat(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    other_chat = 2002  # the operator in a second private chat: paced on its own
    async with running(tmp_path / "home", api):
        api.flood("sendMessage", retry_after=3, times=1)
        api.send_text(OPERATOR, "/processes")
        await api.wait_for(lambda a: a.calls_to("sendMessage"), timeout=10)
        api.send_text(OPERATOR, "/help", chat_id=other_chat)
        await api.wait_for(lambda a: a.sent(other_chat), timeout=10)
        assert api.sent(OPERATOR) == []  # still waiting out its 429
        await api.wait_for(lambda a: a.sent(OPERATOR), timeout=10)
        held, _, released = api.calls_to("sendMessage")
        assert held.status == 429 and released.at - held.at >= 3.0


async def test_a_reply_telegram_cannot_take_is_sent_once_it_can(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        bot.channel.outbox.first_retry = 0.1
        api.fail("sendMessage", status=502, times=3)
        card = await onboarding_card(api)
        await bot.channel.idle()
        statuses = [c.status for c in api.calls_to("sendMessage")]
        assert statuses[:3] == [502, 502, 502] and statuses.count(502) == 3
        assert len(cards(api)) == 1 and sum(t.startswith("Started") for t in texts(api)) == 1
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []
        api.press(OPERATOR, card, button(card, "Approve"))
        await api.wait_for(lambda a: outbox(bot.steward.settings.home), timeout=10)


async def test_a_card_edit_telegram_fails_is_made_again(tmp_path: Path, api: FakeBotAPI) -> None:
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        api.fail("editMessageText", status=502, times=1)
        api.press(OPERATOR, card, button(card, "Approve"))
        await api.wait_for(lambda a: any("is done" in t for t in texts(a)), timeout=10)
        await bot.channel.idle()
        assert [c.status for c in api.calls_to("editMessageText")][:2] == [502, 200]
        assert "reply_markup" not in api.message(OPERATOR, card["message_id"])


async def test_a_card_edit_telegram_cannot_take_for_a_while_is_made_once_it_can(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        bot.channel.outbox.first_retry = 0.1
        card = await onboarding_card(api)
        api.fail("editMessageText", status=502, times=SEND_ATTEMPTS + 1)  # all of one try
        api.press(OPERATOR, card, button(card, "Approve"))
        await api.wait_for(lambda a: any("is done" in t for t in texts(a)), timeout=10)
        await bot.channel.idle()
        statuses = [c.status for c in api.calls_to("editMessageText")]
        assert statuses == [502] * (SEND_ATTEMPTS + 1) + [200]
        assert "reply_markup" not in api.message(OPERATOR, card["message_id"])
        assert not any("Approved by" in t for t in texts(api)[2:])  # no outcome beside it
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []


async def test_a_card_whose_edit_and_ledger_both_failed_loses_its_buttons_once_both_are_back(
    tmp_path: Path, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A card decided from a shell while Telegram could not take its edit: its message
    was to be given back for the next try, but the ledger failed at that moment too, and
    the message was forgotten: the card kept its buttons for good. Now noting it waits
    for the ledger, and the card loses its buttons once both are back. A press on
    it from a device still showing them is answered with who decided, and changes
    nothing."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        bot.channel.outbox.first_retry = 0.1
        card = await onboarding_card(api)
        await bot.channel.idle()
        ledger = bot.steward.door.ledger
        settle = ledger.settle_card_messages
        failed = asyncio.Event()

        async def down_once(*args: Any) -> None:
            if not failed.is_set():
                failed.set()
                locked = sqlite3.OperationalError("database is locked")
                raise OperationalError("UPDATE card_messages", {}, locked)
            await settle(*args)

        monkeypatch.setattr(ledger, "settle_card_messages", down_once)
        api.fail("editMessageText", status=502, times=SEND_ATTEMPTS)  # all of one try
        approval_id = button(card, "Approve").partition(":")[2]
        async with Steward.open(load_settings(home=home)) as shell:  # `steward approve ID`
            await shell.coordinator.decide(approval_id, True, "cli:shell")
        await api.wait_for(
            lambda a: "reply_markup" not in a.message(OPERATOR, card["message_id"]), timeout=20
        )
        assert failed.is_set()
        assert "Approved by cli:shell" in api.message(OPERATOR, card["message_id"])["text"]
        await bot.channel.idle()
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []
        sent_before = len(api.sent(OPERATOR))

        api.press(OPERATOR, card, button(card, "Approve"))  # another device's stale card
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 1)
        (answer,) = api.calls_to("answerCallbackQuery")
        assert answer.ok and "Already decided — Approved by cli:shell" in answer.params["text"]
        await bot.settled(api, 2)
        assert len(api.sent(OPERATOR)) == sent_before  # no new messages, only the toast
        assert len(outbox(home)) == 1  # the run's email went once


@pytest.mark.slow
async def test_a_card_whose_edit_failed_while_the_ledger_was_down_at_a_stop_settles_next_start(
    tmp_path: Path, api: FakeBotAPI, locked_long_enough: float
) -> None:
    """A card decided from a shell while Telegram could not take its edit, and steward
    stopped while the ledger was down (its database locked): its message, taken to be
    edited, was given back to nobody, and the card kept its buttons after the next start.
    Now a message stays noted until its edit went, and the next start edits it."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        bot.channel.outbox.first_retry = 0.1
        card = await onboarding_card(api)
        await bot.channel.idle()
        api.fail("editMessageText", status=502, times=10_000)
        approval_id = button(card, "Approve").partition(":")[2]
        async with Steward.open(load_settings(home=home)) as shell:  # `steward approve ID`
            await shell.coordinator.decide(approval_id, True, "cli:shell")
        await api.wait_for(lambda a: len(a.calls_to("editMessageText")) >= 1, timeout=20)
        async with locked(home / "steward.db"):
            await api.wait_for(
                lambda a: len(a.calls_to("editMessageText")) >= SEND_ATTEMPTS, timeout=20
            )
            await asyncio.sleep(locked_long_enough)  # what the settling writes fails meanwhile
            await bot.service.stop(drain_seconds=0)
    api.fail("editMessageText", status=502, times=0)
    async with running(home, api):
        await api.wait_for(
            lambda a: "reply_markup" not in a.message(OPERATOR, card["message_id"]), timeout=20
        )
        assert "Approved by cli:shell" in api.message(OPERATOR, card["message_id"])["text"]


@pytest.mark.slow
async def test_a_card_posted_while_the_ledger_was_down_at_a_stop_keeps_no_live_buttons(
    tmp_path: Path, api: FakeBotAPI, locked_long_enough: float
) -> None:
    """A card was posted, and noting where it shows waited for the ledger (its database
    locked) when steward stopped: the card went again at the next start, and once it was
    decided there the first message kept its buttons. Now a message the ledger was not
    told of by the stop loses its buttons then: the copy posted again is the card."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        api.stall("sendMessage", after=1)  # "Started" goes; the card waits
        api.send_text(OPERATOR, START)
        await api.wait_for(lambda a: a.stalled_calls == ["sendMessage"], timeout=10)
        async with locked(home / "steward.db"):
            api.unstall()
            await api.wait_for(lambda a: cards(a), timeout=10)
            (first,) = cards(api)
            await asyncio.sleep(locked_long_enough)  # noting where it shows fails meanwhile
            await bot.service.stop(drain_seconds=0)
    assert "reply_markup" not in api.message(OPERATOR, first["message_id"])
    async with running(home, api) as bot:
        await api.wait_for(lambda a: len(a.sent(OPERATOR)) == 3, timeout=10)
        again = api.sent(OPERATOR)[-1]
        assert again["text"] == first["text"] and "reply_markup" in again
        api.press(OPERATOR, again, button(again, "Approve"))
        await api.wait_for(lambda a: any("is done" in t for t in texts(a)), timeout=10)
        await bot.channel.idle()
        assert cards(api) == []  # no message of the card keeps its buttons
        assert len(outbox(home)) == 1


async def test_a_reply_cut_short_by_telegram_goes_on_without_repeating_a_message(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    paragraphs = [f"{i}: " + "word " * 120 for i in range(12)]
    long_reply = "\n\n".join(p.strip() for p in paragraphs)  # two messages
    long_card = Card("a1", "Approve", "Send it", text="x " * 5000, buttons=[Button("OK", "ok")])
    async with running(tmp_path / "home", api) as bot:
        bot.channel.outbox.first_retry = 0.05
        api.fail("sendMessage", status=502, after=1)  # the second part
        await bot.channel.send(str(OPERATOR), Reply().say(long_reply))
        await bot.channel.idle()
        assert "\n\n".join(texts(api)) == long_reply

        api.fail("sendMessage", status=502)  # the card, after its draft went as a file
        await bot.channel.send(str(OPERATOR), Reply([long_card]))
        await bot.channel.idle()
        assert len([m for m in api.sent(OPERATOR) if "document" in m]) == 1
        assert len(cards(api)) == 1


@pytest.fixture
def locked_long_enough(monkeypatch: pytest.MonkeyPatch) -> float:
    """The seconds to hold the ledger ``locked`` for its writes to fail meanwhile: its
    busy timeout, shortened here to a second, and two more."""
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT_MS", 1000)
    return database.SQLITE_BUSY_TIMEOUT_MS / 1000 + 2


@asynccontextmanager
async def locked(path: Path) -> AsyncIterator[None]:
    """The ledger's SQLite database, its write lock held by another process (a backup, a
    shell's long transaction) until the block ends: a write waits the busy timeout out,
    then fails with "database is locked"."""
    hold = (
        "import sqlite3, sys\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "db.execute('COMMIT')\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", hold, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 10) == b"locked\n"
        yield
    finally:
        process.stdin.write(b"\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), 10)


@pytest.mark.slow
async def test_a_reply_cut_short_by_the_ledger_going_down_goes_on_once_it_is_back(
    tmp_path: Path, api: FakeBotAPI, locked_long_enough: float
) -> None:
    """A card of the daily list was posted, and noting where it shows failed: the ledger
    was down (its database locked past waiting). The rest of the list was given up: its
    second card never came. It goes once the ledger is back, and nothing goes twice."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        bot.channel.outbox.first_retry = 0.2
        for client in ("Acme", "Beta"):
            api.send_text(OPERATOR, START.replace("Acme", client))
            await api.wait_for(lambda a, c=client: any(c in m["text"] for m in cards(a)))
        await bot.channel.idle()
        before, calls = len(api.sent(OPERATOR)), len(api.calls_to("sendMessage"))
        api.stall("sendMessage", after=1)  # the list's heading goes; its first card waits
        api.send_text(OPERATOR, "/today")
        await api.wait_for(lambda a: a.stalled_calls == ["sendMessage"], timeout=10)
        async with locked(home / "steward.db"):
            api.unstall()
            await asyncio.sleep(locked_long_enough)  # writes fail meanwhile
        await api.wait_for(lambda a: len(a.sent(OPERATOR)) == before + 3, timeout=20)
        await bot.channel.idle()
        listed = texts(api)[before:]
        assert "2 things need you" in listed[0]
        assert listed[1].startswith("1. ") and listed[2].startswith("2. ")
        assert len(api.calls_to("sendMessage")) == calls + 3  # none twice
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []
        shown = cards(api)[-2:]
        assert all([await bot.channel.shows(button(c, "Details").partition(":")[2]) for c in shown])


@pytest.mark.slow
@pytest.mark.parametrize("parts", [2, 3])
async def test_no_message_of_a_reply_goes_twice_for_the_ledger_going_down(
    tmp_path: Path, api: FakeBotAPI, parts: int, locked_long_enough: float
) -> None:
    """The ledger down mid-reply, the note of the messages sent before the next failed,
    and the next went all the same (three parts); the note that the last had gone failed,
    and was not made again (two): after a restart the ledger still owed what had gone,
    and it went twice. Now nothing goes until the ledger knows what went before it, and
    the last note is made once the ledger is back."""
    home = tmp_path / "home"
    reply = Reply([f"part {n}" for n in range(1, parts + 1)])
    async with running(home, api) as bot:
        bot.channel.outbox.first_retry = 0.2
        api.stall("sendMessage", after=1)  # the first part goes; the second waits
        await bot.channel.send(str(OPERATOR), reply)
        await api.wait_for(lambda a: a.stalled_calls == ["sendMessage"], timeout=10)
        async with locked(home / "steward.db"):
            api.unstall()
            await asyncio.sleep(locked_long_enough)  # writes fail meanwhile
            assert texts(api) == ["part 1", "part 2"]
        await api.wait_for(lambda a: len(texts(a)) == parts, timeout=10)
        await bot.channel.idle()
    async with running(home, api) as bot:
        await bot.channel.idle()
        assert texts(api) == reply.texts
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []


async def test_a_reply_cut_short_before_a_restart_keeps_its_late_answer(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A press answered before its reply was ready (over a second of handling) hears
    the failure in a message, though steward restarts while Telegram is down."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        card = await onboarding_card(api)
        break_down(bot.steward)
        slow_down(bot.steward, 1.5)
        api.fail("sendMessage", status=502, times=10_000)
        api.press(OPERATOR, card, button(card, "Approve"))
        await api.wait_for(lambda a: a.calls_to("sendMessage")[-1].status == 502, timeout=10)
        await bot.service.stop(drain_seconds=0)
    api.fail("sendMessage", status=502, times=0)
    async with running(home, api) as bot:
        await bot.channel.idle()
        assert texts(api)[-1] == "Something went wrong; it is logged."
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []


async def test_ten_thousand_characters_of_markdown_arrive_whole_and_unbroken(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    chunk = "*bold* _it_ [link](http://x.y) `code` <b>tag</b> & ~s~ #1 > q | {x}.!\n\n"
    long_text = (chunk * (10_000 // len(chunk) + 1))[:10_000].strip()
    notes = long_text[:1990].strip()
    async with running(home, api):
        api.send_text(OPERATOR, "/run newsletter_issue topic=Pricing audience=Friends")
        await api.wait_for(lambda a: any("points to cover" in t for t in texts(a)))
        api.send_text(OPERATOR, long_text)  # too long for the notes: said so, escaped
        await api.wait_for(lambda a: any("up to 2000 characters" in t for t in texts(a)))
        api.send_text(OPERATOR, notes)
        await api.wait_for(lambda a: cards(a), timeout=10)
        (card,) = cards(api)
        for paragraph in notes.split("\n\n"):
            assert paragraph in card["text"]

        api.press(OPERATOR, card, button(card, "Edit"))
        await api.wait_for(lambda a: any("Current text" in t for t in texts(a)), timeout=10)
        # The operator's 10,000 characters replace the draft; their Telegram app sends
        # them in parts, each cut at a blank line, and steward puts them together and
        # shows them whole before they go.
        parts = split_text(long_text, 4096)
        assert len(parts) == 3 and all(p.strip() == p for p in parts)
        for part in parts:
            api.send_text(OPERATOR, part)
        await api.wait_for(lambda a: any("Say yes" in t for t in texts(a)), timeout=10)
        assert sum("more may come" in t for t in texts(api)) == 2  # the last part is shorter
        assert outbox(home) == []
        api.send_text(OPERATOR, "yes")
        await api.wait_for(lambda a: outbox(home), timeout=10)
        (effect,) = outbox(home)
        assert effect["params"]["body"] == long_text
        await api.wait_for(lambda a: "reply_markup" not in a.message(OPERATOR, card["message_id"]))
        assert failed_sends(api) == []
        # about one message a second per chat, after a short burst of three
        times = api.send_times(OPERATOR)
        for i in range(len(times)):
            for j in range(i + 1, len(times)):
                assert j - i + 1 <= 3 + (times[j] - times[i]) + 0.25


async def test_a_long_reply_is_split_at_paragraphs_and_a_huge_one_sent_as_a_file(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    paragraphs = [f"{i}: <b>not a tag</b> & *not bold* " + "word " * 120 for i in range(12)]
    long_reply = "\n\n".join(p.strip() for p in paragraphs)  # about 8,000 characters
    async with Steward.open(
        load_settings(home=tmp_path / "home", telegram_bot_token=TOKEN, telegram_api_url=api.root)
    ) as steward:
        (channel,) = configured_channels(steward)
        assert isinstance(channel, TelegramChannel)
        await channel.bot.initialize()
        try:
            await channel.send(str(OPERATOR), Reply().say(long_reply))
            await channel.idle()
            parts = texts(api)
            assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
            assert "\n\n".join(parts) == long_reply
            await channel.send(str(OPERATOR), Reply().say(long_reply * 4))
            await channel.idle()
            (document,) = [m for m in api.sent(OPERATOR) if "document" in m]
            upload = api.uploads[document["document"]["file_id"]]
            assert upload.content.decode() == long_reply * 4
        finally:
            await channel.bot.shutdown()
        assert failed_sends(api) == []


async def test_an_edit_prompt_with_a_huge_draft_asks_in_a_message_not_in_the_file(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    draft = "\n\n".join("line " * 800 for _ in range(8))  # more than four messages
    prompt = EditPrompt("a1", draft, "Send the new text; yes approves the card with it.")
    async with running(tmp_path / "home", api) as bot:
        await bot.channel.send(str(OPERATOR), Reply().add(prompt))
        await bot.channel.idle()
        asked, current = api.sent(OPERATOR)
        assert asked["text"] == prompt.prompt
        assert api.uploads[current["document"]["file_id"]].content.decode() == draft


async def test_webhook_checks_the_secret_and_a_repeated_delivery_is_handled_once(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    home = tmp_path / "home"
    async with running(home, api, webhook=True) as bot:
        assert api.webhook is not None and api.webhook.secret_token == SECRET
        assert api.webhook.url.endswith("/telegram/webhook")
        update = api.send_text(OPERATOR, "/processes")

        assert await api.deliver_webhook(update, secret="wrong") == 403
        assert await api.deliver_webhook(update, secret=None) == 403
        await bot.steward.door.audited()
        kinds = [e.kind for e in await bot.steward.ledger.audit_events()]
        assert kinds == ["request.refused"]  # one a minute from an address
        for wrong in ([], "update", 7):  # the secret, but no update: not a 500
            assert await api.deliver_webhook(wrong, secret=SECRET) == 400  # type: ignore[arg-type]
        assert await bot.steward.door.stored("telegram") == []  # nothing was even stored
        assert api.sent(OPERATOR) == []

        disk = DiskWatch(bot.steward.ledger, slow=0.2)
        assert await api.deliver_webhook(update, secret=SECRET) == 200
        assert f"{api.bot_id}:{update['update_id']}" in disk.on_disk_by(
            time.monotonic()
        )  # 200 after
        await api.wait_for(lambda a: a.sent(OPERATOR))
        assert await api.deliver_webhook(update, secret=SECRET) == 200  # Telegram retried
        await bot.settled(api, 1)
        assert len(api.sent(OPERATOR)) == 1
    with sqlite3.connect(home / "steward.db") as db:
        assert db.execute("select count(*), min(status) from inbox").fetchone() == (1, "done")


async def test_a_slow_press_is_answered_at_once_and_told_the_outcome_after(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        slow_down(bot.steward, 2.0)  # say, a connector taking its time
        pressed_at = time.monotonic()
        api.press(OPERATOR, card, button(card, "Approve"))
        api.press(OPERATOR, card, button(card, "Approve"))  # impatient: pressed again
        await api.wait_for(lambda a: len(a.calls_to("answerCallbackQuery")) == 2, timeout=10)
        first, second = api.calls_to("answerCallbackQuery")
        assert first.at - pressed_at < 1.6 and second.at - pressed_at < 1.6  # not 2 s, not 4 s
        assert not first.params.get("text") and not second.params.get("text")
        await bot.settled(api, 3)
        assert "Approved by" in api.message(OPERATOR, card["message_id"])["text"]
        assert any("Already decided" in t for t in texts(api))  # the toast came too late
        assert failed_sends(api) == []


async def test_a_reply_goes_out_before_the_poller_asks_for_more(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api):
        api.send_text(OPERATOR, "/processes")
        await api.wait_for(lambda a: a.sent(OPERATOR))
        api.send_text(OPERATOR, "/help")  # answers the poll that came after the reply
        await api.wait_for(lambda a: len(a.sent(OPERATOR)) == 2)
        first_reply = api.calls_to("sendMessage")[0]
        first, second = [c for c in api.calls_to("getUpdates") if c.result]
        assert first.at < first_reply.at < second.at  # the worker went first


async def test_a_long_handling_does_not_stop_the_poller_for_long(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        slow_down(bot.steward, 2.0)  # say, a model drafting an email
        database = bot.steward.settings.home / "steward.db"

        def stored(count: int) -> Any:
            def check(_: FakeBotAPI) -> bool:
                with sqlite3.connect(database) as db:
                    return int(db.execute("select count(*) from inbox").fetchone()[0]) == count

            return check

        api.send_text(OPERATOR, "/processes")
        await api.wait_for(stored(1))
        sent_at = time.monotonic()
        api.send_text(OPERATOR, "/runs")
        await api.wait_for(stored(2), timeout=5)
        assert time.monotonic() - sent_at < 1.0  # stored while the first is still handled
        await bot.settled(api, 2)
        assert len(api.sent(OPERATOR)) == 2


async def test_the_offset_moves_past_an_update_only_once_it_is_on_disk(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api) as bot:
        disk = DiskWatch(bot.steward.ledger, slow=0.3)
        for sent, text in enumerate(("/processes", "/runs", "/help"), start=1):
            api.send_text(OPERATOR, text)
            await api.wait_for(lambda a, n=sent: len(a.sent(OPERATOR)) == n)  # type: ignore[misc]
        api.send_text(OPERATOR, "/runs")
        await api.wait_for(lambda a: len(disk.stored) == 4)  # stopping now: the poller is
        # in a sync, so only the getUpdates that stopping makes confirms this one
    confirming = [c for c in api.calls_to("getUpdates") if c.params.get("offset")]
    assert len(confirming) >= 4 and confirming[-1].params["offset"] > max(
        map(update_id, disk.stored)
    )
    for call in confirming:
        confirmed = {u for u in disk.stored if update_id(u) < call.params["offset"]}
        assert confirmed and confirmed <= disk.on_disk_by(call.at)


async def test_polling_goes_on_after_the_bot_api_fails(tmp_path: Path, api: FakeBotAPI) -> None:
    async with running(tmp_path / "home", api):
        api.flood("getUpdates", retry_after=0, times=2)
        api.send_text(OPERATOR, "/processes")  # the poll waiting now is answered; the next fail
        await api.wait_for(
            lambda a: [c.status for c in a.calls_to("getUpdates")].count(429) == 2, timeout=15
        )
        api.send_text(OPERATOR, "/help")
        await api.wait_for(lambda a: len(a.sent(OPERATOR)) == 2, timeout=15)


async def test_an_update_that_cannot_be_stored_is_set_aside_not_polled_forever(
    tmp_path: Path, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path / "home", api) as bot:
        ledger = bot.steward.ledger
        accept_inbound = ledger.accept_inbound

        async def refusing(channel: str, external_id: str, payload: Any, durable: bool) -> Any:
            if payload["text"] == "/processes":  # as PostgreSQL refuses a value too long
                raise DataError("INSERT INTO inbox …", {}, Exception("value too long"))
            return await accept_inbound(channel, external_id, payload, durable)

        monkeypatch.setattr(ledger, "accept_inbound", refusing)
        api.send_text(OPERATOR, "/processes")
        api.send_text(OPERATOR, "/help")
        await api.wait_for(lambda a: len(a.sent(OPERATOR)) == 1)
        assert "/processes" in api.sent(OPERATOR)[0]["text"]  # /help's answer lists it
        kinds = [e.kind for e in await ledger.audit_events()]
        assert kinds.count("delivery.unstorable") == 1


async def test_a_webhook_secret_header_that_is_not_utf8_is_refused_not_a_server_error(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    async with running(tmp_path / "home", api, webhook=True):
        assert api.webhook is not None
        port = int(api.webhook.url.split(":")[2].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /telegram/webhook HTTP/1.1\r\nHost: steward\r\nConnection: close\r\n"
            b"X-Telegram-Bot-Api-Secret-Token: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        assert status_line.split()[1] == b"403"


async def test_webhook_updates_that_arrive_while_starting_are_handled_once(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Telegram still has last run's webhook and posts as soon as the port answers,
    while steward is still queueing what a crash left stored: each is handled once."""
    home = tmp_path / "home"
    left = api.send_text(OPERATOR, "/processes")  # stored, then the process died
    async with Steward.open(load_settings(home=home)) as steward:
        inbound = inbound_from(Update.de_json(left, None), api.bot_id)
        assert inbound is not None and await steward.door.accept(inbound) is not None
    update = api.send_text(OPERATOR, START)  # posted by Telegram as steward starts

    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/webhook"

    async def telegram_posting() -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as session:
            while not statuses or statuses[-1] != 200:
                try:
                    async with session.post(
                        url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
                    ) as response:
                        statuses.append(response.status)
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.005)
        return statuses

    posting = asyncio.create_task(telegram_posting())
    settings = load_settings(
        home=home,
        telegram_bot_token=TOKEN,
        telegram_api_url=api.root,
        operators=f"telegram:{OPERATOR}",
        http_port=port,
        telegram_webhook_url=url,
        telegram_webhook_secret=SECRET,
    )
    async with Steward.open(settings) as steward:
        real_stored = steward.door.stored

        async def stored_once_telegram_has_posted(*args: Any) -> Any:
            with suppress(TimeoutError):  # the post lands first, unless it is held
                await asyncio.wait_for(asyncio.shield(posting), 1.0)
            return await real_stored(*args)

        steward.door.stored = stored_once_telegram_has_posted  # type: ignore[method-assign]
        (channel,) = configured_channels(steward)
        async with Service(steward, [channel]):
            assert (await asyncio.wait_for(posting, 10))[-1] == 200
            await api.wait_for(lambda a: cards(a))
            assert isinstance(channel, TelegramChannel)
            await channel.idle()
            runs = await steward.ledger.list_runs(None, limit=10)
    assert len(runs) == 1
    assert len(cards(api)) == 1
    assert sum("onboarding —" in t for t in texts(api)) == 1  # the /processes answer
    assert texts(api)[0].startswith("invoice_followup")  # what was stored first goes first


async def test_a_new_bot_on_the_same_ledger_is_heard_from_its_first_update(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Update ids count per bot: the new bot's first update shares its id with the old
    bot's first, and is a new update all the same."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        api.send_text(OPERATOR, "/processes")
        await bot.settled(api, 1)
    async with FakeBotAPI(token="777:new-bot") as new_api, running(home, new_api) as bot:
        update = new_api.send_text(OPERATOR, "/processes")
        assert update["update_id"] == 1
        await bot.settled(new_api, 2)
        assert any("onboarding — " in text for text in texts(new_api))


async def test_a_card_another_bot_posted_is_not_settled_on_this_bot_s_messages(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Message ids count per bot: where the old bot showed a card, the new bot on the same
    ledger showed one of its own under the same id, which a decision of the old card from
    a shell replaced with that card's outcome, and so took its buttons."""
    home = tmp_path / "home"
    async with running(home, api):
        card = await onboarding_card(api)
    approval_id = button(card, "Approve").partition(":")[2]
    async with FakeBotAPI(token="777:new-bot") as new_api, running(home, new_api) as bot:
        own = await onboarding_card(new_api)
        assert own["message_id"] == card["message_id"]
        assert not await bot.channel.shows(approval_id)
        async with Steward.open(load_settings(home=home)) as shell:  # `steward approve ID`
            await shell.coordinator.decide(approval_id, True, "cli:shell")
        await asyncio.sleep(1.0)  # the service's ticks read the decision meanwhile
        await bot.channel.idle()
        assert new_api.calls_to("editMessageText") == []
        assert new_api.message(OPERATOR, own["message_id"]) == own


async def test_a_reply_another_bot_on_the_same_ledger_owes_is_sent_by_that_bot_alone(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A bot stopped while Telegram could not take its reply; another bot started on the
    same ledger took the reply up and sent it to the chat as its own (a chat the operator
    may never have opened with it, a press it cannot answer). Now each bot sends only the
    replies it owes: the first sends it once it is back."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        bot.channel.outbox.first_retry = 0.1
        api.fail("sendMessage", status=502, times=10_000)
        await bot.channel.send(str(OPERATOR), Reply(["a word from the first bot"]))
        await api.wait_for(lambda a: len(a.calls_to("sendMessage")) >= SEND_ATTEMPTS)
        await bot.service.stop(drain_seconds=0)
    api.fail("sendMessage", status=502, times=0)
    async with FakeBotAPI(token="777:new-bot") as new_api, running(home, new_api) as bot:
        await bot.channel.send(str(OPERATOR), Reply(["a word from the second bot"]))
        await bot.channel.idle()
        assert texts(new_api) == ["a word from the second bot"]
    async with running(home, api) as bot:
        await api.wait_for(lambda a: texts(a) == ["a word from the first bot"])
        await bot.channel.idle()
        assert await bot.steward.door.owed(bot.channel.outbox.account) == []


async def test_an_update_another_bot_stored_is_handled_by_that_bot_alone(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A bot stopped with a message stored and not yet handled; another bot started on
    the same ledger handled it, and answered it from itself, in a chat the operator
    wrote to the first. Now each bot takes up only what was sent to it."""
    home = tmp_path / "home"
    async with running(home, api) as bot:
        slow_down(bot.steward, 60)
        api.send_text(OPERATOR, "/processes")
        await api.wait_for(lambda a: a.pending == [])  # stored: its offset is confirmed
        await bot.service.stop(drain_seconds=0)
    async with FakeBotAPI(token="777:new-bot") as new_api, running(home, new_api) as bot:
        await bot.channel.idle()
        assert texts(new_api) == []
    async with running(home, api) as bot:
        await api.wait_for(lambda a: any("onboarding — " in t for t in texts(a)))


async def test_an_update_stored_before_the_upgrade_and_sent_again_is_handled_once(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A steward from before bot ids stored it under its bare id, and stopped before it
    told Telegram: the upgraded one is sent it again, and knows it."""
    home = tmp_path / "home"
    async with running(home, api, webhook=True) as bot:
        update = api.send_text(OPERATOR, "/processes")
        assert await api.deliver_webhook(update, secret=SECRET) == 200
        await bot.settled(api, 1)
    with sqlite3.connect(home / "steward.db") as db:  # as the older steward kept it
        db.execute("update inbox set external_id = ?", (str(update["update_id"]),))
    async with running(home, api, webhook=True) as bot:
        assert await api.deliver_webhook(update, secret=SECRET) == 200
        await bot.channel.idle()
    assert len(api.sent(OPERATOR)) == 1


async def test_news_goes_to_the_runs_chat_or_else_to_every_operator(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    operators = f"telegram:{OPERATOR},telegram:{OPERATOR + 1}"
    async with running(tmp_path / "home", api, operators=operators) as bot:
        news = Reply().say("to the run's chat")
        await bot.service.notify(news, {"channel": "telegram", "chat_id": "77"})
        await bot.service.notify(Reply().say("from a shell"), {"channel": "cli", "chat_id": "x"})
    assert texts(api, 77) == ["to the run's chat"]
    assert texts(api, OPERATOR) == texts(api, OPERATOR + 1) == ["from a shell"]


@pytest.mark.slow
async def test_news_told_while_the_ledger_is_down_reaches_every_operator_once_it_is_back(
    tmp_path: Path, api: FakeBotAPI, locked_long_enough: float
) -> None:
    """News is kept for each operator's chat before it goes; the ledger down, keeping it
    failed, and the news went to nobody (or to those before the chat it failed at)."""
    operators = f"telegram:{OPERATOR},telegram:{OPERATOR + 1}"
    home = tmp_path / "home"
    async with running(home, api, operators=operators) as bot:
        bot.channel.outbox.first_retry = 0.2
        async with locked(home / "steward.db"):
            told = asyncio.create_task(bot.service.notify(Reply().say("Run r1 is done"), None))
            await asyncio.sleep(locked_long_enough)  # writes fail meanwhile
        assert await asyncio.wait_for(told, 10)
        await bot.channel.idle()
    assert texts(api, OPERATOR) == texts(api, OPERATOR + 1) == ["Run r1 is done"]


def unusable_updates(api: FakeBotAPI) -> list[dict[str, Any]]:
    """Updates of a shape steward cannot use, from a Bot API that sent them all the same:
    some ``Update.de_json`` refuses, some it takes and the fields steward reads are of
    another type; with no ``update_id`` (it gets the fake's next)."""
    private = {"id": OPERATOR, "type": "private", "first_name": "Olivia"}
    sender = {"id": OPERATOR, "is_bot": False, "first_name": "Olivia"}
    message = {"message_id": 1, "from": sender, "chat": private, "date": int(time.time())}
    card = {**message, "from": {"id": 4242, "is_bot": True, "first_name": "steward"}}
    query = {"id": "q1", "from": sender, "chat_instance": "1", "message": card}
    return [
        {"message": "x"},
        {"message": {**message, "text": 5}},
        {"message": {**message, "text": ["/runs"]}},
        {"message": {**message, "caption": 7}},
        {"message": {**message, "from": "x", "text": "/runs"}},
        {"message": {**message, "chat": {"id": "x", "type": "private"}, "text": "/runs"}},
        {"message": {**message, "text": "/runs", "message_thread_id": "x"}},
        {"message": {**message, "text": "/runs", "date": "yesterday"}},
        {"message": {**message, "from": {**sender, "first_name": 5}, "text": "/runs"}},
        {"callback_query": {**query, "data": 5}},
        {"callback_query": {**query, "data": "approve:x", "from": {**sender, "id": "x"}}},
        {"callback_query": "x"},
    ]


async def test_a_webhook_update_of_a_shape_steward_cannot_use_is_answered_200_and_audited(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Not a 500: Telegram would deliver it again and again, the updates after it held
    back; acknowledged, it is set aside with one log line and an audit event."""
    async with running(tmp_path / "home", api, webhook=True) as bot:
        for number, update in enumerate(unusable_updates(api), start=1):
            status = await api.deliver_webhook({"update_id": number, **update}, secret=SECRET)
            assert status == 200, update
        assert await bot.steward.door.stored("telegram") == []
        await bot.steward.door.audited()
        kinds = [e.kind for e in await bot.steward.ledger.audit_events()]
        assert kinds and set(kinds) == {"delivery.unusable"}
        good = api.send_text(OPERATOR, "/processes")
        assert await api.deliver_webhook(good, secret=SECRET) == 200
        await bot.settled(api, 1)
        assert len(api.sent(OPERATOR)) == 1 and api.calls_to("answerCallbackQuery") == []


async def test_an_update_steward_cannot_use_is_answered_200_while_the_ledger_is_down(
    tmp_path: Path,
    api: FakeBotAPI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its audit event raised with the ledger away, and the update was answered 500:
    Telegram delivers it again and again, the updates after it held back, though steward
    could never use it. It is answered 200 whatever its audit does; the failure is
    logged, and the next one is audited in its place."""
    update = {"message": "x"}  # no message python-telegram-bot can read
    async with running(tmp_path / "home", api, webhook=True) as bot:
        with monkeypatch.context() as down:
            down.setattr(bot.steward.ledger.db, "run", ledger_refuses)
            assert await api.deliver_webhook({"update_id": 1, **update}, secret=SECRET) == 200
            await bot.steward.door.audited()
        assert [r for r in caplog.records if "could not audit" in r.getMessage()]
        assert await api.deliver_webhook({"update_id": 2, **update}, secret=SECRET) == 200
        await bot.steward.door.audited()
        events = await bot.steward.ledger.audit_events()
        assert [(e.kind, e.data["delivery"]) for e in events] == [
            ("delivery.unusable", f"{api.bot_id}:2")
        ]


async def test_a_polled_update_of_a_shape_steward_cannot_use_holds_up_none_after_it(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """One update python-telegram-bot cannot read fails the whole getUpdates batch: read
    one by one, it is set aside and the offset moves past it."""
    async with running(tmp_path / "home", api) as bot:
        for update in unusable_updates(api):
            api.inject(update)
        api.send_text(OPERATOR, "/processes")
        await api.wait_for(lambda a: a.sent(OPERATOR))
        await bot.settled(api, 1)
        assert len(api.sent(OPERATOR)) == 1
        await bot.steward.door.audited()
        kinds = [e.kind for e in await bot.steward.ledger.audit_events()]
        assert kinds and set(kinds) == {"delivery.unusable"}
        api.send_text(OPERATOR, "/help")
        await api.wait_for(lambda a: len(a.sent(OPERATOR)) == 2)
    assert api.pending == []  # all confirmed at the stop: none is delivered again


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_two_bots_on_one_ledger_each_send_their_operators_the_day_s_list(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Two bots (two stewards, one ledger): the day's list was one timer for Telegram,
    which the first steward to fire it claimed once its own bot had sent it: the other
    bot's operators had no list that day. Now each bot has a list of its own."""
    home = tmp_path / "home"
    clock = Clock(datetime(2026, 10, 24, 7, 59, tzinfo=UTC))
    async with (
        FakeBotAPI(token="777:other-bot") as other_api,
        running(home, api) as bot,
        running(home, other_api) as other,
    ):
        for each in (bot, other):
            each.service.scheduler.clock = clock
        await bot.service.scheduler.tick()  # both plan the 24th's list
        await other.service.scheduler.tick()
        clock.now = datetime(2026, 10, 24, 8, 0, 1, tzinfo=UTC)

        def listed(on: FakeBotAPI) -> int:
            return sum("Saturday 24 October" in text for text in texts(on))

        await api.wait_for(lambda a: listed(a) >= 1, timeout=10)
        await other_api.wait_for(lambda a: listed(a) >= 1, timeout=10)
        for each in (bot, other):
            await each.service.scheduler.tick()
            await each.channel.idle()
        assert listed(api) == listed(other_api) == 1


async def test_a_press_whose_answer_telegram_fails_hears_it_in_a_message(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """A press on a card decided already, whose answer Telegram failed (a 502): the
    answer ("Already decided — …") was taken for shown, and the operator heard nothing.
    Now it goes as a message, as for a press answered before its reply was ready."""
    async with running(tmp_path / "home", api) as bot:
        card = await onboarding_card(api)
        approve = button(card, "Approve")
        api.press(OPERATOR, card, approve)
        await api.wait_for(lambda a: any("is done" in t for t in texts(a)))
        await bot.settled(api, 2)
        sent_before = len(api.sent(OPERATOR))
        api.fail("answerCallbackQuery", status=502, times=1)
        api.press(OPERATOR, card, approve)  # another device still showing the buttons
        await bot.settled(api, 3)
        (failed, *_) = api.calls_to("answerCallbackQuery")[1:]
        assert failed.status == 502
        (told,) = texts(api)[sent_before:]
        assert told.startswith(f"Already decided — Approved by telegram:{OPERATOR} at")


def service_message(api: FakeBotAPI, chat: dict[str, Any], **what: Any) -> None:
    """What Telegram tells of an operator's act in a chat (a member added, a message
    pinned): a message from them with no text, caption or attachment."""
    user = {"id": OPERATOR, "is_bot": False, "first_name": "Op"}
    message_id = 900 + len(api.calls)
    api.inject(
        {
            "message": {
                "message_id": message_id,
                "from": user,
                "chat": chat,
                "date": int(time.time()),
                **what,
            }
        }
    )


async def test_an_operator_s_act_in_a_chat_is_not_taken_for_an_answer(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """Asked for an email, the operator added a member to the group, or pinned a message
    in their chat with steward: Telegram's note of it, a message from them with no text,
    was read as an empty answer ("email: expected an email address …, got ''")."""
    group = {"id": -100500, "type": "supergroup", "title": "Ops"}
    private = {"id": OPERATOR, "type": "private", "first_name": "Op"}
    async with running(tmp_path / "home", api) as bot:
        api.send_text(OPERATOR, "/run onboarding client=Acme", chat_id=group["id"])
        await api.wait_for(lambda a: any("email" in t for t in texts(a, group["id"])))
        newcomer = {"id": 5555, "is_bot": False, "first_name": "New"}
        service_message(api, group, new_chat_members=[newcomer])
        api.send_text(OPERATOR, "/run onboarding client=Beta")
        await api.wait_for(lambda a: any("email" in t for t in texts(a)))
        pinned = {"message_id": 1, "chat": private, "date": 0}
        service_message(api, private, pinned_message=pinned)
        await bot.settled(api, 2)  # the two runs; the acts are not stored
        api.send_text(OPERATOR, "jane@acme.com", chat_id=group["id"])
        api.send_text(OPERATOR, "jo@beta.com")
        await api.wait_for(lambda a: "premium" in texts(a, group["id"])[-1])
        await api.wait_for(lambda a: "premium" in texts(a)[-1])
        assert not any("got ''" in t for t in texts(api, group["id"]) + texts(api))
