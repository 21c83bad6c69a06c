"""The Slack channel: translates between slack-bolt and the neutral message model.

Requests come in by Socket Mode (``SLACK_APP_TOKEN``) or on ``/slack/events`` in HTTP
mode (``SLACK_SIGNING_SECRET``; the signature and the timestamp are checked before bolt
reads the request, and a refused request is audited). Bolt runs each listener before it acknowledges
(``process_before_response``): a listener only stores the delivery in the inbox, keyed
by the app's bot id and Slack's own id (a message's channel and ``ts``, an interaction's
``trigger_id``; the app's own, as another app on the same ledger takes up its own), so
a request is acknowledged only once it is stored on disk, and a retry Slack sends, or
the mention it sends again for an edit, is dropped there. The handling — resuming a
run, say — happens in arrival order, on one worker, and may start while the disk
catches up, before the acknowledgement. A crash in between is recovered at the next
start. A request steward has no listener for is acknowledged and ignored; one whose
fields it reads are missing or of another type (``bot.slack.payloads``) is acknowledged
and set aside, audited: Slack sends again anything not answered 2xx, three times more.

A conversation is a channel, or a thread in one: replies go where the message came from.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.middleware.authorization.async_single_team_authorization import (
    AsyncSingleTeamAuthorization,
)
from slack_bolt.request.internals import parse_body
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.card_messages import CardMessages
from bot.channel import (
    ChannelUnavailable,
    Settled,
    Unusable,
    answer,
    news_chats,
    operator_ids,
    settle_by_outbox,
    take,
    take_up,
)
from bot.http import HttpServer
from bot.in_order import InOrder
from bot.outbox import Outbox, SendLater
from bot.pacing import Bucket
from bot.settings import Settings
from bot.slack.payloads import (
    BOLT_FAILS,
    MESSAGE_ID_PREFIX,
    Written,
    delivery_id,
    edit_form,
    ids_unreadable,
    maybe_part,
    maybe_text,
    part,
    sender,
    text,
    unreadable,
    unroutable,
    written,
)
from bot.slack.render import (
    EDIT_BLOCK,
    EDIT_VIEW,
    Outgoing,
    as_typed_in_slack,
    card_message,
    card_overflow,
    edit_view,
    ephemeral_message,
    outcome_message,
    text_message,
    text_messages,
    text_parts,
)
from graph.coordinator import BUTTON_VERBS, COMMAND_NAMES, QUESTION_TTL
from graph.front_door import FrontDoor
from graph.messages import Card, CardOutcome, EditPrompt, Inbound, Owed, Reply, Sender
from memory.working import WorkingMemory

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SLASH_COMMAND = "/steward"
# What a delivery is, by how its id goes on after the app's bot id and ``:`` (a steward
# from before apps were told apart stored ids that began so).
COMMAND_ID_PREFIX = "command:"  # then the command's trigger id
PRESS_ID_PREFIX = "action:"  # then the press's trigger id
FORM_ID_PREFIX = "view:"  # then the submitted Edit form's view id
FORM_CLOSED_ID_PREFIX = "view-closed:"  # then the closed Edit form's view id
DELIVERY_KINDS = (
    MESSAGE_ID_PREFIX,
    COMMAND_ID_PREFIX,
    PRESS_ID_PREFIX,
    FORM_ID_PREFIX,
    FORM_CLOSED_ID_PREFIX,
)
PRIVATE = "private"  # in an answer's context: its sender's alone, as the question was
PRESSES = re.compile(f"^({'|'.join(BUTTON_VERBS)})$")
MAX_AGE = 5 * 60  # seconds: an older request timestamp is refused (a replay)
RATE_LIMIT_RETRIES = 30  # 429s waited out (Retry-After) before a message is given up
SERVER_ERROR_RETRIES = 3  # 500s and 503s tried again, with backoff, before giving up
NO_ENTRY = {
    "not_in_channel",
    "channel_not_found",
    "is_archived",
}  # post to a DM instead
# Errors Slack may answer in a 200's body when it cannot take a request now: the
# message waits in the ledger.
NOT_NOW = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
    # The token refused (revoked, the app reinstalled): until a start with the new one.
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
}


class SlackUnavailable(ChannelUnavailable):
    """The Web API refused SLACK_BOT_TOKEN or could not be reached at start."""


@dataclass(frozen=True)
class Conversation:
    """A Slack channel (a DM too), or a thread in one: where replies go."""

    channel: str
    thread_ts: str | None = None

    @property
    def chat_id(self) -> str:
        return f"{self.channel}/{self.thread_ts}" if self.thread_ts else self.channel

    @classmethod
    def of(cls, chat_id: str) -> Conversation:
        channel, _, thread_ts = chat_id.partition("/")
        return cls(channel, thread_ts or None)


class SlackChannel:
    name = "slack"

    def __init__(
        self,
        door: FrontDoor,
        memory: WorkingMemory,
        *,
        token: str,
        api_url: str = "https://slack.com/api/",
        signing_secret: str | None = None,
        app_token: str | None = None,
        operators: Iterable[str] = (),
    ) -> None:
        self.door = door
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.memory = memory
        self._bot_id: str | None = None  # who steward is in Slack, as auth.test told
        self.settled_here: Settled | None = None
        self.operator_users = operator_ids(self.name, operators)
        self.app = AsyncApp(
            token=token,
            signing_secret=signing_secret or "",
            process_before_response=True,  # stored before acknowledged
            request_verification_enabled=False,  # checked before bolt reads (receive)
            raise_error_for_unhandled_request=True,  # to _failed: acknowledged, not a 404
        )
        # Bolt builds its own client from the token (given one too, it warns when
        # SLACK_BOT_TOKEN is in the environment); every request's client copies this one.
        self.client = self.app.client
        self.client.base_url = api_url
        self.client.timeout = 30
        self.client.retry_handlers += [
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
        ]
        self._listen()
        self.queue: InOrder[tuple[int, Inbound]] = InOrder("slack", self._handle)
        self.outbox = Outbox(door, self.name, self._send_owed)
        self._ready = asyncio.Event()
        self._pacing: dict[str, Bucket] = {}
        self._socket: AsyncSocketModeHandler | None = None
        # When the last message a steward from before messages were kept by their ts
        # stored came: one not written after may be stored under its event's id.
        self._by_event_id_until: float | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, door: FrontDoor, memory: WorkingMemory
    ) -> SlackChannel:
        assert settings.slack_bot_token is not None
        return cls(
            door,
            memory,
            token=settings.slack_bot_token,
            api_url=settings.slack_api_url,
            signing_secret=settings.slack_signing_secret,
            app_token=settings.slack_app_token,
            operators=settings.operator_ids,
        )

    @property
    def cards(self) -> CardMessages:
        """Where this app showed each card: its own messages, told apart from another
        app's (or another workspace's) on the same ledger by its bot id, which names one
        app in one workspace (a message of another's is none of this one's to update).
        Known once the channel has started."""
        return CardMessages(self.door.ledger, self.account)

    @property
    def account(self) -> str:
        """This app in its workspace, among those on the same ledger: ``slack:`` and its
        bot id. Known once the channel has started."""
        assert self._bot_id is not None, "the Slack channel has not started"
        return f"{self.name}:{self._bot_id}"

    @property
    def _delivered_to(self) -> str:
        """How this app's delivery ids begin: its bot id. Another app's (another
        workspace's) stored deliveries are that app's to take up: its conversations are
        none of this one's. Known once the channel has started."""
        assert self._bot_id is not None, "the Slack channel has not started"
        return f"{self._bot_id}:"

    # -- life cycle --------------------------------------------------------------------

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    @property
    def needs_http(self) -> bool:
        return not self.socket_mode

    def mount(self, http: HttpServer) -> None:
        if not self.socket_mode:
            http.add_post(EVENTS_PATH, self.receive, self.name)

    def describe(self) -> str:
        return "Slack (Socket Mode)" if self.socket_mode else f"Slack (HTTP at {EVENTS_PATH})"

    async def start(self) -> None:
        """Checks the token, queues what a crash left stored, then listens."""
        self.client.session = aiohttp.ClientSession()  # one pool of connections to Slack
        try:
            await self._start()
        except BaseException:
            await self._shut()
            raise

    async def _start(self) -> None:
        try:
            self._authorized(await self.client.auth_test())
        except SlackApiError as exc:
            raise SlackUnavailable(
                f"the Slack Web API at {self.client.base_url} refused SLACK_BOT_TOKEN "
                f"({_error(exc)}); check the token and STEWARD_SLACK_API_URL"
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SlackUnavailable(
                f"cannot reach the Slack Web API at {self.client.base_url} "
                f"(check STEWARD_SLACK_API_URL): {exc}"
            ) from exc
        await self.cards.take_unnamed(self.name)  # noted before apps were told apart
        # A reply is this app's to send, not another's on the same ledger: another
        # workspace has none of its conversations, and a press is answered by its app.
        self.outbox.account = self.account
        await self.door.name_replies(self.name, self.account)  # kept before, as cards
        # Deliveries stored before their ids named the app are this app's, as cards and
        # replies: all of them, since Slack sends the mention for an edit of a message
        # of any age, which must be known for what it is.
        prefix, kinds = self._delivered_to, DELIVERY_KINDS
        await self.door.prefix_deliveries(self.name, prefix, newest=None, kinds=kinds)
        if stored_by_event := await self.door.ledger.newest_bare_delivery(self.name):
            self._by_event_id_until = stored_by_event.timestamp()
        # What a stop or a crash left of this app's: another app's is that app's.
        await take_up(self.outbox, self._enqueue, own=True, sent_to=prefix)
        self.queue.start()
        self._ready.set()  # requests waiting for the stored deliveries to queue go on
        if self.app_token is not None:
            try:  # the Socket Mode client retries a refused token forever: ask first
                await self.client.apps_connections_open(app_token=self.app_token)
            except SlackApiError as exc:
                raise SlackUnavailable(
                    f"Slack refused SLACK_APP_TOKEN ({_error(exc)}); use an app-level token "
                    "with the connections:write scope, from the app's Basic Information page"
                ) from exc
            self._socket = _SocketHandler(self.app, self.app_token, self._set_aside)
            await self._socket.connect_async()  # type: ignore[no-untyped-call]

    def _authorized(self, told: AsyncSlackResponse) -> None:
        """Tells bolt who steward is, as auth.test told at the start: bolt asks at the
        first request otherwise, and a Slack slow then held up its acknowledgement, and
        one failing then lost the request, answered "reinstall this app". (Bolt's
        ``authorize`` would do it too, but warns at every start that SLACK_BOT_TOKEN in
        the environment is ignored.)"""
        for middleware in self.app._async_middleware_list:
            if isinstance(middleware, AsyncSingleTeamAuthorization):
                middleware.auth_test_result = told
        self._bot_id = str(told.get("bot_id") or told["user_id"])

    async def take_over(self) -> None:
        await take_up(self.outbox, self._enqueue, own=False, sent_to=self._delivered_to)

    def _enqueue(self, inbox_id: int, inbound: Inbound) -> None:
        self.queue.put((inbox_id, inbound))

    async def idle(self) -> None:
        """Returns once every delivery taken so far is handled and answered."""
        await self.queue.idle()
        await self.outbox.idle()

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stops listening, lets the worker finish what is queued and the replies go out
        (what is left stays in the ledger for the next start), and closes the
        connections."""
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        deadline = asyncio.get_running_loop().time() + drain_seconds
        await self.queue.stop(drain_seconds)
        await self.outbox.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
        await self._shut()

    async def _shut(self) -> None:
        await self.queue.stop()
        await self.outbox.stop()
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self.client.session is not None:
            await self.client.session.close()
            self.client.session = None

    # -- receiving ---------------------------------------------------------------------

    async def receive(self, request: web.Request) -> web.Response:
        """HTTP mode: events, interactivity and slash commands, all on one endpoint.

        The signature is checked before bolt reads anything of the request: bolt parses
        a body, and takes ids from it, before it checks, and fails on one not of Slack's
        shape. A request Slack did not sign is refused (401, audited); one it signed that
        is no JSON object is a 400, and one bolt would fail on is acknowledged and set
        aside (``ids_unreadable``, ``unroutable``), never a 500."""
        if not await self._signed_by_slack(request):
            self._refused(request)
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_request = await to_bolt_request(request)
        except BOLT_FAILS as exc:
            body = _parsed(await request.text(), request.content_type)
            if body is None:
                return web.Response(status=400, text="not a Slack request")
            self._set_aside(body, ids_unreadable(exc))
            return web.Response(text="")
        if (reason := unroutable(bolt_request.body)) is not None:
            self._set_aside(bolt_request.body, reason)
            return web.Response(text="")
        await self._ready.wait()  # what a crash left stored goes first
        response = await self.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    async def _signed_by_slack(self, request: web.Request) -> bool:
        """Whether Slack signed the request, less than 5 minutes ago. Slack sends UTF-8
        only: a body that is not is no request of Slack's."""
        if not self.signing_secret or not _readable(request.headers):
            return False
        try:
            body = (await request.read()).decode()
        except UnicodeDecodeError:
            return False
        return SignatureVerifier(self.signing_secret).is_valid_request(body, request.headers)

    def _refused(self, request: web.Request) -> None:
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        try:
            age = abs(time.time() - int(stamp))
        except ValueError:
            age = None
        if age is not None and age > MAX_AGE:
            reason = "request timestamp more than 5 minutes off (a replay?)"
        else:
            reason = "bad or missing signature"
        log.warning("refused a Slack request from %s: %s", request.remote, reason)
        details = {"path": request.path, "remote": request.remote or ""}
        self.door.refuse_unverified(self.name, reason, details)

    async def _failed(self, error: Exception, body: dict[str, Any]) -> BoltResponse | None:
        """Bolt's one error handler. A request no listener is for (an event type or a
        button steward has no use for) and one whose shape steward cannot use are
        acknowledged, so that Slack does not send them again; the second is set aside in
        the audit log. Any other failure stays a 500, with its traceback, and Slack sends
        the request again."""
        if isinstance(error, BoltUnhandledRequestError):
            log.info("ignored a Slack request steward has no use for: %s", delivery_id(body))
            return BoltResponse(status=200, body="")
        if isinstance(error, Unusable):
            self._set_aside(body, str(error))
            return BoltResponse(status=200, body="")
        log.error("could not take a Slack request (%s)", delivery_id(body), exc_info=error)
        return None

    def _set_aside(self, body: object, reason: str) -> None:
        self.door.unusable(self.name, delivery_id(body), reason)

    def _listen(self) -> None:
        self.app.error(self._failed)
        self.app.event("message")(self._on_message)
        self.app.event("app_mention")(self._on_mention)
        self.app.command(SLASH_COMMAND)(self._on_command)
        self.app.block_action(PRESSES)(self._on_press)
        self.app.view_submission(EDIT_VIEW)(self._on_edit_submitted)
        self.app.view_closed(EDIT_VIEW)(self._on_edit_closed)

    async def _on_message(
        self, body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]
    ) -> None:
        said = written(body, event)
        if said is None:
            return  # only what a person writes: not an edit, a deletion, a join
        if self._heard_before_upgrade(said):
            return
        bot_user = context.get("bot_user_id") or ""
        dm = said.channel_type == "im"
        inbound = Inbound(
            Sender(self.name, said.user),
            Conversation(said.channel, said.thread_ts).chat_id,
            self._delivered_to + said.message_id,
            # In a DM a mention of steward comes as this message alone (Slack sends no
            # app_mention there): read as a mention is.
            text=_to_steward(said.text, bot_user) if dm else from_slack(said.text).strip(),
            attachment=said.attachment,
        )
        if dm:  # the answer in the question's thread too
            await self._take(await self._answering(inbound, said, bot_user) or inbound)
            return
        if _mention(bot_user).search(said.text):
            return  # it comes as app_mention too: answered as that
        # In a channel, steward hears only the answer to what it asked there, typed; the
        # rest (a file or a message the asker shares there too) is not its to read:
        # neither stored nor answered, nor taking the answer's place.
        if inbound.attachment is not None:
            return
        if (answer := await self._answering(inbound, said, bot_user)) is not None:
            await self._take(answer)

    async def _on_mention(
        self, body: dict[str, Any], event: dict[str, Any], context: dict[str, Any]
    ) -> None:
        said = written(body, event)
        if said is None:
            return  # only what a person writes
        if self._heard_before_upgrade(said):
            return
        # An edit is mentioned again (or for the first time): the inbox takes a message
        # once, by its id, so only a message not answered before is answered now.
        bot_user = context.get("bot_user_id") or ""
        words = _to_steward(said.text, bot_user)
        conversation = Conversation(said.channel, said.thread_ts or said.ts)
        inbound = Inbound(
            Sender(self.name, said.user),
            conversation.chat_id,
            self._delivered_to + said.message_id,
            text=words,
            attachment=said.attachment,
        )
        # In a thread, an answer to what steward asked there, mentioning it; else, and at
        # the top of the channel always, a request, answered in the mention's thread.
        answer = await self._answering(inbound, said, bot_user) if said.thread_ts else None
        await self._take(answer or inbound)

    def _heard_before_upgrade(self, said: Written) -> bool:
        """Whether ``said`` was written before the last message a steward from before
        messages were kept by their ts stored: it may be stored under the id of the event
        that brought it, where its own id finds nothing, and the mention Slack sends for
        its edit, or a retry, would be answered again. It is not (as that steward
        answered no edit)."""
        until, at = self._by_event_id_until, said.written_at
        if until is None or at is None or at > until:
            return False
        log.info("not answered again: %s, from before the upgrade", said.message_id)
        return True

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        who = Sender(self.name, text(command, "user_id"), maybe_text(command, "user_name") or "")
        channel = text(command, "channel_id")
        inbound = Inbound(
            who,
            channel,
            f"{self._delivered_to}{COMMAND_ID_PREFIX}{text(command, 'trigger_id')}",
            text=_as_command(from_slack(maybe_text(command, "text") or "")),
            # The command's own way back, for 30 minutes: where steward is no member of
            # the conversation, the only way to tell its sender anything there.
            context={"response_url": maybe_text(command, "response_url") or ""},
            # Typed in a channel, it is its sender's alone, and so is the run it starts:
            # its later news follows its card to their DM (a user id is their DM). So in
            # a DM: it may be one with someone else, which steward cannot post in.
            news_to=who.user_id,
        )
        await self._take(inbound, ack)

    async def _on_press(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        container = maybe_part(body, "container")
        message = maybe_part(body, "message")
        # A press in a modal or on the App Home has no channel: steward puts no buttons there.
        channel = maybe_text(container, "channel_id") or text(part(body, "channel"), "id")
        thread = maybe_text(message, "thread_ts")
        if thread == maybe_text(message, "ts"):  # the card starts a thread: it is not in one
            thread = None
        trigger = text(body, "trigger_id")
        inbound = Inbound(
            sender(part(body, "user")),
            Conversation(channel, thread).chat_id,
            f"{self._delivered_to}{PRESS_ID_PREFIX}{trigger}",
            button=maybe_text(action, "value") or "",
            context={
                "channel": channel,
                "ts": maybe_text(container, "message_ts"),
                "trigger_id": trigger,
                # The press's own way back, as a command's: where steward left the channel.
                "response_url": maybe_text(body, "response_url") or "",
            },
        )
        await self._take(inbound, ack)

    async def _on_edit_submitted(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        form, who = edit_form(view, submitted=True), sender(part(body, "user"))
        inbound = Inbound(
            who,
            form.chat,
            f"{self._delivered_to}{FORM_ID_PREFIX}{form.view_id}",
            text=form.new_text,
            button=f"edited:{form.approval}",
        )
        refused = await self.door.edit_refused(form.approval, inbound)
        if refused is not None:  # decided or paused meanwhile: the form stays open, text kept
            error = as_typed_in_slack(refused)
            await ack(response_action="errors", errors={EDIT_BLOCK: error})
            return
        await self._take(inbound, ack)

    async def _on_edit_closed(
        self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]
    ) -> None:
        form = edit_form(view, submitted=False)
        inbound = Inbound(
            sender(part(body, "user")),
            form.chat,
            f"{self._delivered_to}{FORM_CLOSED_ID_PREFIX}{form.view_id}",
            button=f"keep:{form.approval}",
        )
        await self._take(inbound, ack)

    async def _take(self, inbound: Inbound, ack: AsyncAck | None = None) -> None:
        """Stores the delivery and queues its handling, then lets bolt acknowledge it
        once it is on disk; the handling goes first. A command that only shows
        something is answered first, and stored after (see ``take``)."""
        await take(self.outbox, self.queue, self.idle, inbound)
        await self.door.sync()
        if ack is not None:
            await ack()

    async def _handle(self, item: tuple[int, Inbound]) -> None:
        await answer(self.outbox, self.send, item)

    # -- sending -----------------------------------------------------------------------

    async def deliver(self, reply: Reply, reply_to: dict[str, Any] | None) -> None:
        """News about a run: to the conversation it came from, or to every operator."""
        for chat_id in news_chats(self.name, reply_to, self.operator_users):
            await self.send(chat_id, reply)

    async def send(self, chat_id: str, reply: Reply, answering: Inbound | None = None) -> None:
        """Sends ``reply`` to a conversation, by way of the ledger: it goes when Slack
        takes it."""
        await self.outbox.owe(chat_id, reply, answering)

    async def _send_owed(self, owed: Owed) -> None:
        """Sends what is left of a reply: its steps (see ``Steps``) not done before."""
        conversation = Conversation.of(owed.chat_id)
        reply, answering = owed.reply, owed.answering
        user = answering.sender.user_id if answering is not None else None
        answer_by = answering.context.get("response_url") if answering is not None else None
        steps = self.outbox.steps(owed)
        if reply.private and user is not None:
            for text in reply.texts:
                for piece in text_parts(as_typed_in_slack(text)):
                    tell = partial(self._tell_privately, conversation, user, piece, answer_by)
                    await steps.take(tell)
            return
        items = list(reply.items)
        # A slash command's answer in a channel is its sender's alone: what steward holds
        # of the business is not the channel's to read. Its texts are ephemeral there; its
        # cards, which an ephemeral message could not show decided, go to the sender's DM.
        # So is the answer to the answer to a question it asked (``_kept_private``).
        dm = None
        if user is not None and answering is not None and _private_in_channel(answering):
            dm = Conversation(user)
        cards_to_dm = sum(isinstance(item, Card) for item in items) if dm is not None else 0
        if reply.notice:
            if answering is not None and answering.button and user is not None:
                answer = partial(self._answer_press, conversation, user, reply.notice, answer_by)
                await steps.take(answer)
            else:
                items.append(reply.notice)
        # Where replies go when steward may not post in the conversation (a slash command
        # in a channel it is not in): the DM of whoever wrote, or of every operator; news
        # to one operator (each is sent their own) goes to no other.
        fallback = [user] if user is not None else self.operator_users
        if user is None and conversation.channel in self.operator_users:
            fallback = []
        posted = None  # the last message posted: where a question asked in a channel is
        for item in items:
            if isinstance(item, Card) and dm is not None and user is not None:
                if cards_to_dm:  # where the first goes, the sender is told where they are
                    said = _in_your_dm(cards_to_dm)
                    tell = partial(self._tell_privately, conversation, user, said, None, True)
                    await steps.take(tell)
                    cards_to_dm = 0
                shown = await steps.take(partial(self._post_card, dm, item, []))
                for outgoing in card_overflow(item):
                    await steps.take(partial(self._post_overflow, dm, shown, outgoing))
            elif isinstance(item, str):
                for text in text_parts(as_typed_in_slack(item)):
                    if dm is not None and user is not None:  # in the DM if not there:
                        # where it asks something, the answer can come there
                        post = partial(self._tell_privately, conversation, user, text, None, True)
                    else:
                        post = partial(
                            self._post,
                            conversation,
                            text_message(text, self.operator_users),
                            fallback,
                        )
                    posted = await steps.take(post) or posted
            elif isinstance(item, Card):
                card = partial(self._post_card, conversation, item, fallback)
                posted = await steps.take(card)
                for outgoing in card_overflow(item):  # what will not fit the card, whole
                    await steps.take(partial(self._post_overflow, conversation, posted, outgoing))
            elif isinstance(item, CardOutcome) and item.decided_elsewhere:
                await steps.take(partial(self._settle_where_shown, item))
            elif isinstance(item, CardOutcome):  # shown where the card is, or else here
                here = dm or conversation
                settle = partial(self._settle, here, item, answering, fallback)
                await steps.take(settle)
            elif isinstance(item, EditPrompt):
                form = await steps.take(
                    partial(self._open_edit_form, conversation, item, answering)
                )
                asked = replace(item, prompt=as_typed_in_slack(item.prompt))
                for part, outgoing in enumerate(
                    text_messages(asked.as_message, self.operator_users)
                ):
                    ask = partial(self._ask_in_chat, form, conversation, outgoing, fallback)
                    shown = await steps.take(ask)  # where no form opened
                    posted = shown if part == 0 and shown else posted  # the prompt's part
        if answering is not None:
            await self._note_where_asked(conversation, answering, posted)
            if dm is not None:
                await self._note_asked_privately(answering)

    async def _answer_press(
        self, conversation: Conversation, user: str, notice: str, answer_by: str | None
    ) -> None:
        """Tells the presser alone: in the conversation, by the press's ``response_url``
        where steward is no member of it, and in their DM where that is spent too."""
        try:
            for text in text_parts(as_typed_in_slack(notice)):
                await self._tell_privately(conversation, user, text, answer_by, dm_instead=True)
        except SendLater as exc:  # the card's update shows the outcome too
            log.warning("could not answer %s's press: %s", user, exc)

    async def _post_card(
        self, conversation: Conversation, card: Card, fallback: list[str]
    ) -> dict[str, Any]:
        """Posts a card (in each fallback user's DM, where steward may not post in the
        conversation) and remembers each copy, so that its outcome can replace them all:
        where the first went, whether it was decided while on its way (it shows that
        now), and every copy as ``copies``. The ledger down, remembering a copy waits for
        it: the card is not posted again."""
        copies = []
        for posted in await self._post_copies(conversation, card_message(card), fallback):
            channel, ts = posted["channel"], posted["ts"]
            decided = await self.cards.remember(card.approval_id, channel, ts)
            if decided is not None:  # while it was on its way
                settled = outcome_message(
                    CardOutcome(card.approval_id, decided), self.operator_users
                )
                try:
                    await self.cards.settle(
                        card.approval_id, [(channel, ts)], partial(self._update, settled)
                    )
                except SendLater as exc:  # posting it again would not help: it is posted
                    log.warning("could not show card %s its outcome: %s", card.approval_id, exc)
            copies.append({"channel": channel, "ts": ts, "decided": decided is not None})
        return {**copies[0], "copies": copies} if copies else {"decided": False}

    async def _post_overflow(
        self, conversation: Conversation, card: dict[str, Any] | None, outgoing: Outgoing
    ) -> None:
        """Posts what will not fit a card in the thread of each copy of the card; in
        the conversation when where the card went is not known (it went before a
        restart)."""
        if card is None or "copies" not in card:
            await self._post(conversation, outgoing)
            return
        for copy in card["copies"]:
            if not copy["decided"]:  # a DM copy's thread is its own, not the conversation's
                here = copy["channel"] == conversation.channel and conversation.thread_ts
                thread = conversation.thread_ts if here else copy["ts"]
                await self._post(Conversation(copy["channel"], thread), outgoing)

    async def _settle(
        self,
        conversation: Conversation,
        outcome: CardOutcome,
        answering: Inbound | None,
        fallback: list[str],
    ) -> None:
        """Updates every message showing the card — the pressed one, those in other
        conversations, those on other platforms: the outcome, and no more buttons."""
        settled = outcome_message(outcome, self.operator_users)
        pressed = answering.context if answering is not None else {}
        where = (pressed["channel"], pressed["ts"]) if pressed.get("ts") else None
        targets = await self.cards.to_settle(outcome.approval_id, outcome.text, where)
        elsewhere = partial(self.settled_here, outcome) if self.settled_here else None
        answer_by = pressed.get("response_url")
        by_press = {where: answer_by} if where is not None and answer_by else {}
        update = partial(self._update, settled, replace_by=by_press)
        await self.cards.settle(outcome.approval_id, targets, update, elsewhere)
        if not targets:
            await self._post(conversation, settled, fallback)

    async def settle(self, outcome: CardOutcome) -> None:
        await settle_by_outbox(self.outbox, outcome)

    async def shows(self, approval_id: str) -> bool:
        return await self.cards.showing(approval_id)

    async def _settle_where_shown(self, outcome: CardOutcome) -> None:
        settled = outcome_message(outcome, self.operator_users)
        taken = await self.cards.take(outcome.approval_id, outcome.text)
        await self.cards.settle(outcome.approval_id, taken, partial(self._update, settled))

    async def _update(
        self,
        settled: Outgoing,
        message: tuple[str, str],
        replace_by: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        """Shows ``settled`` in place of a card's message; where steward is no member of
        its conversation any more, by the ``response_url`` of a press on it
        (``replace_by``), if any. Raises ``SendLater`` when Slack cannot take it now
        (after the client's own retries)."""
        channel, ts = message
        try:
            await self.client.chat_update(
                channel=channel, ts=ts, text=settled.text, blocks=settled.blocks
            )
        except SlackApiError as exc:
            if _server_side(exc):
                raise _later(exc) from exc
            pressed = (replace_by or {}).get(message)
            if _error(exc) in NO_ENTRY and pressed:
                await self._respond(Conversation(channel), pressed, settled, replace=True)
                return
            log.warning("could not update card %s in %s: %s", ts, channel, _error(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(exc) from exc

    async def _open_edit_form(
        self, conversation: Conversation, prompt: EditPrompt, answering: Inbound | None
    ) -> bool:
        """The Edit modal, holding the draft; False when the press is too old to open one
        (Slack allows 3 s) or the draft will not fit, and the prompt goes to chat."""
        trigger = answering.context.get("trigger_id") if answering is not None else None
        view = edit_view(prompt, conversation.chat_id)
        if answering is None or not trigger or view is None:
            return False
        try:
            await self.client.views_open(trigger_id=trigger, view=view)
        except SlackApiError as exc:
            log.info("could not open the Edit form (%s); asking in chat", _error(exc))
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not reach Slack to open the Edit form (%r); asking in chat", exc)
            return False
        # The form brings the new text: the next message in chat is not it.
        await self.door.form_opened(answering, prompt.approval_id)
        return True

    async def _ask_in_chat(
        self, form: bool | None, conversation: Conversation, outgoing: Outgoing, fallback: list[str]
    ) -> dict[str, Any] | None:
        """A part of the Edit prompt as a message, unless its form opened (None: not
        known after a restart, and asked again)."""
        return None if form else await self._post(conversation, outgoing, fallback)

    async def _post(
        self, conversation: Conversation, outgoing: Outgoing, fallback: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """Posts one message; where steward may not post, to the fallback users' DMs.
        Where it went (the first DM's), or None where it could not go."""
        posted = await self._post_copies(conversation, outgoing, fallback)
        return posted[0] if posted else None

    async def _post_copies(
        self, conversation: Conversation, outgoing: Outgoing, fallback: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Posts one message, or, where steward may not post, one to each fallback user's
        DM; where each went."""
        await self._bucket(conversation.channel).take()
        try:
            response = await self.client.chat_postMessage(
                channel=conversation.channel,
                thread_ts=conversation.thread_ts,
                text=outgoing.text,
                blocks=outgoing.blocks,
                mrkdwn=outgoing.blocks is not None,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            error = _error(exc)
            if error in NO_ENTRY and fallback:
                log.info("cannot post in %s (%s): to the DM instead", conversation.channel, error)
                return [
                    posted
                    for user in fallback
                    for posted in await self._post_copies(Conversation(user), outgoing)
                ]
            if _server_side(exc):  # after the client's own retries: again later
                raise _later(exc) from exc
            log.error("Slack refused a message to %s: %s", conversation.channel, error)
            await self.door.message_refused(self.name, conversation.chat_id, error)
            return []
        except (aiohttp.ClientError, TimeoutError) as exc:  # after the client's own retries
            raise _unreachable(exc) from exc
        return [{"channel": response["channel"], "ts": response["ts"]}]

    async def _note_where_asked(
        self, conversation: Conversation, answering: Inbound, posted: dict[str, Any] | None
    ) -> None:
        """A reply that asks its sender something at the top of a channel or a DM: its
        message's thread answers the question too; one that went to their DM instead
        (steward may not post in the conversation): that DM answers it (see
        ``_may_answer``)."""
        here = posted is not None and posted["channel"] == conversation.channel
        if posted is None or (here and conversation.thread_ts is not None):
            return
        if (asked := await self.door.question_to(answering)) is None:
            return
        if not here:
            user = answering.sender.user_id
            moved = {"chat": conversation.chat_id, "asked": asked, "ts": posted["ts"]}
            await self.memory.set(self._moved_key(posted["channel"], user), moved, QUESTION_TTL)
        else:
            where = {"ts": posted["ts"]}
            await self.memory.add(self._asked_key(asked), where, QUESTION_TTL)

    async def _answering(self, inbound: Inbound, said: Written, bot_user: str) -> Inbound | None:
        """``inbound`` as the answer to the question steward waits for in one of the
        conversations it may answer (see ``_may_answer``); None when none waits."""
        for chat_id in await self._may_answer(inbound, said, bot_user):
            answer = replace(inbound, chat_id=chat_id)
            if await self.door.awaits_answer(answer):
                return await self._kept_private(answer)
        return None

    async def _note_asked_privately(self, answering: Inbound) -> None:
        """A reply only its sender saw that asks them something (a ``/steward`` command's
        in a channel): the answer they type there is theirs alone too (``_kept_private``)."""
        if (asked := await self.door.question_to(answering)) is not None:
            await self.memory.set(self._private_key(asked), {"asked": asked}, QUESTION_TTL)

    async def _kept_private(self, answer: Inbound) -> Inbound:
        """``answer``, to a question steward asked its sender privately in a channel: as
        private as the request that asked it. What follows only its sender sees, its
        cards go to their DM, and so does the later news of a run it starts; the channel
        sees no more than the words they typed."""
        asked = await self.door.question_to(answer)
        if asked is None or await self.memory.get(self._private_key(asked)) is None:
            return answer
        context = {**answer.context, PRIVATE: True}
        return replace(answer, context=context, news_to=answer.sender.user_id)

    async def _may_answer(self, inbound: Inbound, said: Written, bot_user: str) -> list[str]:
        """The conversations a message in a channel or a DM may answer a question of
        steward's in: where it was written; in the thread of the message that asked a
        question at the top, the top; and, in a DM (or the thread) where a question from
        a conversation steward may not post in was asked instead, that conversation."""
        channel, thread, dm = said.channel, said.thread_ts, said.channel_type == "im"
        chats = [Conversation(channel, thread).chat_id]
        moved = await self.memory.get(self._moved_key(channel, said.user)) if dm else None
        if moved is not None and thread in (None, moved["ts"]):
            asked = await self.door.question_to(replace(inbound, chat_id=moved["chat"]))
            if asked == moved["asked"]:
                chats.append(moved["chat"])
        # A thread of steward's (a message event names whose; an app_mention may not).
        if thread and said.parent_user_id in (None, bot_user):
            in_channel = Conversation(channel).chat_id
            asked = await self.door.question_to(replace(inbound, chat_id=in_channel))
            where = await self.memory.get(self._asked_key(asked)) if asked else None
            if where is not None and where.get("ts") == thread:
                chats.append(in_channel)
        return chats

    def _asked_key(self, asked: str) -> str:
        return f"{self.name}:asked-in:{asked}"

    def _moved_key(self, dm: str, user: str) -> str:
        return f"{self.name}:asked-for:{dm}:{user}"

    def _private_key(self, asked: str) -> str:
        return f"{self.name}:asked-privately:{asked}"

    async def _tell_privately(
        self,
        conversation: Conversation,
        user: str,
        text: str,
        answer_by: str | None = None,
        dm_instead: bool = False,
    ) -> dict[str, Any] | None:
        """Posts a part of a text (``text_parts``) that only ``user`` sees (ephemeral) in
        the conversation. Where steward is no member of it: by the ``response_url`` of
        the command or the press being answered (``answer_by``), if it still takes it;
        else, ``dm_instead``, in the user's DM (where they can answer a question steward
        could not ask where they wrote). Where it went when that was the DM."""
        error = await self._ephemeral(
            conversation, user, ephemeral_message(text, self.operator_users)
        )
        if error is None:
            return None
        if error in NO_ENTRY and answer_by:
            outgoing = ephemeral_message(text, self.operator_users)
            if await self._respond(conversation, answer_by, outgoing):
                return None
        elif error not in NO_ENTRY or not dm_instead:
            await self._refused_to(conversation, user, error)
        if not dm_instead:
            return None
        log.info("cannot tell %s in %s (%s): in the DM instead", user, conversation.channel, error)
        return await self._post(Conversation(user), text_message(text, self.operator_users))

    async def _ephemeral(
        self, conversation: Conversation, user: str, outgoing: Outgoing
    ) -> str | None:
        """Posts ``outgoing`` for ``user`` alone in the conversation: None once posted,
        or Slack's refusal; raises ``SendLater`` when Slack cannot take it now."""
        await self._bucket(conversation.channel).take()
        try:
            await self.client.chat_postEphemeral(
                channel=conversation.channel,
                user=user,
                thread_ts=conversation.thread_ts,
                text=outgoing.text,
            )
        except SlackApiError as exc:
            if _server_side(exc):
                raise _later(exc) from exc
            return _error(exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(exc) from exc
        return None

    async def _refused_to(self, conversation: Conversation, user: str, error: str) -> None:
        log.warning("Slack refused a message to %s in %s: %s", user, conversation.channel, error)
        await self.door.message_refused(self.name, conversation.chat_id, error)

    async def _respond(
        self,
        conversation: Conversation,
        response_url: str,
        outgoing: Outgoing,
        replace: bool = False,
    ) -> bool:
        """An ephemeral message by a command's or a press's ``response_url``, or, with
        ``replace``, the pressed message replaced by ``outgoing``; whether Slack took it."""
        webhook = AsyncWebhookClient(
            response_url, session=self.client.session, retry_handlers=self.client.retry_handlers
        )
        try:
            response = await webhook.send(
                text=outgoing.text,
                blocks=outgoing.blocks,
                response_type=None if replace else "ephemeral",
                replace_original=replace or None,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(exc) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise SendLater(f"Slack answered {response.status_code} at a response_url")
        if response.status_code != 200:  # expired (30 minutes), or used five times
            log.warning("could not answer at a response_url: %s", response.body)
            refused = f"response_url answered {response.status_code}: {response.body}"
            await self.door.message_refused(self.name, conversation.chat_id, refused)
            return False
        return True

    def _bucket(self, channel: str) -> Bucket:
        bucket = self._pacing.get(channel)
        if bucket is None:
            if len(self._pacing) > 10_000:
                self._pacing.clear()  # idle buckets are full anyway; a fresh one is the same
            # about one message a second per channel, as Slack asks; a short burst allowed
            bucket = self._pacing[channel] = Bucket(rate=1.0, burst=3)
        return bucket


class _SocketHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler; a request bolt itself would fail on (``unreadable``) is
    acknowledged and set aside instead, so that Slack does not send it again."""

    def __init__(
        self,
        app: AsyncApp,
        app_token: str,
        set_aside: Callable[[object, str], None],
    ) -> None:
        super().__init__(app, app_token)
        self.set_aside = set_aside

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        if (reason := unreadable(req.payload)) is not None:
            self.set_aside(req.payload, reason)
            await client.send_socket_mode_response(SocketModeResponse(req.envelope_id))
            return
        await super().handle(client, req)


def _readable(headers: Mapping[str, str]) -> bool:
    """Whether slack_sdk's SignatureVerifier can check the signature headers without
    failing: a timestamp, if any, of ASCII digits, and a signature of ASCII."""
    stamp = headers.get("X-Slack-Request-Timestamp")
    number = stamp is None or (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12)
    return number and headers.get("X-Slack-Signature", "").isascii()


def _parsed(body: str, content_type: str) -> dict[str, Any] | None:
    """A request's body as bolt reads it (JSON, a form, or a form's JSON ``payload``);
    None when it is not an object."""
    try:
        parsed = parse_body(body, content_type)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _in_your_dm(cards: int) -> str:
    """Tells the sender of a command in a channel where its cards went."""
    return f"{'The card is' if cards == 1 else f'The {cards} cards are'} in your DM with steward."


def _private_in_channel(inbound: Inbound) -> bool:
    """Whether ``inbound`` is its sender's alone in a channel (a conversation of more than
    steward and its sender): a slash command typed there, or the answer to a question one
    asked (``SlackChannel._kept_private``)."""
    channel = Conversation.of(inbound.chat_id).channel
    command = _kind(inbound.external_id) == COMMAND_ID_PREFIX
    return (command or bool(inbound.context.get(PRIVATE))) and not _is_dm(channel)


def _kind(delivery: str) -> str:
    """What a delivery is, by its id: one of ``DELIVERY_KINDS``, after the app's bot id
    (a delivery stored before apps were told apart has none)."""
    first, _, rest = delivery.partition(":")
    return f"{first}:" if f"{first}:" in DELIVERY_KINDS else rest.partition(":")[0] + ":"


def _is_dm(channel: str) -> bool:
    """Whether ``channel`` is a DM (its id starts with D)."""
    return channel.startswith("D")


def _as_command(text: str) -> str:
    """What follows ``/steward``: a command when it names one (``/steward runs``), even
    while steward waits for an answer — the slash was typed; else words (an answer)."""
    text = text.strip()
    name = text.split(maxsplit=1)[0].lstrip("/").lower() if text else "help"
    return "/" + (text.lstrip("/") or "help") if name in COMMAND_NAMES else text


def from_slack(text: str) -> str:
    """Text as the person wrote it: Slack sends links, addresses and mentions wrapped
    (``<mailto:jane@acme.com|jane@acme.com>``) and ``&``, ``<``, ``>`` escaped."""

    def unwrap(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith(("@", "#")):  # a person or a channel: its name where given
            return target[0] + label if label else target
        if target.startswith("!"):  # @here, @channel, a date
            return label or "@" + target[1:].split("^")[0]
        address = target.removeprefix("mailto:")
        if not label or label.rstrip("/") in (address.rstrip("/"), _bare(address).rstrip("/")):
            return label or address  # what was typed, and Slack made a link of it
        return f"{label} ({address})"  # a link with its own words: both, or the link is lost

    text = re.sub(r"<([^<>]*)>", unwrap, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _bare(address: str) -> str:
    """An address as typed before Slack made a link of it: without ``http://``."""
    return re.sub(r"^https?://", "", address, flags=re.IGNORECASE)


def _server_side(exc: SlackApiError) -> bool:
    """Slack could not take the request now (a 5xx, still rate limited after the client
    waited, ``NOT_NOW``), rather than refusing it."""
    return exc.response.status_code >= 500 or _error(exc) in NOT_NOW


def _unreachable(exc: Exception) -> SendLater:
    """What a request that could not reach Slack (after the client's own tries) is."""
    return SendLater(f"cannot reach Slack: {exc!r}")


def _later(exc: SlackApiError) -> SendLater:
    """What a request Slack could not take now (``_server_side``) is: one to try later."""
    return SendLater(f"Slack answered {exc.response.status_code}: {_error(exc)}")


def _to_steward(text: str, bot_user: str) -> str:
    """What a message that mentions steward (``bot_user``) says to it: its text as
    written, without the mentions."""
    return from_slack(_mention(bot_user).sub("", text)).strip()


def _mention(user: str) -> re.Pattern[str]:
    """``<@U…>`` for ``user``, with or without a label (``<@U…|name>``)."""
    return re.compile(rf"<@{re.escape(user)}(?:\|[^>]*)?>")


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error") or exc)
