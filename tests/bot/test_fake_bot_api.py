"""The fake Bot API server (tests/fakes/bot_api.py), driven by the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import datetime as dtm
import html
import re
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.fakes.bot_api import FakeBotAPI

TOKEN = "123:abc"
USER = 42


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(token=TOKEN) as server:
        yield server


@pytest.fixture
async def bot(api: FakeBotAPI) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{api.root}/bot{{token}}") as client:
        yield client


def reason(description: str) -> str:
    """A ``match=`` pattern for an API error description (PTB drops "Bad Request: " and
    capitalizes what is left)."""
    return f"(?i){re.escape(description)}"


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(d.title(), callback_data=d) for d in data]])


async def test_send_message_round_trip_with_an_inline_keyboard(api: FakeBotAPI, bot: Bot) -> None:
    assert bot.id == 123 and bot.username == "steward_bot"  # getMe during initialize

    first = await bot.send_message(USER, "Approve?", reply_markup=keyboard("yes", "no"))
    second = await bot.send_message(USER, "Again?")

    assert (first.message_id, second.message_id) == (1, 2)
    assert first.chat.id == USER and first.chat.type == "private"
    assert first.from_user is not None and first.from_user.is_bot
    assert first.reply_markup == keyboard("yes", "no")
    [call] = api.calls_to("sendMessage")[:1]
    assert call.params["chat_id"] == USER and call.params["text"] == "Approve?"
    assert call.params["reply_markup"]["inline_keyboard"][0][1]["callback_data"] == "no"
    assert [m["text"] for m in api.sent(USER)] == ["Approve?", "Again?"]
    assert "reply_markup" not in api.sent(USER)[1]


async def test_a_message_goes_into_a_forum_topic_of_a_supergroup_only(
    api: FakeBotAPI, bot: Bot
) -> None:
    group, topic = -1001234567890, 77
    sent = await bot.send_message(group, "In the topic", message_thread_id=topic)
    assert sent.message_thread_id == topic and sent.is_topic_message
    assert api.sent(group)[0]["message_thread_id"] == topic
    with pytest.raises(BadRequest, match=reason("message thread not found")):
        await bot.send_message(USER, "In a private chat", message_thread_id=topic)
    update = api.send_text(USER, "hi", chat_id=group, topic=topic)
    assert update["message"]["message_thread_id"] == topic


async def test_get_updates_confirms_by_offset(api: FakeBotAPI, bot: Bot) -> None:
    ids = [api.send_text(USER, text)["update_id"] for text in ("/start", "a", "b")]

    got = await bot.get_updates()
    assert [u.update_id for u in got] == ids
    assert got[0].message is not None and got[0].message.text == "/start"
    assert got[0].message.entities[0].type == "bot_command"
    assert len(api.pending) == 3  # nothing confirmed without an offset

    got = await bot.get_updates(offset=ids[1], limit=1)
    assert [u.update_id for u in got] == [ids[1]]
    assert [u["update_id"] for u in api.pending] == ids[1:]

    assert await bot.get_updates(offset=ids[2] + 1) == ()
    assert api.pending == [] and api.offsets == [ids[1], ids[2] + 1]


async def test_a_long_poll_returns_promptly_when_an_update_arrives(
    api: FakeBotAPI, bot: Bot
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await api.wait_for(lambda a: a.polls_waiting == 1)  # the request is parked on the server
    started = time.monotonic()
    update = api.send_text(USER, "hello")
    got = await poll
    assert time.monotonic() - started < 0.1
    assert [u.update_id for u in got] == [update["update_id"]]

    started = time.monotonic()
    assert (
        await bot.get_updates(offset=update["update_id"] + 1, timeout=dtm.timedelta(seconds=0.2))
        == ()
    )
    assert time.monotonic() - started >= 0.2


async def test_html_is_parsed_and_validated(api: FakeBotAPI, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=reason("can't parse entities")):
        await bot.send_message(USER, "<b>unclosed", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=reason("can't parse entities")):
        await bot.send_message(USER, "fish & chips", parse_mode=ParseMode.HTML)

    sent = await bot.send_message(
        USER, f"<b>{html.escape('a < b & c')}</b>", parse_mode=ParseMode.HTML
    )
    assert sent.text == "a < b & c"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 9)]


async def test_markdown_v2_requires_escaping(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=reason("Character '.' is reserved")):
        await bot.send_message(USER, "Total: 1.5", parse_mode=ParseMode.MARKDOWN_V2)
    sent = await bot.send_message(USER, "*Total:* 1\\.5", parse_mode=ParseMode.MARKDOWN_V2)
    assert sent.text == "Total: 1.5" and sent.entities[0].type == "bold"


async def test_the_length_limit_applies_to_the_parsed_text(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=reason("message is too long")):
        await bot.send_message(USER, "x" * 4097)
    with pytest.raises(BadRequest, match=reason("message text is empty")):
        await bot.send_message(USER, "  ")
    sent = await bot.send_message(USER, f"<b>{'x' * 4096}</b>", parse_mode=ParseMode.HTML)
    assert len(sent.text or "") == 4096


async def test_invalid_requests_are_rejected(api: FakeBotAPI, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=reason("BUTTON_DATA_INVALID")):
        await bot.send_message(USER, "hi", reply_markup=keyboard("x" * 65))
    with pytest.raises(BadRequest, match=reason("query is too old")):
        await bot.answer_callback_query("nope")
    with pytest.raises(BadRequest, match=reason("BOT_COMMAND_INVALID")):
        await bot.set_my_commands([("Start", "begin")])
    other = Bot("123:wrong", base_url=f"{api.root}/bot{{token}}")
    with pytest.raises(InvalidToken, match="rejected by the server"):
        await other.initialize()
    await other.shutdown()
    assert [c.status for c in api.calls if not c.ok] == [400, 400, 400, 401]


async def test_flood_control_surfaces_as_retry_after(
    api: FakeBotAPI, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # RetryAfter.retry_after as a timedelta
    api.flood("sendMessage", retry_after=3)

    with pytest.raises(RetryAfter) as raised:
        await bot.send_message(USER, "hi")
    assert raised.value.retry_after == dtm.timedelta(seconds=3)
    assert api.sent() == []  # not applied
    await bot.send_message(USER, "hi")
    assert [c.status for c in api.calls_to("sendMessage")] == [429, 200]
    assert len(api.send_times(USER)) == 2


async def test_an_edit_without_markup_removes_the_keyboard(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "Approve?", reply_markup=keyboard("yes"))
    update = api.press(USER, api.sent(USER)[0], "yes")
    [got] = await bot.get_updates()
    assert got.callback_query is not None and got.callback_query.data == "yes"
    assert await bot.answer_callback_query(update["callback_query"]["id"])

    edited = await bot.edit_message_text("Approved", chat_id=USER, message_id=sent.message_id)
    assert not isinstance(edited, bool) and edited.reply_markup is None
    assert api.message(USER, sent.message_id)["text"] == "Approved"
    assert "reply_markup" not in api.message(USER, sent.message_id)
    with pytest.raises(BadRequest, match=reason("message is not modified")):
        await bot.edit_message_text("Approved", chat_id=USER, message_id=sent.message_id)
    with pytest.raises(BadRequest, match=reason("message to edit not found")):
        await bot.edit_message_text("x", chat_id=USER, message_id=99)


async def test_send_document_records_the_upload(api: FakeBotAPI, bot: Bot) -> None:
    sent = await bot.send_document(USER, InputFile(b"a,b\n1,2\n", filename="report.csv"))
    assert sent.document is not None and sent.document.file_name == "report.csv"
    upload = api.calls_to("sendDocument")[0].params["document"]
    assert upload.filename == "report.csv" and upload.content == b"a,b\n1,2\n"
    assert api.sent(USER)[0]["document"]["file_size"] == 8


async def test_webhook_delivery_and_polling_conflict(api: FakeBotAPI, bot: Bot) -> None:
    received: list[tuple[str | None, dict[str, object]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/hook"
        assert await bot.set_webhook(url, secret_token="s3cret", allowed_updates=["message"])
        assert api.webhook is not None and api.webhook.allowed_updates == ["message"]
        info = await bot.get_webhook_info()
        assert info.url == url and info.pending_update_count == 0
        with pytest.raises(Conflict, match=reason("webhook is active")):
            await bot.get_updates()

        update = {"update_id": 7, "message": {"message_id": 1, "text": "hi"}}
        assert await api.deliver_webhook(update, secret="s3cret") == 200
        assert await api.deliver_webhook(update, secret=None) == 200
        assert received == [("s3cret", update), (None, update)]

        assert await bot.delete_webhook()
        assert api.webhook is None and await bot.get_updates() == ()
    finally:
        await runner.cleanup()


async def test_a_polling_application_handles_commands_and_buttons(api: FakeBotAPI) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(
            update.effective_chat.id, "Approve?", reply_markup=keyboard("yes")
        )

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer()
        await query.edit_message_text(f"You said {query.data}")

    app = Application.builder().token(TOKEN).base_url(f"{api.root}/bot").build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(button))
    async with app:
        assert app.updater is not None
        await app.updater.start_polling()
        await app.start()
        try:
            api.send_text(USER, "/start")
            await api.wait_for(lambda a: len(a.sent(USER)) == 1)
            api.press(USER, api.sent(USER)[0], "yes")
            await api.wait_for(lambda a: a.sent(USER)[0]["text"] == "You said yes")
        finally:
            await app.updater.stop()
            await app.stop()

    assert "reply_markup" not in api.sent(USER)[0]
    assert [c.ok for c in api.calls_to("answerCallbackQuery")] == [True]
    assert api.pending == []  # the updater confirmed everything it handled on stop
    assert api.offsets == sorted(api.offsets)
