"""The Telegram channel: translates between the Bot API and the neutral message model.

Every update is in the inbox, on disk, before Telegram may count it delivered. In
webhook mode that is before the 200. In polling mode steward runs getUpdates itself
instead of python-telegram-bot's Updater, which confirms a batch before its handlers
run: here the offset only moves past updates already on disk, and each update is read
on its own (an update of a shape steward cannot use is set aside, audited, and confirmed:
in either mode it never holds up those after it). Handling happens in
arrival order, on one worker, and may start as soon as an update is stored, while the
disk catches up; a crash in between is recovered on start, and a delivery Telegram
repeats is dropped by the inbox.

A conversation is a chat, or a topic of a forum supergroup: replies go where the message
came from, into its topic too. In a group steward reads only what is meant for it, even
with privacy mode off (see ``_for_steward``): the rest is neither stored nor answered.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import httpx
from aiohttp import web
from telegram import (
    BotCommand,
    CallbackQuery,
    Document,
    InputFile,
    LinkPreviewOptions,
    MaybeInaccessibleMessage,
    Message,
    Update,
    User,
    Voice,
)
from telegram.constants import ChatType, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    TelegramError,
)
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.card_messages import LEDGER_AGAIN_SECONDS, CardMessages
from bot.channel import (
    ChannelUnavailable,
    Settled,
    Unusable,
    answer,
    news_chats,
    operator_ids,
    settle_by_outbox,
    take_up,
)
from bot.http import HttpServer
from bot.in_order import InOrder, catch_up
from bot.outbox import Outbox, SendLater
from bot.settings import Settings
from bot.splitting import fit, length
from bot.telegram.rate_limit import FloodControl
from bot.telegram.render import (
    ASK,
    BACK,
    PART_OF_A_LONGER_TEXT,
    Outgoing,
    asking,
    card_messages,
    outcome_html,
    prompt_messages,
    text_messages,
)
from graph.coordinator import COMMANDS
from graph.front_door import FrontDoor
from graph.messages import Card, CardOutcome, EditPrompt, Inbound, Owed, Reply, Sender
from memory.ledger import Outage, ledger_down

log = logging.getLogger(__name__)
T = TypeVar("T")

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "callback_query")
ANSWER_WITHIN = 1.0  # seconds: a press is answered by then, even while its run goes on
TOAST_LIMIT = 200  # characters Telegram shows in a press's answer
SEND_ATTEMPTS = 4


class TelegramUnavailable(ChannelUnavailable):
    """The Bot API refused the token or could not be reached at start."""


class StewardBot(ExtBot[None]):
    """python-telegram-bot's bot, which can hand over getUpdates' answer unread."""

    async def updates_as_sent(
        self, offset: int | None, wait_seconds: int, allowed_updates: Sequence[str]
    ) -> list[object]:
        """The updates getUpdates returns, as Telegram sent them. ``get_updates`` reads
        the batch whole, and one update it cannot read fails the batch: the offset
        could never move past it, and every update after it would wait for good."""
        data = {"offset": offset, "timeout": wait_seconds, "allowed_updates": list(allowed_updates)}
        read_timeout = (self._request[0].read_timeout or 0) + wait_seconds  # as get_updates
        result = await self._post("getUpdates", data, read_timeout=read_timeout)
        return result if isinstance(result, list) else []


@dataclass(frozen=True)
class Webhook:
    url: str  # the public URL Telegram posts to; it must reach WEBHOOK_PATH here
    secret: str


@dataclass(frozen=True)
class Conversation:
    """A Telegram chat, or a topic in a forum supergroup (its ``message_thread_id``):
    where replies go."""

    chat: str
    topic: int | None = None

    @property
    def chat_id(self) -> str:
        return f"{self.chat}/{self.topic}" if self.topic else self.chat

    @classmethod
    def of(cls, chat_id: str) -> Conversation:
        chat, _, topic = chat_id.partition("/")
        return cls(chat, int(topic) if topic else None)

    @classmethod
    def where(cls, message: MaybeInaccessibleMessage) -> Conversation:
        """Where ``message`` is: a topic's messages carry their topic's id (in a group
        that is no forum, a reply's ``message_thread_id`` names a thread of replies, which
        is no place to send to)."""
        if isinstance(message, Message) and message.is_topic_message:
            return cls(str(message.chat.id), message.message_thread_id)
        return cls(str(message.chat.id))


@dataclass(frozen=True)
class Press:
    """The button press a reply answers."""

    query_id: str
    message_id: int | None


class TelegramChannel:
    name = "telegram"

    def __init__(
        self,
        door: FrontDoor,
        bot: StewardBot,
        *,
        operators: Iterable[str] = (),
        webhook: Webhook | None = None,
        poll_timeout: int = 30,
        api_root: str = "https://api.telegram.org",
    ) -> None:
        self.door = door
        self.settled_here: Settled | None = None
        self.bot = bot
        self.webhook = webhook
        self.poll_timeout = poll_timeout
        self.api_root = api_root
        self.operator_chats = operator_ids(self.name, operators)
        self._offset: int | None = None
        self._username = ""  # the bot's own, known once it started: "/help@it" is for it
        # Groups upgraded to supergroups, learnt from Telegram's answer: old id -> new.
        self._moved: dict[str, str] = {}
        self.queue: InOrder[tuple[int, Inbound]] = InOrder("telegram", self._handle)
        # A danger button's first presses, off the listening: a chat held up by flood
        # control keeps its keyboard waiting, and no update of another chat.
        self.asking: InOrder[CallbackQuery] = InOrder("telegram-ask", self._ask_first)
        self.outbox = Outbox(door, self.name, self._send_owed)
        self._poller: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._unanswered: dict[str, asyncio.TimerHandle] = {}  # press id → its late answer
        self._answering: set[asyncio.Task[bool]] = set()

    @property
    def cards(self) -> CardMessages:
        """Where this bot showed each card: its own messages, told apart from another
        bot's on the same ledger by its id (message ids count per bot). Known once the
        bot has started."""
        return CardMessages(self.door.ledger, self.account)

    @property
    def _delivered_to(self) -> str:
        """How this bot's delivery ids begin (see ``inbound_from``)."""
        return f"{self.bot.id}:"

    @property
    def account(self) -> str:
        """This bot, among those on the same ledger: ``telegram:`` and its id. Known once
        the bot has started."""
        return f"{self.name}:{self.bot.id}"

    @classmethod
    def from_settings(cls, settings: Settings, door: FrontDoor) -> TelegramChannel:
        assert settings.telegram_bot_token is not None
        root = settings.telegram_api_url.rstrip("/")
        webhook = None
        if settings.telegram_webhook_url:
            assert settings.telegram_webhook_secret is not None  # settings insist on it
            webhook = Webhook(settings.telegram_webhook_url, settings.telegram_webhook_secret)
        bot = StewardBot(
            settings.telegram_bot_token,
            base_url=f"{root}/bot{{token}}",
            base_file_url=f"{root}/file/bot{{token}}",
            request=HTTPXRequest(connection_pool_size=8),
            get_updates_request=HTTPXRequest(connection_pool_size=1),
            rate_limiter=FloodControl(),
        )
        return cls(
            door,
            bot,
            operators=settings.operator_ids,
            webhook=webhook,
            api_root=root,
        )

    # -- life cycle --------------------------------------------------------------------

    def mount(self, http: HttpServer) -> None:
        if self.webhook is not None:
            http.add_post(WEBHOOK_PATH, self.receive_webhook, self.name)

    @property
    def needs_http(self) -> bool:
        return self.webhook is not None

    def describe(self) -> str:
        mode = f"webhook {self.webhook.url}" if self.webhook else "long polling"
        return f"Telegram ({mode})"

    async def start(self) -> None:
        """Checks the token, sets the command menu, queues what a crash left stored,
        then listens: a webhook, or long polling."""
        try:
            await self._start()
        except BaseException:
            await self._shut()
            raise

    async def _start(self) -> None:
        try:
            await self.bot.initialize()
            self._username = self.bot.username
        except (InvalidToken, Forbidden) as exc:  # its message holds the token: not shown
            raise TelegramUnavailable(
                f"the Bot API at {self.api_root} refused TELEGRAM_BOT_TOKEN; check the token "
                "(from @BotFather) and STEWARD_TELEGRAM_API_URL"
            ) from exc
        except NetworkError as exc:
            raise TelegramUnavailable(
                f"cannot reach the Bot API at {self.api_root} "
                f"(check STEWARD_TELEGRAM_API_URL): {self._redact(exc)}"
            ) from exc
        try:
            await self.bot.set_my_commands([BotCommand(n, about) for n, about in COMMANDS])
            # Stored by a steward from before bot ids began delivery ids: Telegram may
            # send one of those again, which must be known for what it is.
            await self.door.prefix_deliveries(self.name, self._delivered_to)
            await self.cards.take_unnamed(self.name)  # noted before bots were told apart
            # A reply is this bot's to send, not another's on the same ledger: a chat with
            # one bot is none with another, and a press is answered by its own bot.
            self.outbox.account = self.account
            await self.door.name_replies(self.name, self.account)  # kept before, as cards
            # What a stop or a crash left of this bot's: another bot's is that bot's.
            await take_up(self.outbox, self._enqueue, own=True, sent_to=self._delivered_to)
            self.queue.start()
            self.asking.start()
            self._ready.set()  # webhook calls waiting for the stored updates to queue go on
            if self.webhook is not None:
                await self.bot.set_webhook(
                    self.webhook.url,
                    secret_token=self.webhook.secret,
                    allowed_updates=list(ALLOWED_UPDATES),
                    max_connections=1,  # one at a time: updates queue in Telegram's order
                )
            else:
                await self.bot.delete_webhook()
                self._poller = asyncio.create_task(self._poll(), name="telegram-poll")
        except TelegramError as exc:
            raise TelegramUnavailable(
                f"Telegram refused to start the channel: {self._redact(exc)}"
            ) from exc

    async def take_over(self) -> None:
        await take_up(self.outbox, self._enqueue, own=False, sent_to=self._delivered_to)

    async def idle(self) -> None:
        """Returns once every update taken so far is handled and answered."""
        await self.queue.idle()
        await self.asking.idle()
        await self.outbox.idle()

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stops listening, lets the worker finish what is queued and the replies go out
        (what is left stays in the ledger for the next start), and closes the connection."""
        await self._stop_polling()
        deadline = asyncio.get_running_loop().time() + drain_seconds

        def left() -> float:
            return max(0.0, deadline - asyncio.get_running_loop().time())

        await self.queue.stop(drain_seconds)
        await self.asking.stop(left())  # a press Telegram was told of gets its answer
        await self.outbox.stop(left())
        try:
            if self._offset is not None and self.webhook is None:
                await self.door.sync()  # confirm what is on disk: no resend next start
                await self.bot.updates_as_sent(self._offset, 0, ALLOWED_UPDATES)
        except Exception as exc:  # it is resent next start, and the inbox drops it
            log.warning("could not confirm the last updates (%s)", self._redact(exc))
        finally:
            await self._shut()

    async def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _shut(self) -> None:
        await self._stop_polling()
        await self.queue.stop()
        await self.asking.stop()
        await self.outbox.stop()
        for timer in self._unanswered.values():
            timer.cancel()
        self._unanswered.clear()
        await self.bot.shutdown()

    # -- receiving ---------------------------------------------------------------------

    async def _poll(self) -> None:
        backoff = 1.0
        outage = Outage(log, "Telegram polling")
        while True:
            try:
                await self.door.sync()  # the offset confirms what is on disk, no more
                updates = await self.bot.updates_as_sent(
                    self._offset, self.poll_timeout, ALLOWED_UPDATES
                )
                for data in updates:
                    await self._take_polled(data)
                if updates:  # what comes meanwhile waits at Telegram, and after these
                    await catch_up(self.idle())
                backoff = 1.0
                outage.worked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if ledger_down(exc):  # tried again each second: no wait once it is back
                    outage.failed(exc)
                    await asyncio.sleep(LEDGER_AGAIN_SECONDS)
                    continue
                log.warning(
                    "Telegram polling failed (%s); trying again in %.0f s",
                    self._redact(exc),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _take_polled(self, data: object) -> None:
        """Takes one update as getUpdates sent it, and moves the offset past it; one
        steward cannot use is set aside, and confirmed all the same."""
        update_id = _update_id(data)
        if update_id is None or not isinstance(data, dict):  # Telegram numbers every update:
            reason = "an update without an integer update_id"  # confirmed with the next
            self.door.unusable(self.name, "getUpdates", reason)
            return
        await self._take_as_sent(data, update_id)
        self._offset = update_id + 1

    async def receive_webhook(self, request: web.Request) -> web.Response:
        assert self.webhook is not None
        given = request.headers.get(SECRET_HEADER, "")
        # A header's bytes that are not UTF-8 come as surrogates, which encode() refuses.
        if not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), self.webhook.secret.encode()
        ):
            log.warning("refused a Telegram webhook call with a wrong or missing secret token")
            refused = {"path": request.path, "remote": request.remote or ""}
            self.door.refuse_unverified(self.name, "wrong or missing secret token", refused)
            return web.Response(status=403, text="forbidden")
        try:
            body = await request.json()
        except ValueError:  # not JSON, not UTF-8
            body = None
        update_id = _update_id(body)
        if update_id is None:
            return web.Response(status=400, text="not a Telegram update")
        await self._ready.wait()  # what a crash left stored goes first
        # A failure other than the update's shape is a 500, and Telegram delivers again.
        if not await self._take_as_sent(body, update_id):
            return web.Response(text="ok")
        await catch_up(self.idle())
        await self.door.sync()
        return web.Response(text="ok")

    async def _take_as_sent(self, data: dict[str, Any], update_id: int) -> bool:
        """Takes an update as Telegram sent it; False when steward cannot use it: it is
        set aside, and Telegram told it arrived all the same (sent again, or left
        unconfirmed, it would hold back the updates after it)."""
        try:
            await self.take(read_update(data, self.bot))
        except Unusable as exc:
            self.door.unusable(self.name, f"{self.bot.id}:{update_id}", str(exc))
            return False
        return True

    async def take(self, update: Update) -> None:
        """Stores one update in the inbox and queues it for handling; Telegram may be
        told once ``door.sync()`` returns. Raises ``Unusable``, before anything is
        stored, for an update whose fields steward reads are not of their types."""
        inbound = inbound_from(update, self.bot.id, self._username)
        if inbound is None or _for_another_bot(inbound.text, self._username):
            return  # in a group: not steward's to read
        message = update.message
        if (
            message is not None
            and not _for_steward(message, self.bot.id, self._username)
            and (inbound.attachment is not None or not await self.door.awaits_answer(inbound))
        ):
            # A group's talk, which steward overhears with privacy mode off: the asker's
            # next typed message answers a question, not a file or someone else's words
            # they share there (which would take its place, and then the answer's).
            return
        query = update.callback_query
        asks = (inbound.button or "").startswith((ASK, BACK))
        if query is not None and asks and inbound.sender.user_id in self.operator_chats:
            self.asking.put(query)  # a stranger's press is refused, as any press
            return
        inbox_id = await self.door.accept(inbound, durable=False)
        if inbox_id is not None:
            self._enqueue(inbox_id, inbound)

    async def _ask_first(self, query: CallbackQuery) -> None:
        """A danger button's first press (or its Back): the card's buttons change in
        place; nothing is decided, so nothing is stored."""
        message = query.message
        approval_id = (query.data or "").rpartition(":")[2]
        if not isinstance(message, Message) or message.reply_markup is None:
            await self._answer(query.id, await self.door.decided(approval_id))
            return
        # Decided before the change, the card stays settled; after it, its outcome lands
        # after it, and takes the buttons away.
        async with self._editing(str(message.chat.id), message.message_id):
            decided = await self.door.decided(approval_id)
            if decided is None:
                keyboard = asking(message.reply_markup, query.data or "")
                try:
                    await self._call(
                        lambda: self.bot.edit_message_reply_markup(
                            message.chat.id, message.message_id, reply_markup=keyboard
                        ),
                        again_if_maybe_sent=True,  # the same keyboard twice changes nothing
                    )
                except TelegramError as exc:  # "not modified": a double tap asks once
                    log.info("could not ask before a press: %s", self._redact(exc))
        await self._answer(query.id, decided)  # a keyboard unchanged too: else the app spins on

    def _editing(self, chat: str, message_id: int) -> AbstractAsyncContextManager[None]:
        """Held while a message is edited: its edits land one after the other, in the
        order they were made."""
        return self.door.memory.lock(f"{self.name}:editing:{chat}:{message_id}")

    def _enqueue(self, inbox_id: int, inbound: Inbound) -> None:
        """Queues a stored update; a press gets its answer within ANSWER_WITHIN, even
        when the updates before it take longer."""
        press = _press(inbound)
        if press is not None:
            loop = asyncio.get_running_loop()
            self._unanswered[press.query_id] = loop.call_later(
                ANSWER_WITHIN, self._answer_late, press.query_id
            )
        self.queue.put((inbox_id, inbound))

    async def _handle(self, item: tuple[int, Inbound]) -> None:
        await answer(self.outbox, self.send, item)

    # -- sending -----------------------------------------------------------------------

    async def deliver(self, reply: Reply, reply_to: dict[str, Any] | None) -> None:
        """News about a run: to the chat it came from, or to every operator's chat."""
        for chat_id in news_chats(self.name, reply_to, self.operator_chats):
            await self.send(chat_id, reply)

    async def send(self, chat_id: str, reply: Reply, answering: Inbound | None = None) -> None:
        """Sends ``reply`` to a chat, by way of the ledger: it goes when Telegram takes it."""
        await self.outbox.owe(chat_id, reply, answering)

    async def _send_owed(self, owed: Owed) -> None:
        """Sends what is left of a reply: its steps (see ``Steps``) not done before."""
        reply, chat_id, answering = owed.reply, owed.chat_id, owed.answering
        press = _press(answering) if answering is not None else None
        steps = self.outbox.steps(owed)
        answered = False  # not known after a restart: then said again, in a message
        if press is not None:
            toast = (" ".join(reply.texts) or reply.notice) if reply.private else reply.notice
            answered = bool(await steps.take(partial(self._answer_press, press.query_id, toast)))
        if reply.private and press is not None:  # for the presser's eyes: the press's answer
            if answered:
                return
            if answering is None or chat_id != answering.sender.user_id:  # a shared chat
                log.info("a press in chat %s was answered without its private reply", chat_id)
                return
            # The press was answered already (it took over ANSWER_WITHIN), or Telegram
            # failed its answer: in the presser's own chat a message is for their eyes too.
        items = list(reply.items)
        if reply.notice and not answered:  # no press, its spinner stopped already, or failed
            items.append(reply.notice)
        posts = 0  # a reply buzzes the operator's phone once, however many messages it is
        for item in items:
            if isinstance(item, str | EditPrompt):
                messages = (
                    prompt_messages(item) if isinstance(item, EditPrompt) else text_messages(item)
                )
                for outgoing in messages:
                    await steps.take(partial(self._post, chat_id, outgoing, quiet=posts > 0))
                    posts += 1
            elif isinstance(item, Card):
                for outgoing in card_messages(item):
                    card = partial(self._post_card, chat_id, item, outgoing, quiet=posts > 0)
                    await steps.take(card)
                    posts += 1
            elif isinstance(item, CardOutcome) and item.decided_elsewhere:
                await steps.take(partial(self._settle_where_shown, item))
            elif isinstance(item, CardOutcome):
                pressed = press.message_id if press is not None else None
                await steps.take(partial(self._settle_card, chat_id, item, pressed))

    async def _post_card(
        self, chat_id: str, card: Card, outgoing: Outgoing, quiet: bool = False
    ) -> None:
        """Posts a message of a card; the one with its buttons is remembered where it went
        (a group upgraded to a supergroup: the supergroup), so that the card's outcome can
        replace it. The ledger down, that waits for it: the card is not posted again."""
        message = await self._post(chat_id, outgoing, quiet)
        if message is not None and outgoing.keyboard is not None:
            where = Conversation(str(message.chat.id), Conversation.of(chat_id).topic)
            shown = (where.chat_id, str(message.message_id))
            unshow = partial(self._unshow, where.chat, message.message_id)
            decided = await self.cards.remember(card.approval_id, *shown, unshow=unshow)
            if decided is not None:  # while it was on its way
                html = outcome_html(CardOutcome(card.approval_id, decided))
                try:
                    await self.cards.settle(card.approval_id, [shown], partial(self._edit, html))
                except SendLater as exc:  # posting the card again would not help: it is posted
                    log.warning("could not show card %s its outcome: %s", card.approval_id, exc)

    async def _unshow(self, chat: str, message_id: int) -> None:
        """Takes a card's buttons off a message the ledger does not know shows it (see
        ``CardMessages.remember``); Telegram refusing, the buttons stay."""
        try:
            await self._call(
                lambda: self.bot.edit_message_reply_markup(chat, message_id, reply_markup=None),
                again_if_maybe_sent=True,  # the same edit twice changes nothing
            )
        except TelegramError as exc:
            log.warning("could not take the buttons off card message %s: %s", message_id, exc)

    async def _settle_card(self, chat_id: str, outcome: CardOutcome, pressed: int | None) -> None:
        """Edits every message showing the card — the pressed one, those in other chats,
        those on other platforms: the outcome, and no more buttons."""
        html = outcome_html(outcome)
        where = (chat_id, str(pressed)) if pressed is not None else None
        targets = await self.cards.to_settle(outcome.approval_id, outcome.text, where)
        elsewhere = partial(self.settled_here, outcome) if self.settled_here else None
        await self.cards.settle(outcome.approval_id, targets, partial(self._edit, html), elsewhere)
        if not targets:
            await self._post(chat_id, Outgoing(html))

    async def settle(self, outcome: CardOutcome) -> None:
        await settle_by_outbox(self.outbox, outcome)

    async def shows(self, approval_id: str) -> bool:
        return await self.cards.showing(approval_id)

    async def _settle_where_shown(self, outcome: CardOutcome) -> None:
        html = outcome_html(outcome)
        taken = await self.cards.take(outcome.approval_id, outcome.text)
        await self.cards.settle(outcome.approval_id, taken, partial(self._edit, html))

    async def _edit(self, html: str, target: tuple[str, str]) -> None:
        """Replaces a message's text; with no markup given, Telegram drops its buttons.
        Raises ``SendLater`` when Telegram cannot be reached now."""
        chat_id, message_id = Conversation.of(target[0]).chat, int(target[1])
        try:
            async with self._editing(chat_id, message_id):
                await self._call(
                    lambda: self.bot.edit_message_text(
                        html, chat_id=chat_id, message_id=message_id, parse_mode=ParseMode.HTML
                    ),
                    again_if_maybe_sent=True,  # the same edit twice changes nothing
                )
        except BadRequest as exc:  # "not modified": a second press finds it settled already
            if "not modified" not in str(exc):
                log.info("could not edit card %s in chat %s: %s", message_id, chat_id, exc)
        except NetworkError as exc:  # after _call's tries
            raise SendLater(f"cannot reach Telegram: {self._redact(exc)}") from exc
        except InvalidToken as exc:  # revoked: made with the new token, after a restart
            raise SendLater(f"Telegram refused the token: {self._redact(exc)}") from exc
        except TelegramError as exc:
            log.warning("could not edit card %s in chat %s: %s", message_id, chat_id, exc)

    async def _post(self, chat_id: str, outgoing: Outgoing, quiet: bool = False) -> Message | None:
        """Sends one message, into its conversation's topic where it has one; ``quiet``:
        without a notification (a reply's second on). To a group upgraded to a supergroup,
        it goes to the supergroup."""
        where = Conversation.of(chat_id)
        chat, topic = self._moved.get(where.chat, where.chat), where.topic
        try:
            if outgoing.document is not None:
                name, content = outgoing.document
                document = InputFile(content.encode(), filename=name)
                return await self._call(
                    lambda: self.bot.send_document(
                        chat,
                        document,
                        message_thread_id=topic,
                        caption=outgoing.html,
                        parse_mode=ParseMode.HTML,
                        disable_notification=quiet,
                    )
                )
            return await self._call(
                lambda: self.bot.send_message(
                    chat,
                    outgoing.html,
                    message_thread_id=topic,
                    parse_mode=ParseMode.HTML,
                    reply_markup=outgoing.keyboard,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                    disable_notification=quiet,
                )
            )
        except ChatMigrated as exc:  # Telegram names the supergroup; this chat is no more
            moved = str(exc.new_chat_id)
            log.info("Telegram chat %s became chat %s; sending there", chat, moved)
            self._moved[where.chat] = moved
            return await self._post(Conversation(moved, topic).chat_id, outgoing, quiet)
        except (Forbidden, BadRequest) as exc:  # a chat closed to steward; a bad request
            refused = self._redact(exc)
            log.error("Telegram refused a message to chat %s: %s", chat_id, refused)
            await self.door.message_refused(self.name, chat_id, refused)
        except NetworkError as exc:  # unreachable, timed out, a server error: again later
            raise SendLater(self._redact(exc)) from exc
        except InvalidToken as exc:  # revoked: the reply waits for the new token's start
            raise SendLater(f"Telegram refused the token: {self._redact(exc)}") from exc
        except TelegramError as exc:
            failed = self._redact(exc)
            log.error("could not send a message to Telegram chat %s: %s", chat_id, failed)
            await self.door.message_refused(self.name, chat_id, failed)
        return None

    async def _answer_press(self, query_id: str, text: str | None) -> bool:
        """Answers a press, once; False when it was answered already, or Telegram did not
        take the answer (then its text goes as a message)."""
        timer = self._unanswered.pop(query_id, None)
        if timer is None:
            return False
        timer.cancel()
        return await self._answer(query_id, text)

    def _answer_late(self, query_id: str) -> None:
        """The press has waited ANSWER_WITHIN: stop its spinner now, without a text."""
        if self._unanswered.pop(query_id, None) is not None:
            task = asyncio.create_task(self._answer(query_id, None))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, query_id: str, text: str | None) -> bool:
        """Answers a press; whether Telegram took the answer."""
        toast = fit(text, TOAST_LIMIT) if text else None
        try:
            await self._call(lambda: self.bot.answer_callback_query(query_id, text=toast))
        except TelegramError as exc:  # too old after a restart: the card edit still shows it
            log.info("could not answer a button press: %s", self._redact(exc))
            return False
        return True

    def _redact(self, exc: BaseException) -> str:
        """An error's text without the bot token, which some of them hold."""
        return str(exc).replace(self.bot.token, "<token>")

    @staticmethod
    async def _call(send: Callable[[], Awaitable[T]], again_if_maybe_sent: bool = False) -> T:
        """Flood control is the rate limiter's; a dropped connection is tried again."""
        delay = 0.5
        attempt = 1
        while True:
            try:
                return await send()
            except NetworkError as exc:
                # Again only when the request never left: after that, Telegram may have
                # the message, and a second one would be a duplicate — unless a second
                # one is harmless (an edit), and then after a server error too.
                again = _never_sent(exc) or (
                    again_if_maybe_sent and not isinstance(exc, BadRequest)
                )
                if not again or attempt == SEND_ATTEMPTS:
                    raise
            await asyncio.sleep(delay)
            delay *= 2
            attempt += 1


def _update_id(data: object) -> int | None:
    """An update's ``update_id``, None when it has none: then it is no update at all."""
    update_id = data.get("update_id") if isinstance(data, dict) else None
    return update_id if isinstance(update_id, int) and not isinstance(update_id, bool) else None


def read_update(data: dict[str, Any], bot: ExtBot[None]) -> Update:
    """python-telegram-bot's update from Telegram's JSON; ``Unusable`` when it cannot read
    it. It checks no types, and fails on a field of another shape as it comes to it."""
    try:
        return Update.de_json(data, bot)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise Unusable(f"python-telegram-bot cannot read it: {exc!r}") from exc


def inbound_from(update: Update, bot_id: int, username: str = "") -> Inbound | None:
    """The neutral form of a message or a button press; None for anything else (a note
    of what someone did in the chat: a member added, a message pinned, a topic opened).
    ``Unusable`` when a field it reads is not of its type (python-telegram-bot takes an
    update's fields as they come). A message that begins by mentioning the bot
    (``@username``, how a group with privacy mode on reaches it) is read without it.

    Its delivery id is the bot's and the update's: update ids count up per bot, so a new
    bot on the same ledger sends ids another one sent before, each a new update."""
    update_id = f"{bot_id}:{update.update_id}"
    query = update.callback_query
    if query is not None:
        message = query.message
        where = Conversation(str(_of(query.from_user.id, int, "the presser's id")))
        context: dict[str, Any] = {"callback_query_id": _of(query.id, str, "a press's id")}
        if message is not None:
            where = _where(message)
            context["message_id"] = _of(message.message_id, int, "a message's id")
        sender = _sender(query.from_user)
        button = _of(query.data, str | None, "a press's data") or ""
        return Inbound(sender, where.chat_id, update_id, button=button, context=context)
    message = update.message
    if message is None or message.from_user is None:
        return None
    _of(message.text, str | None, "a message's text")
    _of(message.caption, str | None, "a message's caption")
    said = message.text or message.caption
    attachment = _attachment(message)
    if not said and attachment is None:  # Telegram's note of an act: a member added, a pin
        return None
    return Inbound(
        _sender(message.from_user),
        _where(message).chat_id,
        update_id,
        text=_to_the_bot(said or "", username),
        attachment=attachment,
        may_go_on=length(message.text or "") >= PART_OF_A_LONGER_TEXT,
    )


def _attachment(message: Message) -> str | None:
    """What a message brings instead of typed text: a message forwarded (someone else's
    words, not the operator's), one sent through an inline bot (that bot's words), a
    document by its name, else its kind ("a photo", "a voice message"); None for text."""
    if message.forward_origin is not None:
        return "a forwarded message"
    if message.via_bot is not None:
        inline_bot = _of(message.via_bot.username, str | None, "an inline bot's username")
        return f"a message sent through @{inline_bot}" if inline_bot else "a bot's message"
    attached = message.effective_attachment
    if attached is None:
        return None
    if isinstance(attached, Document):
        return _of(attached.file_name, str | None, "a document's name") or "a file"
    if isinstance(attached, list):
        return "a photo"
    if isinstance(attached, Voice):
        return "a voice message"
    kind = re.sub(r"(?<!^)([A-Z])", r" \1", type(attached).__name__).lower()
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _to_the_bot(text: str, username: str) -> str:
    """``text`` without the mention of the bot it begins with, if it does."""
    if not username:
        return text
    mention = re.match(rf"\s*@{re.escape(username)}\b[\s,:]*", text, flags=re.IGNORECASE)
    return text[mention.end() :] if mention else text


def _for_steward(message: Message, bot_id: int, username: str) -> bool:
    """Whether ``message`` is meant for steward: anything in its private chat; in a
    group, a command, a message that mentions its ``@username``, or a reply to one of its
    messages (not to the opening of a forum topic, which every message there replies to).
    What a group with privacy mode on would let through, but the answer to a question."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    said = message.text or message.caption or ""
    if said.startswith("/"):
        return True
    if username and re.search(rf"(?<!\w)@{re.escape(username)}\b", said, flags=re.IGNORECASE):
        return True
    replied = message.reply_to_message
    return (
        replied is not None
        and replied.from_user is not None
        and replied.from_user.id == bot_id
        and replied.forum_topic_created is None
    )


def _for_another_bot(text: str | None, username: str) -> bool:
    """A command addressed to another bot by name, as in a group: ``/help@other_bot``."""
    words = (text or "").split(maxsplit=1)
    addressed = words[0].partition("@")[2] if words and words[0].startswith("/") else ""
    return bool(addressed) and addressed.lower() != username.lower()


def _sender(user: User) -> Sender:
    _of(user.first_name, str, "a user's first name")
    _of(user.last_name, str | None, "a user's last name")
    return Sender("telegram", str(_of(user.id, int, "a user's id")), user.full_name)


def _where(message: MaybeInaccessibleMessage) -> Conversation:
    _of(message.chat.id, int, "a chat's id")
    if isinstance(message, Message):
        _of(message.message_thread_id, int | None, "a message's topic")
    return Conversation.where(message)


def _of(value: T, kind: Any, what: str) -> T:
    """``value``, when it is of ``kind`` (a type, or a union of types); else ``Unusable``.
    A bool is none of them (Python's own ``isinstance`` takes it for an int)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = getattr(kind, "__name__", str(kind))
        raise Unusable(f"{what} is {type(value).__name__}, not {expected}")
    return value


def _press(inbound: Inbound) -> Press | None:
    query_id = inbound.context.get("callback_query_id")
    if query_id is None:
        return None
    return Press(str(query_id), inbound.context.get("message_id"))


def _never_sent(exc: NetworkError) -> bool:
    return not isinstance(exc, BadRequest) and isinstance(
        exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
    )
