"""A local fake of the Slack platform, for driving the real slack-bolt and slack_sdk.

The fake plays both sides of Slack on 127.0.0.1 (a free port): the Web API an app calls, and
the platform that calls the app (Events API, interactivity and slash commands, over signed
HTTP or over Socket Mode). Tests and benchmarks run an unmodified ``AsyncWebClient``,
``SocketModeClient`` or bolt ``AsyncApp`` against it::

    async with FakeSlackAPI() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
        app = AsyncApp(client=client, signing_secret=slack.signing_secret)
        ...                                          # serve app.web_app() on a free port
        event = slack.message_event("U0ALICE", "hello")   # what Slack would send
        status, _ = await slack.post_event(app_url, event)   # signed as Slack signs
        await slack.wait_for(lambda s: bool(s.messages("U0ALICE")[1:]))  # the bot answered

What it does, as Slack does:

* Web API methods are served at ``{root}/api/{method}`` (:attr:`FakeSlackAPI.base_url`):
  ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
  ``views.open`` and ``apps.connections.open``. Parameters may come as a JSON body, a form
  body (where ``blocks`` and ``view`` are JSON strings) or the query string, which is how
  slack_sdk sends ``auth.test`` and ``apps.connections.open``; the token as
  ``Authorization: Bearer`` or a ``token`` parameter. Errors are HTTP 200
  ``{"ok": false, "error": ...}`` (``not_authed``, ``invalid_auth``,
  ``not_allowed_token_type`` for a bot token where the app token belongs or the other way
  round), except an unknown method (404 ``unknown_method``) and rate limiting (429).
* ``chat.postMessage`` to a user id posts into that user's DM (a stable ``D`` id, see
  :meth:`FakeSlackAPI.dm_channel`). Messages keep their state: blocks get a ``block_id``
  and buttons an ``action_id`` where they lack one (as Slack fills them in), thread
  parents get ``reply_count``/``latest_reply``, and ``chat.update`` edits only the bot's
  own messages. As Slack documents for ``chat.update``, a ``blocks`` field left out keeps
  the previous blocks and ``blocks=[]`` removes them; text left out keeps the text.
* Block Kit is validated (the usual limits: 50 blocks in a message and 100 in a modal,
  text lengths, 10 section fields, 10 context elements, button text/value/style,
  ``action_id`` length and uniqueness in an actions block, confirm dialogs,
  ``plain_text_input`` lengths, known block types only). Failures answer
  ``invalid_blocks`` with ``errors`` of the form ``"<reason> [json-pointer:/blocks/0/...]"``
  for messages, and ``invalid_arguments`` with ``response_metadata.messages`` for
  ``views.open``; the reasons are worded after Slack's but are not a copy of them.
* A ``trigger_id`` is issued by the payload builders and may open one view, within
  :attr:`FakeSlackAPI.trigger_ttl` (3 s) of being issued: ``invalid_trigger_id`` (never
  issued), ``exchanged_trigger_id`` (used already) or ``expired_trigger_id`` (too old).
* Socket Mode: ``apps.connections.open`` hands out ``ws://…/link/?ticket=…`` on the same
  server; a connection is greeted with ``{"type": "hello", ...}``, WebSocket pings are
  answered by aiohttp, and :meth:`FakeSlackAPI.socket_send` sends an envelope and waits for
  the client's ack. ``retry_attempt``/``retry_reason`` are only in ``events_api``
  envelopes, and ``accepts_response_payload`` is true for slash commands, view submissions
  and block suggestions, as on Slack.

What it adds for tests: every Web API request is a :class:`Call` in
:attr:`FakeSlackAPI.calls` (arrival time, decoded parameters, status, the answer);
:meth:`FakeSlackAPI.rate_limit` makes a method answer 429 with ``Retry-After``, and
:meth:`FakeSlackAPI.fail` makes it answer a server error;
payload builders (:meth:`~FakeSlackAPI.message_event`, :meth:`~FakeSlackAPI.mention_event`,
:meth:`~FakeSlackAPI.block_action`, :meth:`~FakeSlackAPI.slash_command`,
:meth:`~FakeSlackAPI.view_submission`, :meth:`~FakeSlackAPI.view_closed`) return what Slack
would send, with fresh ids; :meth:`~FakeSlackAPI.post_event`,
:meth:`~FakeSlackAPI.post_interaction` and :meth:`~FakeSlackAPI.post_command` deliver them
to an app's HTTP endpoint, signed with :attr:`FakeSlackAPI.signing_secret` (or not, for
negative tests). ``response_url`` points at ``{root}/response/{id}``: posts there are kept
in :attr:`FakeSlackAPI.responses` and act as on Slack (``replace_original``,
``delete_original``, ``response_type`` ``in_channel`` or ephemeral).

Not modelled: channel membership, users' profiles, attachments, files, ``views.update`` and
the other methods, response_url expiry, the HTTP 3 s timeout of event delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeAlias
from urllib.parse import urlencode

from aiohttp import ClientSession, ClientTimeout, WSCloseCode, WSMsgType, web

__all__ = [
    "Call",
    "Delivery",
    "FakeSlackAPI",
    "ResponseURLPost",
    "SlackAPIError",
    "SocketEnvelope",
    "validate_blocks",
    "validate_view",
]

JSONDict: TypeAlias = dict[str, Any]
Handler: TypeAlias = Callable[[JSONDict], Awaitable[JSONDict]]

MAX_TEXT: Final = 40_000
MAX_MESSAGE_BLOCKS: Final = 50
# Of text in a message's blocks, all told: Slack refuses more with msg_blocks_too_long.
# The limit is undocumented; Slack's staff gave 12,000 (slackapi/bolt-js#2509).
MAX_BLOCK_TEXT: Final = 12_000
MAX_MODAL_BLOCKS: Final = 100
TRIGGER_TTL: Final = 3.0
SLACKBOT_AGENT: Final = "Slackbot 1.0 (+https://api.slack.com/robots)"

BLOCK_TYPES: Final = frozenset(
    {"section", "header", "context", "actions", "divider", "input", "rich_text", "image"}
)
# Form-encoded requests carry these as JSON strings.
_JSON_PARAMS: Final = ("blocks", "attachments", "view", "metadata")
_CHANNEL_RE: Final = re.compile(r"[CDG][A-Z0-9]{2,}")
_USER_RE: Final = re.compile(r"[UW][A-Z0-9]{2,}")
_ID_CHARS: Final = string.ascii_uppercase + string.digits
_BLOCK_ID_CHARS: Final = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------
# Records


class SlackAPIError(Exception):
    """An error answer of the Web API: ``{"ok": false, "error": error, **extra}``."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = dict(headers or {})
        self.extra = extra

    def payload(self) -> JSONDict:
        return {"ok": False, "error": self.error, **self.extra}


@dataclass(frozen=True)
class Call:
    """One Web API request. ``at`` is the arrival time (``time.monotonic()``); ``params``
    are the decoded parameters without the token; ``response`` is the JSON answered."""

    method: str
    params: JSONDict
    at: float
    status: int
    response: JSONDict

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class ResponseURLPost:
    """A POST to a ``response_url`` the fake handed out."""

    id: str
    body: JSONDict
    at: float


@dataclass(frozen=True)
class Delivery:
    """A request the fake made to an app (:meth:`FakeSlackAPI.post_event` and friends)."""

    kind: str  # "event", "interaction" or "command"
    url: str
    body: str
    headers: dict[str, str]
    status: int
    text: str
    at: float


@dataclass
class SocketEnvelope:
    """An envelope sent over Socket Mode, with the client's ack once it came."""

    envelope: JSONDict
    sent_at: float
    ack: JSONDict | None = None
    acked_at: float | None = None

    @property
    def envelope_id(self) -> str:
        return str(self.envelope["envelope_id"])


@dataclass
class _Trigger:
    user: str
    issued_at: float
    used: bool = False


@dataclass
class _ResponseTarget:
    channel: str
    user: str
    message_ts: str | None
    thread_ts: str | None


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    ticket: str
    greeted: bool = False


# --------------------------------------------------------------------------------------
# Block Kit validation


class _BlockChecker:
    """Collects Block Kit errors, worded like Slack's: ``"<reason> [json-pointer:<ptr>]"``."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._block_ids: set[str] = set()

    def error(self, reason: str, pointer: str) -> None:
        self.errors.append(f"{reason} [json-pointer:{pointer}]")

    def string(
        self, value: Any, pointer: str, limit: int, *, required: bool = False, minimum: int = 0
    ) -> None:
        if value is None:
            if required:
                self.error("must provide a string", pointer)
            return
        if not isinstance(value, str):
            self.error("must provide a string", pointer)
        elif len(value) > limit:
            self.error(f"must be less than {limit + 1} characters", pointer)
        elif len(value) < minimum:
            self.error(f"must be more than {minimum - 1} characters", pointer)

    def text(
        self, obj: Any, pointer: str, limit: int, *, plain: bool = False, required: bool = True
    ) -> None:
        """A text object: ``{"type": "plain_text" | "mrkdwn", "text": ...}``."""
        if obj is None:
            if required:
                self.error("must provide an object", pointer)
            return
        if not isinstance(obj, dict):
            self.error("must provide an object", pointer)
            return
        kinds = ("plain_text",) if plain else ("plain_text", "mrkdwn")
        if obj.get("type") not in kinds:
            self.error(f"must be a valid enum value ({' or '.join(kinds)})", f"{pointer}/type")
        self.string(obj.get("text"), f"{pointer}/text", limit, required=True, minimum=1)

    def array(self, value: Any, pointer: str, limit: int, *, minimum: int = 1) -> list[Any]:
        if not isinstance(value, list):
            self.error("must provide an array", pointer)
            return []
        if len(value) > limit:
            self.error(f"no more than {limit} items allowed", pointer)
        elif len(value) < minimum:
            self.error(f"must provide at least {minimum} items", pointer)
        return value

    def blocks(self, blocks: Any, pointer: str, limit: int) -> None:
        for index, block in enumerate(self.array(blocks, pointer, limit, minimum=0)):
            self.block(block, f"{pointer}/{index}")

    def block(self, block: Any, pointer: str) -> None:
        if not isinstance(block, dict):
            self.error("must provide an object", pointer)
            return
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            self.error(f"unsupported block type {kind!r}", f"{pointer}/type")
            return
        block_id = block.get("block_id")
        if block_id is not None:
            self.string(block_id, f"{pointer}/block_id", 255, minimum=1)
            if isinstance(block_id, str):
                if block_id in self._block_ids:
                    self.error(f"duplicate block_id {block_id!r}", f"{pointer}/block_id")
                self._block_ids.add(block_id)
        getattr(self, f"_{kind}")(block, pointer)

    def _section(self, block: JSONDict, pointer: str) -> None:
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            self.error("must provide either text or fields", pointer)
        self.text(text, f"{pointer}/text", 3000, required=False)
        if fields is not None:
            for index, item in enumerate(self.array(fields, f"{pointer}/fields", 10)):
                self.text(item, f"{pointer}/fields/{index}", 2000)
        if block.get("accessory") is not None:
            self.element(block["accessory"], f"{pointer}/accessory")

    def _header(self, block: JSONDict, pointer: str) -> None:
        self.text(block.get("text"), f"{pointer}/text", 150, plain=True)

    def _context(self, block: JSONDict, pointer: str) -> None:
        for index, item in enumerate(self.array(block.get("elements"), f"{pointer}/elements", 10)):
            at = f"{pointer}/elements/{index}"
            if isinstance(item, dict) and item.get("type") == "image":
                self._image_fields(item, at)
            else:
                self.text(item, at, 3000)

    def _actions(self, block: JSONDict, pointer: str) -> None:
        seen: set[str] = set()
        for index, item in enumerate(self.array(block.get("elements"), f"{pointer}/elements", 25)):
            at = f"{pointer}/elements/{index}"
            self.element(item, at)
            action_id = item.get("action_id") if isinstance(item, dict) else None
            if isinstance(action_id, str):
                if action_id in seen:
                    self.error(f"duplicate action_id {action_id!r}", f"{at}/action_id")
                seen.add(action_id)

    def _divider(self, block: JSONDict, pointer: str) -> None:
        pass

    def _input(self, block: JSONDict, pointer: str) -> None:
        self.text(block.get("label"), f"{pointer}/label", 2000, plain=True)
        self.text(block.get("hint"), f"{pointer}/hint", 2000, plain=True, required=False)
        if block.get("element") is None:
            self.error("must provide an object", f"{pointer}/element")
        else:
            self.element(block["element"], f"{pointer}/element")

    def _rich_text(self, block: JSONDict, pointer: str) -> None:
        self.array(block.get("elements"), f"{pointer}/elements", 1000, minimum=0)

    def _image(self, block: JSONDict, pointer: str) -> None:
        self._image_fields(block, pointer)
        self.text(block.get("title"), f"{pointer}/title", 2000, plain=True, required=False)

    def _image_fields(self, item: JSONDict, pointer: str) -> None:
        if item.get("image_url") is None and item.get("slack_file") is None:
            self.error("must provide either image_url or slack_file", pointer)
        self.string(item.get("image_url"), f"{pointer}/image_url", 3000, minimum=1)
        self.string(item.get("alt_text"), f"{pointer}/alt_text", 2000, required=True, minimum=1)

    def element(self, item: Any, pointer: str) -> None:
        if not isinstance(item, dict):
            self.error("must provide an object", pointer)
            return
        if not isinstance(item.get("type"), str):
            self.error("must provide a string", f"{pointer}/type")
            return
        self.string(item.get("action_id"), f"{pointer}/action_id", 255, minimum=1)
        if item.get("confirm") is not None:
            self.confirm(item["confirm"], f"{pointer}/confirm")
        if item["type"] == "button":
            self.text(item.get("text"), f"{pointer}/text", 75, plain=True)
            self.string(item.get("value"), f"{pointer}/value", 2000)
            self.string(item.get("url"), f"{pointer}/url", 3000)
            self.style(item.get("style"), f"{pointer}/style")
        elif item["type"] == "plain_text_input":
            self._plain_text_input(item, pointer)

    def _plain_text_input(self, item: JSONDict, pointer: str) -> None:
        max_length = item.get("max_length", 3000)
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            self.error("must provide an integer", f"{pointer}/max_length")
            max_length = 3000
        elif not 1 <= max_length <= 3000:
            self.error("must be between 1 and 3000", f"{pointer}/max_length")
            max_length = 3000
        min_length = item.get("min_length", 0)
        if isinstance(min_length, bool) or not isinstance(min_length, int):
            self.error("must provide an integer", f"{pointer}/min_length")
        elif not 0 <= min_length <= 3000:
            self.error("must be between 0 and 3000", f"{pointer}/min_length")
        self.string(item.get("initial_value"), f"{pointer}/initial_value", max_length)
        self.text(item.get("placeholder"), f"{pointer}/placeholder", 150, required=False)

    def style(self, value: Any, pointer: str) -> None:
        if value is not None and value not in ("primary", "danger"):
            self.error("must be a valid enum value (primary or danger)", pointer)

    def confirm(self, obj: Any, pointer: str) -> None:
        if not isinstance(obj, dict):
            self.error("must provide an object", pointer)
            return
        self.text(obj.get("title"), f"{pointer}/title", 100, plain=True)
        self.text(obj.get("text"), f"{pointer}/text", 300)
        self.text(obj.get("confirm"), f"{pointer}/confirm", 30, plain=True)
        self.text(obj.get("deny"), f"{pointer}/deny", 30, plain=True)
        self.style(obj.get("style"), f"{pointer}/style")


def validate_blocks(
    blocks: Any, *, limit: int = MAX_MESSAGE_BLOCKS, pointer: str = "/blocks"
) -> list[str]:
    """The Block Kit errors of a ``blocks`` array (empty when it is valid)."""
    checker = _BlockChecker()
    checker.blocks(blocks, pointer, limit)
    return checker.errors


def validate_view(view: Any) -> list[str]:
    """The errors of a modal ``view`` for ``views.open`` (empty when it is valid)."""
    checker = _BlockChecker()
    if not isinstance(view, dict):
        checker.error("must provide an object", "/view")
        return checker.errors
    if view.get("type") != "modal":
        checker.error("must be a valid enum value (modal)", "/view/type")
    checker.text(view.get("title"), "/view/title", 24, plain=True)
    checker.text(view.get("submit"), "/view/submit", 24, plain=True, required=False)
    checker.text(view.get("close"), "/view/close", 24, plain=True, required=False)
    checker.string(view.get("private_metadata"), "/view/private_metadata", 3000)
    checker.string(view.get("callback_id"), "/view/callback_id", 255)
    checker.string(view.get("external_id"), "/view/external_id", 255)
    blocks = view.get("blocks")
    checker.blocks(blocks, "/view/blocks", MAX_MODAL_BLOCKS)
    has_input = isinstance(blocks, list) and any(
        isinstance(b, dict) and b.get("type") == "input" for b in blocks
    )
    if has_input and view.get("submit") is None:
        checker.error("must provide submit when the view has input blocks", "/view/submit")
    return checker.errors


# --------------------------------------------------------------------------------------
# The server


class FakeSlackAPI:
    """A fake Slack (Web API, Socket Mode, and the platform's requests); see the module
    docstring."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-0001-fake-bot-token",
        app_token: str = "xapp-1-A0APP-0001-fake-app-token",
        signing_secret: str = "fake-signing-secret",
        verification_token: str = "fake-verification-token",
        team_id: str = "T0001",
        team_domain: str = "steward",
        team_name: str = "Steward",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        bot_name: str = "steward",
        app_id: str = "A0APP",
    ) -> None:
        if not bot_token.startswith("xoxb-"):
            raise ValueError(f"a bot token starts with xoxb-: {bot_token!r}")
        if not app_token.startswith("xapp-"):
            raise ValueError(f"an app-level token starts with xapp-: {app_token!r}")
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.verification_token = verification_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.app_id = app_id
        self.trigger_ttl = TRIGGER_TTL
        # Channels the bot is not a member of: chat.postMessage, chat.postEphemeral and
        # chat.update there are not_in_channel.
        self.outside: set[str] = set()
        """Seconds a trigger_id stays valid (Slack: 3); tests may shorten it."""
        self.user_names: dict[str, str] = {}
        """Display names of users in payloads (default: the id in lower case)."""
        self.channel_names: dict[str, str] = {}
        """Names of channels in payloads (default: "directmessage" for DMs, else the id)."""

        self.calls: list[Call] = []
        self.ephemerals: list[JSONDict] = []
        self.views: dict[str, JSONDict] = {}
        self.responses: list[ResponseURLPost] = []
        self.deliveries: list[Delivery] = []
        self.envelopes: list[SocketEnvelope] = []
        self.socket_messages: list[str] = []
        """Text frames from Socket Mode clients that were not acks of an envelope."""
        self.socket_connects = 0
        """How many Socket Mode connections were accepted so far."""

        self._channels: dict[str, list[JSONDict]] = {}
        self._by_ts: dict[tuple[str, str], JSONDict] = {}
        self._versions: dict[tuple[str, str], list[JSONDict]] = {}
        self._dms: dict[str, str] = {}
        self._send_times: dict[str, list[float]] = {}
        self._rate_limits: dict[str, tuple[int, int]] = {}
        self._failures: dict[str, tuple[int, int]] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._tickets: set[str] = set()
        self._sockets: list[_Socket] = []
        self._acks: dict[str, asyncio.Future[JSONDict]] = {}
        self._envelopes_by_id: dict[str, SocketEnvelope] = {}
        self._last_ts = 0
        self._counter = 0
        self._trigger_prefix = 1_000_000_000 + secrets.randbelow(9_000_000_000)
        self._changed_event = asyncio.Event()
        self._stopping = False
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._session: ClientSession | None = None
        self._methods: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "apps.connections.open": self._apps_connections_open,
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 on a free port (see :attr:`root`)."""
        if self._runner is not None:
            raise RuntimeError("FakeSlackAPI is already running")
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/link/", self._handle_link)
        app.router.add_post("/response/{id}", self._handle_response_url)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._stopping = False
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Close Socket Mode connections (1001 going away) and shut the server down. Close
        Socket Mode clients first, or they keep trying to reconnect."""
        self._stopping = True
        for future in self._acks.values():
            if not future.done():
                future.set_exception(ConnectionError("the fake Slack stopped"))
        for socket in list(self._sockets):
            with contextlib.suppress(Exception):
                await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeSlackAPI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def root(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:40123``."""
        if self._port is None:
            raise RuntimeError("FakeSlackAPI is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """``base_url`` for ``AsyncWebClient`` (ends with '/')."""
        return f"{self.root}/api/"

    # -- state views ---------------------------------------------------------------------

    def dm_channel(self, user: str) -> str:
        """The id of the bot's DM channel with ``user`` (stable: ``D`` + the user id's
        rest, e.g. U0ALICE → D0ALICE)."""
        channel = self._dms.get(user)
        if channel is None:
            channel = "D" + user[1:]
            taken = set(self._dms.values())
            suffix = 1
            while channel in taken:
                suffix += 1
                channel = f"D{user[1:]}{suffix}"
            self._dms[user] = channel
        return channel

    def messages(self, channel: str) -> list[JSONDict]:
        """The messages of a channel (a user id means their DM) in order, threads included,
        in their current state."""
        return copy.deepcopy(self._channels.get(self._channel_of(channel), []))

    def message(self, channel: str, ts: str) -> JSONDict:
        """The current state of a message; KeyError if there is none."""
        found = self._by_ts.get((self._channel_of(channel), ts))
        if found is None:
            raise KeyError(f"no message {ts} in {channel}")
        return copy.deepcopy(found)

    def versions(self, channel: str, ts: str) -> list[JSONDict]:
        """Every state a message had, the first as posted and the last the current one."""
        return copy.deepcopy(self._versions.get((self._channel_of(channel), ts), []))

    def calls_to(self, method: str) -> list[Call]:
        self._method(method)
        return [call for call in self.calls if call.method == method]

    def send_times(self, channel: str) -> list[float]:
        """Arrival times (monotonic) of successful chat.postMessage calls to a channel (a
        user id means their DM)."""
        return list(self._send_times.get(self._channel_of(channel), []))

    def rate_limit(self, method: str, retry_after_seconds: int, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` answer HTTP 429 with ``Retry-After``
        and ``{"ok": false, "error": "ratelimited"}``, taking no effect; ``"response_url"``
        for posts to response URLs."""
        if method != "response_url":
            self._method(method)
        self._rate_limits[method] = (retry_after_seconds, times)

    def fail(self, method: str, status: int = 503, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` answer HTTP ``status`` (a server
        error) with ``{"ok": false, "error": "service_unavailable"}``, taking no effect."""
        self._method(method)
        self._failures[method] = (status, times)

    @property
    def socket_connected(self) -> bool:
        """Whether a Socket Mode client is connected (and was greeted)."""
        return any(s.greeted and not s.ws.closed for s in self._sockets)

    async def wait_socket(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is the point of the helper
    ) -> None:
        """Wait until a Socket Mode client is connected."""
        await self.wait_for(lambda fake: fake.socket_connected, timeout)

    async def wait_for(
        self,
        predicate: Callable[[FakeSlackAPI], object],
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is the point of the helper
    ) -> None:
        """Wait until ``predicate(self)`` is true; re-checked on every request, socket event
        and every 50 ms. Raises AssertionError naming the recent calls."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "\n".join(f"  {_describe(call)}" for call in self.calls[-15:])
                raise AssertionError(
                    f"condition not met within {timeout}s; last of {len(self.calls)} calls:\n"
                    + (recent or "  (none)")
                )
            await self._wait_changed(min(remaining, 0.05))

    # -- what Slack sends: payload builders ------------------------------------------------

    def message_event(
        self,
        user: str,
        text: str,
        *,
        channel: str | None = None,
        channel_type: str | None = None,
        thread_ts: str | None = None,
    ) -> JSONDict:
        """A user writes ``text`` (in their DM with the bot unless ``channel``); returns the
        ``event_callback`` envelope of the ``message`` event. The message is kept in the
        channel's history. ``channel_type`` defaults to im/channel/group by the id."""
        channel = self.dm_channel(user) if channel is None else self._channel_of(channel)
        message = self._user_message(user, text, channel, thread_ts)
        event: JSONDict = {
            "type": "message",
            "user": user,
            "text": text,
            "client_msg_id": message["client_msg_id"],
            "team": self.team_id,
            "ts": message["ts"],
            "channel": channel,
            "event_ts": message["ts"],
            "channel_type": channel_type or _channel_type(channel),
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
            if "parent_user_id" in message:
                event["parent_user_id"] = message["parent_user_id"]
        return self._event_envelope(event)

    def mention_event(
        self, user: str, text: str, channel: str, thread_ts: str | None = None
    ) -> JSONDict:
        """A user mentions the bot in ``channel``; returns the ``app_mention`` envelope.
        ``<@BOT>`` is put in front of ``text`` unless it is there already."""
        channel = self._channel_of(channel)
        mention = f"<@{self.bot_user_id}>"
        if mention not in text:
            text = f"{mention} {text}"
        message = self._user_message(user, text, channel, thread_ts)
        event: JSONDict = {
            "type": "app_mention",
            "user": user,
            "text": text,
            "client_msg_id": message["client_msg_id"],
            "team": self.team_id,
            "ts": message["ts"],
            "channel": channel,
            "event_ts": message["ts"],
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return self._event_envelope(event)

    def edited_mention(self, written: JSONDict, text: str) -> JSONDict:
        """The ``app_mention`` Slack sends when the message of ``written`` (the envelope
        of a mention, or of a message event) is edited to ``text``, which mentions the
        bot (``<@BOT>`` is put in front unless it is there): the same message, marked
        ``edited``, under an event id of its own. The message is edited in the
        channel's history too."""
        first = {k: v for k, v in written["event"].items() if k != "channel_type"}
        mention = f"<@{self.bot_user_id}>"
        if mention not in text:
            text = f"{mention} {text}"
        stored = self._by_ts.get((first["channel"], first["ts"]))
        edited = {"user": first["user"], "ts": self._new_ts()}
        if stored is not None:
            stored.update(text=text, edited=edited)
            self._versions[(first["channel"], first["ts"])].append(copy.deepcopy(stored))
        event: JSONDict = {**first, "type": "app_mention", "text": text, "edited": edited}
        return self._event_envelope(event)

    def url_verification(self, challenge: str | None = None) -> JSONDict:
        """The ``url_verification`` request Slack sends when an events URL is set."""
        return {
            "token": self.verification_token,
            "challenge": challenge or secrets.token_urlsafe(24),
            "type": "url_verification",
        }

    def block_action(
        self,
        user: str,
        channel: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
    ) -> JSONDict:
        """``user`` presses the button ``action_id`` on a stored message; returns the
        ``block_actions`` payload. ``value`` defaults to the button's. It carries a fresh
        ``trigger_id`` and a ``response_url`` bound to the message. KeyError for a message
        the fake does not know."""
        channel = self._channel_of(channel)
        message = self.message(channel, message_ts)
        block_id, element = _find_action(message.get("blocks", []), action_id)
        container: JSONDict = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if "thread_ts" in message:
            container["thread_ts"] = message["thread_ts"]
        action: JSONDict = {
            "action_id": action_id,
            "block_id": block_id or self._random_block_id(),
            "text": copy.deepcopy(
                element.get("text", {"type": "plain_text", "text": action_id, "emoji": True})
            ),
            "value": value if value is not None else element.get("value", ""),
            "type": element.get("type", "button"),
            "action_ts": self._new_ts(),
        }
        if "style" in element:
            action["style"] = element["style"]
        return {
            "type": "block_actions",
            "user": self._user_object(user),
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self._issue_trigger(user),
            "team": self._team_object(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self._channel_name(channel)},
            "message": message,
            "state": {"values": {}},
            "response_url": self._issue_response_url(
                channel, user, message_ts, message.get("thread_ts")
            ),
            "actions": [action],
        }

    def slash_command(
        self, user: str, channel: str, text: str, command: str = "/steward"
    ) -> dict[str, str]:
        """``user`` types ``{command} {text}`` in ``channel`` (a user id means their DM);
        returns the form fields Slack posts (all strings)."""
        channel = self._channel_of(channel)
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": self._channel_name(channel),
            "user_id": user,
            "user_name": self._user_name(user),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self._issue_response_url(channel, user, None, None),
            "trigger_id": self._issue_trigger(user),
        }

    def view_submission(
        self, user: str, view_id: str, values: Mapping[str, Mapping[str, Any]]
    ) -> JSONDict:
        """``user`` submits the open view ``view_id``; ``values`` are given as
        ``{block_id: {action_id: "text"}}`` (a dict value is used as is, for other element
        types) and arrive in Slack's shape in ``view.state.values``."""
        view = copy.deepcopy(self.views[view_id])
        state: JSONDict = {}
        for block_id, actions in values.items():
            state[block_id] = {
                action_id: (
                    copy.deepcopy(dict(value))
                    if isinstance(value, Mapping)
                    else {"type": "plain_text_input", "value": value}
                )
                for action_id, value in actions.items()
            }
        view["state"] = {"values": state}
        return {
            "type": "view_submission",
            "team": self._team_object(),
            "user": self._user_object(user),
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "trigger_id": self._issue_trigger(user),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def view_closed(self, user: str, view_id: str) -> JSONDict:
        """``user`` closes the view ``view_id`` (sent when it has ``notify_on_close``)."""
        return {
            "type": "view_closed",
            "team": self._team_object(),
            "user": self._user_object(user),
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "view": copy.deepcopy(self.views[view_id]),
            "is_cleared": False,
            "is_enterprise_install": False,
            "enterprise": None,
        }

    # -- delivering to an app over HTTP, signed ------------------------------------------

    def sign(self, body: str | bytes, timestamp: int | None = None) -> dict[str, str]:
        """The ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` headers for ``body``
        (``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        raw = body.encode() if isinstance(body, str) else body
        digest = hmac.new(
            self.signing_secret.encode(), b"v0:" + stamp.encode() + b":" + raw, hashlib.sha256
        ).hexdigest()
        return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}

    async def post_event(
        self,
        url: str,
        envelope: Mapping[str, Any],
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        """POST an Events API envelope as JSON, signed; returns (status, body text). With
        ``retry_num`` it is a redelivery (``X-Slack-Retry-Num``/``-Reason``); ``timestamp``
        sets the signed timestamp, ``signature`` replaces the signature."""
        return await self._deliver(
            "event",
            url,
            json.dumps(envelope),
            "application/json",
            retry_num=retry_num,
            retry_reason=retry_reason,
            timestamp=timestamp,
            signature=signature,
        )

    async def post_interaction(
        self,
        url: str,
        payload: Mapping[str, Any],
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        """POST an interactivity payload as the form field ``payload=<json>``, signed."""
        body = urlencode({"payload": json.dumps(payload)})
        return await self._deliver(
            "interaction",
            url,
            body,
            "application/x-www-form-urlencoded",
            timestamp=timestamp,
            signature=signature,
        )

    async def post_command(
        self,
        url: str,
        fields: Mapping[str, str],
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        """POST slash command fields form-encoded, signed."""
        return await self._deliver(
            "command",
            url,
            urlencode(dict(fields)),
            "application/x-www-form-urlencoded",
            timestamp=timestamp,
            signature=signature,
        )

    # -- Socket Mode ---------------------------------------------------------------------

    async def socket_send(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - how long Slack waits for the ack
    ) -> JSONDict:
        """Send an envelope (``type`` "events_api", "interactive" or "slash_commands") to the
        newest connected client and return its ack (``{"envelope_id": ..., "payload"?:
        ...}``); TimeoutError if none comes within ``timeout``."""
        socket = self._current_socket()
        envelope_id = str(uuid.uuid4())
        envelope: JSONDict = {
            "envelope_id": envelope_id,
            "payload": copy.deepcopy(dict(payload)),
            "type": type,
            "accepts_response_payload": (
                _accepts_response_payload(type, payload)
                if accepts_response_payload is None
                else accepts_response_payload
            ),
        }
        if type == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        record = SocketEnvelope(envelope, time.monotonic())
        self.envelopes.append(record)
        self._envelopes_by_id[envelope_id] = record
        future: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = future
        try:
            await socket.ws.send_json(envelope)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no ack for {type} envelope {envelope_id} within {timeout}s"
            ) from None
        finally:
            self._acks.pop(envelope_id, None)

    async def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Send ``{"type": "disconnect", "reason": ...}`` to every connected client, as
        Slack does before it recycles a connection (reason "warning",
        "refresh_requested" or "link_disabled"). slack_sdk reconnects on it."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
        for socket in list(self._sockets):
            if not socket.ws.closed:
                await socket.ws.send_json(message)

    async def socket_drop(self) -> None:
        """Close every Socket Mode connection from the server side (1001 going away)."""
        for socket in list(self._sockets):
            await socket.ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped")

    # -- plumbing ------------------------------------------------------------------------

    def _changed(self) -> None:
        self._changed_event.set()
        self._changed_event = asyncio.Event()

    async def _wait_changed(self, seconds: float) -> None:
        event = self._changed_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def _method(self, method: str) -> Handler:
        handler = self._methods.get(method)
        if handler is None:
            raise ValueError(f"the fake does not implement {method!r}")
        return handler

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._changed()

    async def _handle_api(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        method = request.match_info["method"]
        params: JSONDict = {}
        headers: dict[str, str] = {}
        try:
            params, token = await _read_params(request)
            handler = self._methods.get(method)
            if handler is None:
                raise SlackAPIError("unknown_method", status=404, req_method=method)
            self._authenticate(method, token)
            _decode_json_params(params)
            failing = self._failures.get(method)
            if failing is not None and failing[1] > 0:
                self._failures[method] = (failing[0], failing[1] - 1)
                raise SlackAPIError("service_unavailable", status=failing[0])
            limited = self._rate_limits.get(method)
            if limited is not None and limited[1] > 0:
                retry_after, times = limited
                self._rate_limits[method] = (retry_after, times - 1)
                raise SlackAPIError(
                    "ratelimited", status=429, headers={"Retry-After": str(retry_after)}
                )
            body = await handler(params)
            status = 200
        except SlackAPIError as error:
            body, status, headers = error.payload(), error.status, error.headers
        except Exception as exc:  # a bug in the fake: make it visible in the calls as well
            body, status = {"ok": False, "error": "fatal_error", "detail": repr(exc)}, 500
        if status == 200 and method == "chat.postMessage" and body.get("ok"):
            self._send_times.setdefault(body["channel"], []).append(at)
        self._record(Call(method, params, at, status, copy.deepcopy(body)))
        return web.json_response(body, status=status, headers=headers)

    def _authenticate(self, method: str, token: str | None) -> None:
        wanted, other = (
            (self.app_token, self.bot_token)
            if method == "apps.connections.open"
            else (self.bot_token, self.app_token)
        )
        if not token:
            raise SlackAPIError("not_authed")
        if token == other:
            raise SlackAPIError("not_allowed_token_type")
        if token != wanted:
            raise SlackAPIError("invalid_auth")

    async def _deliver(
        self,
        kind: str,
        url: str,
        body: str,
        content_type: str,
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, str]:
        headers = {
            "Content-Type": content_type,
            "User-Agent": SLACKBOT_AGENT,
            **self.sign(body, timestamp),
        }
        if signature is not None:
            headers["X-Slack-Signature"] = signature
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        if self._session is None or self._session.closed:
            self._session = ClientSession(timeout=ClientTimeout(total=30))
        at = time.monotonic()
        async with self._session.post(url, data=body.encode(), headers=headers) as response:
            text = await response.text()
            status = response.status
        self.deliveries.append(Delivery(kind, url, body, headers, status, text, at))
        self._changed()
        return status, text

    async def _handle_link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if self._stopping:
            return web.Response(status=503, text="server stopping")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        socket = _Socket(ws, ticket)
        self._sockets.append(socket)
        self.socket_connects += 1
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": sum(not s.ws.closed for s in self._sockets),
                    "debug_info": {
                        "host": "applink-fake",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
            socket.greeted = True
            self._changed()
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_socket_text(str(message.data))
        finally:
            self._sockets.remove(socket)
            self._changed()
        return ws

    def _on_socket_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        record = self._envelopes_by_id.get(envelope_id) if isinstance(envelope_id, str) else None
        if message is None or record is None or record.ack is not None:
            self.socket_messages.append(data)
        else:
            record.ack, record.acked_at = message, time.monotonic()
            future = self._acks.get(record.envelope_id)
            if future is not None and not future.done():
                future.set_result(message)
        self._changed()

    def _current_socket(self) -> _Socket:
        for socket in reversed(self._sockets):
            if socket.greeted and not socket.ws.closed:
                return socket
        raise RuntimeError("no Socket Mode client is connected")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        response_id = request.match_info["id"]
        target = self._response_targets.get(response_id)
        if target is None:
            return web.json_response({"ok": False, "error": "invalid_response_url"}, status=404)
        retry_after, times = self._rate_limits.get("response_url", (0, 0))
        if times > 0:
            self._rate_limits["response_url"] = (retry_after, times - 1)
            limited = {"ok": False, "error": "ratelimited"}
            return web.json_response(limited, status=429, headers={"Retry-After": str(retry_after)})
        try:
            body = json.loads(await request.text())
        except ValueError:
            return web.json_response({"ok": False, "error": "invalid_json"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"ok": False, "error": "invalid_json"}, status=400)
        self.responses.append(ResponseURLPost(response_id, body, time.monotonic()))
        self._apply_response(target, body)
        self._changed()
        return web.json_response({"ok": True})

    def _apply_response(self, target: _ResponseTarget, body: JSONDict) -> None:
        key = (target.channel, target.message_ts or "")
        original = self._by_ts.get(key)
        if body.get("delete_original") and original is not None:
            self._channels[target.channel].remove(original)
            del self._by_ts[key]
        elif body.get("replace_original") and original is not None:
            original["text"] = str(body.get("text", ""))
            original.pop("blocks", None)
            if body.get("blocks"):
                original["blocks"] = self._with_ids(body["blocks"])
            original["edited"] = {"user": self.bot_user_id, "ts": self._new_ts()}
            self._versions[key].append(copy.deepcopy(original))
        elif body.get("response_type") == "in_channel":
            thread_ts = body.get("thread_ts") or target.thread_ts
            self._bot_message(target.channel, body.get("text"), body.get("blocks"), thread_ts)
        else:
            ephemeral: JSONDict = {
                "channel": target.channel,
                "user": target.user,
                "text": body.get("text", ""),
                "ts": self._new_ts(),
            }
            if body.get("blocks"):
                ephemeral["blocks"] = self._with_ids(body["blocks"])
            self.ephemerals.append(ephemeral)

    # -- state helpers -------------------------------------------------------------------

    def _new_ts(self) -> str:
        """A message timestamp, unique and increasing (``"1700000000.000100"``)."""
        self._last_ts = max(int(time.time() * 1_000_000), self._last_ts + 1)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def _new_id(self, prefix: str, length: int = 9) -> str:
        self._counter += 1
        tail = "".join(secrets.choice(_ID_CHARS) for _ in range(max(length - 4, 2)))
        return f"{prefix}{self._counter:04d}{tail}"

    @staticmethod
    def _random_block_id() -> str:
        return "".join(secrets.choice(_BLOCK_ID_CHARS) for _ in range(5))

    def _channel_of(self, channel: str) -> str:
        """A channel id as given, or the DM id of a user id."""
        return self.dm_channel(channel) if _USER_RE.fullmatch(channel) else channel

    def _resolve_channel(self, value: Any) -> str:
        if isinstance(value, str) and _USER_RE.fullmatch(value):
            return self.dm_channel(value)
        if isinstance(value, str) and _CHANNEL_RE.fullmatch(value):
            return value
        raise SlackAPIError("channel_not_found")

    def _channel_name(self, channel: str) -> str:
        default = "directmessage" if channel.startswith("D") else channel.lower()
        return self.channel_names.get(channel, default)

    def _user_name(self, user: str) -> str:
        return self.user_names.get(user, user.lower())

    def _user_object(self, user: str) -> JSONDict:
        name = self._user_name(user)
        return {"id": user, "username": name, "name": name, "team_id": self.team_id}

    def _team_object(self) -> JSONDict:
        return {"id": self.team_id, "domain": self.team_domain}

    def _event_envelope(self, event: JSONDict) -> JSONDict:
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": self._new_id("Ev", 11),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_urlsafe(24)}",
        }

    def _issue_trigger(self, user: str) -> str:
        self._counter += 1
        trigger_id = f"{self._counter}.{self._trigger_prefix}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = _Trigger(user, time.monotonic())
        return trigger_id

    def _issue_response_url(
        self, channel: str, user: str, message_ts: str | None, thread_ts: str | None
    ) -> str:
        self._counter += 1
        response_id = f"{self._counter}{secrets.token_hex(12)}"
        self._response_targets[response_id] = _ResponseTarget(channel, user, message_ts, thread_ts)
        return f"{self.root}/response/{response_id}"

    def _with_ids(self, blocks: list[JSONDict]) -> list[JSONDict]:
        """A copy of ``blocks`` where blocks have a ``block_id`` and interactive elements
        an ``action_id``, filled in as Slack does."""
        blocks = copy.deepcopy(blocks)
        taken = {b["block_id"] for b in blocks if isinstance(b.get("block_id"), str)}
        for block in blocks:
            if "block_id" not in block:
                block_id = self._random_block_id()
                while block_id in taken:
                    block_id = self._random_block_id()
                block["block_id"] = block_id
                taken.add(block_id)
            elements = [*block.get("elements", []), block.get("accessory"), block.get("element")]
            for element in elements:
                if (
                    isinstance(element, dict)
                    and "action_id" not in element
                    and element.get("type") not in (None, "image", "mrkdwn", "plain_text")
                    and block.get("type") in ("actions", "section", "input")
                ):
                    element["action_id"] = self._random_block_id()
        return blocks

    def _store(self, channel: str, message: JSONDict) -> None:
        thread_ts = message.get("thread_ts")
        if thread_ts is not None and thread_ts != message["ts"]:
            parent = self._by_ts.get((channel, thread_ts))
            if parent is not None:
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = message["ts"]
                users = parent.setdefault("reply_users", [])
                if message["user"] not in users:
                    users.append(message["user"])
                if "user" in parent:
                    message["parent_user_id"] = parent["user"]
        self._channels.setdefault(channel, []).append(message)
        self._by_ts[(channel, message["ts"])] = message
        self._versions[(channel, message["ts"])] = [copy.deepcopy(message)]
        self._changed()

    def _user_message(self, user: str, text: str, channel: str, thread_ts: str | None) -> JSONDict:
        message: JSONDict = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": self._new_ts(),
            "team": self.team_id,
            "client_msg_id": str(uuid.uuid4()),
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        self._store(channel, message)
        return message

    def _bot_message(self, channel: str, text: Any, blocks: Any, thread_ts: Any) -> JSONDict:
        message: JSONDict = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": "" if text is None else str(text),
            "ts": self._new_ts(),
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": self.bot_name,
                "deleted": False,
                "team_id": self.team_id,
            },
        }
        if blocks:
            message["blocks"] = self._with_ids(blocks)
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
        self._store(channel, message)
        return message

    def _content(self, params: JSONDict, *, required: bool) -> tuple[str | None, Any]:
        """``text`` and ``blocks`` of a message request, checked as Slack checks them."""
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = json.dumps(text)
        blocks = params.get("blocks")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise SlackAPIError("invalid_blocks_format")
            errors = validate_blocks(blocks)
            if errors:
                raise SlackAPIError(
                    "invalid_blocks",
                    errors=errors,
                    response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                )
        if blocks and text_in_blocks(blocks) > MAX_BLOCK_TEXT:
            raise SlackAPIError("msg_blocks_too_long")
        if required and not text and not blocks:
            raise SlackAPIError("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise SlackAPIError("msg_too_long")
        return text, blocks

    # -- methods -------------------------------------------------------------------------

    async def _auth_test(self, params: JSONDict) -> JSONDict:
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _chat_post_message(self, params: JSONDict) -> JSONDict:
        channel = self._resolve_channel(params.get("channel"))
        if channel in self.outside:
            raise SlackAPIError("not_in_channel")
        text, blocks = self._content(params, required=True)
        message = self._bot_message(channel, text, blocks, params.get("thread_ts"))
        answer = copy.deepcopy(message)
        answer.pop("reply_count", None)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": answer}

    async def _chat_update(self, params: JSONDict) -> JSONDict:
        channel = params.get("channel")
        if not isinstance(channel, str) or channel not in self._channels:
            raise SlackAPIError("channel_not_found")
        if channel in self.outside:  # left since it posted there
            raise SlackAPIError("not_in_channel")
        key = (channel, str(params.get("ts", "")))
        message = self._by_ts.get(key)
        if message is None:
            raise SlackAPIError("message_not_found")
        if message.get("bot_id") != self.bot_id:
            raise SlackAPIError("cant_update_message")
        text, blocks = self._content(params, required=False)
        if text is None and blocks is None:
            raise SlackAPIError("no_text")
        if text is not None:
            message["text"] = text
        if blocks is not None:  # left out: the blocks stay; [] removes them
            message.pop("blocks", None)
            if blocks:
                message["blocks"] = self._with_ids(blocks)
        message["edited"] = {"user": self.bot_user_id, "ts": self._new_ts()}
        self._versions[key].append(copy.deepcopy(message))
        self._changed()
        return {
            "ok": True,
            "channel": channel,
            "ts": message["ts"],
            "text": message["text"],
            "message": copy.deepcopy(message),
        }

    async def _chat_post_ephemeral(self, params: JSONDict) -> JSONDict:
        channel = self._resolve_channel(params.get("channel"))
        if channel in self.outside:  # only a member may post, ephemeral or not
            raise SlackAPIError("not_in_channel")
        user = params.get("user")
        if not isinstance(user, str) or not _USER_RE.fullmatch(user):
            raise SlackAPIError("user_not_found")
        text, blocks = self._content(params, required=True)
        ephemeral: JSONDict = {
            "channel": channel,
            "user": user,
            "text": text or "",
            "ts": self._new_ts(),
        }
        if blocks:
            ephemeral["blocks"] = self._with_ids(blocks)
        if params.get("thread_ts"):
            ephemeral["thread_ts"] = str(params["thread_ts"])
        self.ephemerals.append(ephemeral)
        self._changed()
        return {"ok": True, "message_ts": ephemeral["ts"]}

    async def _views_open(self, params: JSONDict) -> JSONDict:
        view = params.get("view")
        errors = ["missing required field: view"] if view is None else validate_view(view)
        if errors or not isinstance(view, dict):
            raise SlackAPIError(
                "invalid_arguments",
                response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
            )
        trigger_id = params.get("trigger_id") or params.get("interactivity_pointer")
        trigger = self._triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            raise SlackAPIError("invalid_trigger_id")
        if trigger.used:
            raise SlackAPIError("exchanged_trigger_id")
        if time.monotonic() - trigger.issued_at > self.trigger_ttl:
            raise SlackAPIError("expired_trigger_id")
        trigger.used = True
        view_id = self._new_id("V", 11)
        stored: JSONDict = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "title": view["title"],
            "blocks": self._with_ids(view.get("blocks", [])),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = stored
        self._changed()
        return {"ok": True, "view": copy.deepcopy(stored)}

    async def _apps_connections_open(self, params: JSONDict) -> JSONDict:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        port = self._port
        return {
            "ok": True,
            "url": f"ws://127.0.0.1:{port}/link/?ticket={ticket}&app_id={self.app_id}",
        }


# --------------------------------------------------------------------------------------
# Helpers


async def _read_params(request: web.Request) -> tuple[JSONDict, str | None]:
    """Query and body parameters as sent (form values as strings) and the token."""
    params: JSONDict = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text())
            except ValueError:
                raise SlackAPIError("invalid_json") from None
            if not isinstance(body, dict):
                raise SlackAPIError("invalid_json")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                params[key] = value.decode() if isinstance(value, bytes) else value
    token: str | None = None
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        token = authorization.removeprefix("Bearer ").strip()
    param_token = params.pop("token", None)
    if not token and isinstance(param_token, str):
        token = param_token
    return params, token


def _decode_json_params(params: JSONDict) -> None:
    for name in _JSON_PARAMS:
        value = params.get(name)
        if isinstance(value, str):
            try:
                params[name] = json.loads(value)
            except ValueError:
                error = "invalid_blocks_format" if name == "blocks" else "invalid_arguments"
                raise SlackAPIError(error) from None


def text_in_blocks(node: Any) -> int:
    """Characters of text in blocks: every ``text`` string, however deep."""
    if isinstance(node, list):
        return sum(text_in_blocks(each) for each in node)
    if isinstance(node, dict):
        return sum(
            len(value) if key == "text" and isinstance(value, str) else text_in_blocks(value)
            for key, value in node.items()
        )
    return 0


def _channel_type(channel: str) -> str:
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def _accepts_response_payload(type: str, payload: Mapping[str, Any]) -> bool:
    if type == "slash_commands":
        return True
    return type == "interactive" and payload.get("type") in ("view_submission", "block_suggestion")


def _find_action(blocks: list[JSONDict], action_id: str) -> tuple[str | None, JSONDict]:
    """The block_id and element of the interactive element ``action_id`` in ``blocks``."""
    for block in blocks:
        for element in [*block.get("elements", []), block.get("accessory")]:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return block.get("block_id"), element
    return None, {}


def _describe(call: Call) -> str:
    shown = json.dumps(call.params, default=str, ensure_ascii=False)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    outcome = "ok" if call.ok else f"{call.status} {call.error}"
    return f"{call.method} {shown} -> {outcome}"
