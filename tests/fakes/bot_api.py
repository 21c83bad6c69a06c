"""A local fake of the Telegram Bot API server, for driving the real python-telegram-bot.

The fake speaks the Bot API wire format on 127.0.0.1 (a free port) so that tests and
benchmarks can run an unmodified ``telegram.Bot`` / ``telegram.ext.Application`` against it::

    async with FakeBotAPI(token="123:abc") as api:
        bot = telegram.Bot("123:abc", base_url=f"{api.root}/bot{{token}}")  # or api.base_url
        async with bot:
            update = api.send_text(42, "/start")          # a user writes to the bot
            [got] = await bot.get_updates(offset=update["update_id"])
            sent = await bot.send_message(42, "Hi", reply_markup=keyboard)
            api.press(42, api.sent(42)[-1], "approve")    # the user presses a button
            await api.wait_for(lambda a: bool(a.calls_to("answerCallbackQuery")))

What it does, as the real server does:

* Requests arrive at ``{root}/bot{token}/{method}`` (method names are case-insensitive) as
  url-encoded or multipart forms (what PTB sends; nested objects are JSON strings) or as a
  JSON body. A wrong token answers 401, an unknown method 404, errors are
  ``{"ok": false, "error_code": ..., "description": ...}``.
* ``getUpdates`` has the real queue semantics: ``offset`` confirms (drops) every update
  with a smaller id, a negative offset keeps only the last ``-offset`` updates, ``limit``
  caps the batch, ``timeout`` long-polls and returns as soon as an update is injected. A
  newer ``getUpdates`` terminates a waiting one with 409, and a set webhook makes it 409.
  Every offset the client sends is kept in :attr:`FakeBotAPI.offsets`.
* Text is parsed like Telegram does: ``parse_mode`` HTML (a strict tag/entity parser),
  MarkdownV2 (every reserved character outside of markup must be escaped) and legacy
  Markdown, giving the plain ``text`` plus ``entities`` in the returned Message. Leading
  and trailing whitespace is trimmed; the 4096 (caption: 1024) character limit applies to
  the parsed text. Inline keyboards are validated (``callback_data`` at most 64 bytes) and
  echoed in the Message; other reply markups are accepted but, as on Telegram, not echoed.
* Messages keep their state: ``editMessageText`` replaces the text *and* the keyboard (no
  ``reply_markup`` in the edit removes it), ``editMessageReplyMarkup`` replaces the
  keyboard, an edit that changes nothing is 400 "message is not modified".
* A callback query may be answered once, and only if it was delivered (see :meth:`press`).
* Forum topics: ``message_thread_id`` sends a message into a topic of a supergroup (else
  400 "message thread not found"), and the message carries it with ``is_topic_message``,
  as a user's message in a topic does (``send_text(..., topic=...)``).

What it adds for tests: every request is recorded as a :class:`Call` (arrival time, decoded
parameters, status) in :attr:`FakeBotAPI.calls`; users are simulated with :meth:`send_text`,
:meth:`press` and :meth:`inject`; :meth:`flood` makes a method answer 429, :meth:`fail` a
server error, :meth:`stall` leaves its calls unanswered until :meth:`unstall`; send times per
chat are kept for rate checks (:meth:`send_times`, :attr:`limit_per_chat`); webhooks are
recorded and :meth:`deliver_webhook` POSTs an update to the registered URL as Telegram
would. Updates are never pushed to a webhook on their own: injected updates stay in the
queue until a client confirms them with ``getUpdates``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html import unescape
from types import TracebackType
from typing import Any, Final, TypeAlias

from aiohttp import ClientSession, web

__all__ = [
    "BotAPIError",
    "Call",
    "FakeBotAPI",
    "RateViolation",
    "UploadedFile",
    "Webhook",
    "parse_html",
    "parse_markdown",
    "parse_markdown_v2",
    "utf16_len",
]

JSONDict: TypeAlias = dict[str, Any]
Handler: TypeAlias = Callable[[JSONDict], Awaitable[Any]]

MAX_TEXT: Final = 4096
MAX_CAPTION: Final = 1024
MAX_CALLBACK_DATA: Final = 64
MAX_CALLBACK_ANSWER: Final = 200
SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"

# Parameters that are always plain strings; every other form value is JSON-decoded when it
# parses (numbers, booleans, nested objects) and kept as a string otherwise ("@channel").
_STRING_PARAMS: Final = frozenset(
    {
        "action",
        "business_connection_id",
        "callback_query_id",
        "caption",
        "certificate",
        "description",
        "document",
        "emoji",
        "inline_message_id",
        "ip_address",
        "language_code",
        "message_effect_id",
        "name",
        "parse_mode",
        "query",
        "secret_token",
        "short_description",
        "text",
        "thumbnail",
        "title",
        "url",
    }
)
_JSON_PARAMS: Final = frozenset(
    {
        "allowed_updates",
        "caption_entities",
        "commands",
        "entities",
        "link_preview_options",
        "media",
        "reply_markup",
        "reply_parameters",
        "scope",
    }
)
# Update types getUpdates leaves out unless they are asked for by allowed_updates.
_OPT_IN_UPDATES: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_RATED_METHODS: Final = frozenset({"sendMessage", "sendDocument", "editMessageText"})
_COMMAND_RE: Final = re.compile(r"[a-z0-9_]{1,32}")
_SECRET_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
_NOT_MODIFIED: Final = (
    "message is not modified: specified new message content and reply markup are"
    " exactly the same as a current content and reply markup of the message"
)
_QUERY_INVALID: Final = "query is too old and response timeout expired or query ID is invalid"
_WEBHOOK_CONFLICT: Final = (
    "Conflict: can't use getUpdates method while webhook is active;"
    " use deleteWebhook to delete the webhook first"
)
_POLL_CONFLICT: Final = (
    "Conflict: terminated by other getUpdates request;"
    " make sure that only one bot instance is running"
)


# --------------------------------------------------------------------------------------
# Records


class BotAPIError(Exception):
    """An error answer of the Bot API: the HTTP status doubles as ``error_code``."""

    def __init__(self, code: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def payload(self) -> JSONDict:
        body: JSONDict = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(reason: str) -> BotAPIError:
    return BotAPIError(400, f"Bad Request: {reason}")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request (e.g. ``document`` of sendDocument)."""

    field: str
    filename: str
    content: bytes
    content_type: str


@dataclass(frozen=True)
class Call:
    """One request to the fake. ``at`` is the arrival time (``time.monotonic()``); calls are
    appended to :attr:`FakeBotAPI.calls` when answered. ``result`` is what an ok call
    returned, ``description`` why a failed one failed."""

    method: str
    params: JSONDict
    at: float
    status: int = 200
    description: str | None = None
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class Webhook:
    """What the last setWebhook registered."""

    url: str
    secret_token: str | None
    allowed_updates: list[str] | None
    max_connections: int = 40


@dataclass(frozen=True)
class RateViolation:
    """Two rated sends to one chat closer together than ``1 / limit_per_chat`` seconds."""

    chat_id: int
    method: str
    gap: float
    at: float


# --------------------------------------------------------------------------------------
# Text parsing (parse_mode), as the server does it


class EntityParseError(Exception):
    """The text does not parse under its parse_mode; the message is the server's reason."""


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of entity offsets and lengths."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


class _Out:
    """Collects parsed plain text and the entities over it (offsets in UTF-16 units)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[JSONDict] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += utf16_len(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.pos > start:
            self.entities.append(
                {"type": kind, "offset": start, "length": self.pos - start, **extra}
            )

    def result(self) -> tuple[str, list[JSONDict]]:
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), entities


@dataclass
class _Open:
    """An entity whose end has not been seen yet."""

    tag: str
    kind: str
    start: int
    at: int
    extra: JSONDict = field(default_factory=dict)


_HTML_TAGS: Final = {
    "a": "text_link",
    "b": "bold",
    "blockquote": "blockquote",
    "code": "code",
    "del": "strikethrough",
    "em": "italic",
    "i": "italic",
    "ins": "underline",
    "pre": "pre",
    "s": "strikethrough",
    "span": "spoiler",
    "strike": "strikethrough",
    "strong": "bold",
    "tg-emoji": "custom_emoji",
    "tg-spoiler": "spoiler",
    "u": "underline",
}
_HTML_NAMED: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_CHARREF: Final = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_HTML_START: Final = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*)")
_HTML_ATTR: Final = re.compile(
    r"""\s+([a-zA-Z][a-zA-Z0-9_-]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?"""
)
_HTML_START_CLOSE: Final = re.compile(r"\s*>")
_HTML_END: Final = re.compile(r"</([a-zA-Z][a-zA-Z0-9-]*)\s*>")
_HTML_PLAIN: Final = re.compile(r"[^<&]+")


def _html_charref(match: re.Match[str]) -> str:
    named, decimal, hexadecimal = match.groups()
    if named:
        return _HTML_NAMED[named]
    code = int(decimal) if decimal else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise EntityParseError(f"Invalid character reference {match.group(0)!r}")
    return chr(code)


def _html_open(name: str, attrs: dict[str, str], start: int, at: int) -> _Open:
    kind = _HTML_TAGS[name]
    extra: JSONDict = {}
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise EntityParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
    if name == "a":
        href = attrs.get("href")
        kind, extra = ("text_link", {"url": href}) if href else ("", {})
    elif name == "tg-emoji":
        emoji_id = attrs.get("emoji-id")
        if not emoji_id:
            raise EntityParseError(f'Tag "tg-emoji" must have attribute "emoji-id" at {at}')
        extra = {"custom_emoji_id": emoji_id}
    elif name == "blockquote" and "expandable" in attrs:
        kind = "expandable_blockquote"
    elif name == "code" and attrs.get("class", "").startswith("language-"):
        extra = {"language": attrs["class"].removeprefix("language-")}
    return _Open(name, kind, start, at, extra)


def _html_close(out: _Out, entity: _Open, stack: list[_Open]) -> None:
    in_pre = entity.kind == "code" and bool(stack) and stack[-1].kind == "pre"
    if in_pre and "language" in entity.extra:  # <pre><code class="language-x">: a language
        stack[-1].extra["language"] = entity.extra["language"]
        return
    if entity.kind == "code":
        out.entity("code", entity.start)
    elif entity.kind:
        out.entity(entity.kind, entity.start, **entity.extra)


def parse_html(text: str) -> tuple[str, list[JSONDict]]:
    """Parse ``parse_mode="HTML"`` text into plain text and entities.

    Only the tags Telegram supports are allowed, tags must nest properly, and every ``<``
    and ``&`` must start a tag or one of the entities ``&lt; &gt; &amp; &quot;`` or a
    numeric character reference. Raises :class:`EntityParseError` otherwise.
    """
    out = _Out()
    stack: list[_Open] = []
    i, n = 0, len(text)
    while i < n:
        plain = _HTML_PLAIN.match(text, i)
        if plain is not None:
            out.add(plain.group(0))
            i = plain.end()
            continue
        at = _byte_offset(text, i)
        if text[i] == "&":
            ref = _HTML_CHARREF.match(text, i)
            if ref is None:
                raise EntityParseError(
                    f"Character '&' at byte offset {at} does not begin an HTML entity;"
                    " escape it as &amp;"
                )
            out.add(_html_charref(ref))
            i = ref.end()
        elif text.startswith("</", i):
            end = _HTML_END.match(text, i)
            if end is None:
                raise EntityParseError(f"Unclosed end tag at byte offset {at}")
            name = end.group(1).lower()
            if not stack:
                raise EntityParseError(f'Unexpected end tag "</{name}>" at byte offset {at}')
            top = stack.pop()
            if top.tag != name:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {at}, expected "</{top.tag}>",'
                    f' found "</{name}>"'
                )
            _html_close(out, top, stack)
            i = end.end()
        else:
            start = _HTML_START.match(text, i)
            if start is None:
                raise EntityParseError(
                    f"Unsupported start tag at byte offset {at}; escape '<' as &lt;"
                )
            name = start.group(1).lower()
            if name not in _HTML_TAGS:
                raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {at}')
            attrs: dict[str, str] = {}
            j = start.end()
            while (attr := _HTML_ATTR.match(text, j)) is not None:
                value = next((v for v in attr.group(2, 3, 4) if v is not None), "")
                attrs[attr.group(1).lower()] = unescape(value)
                j = attr.end()
            close = _HTML_START_CLOSE.match(text, j)
            if close is None:
                raise EntityParseError(f'Unclosed start tag "{name}" at byte offset {at}')
            stack.append(_html_open(name, attrs, out.pos, at))
            i = close.end()
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    return out.result()


_MD2_RESERVED: Final = frozenset("_*[]()~`>#+-=|{}.!")
_MD2_NAMES: Final = {
    "bold": "Bold",
    "code": "Code",
    "custom_emoji": "CustomEmoji",
    "italic": "Italic",
    "pre": "Pre",
    "spoiler": "Spoiler",
    "strikethrough": "Strikethrough",
    "text_link": "TextUrl",
    "underline": "Underline",
}
_MD2_LANGUAGE: Final = re.compile(r"([A-Za-z0-9_+#.-]*)\n")


def _md2_reserved(char: str) -> EntityParseError:
    return EntityParseError(
        f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
    )


def _md2_url(text: str, i: int) -> tuple[str, int]:
    """Read an inline URL starting after its ``(``; return it and the index after ``)``."""
    url: list[str] = []
    start = i
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            url.append(text[i + 1])
            i += 2
        elif c == ")":
            return "".join(url), i + 1
        else:
            url.append(c)
            i += 1
    raise EntityParseError(f"Can't find end of a URL at byte offset {_byte_offset(text, start)}")


def parse_markdown_v2(text: str) -> tuple[str, list[JSONDict]]:
    """Parse ``parse_mode="MarkdownV2"`` text into plain text and entities.

    Supports ``*bold*``, ``_italic_``, ``__underline__``, ``~strike~``, ``||spoiler||``,
    ``[text](url)``, ``![e](tg://emoji?id=..)``, `` `code` ``, fenced pre blocks and ``>``
    block quotes. Any of ``_*[]()~`>#+-=|{}.!`` that is not part of such markup must be
    escaped with a backslash, and every entity must be closed; raises
    :class:`EntityParseError` otherwise.
    """
    out = _Out()
    stack: list[_Open] = []
    quote_start: int | None = None
    i, n = 0, len(text)

    def toggle(kind: str, width: int) -> None:
        if stack and stack[-1].kind == kind:
            out.entity(kind, stack.pop().start)
        else:
            stack.append(_Open(kind, kind, out.pos, _byte_offset(text, i)))

    while i < n:
        c = text[i]
        top = stack[-1] if stack else None
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            out.add(text[i + 1])
            i += 2
        elif top is not None and top.kind in ("code", "pre"):
            if top.kind == "pre" and text.startswith("```", i):
                stack.pop()
                out.entity("pre", top.start, **top.extra)
                i += 3
            elif top.kind == "code" and c == "`":
                stack.pop()
                out.entity("code", top.start)
                i += 1
            else:
                out.add(c)
                i += 1
        elif c == "\n":
            if quote_start is not None and not text.startswith(">", i + 1):
                out.entity("blockquote", quote_start)
                quote_start = None
            out.add(c)
            i += 1
        elif c not in _MD2_RESERVED:
            out.add(c)
            i += 1
        elif c == "_":
            width = 2 if text.startswith("__", i) else 1
            toggle("underline" if width == 2 else "italic", width)
            i += width
        elif c in "*~":
            toggle("bold" if c == "*" else "strikethrough", 1)
            i += 1
        elif c == "|":
            if not text.startswith("||", i):
                raise _md2_reserved(c)
            toggle("spoiler", 2)
            i += 2
        elif c == "`":
            if text.startswith("```", i):
                entity = _Open("pre", "pre", out.pos, _byte_offset(text, i))
                i += 3
                language = _MD2_LANGUAGE.match(text, i)
                if language is not None:
                    if language.group(1):
                        entity.extra["language"] = language.group(1)
                    i = language.end()
                stack.append(entity)
            else:
                stack.append(_Open("code", "code", out.pos, _byte_offset(text, i)))
                i += 1
        elif c == "[" or (c == "!" and text.startswith("![", i)):
            kind = "text_link" if c == "[" else "custom_emoji"
            stack.append(_Open(kind, kind, out.pos, _byte_offset(text, i)))
            i += 1 if c == "[" else 2
        elif c == "]":
            if top is None or top.kind not in ("text_link", "custom_emoji"):
                raise _md2_reserved(c)
            stack.pop()
            i += 1
            if i < n and text[i] == "(":
                url, i = _md2_url(text, i + 1)
                if top.kind == "text_link":
                    out.entity("text_link", top.start, url=url)
                else:
                    out.entity("custom_emoji", top.start, custom_emoji_id=url.rsplit("=", 1)[-1])
        elif c == ">" and (i == 0 or text[i - 1] == "\n"):
            if quote_start is None:
                quote_start = out.pos
            i += 1
        else:
            raise _md2_reserved(c)
    if stack:
        name = _MD2_NAMES[stack[-1].kind]
        raise EntityParseError(f"Can't find end of {name} entity at byte offset {stack[-1].at}")
    if quote_start is not None:
        out.entity("blockquote", quote_start)
    return out.result()


def parse_markdown(text: str) -> tuple[str, list[JSONDict]]:
    """Parse legacy ``parse_mode="Markdown"``: ``*bold*``, ``_italic_``, `` `code` ``,
    fenced pre blocks and ``[text](url)``; ``\\`` escapes ``_ * ` [``."""
    out = _Out()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.add(text[i + 1])
            i += 2
            continue
        if c not in "_*`[":
            out.add(c)
            i += 1
            continue
        at = _byte_offset(text, i)
        missing = EntityParseError(f"Can't find end of the entity starting at byte offset {at}")
        start = out.pos
        if c == "[":
            close = text.find("]", i + 1)
            if close == -1 or not text.startswith("(", close + 1):
                raise missing
            url_end = text.find(")", close + 2)
            if url_end == -1:
                raise missing
            out.add(text[i + 1 : close])
            out.entity("text_link", start, url=text[close + 2 : url_end])
            i = url_end + 1
            continue
        marker = "```" if text.startswith("```", i) else c
        end = text.find(marker, i + len(marker))
        if end == -1:
            raise missing
        out.add(text[i + len(marker) : end])
        kind = {"*": "bold", "_": "italic", "`": "code", "```": "pre"}[marker]
        out.entity(kind, start)
        i = end + len(marker)
    return out.result()


def _trim(text: str, entities: list[JSONDict]) -> tuple[str, list[JSONDict]]:
    """Drop leading and trailing whitespace as Telegram does, clipping the entities."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    total = utf16_len(stripped)
    clipped: list[JSONDict] = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, total)
        if end > start:
            clipped.append({**entity, "offset": start, "length": end - start})
    return stripped, clipped


def format_text(
    text: str, parse_mode: str | None, entities: list[JSONDict] | None
) -> tuple[str, list[JSONDict]]:
    """The text and entities a message ends up with; raises :class:`BotAPIError` (400)."""
    if entities is not None:
        return _trim(text, [dict(e) for e in entities])
    parsers: dict[str, Callable[[str], tuple[str, list[JSONDict]]]] = {
        "html": parse_html,
        "markdownv2": parse_markdown_v2,
        "markdown": parse_markdown,
    }
    if not parse_mode:
        return _trim(text, [])
    parser = parsers.get(parse_mode.lower())
    if parser is None:
        raise _bad(f"unsupported parse_mode {parse_mode!r}")
    try:
        return _trim(*parser(text))
    except EntityParseError as exc:
        raise _bad(f"can't parse entities: {exc}") from None


# --------------------------------------------------------------------------------------
# Parameters


def _decode_param(name: str, value: Any) -> Any:
    if not isinstance(value, str) or name in _STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        if name in _JSON_PARAMS:
            raise _bad(f"can't parse {name} JSON object") from None
        return value


def _int_param(params: JSONDict, name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        if value is None:
            raise _bad(f"{name} is empty")
        raise _bad(f"invalid {name} specified")
    return int(value)


def _text_param(params: JSONDict, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _update_type(update: JSONDict) -> str:
    return next((key for key in update if key != "update_id"), "")


# --------------------------------------------------------------------------------------
# The server


class FakeBotAPI:
    """A fake Telegram Bot API server; see the module docstring."""

    def __init__(
        self,
        token: str = "123:abc",
        *,
        username: str = "steward_bot",
        first_name: str = "steward",
    ) -> None:
        prefix = token.split(":", 1)[0]
        if not prefix.isdigit():
            raise ValueError(f"a bot token starts with the bot's numeric id: {token!r}")
        self.token = token
        self.bot_id = int(prefix)
        self.username = username
        self.first_name = first_name
        self.calls: list[Call] = []
        self.offsets: list[int] = []
        self.uploads: dict[str, UploadedFile] = {}
        self.limit_per_chat: float | None = None
        self.rate_violations: list[RateViolation] = []

        self._queue: list[JSONDict] = []
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._polls_waiting = 0
        self._webhook: Webhook | None = None
        self._messages: dict[tuple[int, int], JSONDict] = {}
        self._deleted: set[tuple[int, int]] = set()
        self._sent: list[tuple[int, int]] = []
        self._last_message_id: dict[int, int] = {}
        self._users: dict[int, JSONDict] = {}
        self._queries: dict[str, bool] = {}  # callback query id -> answered
        self._next_query = 0
        self._commands: dict[str, list[JSONDict]] = {}
        self._floods: dict[str, tuple[int, int]] = {}
        self._failures: dict[str, tuple[int, int, int]] = {}
        # Chats whose user blocked the bot: sending there is 403, as Telegram answers it.
        self.blocked: set[int] = set()
        # Groups upgraded to supergroups, old id -> new: sending to the old id is 400 with
        # the new id in ``migrate_to_chat_id``, as Telegram answers it.
        self.migrated: dict[int, int] = {}
        self._stalled: dict[str, int] = {}  # a method stalled: its calls let through first
        self._unstalled = asyncio.Event()
        self._waiting: list[str] = []
        self._send_times: dict[int, list[float]] = {}
        self._changed_event = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._session: ClientSession | None = None
        self._methods: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, handler)
            for name, handler in [
                ("getMe", self._get_me),
                ("getUpdates", self._get_updates),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("sendMessage", self._send_message),
                ("sendDocument", self._send_document),
                ("editMessageText", self._edit_message_text),
                ("editMessageReplyMarkup", self._edit_message_reply_markup),
                ("deleteMessage", self._delete_message),
                ("sendChatAction", self._send_chat_action),
                ("answerCallbackQuery", self._answer_callback_query),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
            ]
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on 127.0.0.1 on a free port (see :attr:`root`)."""
        if self._runner is not None:
            raise RuntimeError("FakeBotAPI is already running")
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._closing = False
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Answer waiting long polls with ``[]`` and shut the server down."""
        self._closing = True
        self._changed()
        self.unstall()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeBotAPI:
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
            raise RuntimeError("FakeBotAPI is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """``base_url`` for ``telegram.Bot`` (PTB appends the token)."""
        return f"{self.root}/bot"

    @property
    def bot_user(self) -> JSONDict:
        """The bot as a ``User`` (the ``from`` of its messages)."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    # -- simulating users ----------------------------------------------------------------

    def send_text(
        self,
        user_id: int,
        text: str,
        *,
        first_name: str = "Op",
        chat_id: int | None = None,
        topic: int | None = None,
        forwarded_from: int | None = None,
        reply_to: JSONDict | None = None,
        via_bot: str | None = None,
    ) -> JSONDict:
        """A user writes ``text`` (in their private chat unless ``chat_id``, in a forum
        topic of it with ``topic``), or forwards what user ``forwarded_from`` wrote, or
        sends what the inline bot named ``via_bot`` made (``@via_bot query``, then a result
        chosen), as a reply to the message ``reply_to`` if given; returns the queued
        ``message`` update. A leading ``/command`` gets a bot_command entity."""
        user = self._user(user_id, first_name)
        chat = user_id if chat_id is None else chat_id
        message: JSONDict = {
            "message_id": self._new_message_id(chat),
            "from": user,
            "chat": self._chat(chat),
            "date": int(time.time()),
            "text": text,
        }
        if forwarded_from is not None:
            author = self._user(forwarded_from, None)
            origin = {"type": "user", "date": int(time.time()) - 60, "sender_user": author}
            message["forward_origin"] = origin
        if via_bot is not None:
            inline_bot = {"id": 7_000_000 + len(via_bot), "is_bot": True, "first_name": via_bot}
            message["via_bot"] = inline_bot | {"username": via_bot}
        if reply_to is not None:
            replied = self._messages.get((chat, int(reply_to["message_id"])), reply_to)
            message["reply_to_message"] = {
                k: v for k, v in copy.deepcopy(replied).items() if k != "reply_to_message"
            }
        if topic is not None:
            message.update(message_thread_id=topic, is_topic_message=True)
        command = text.split(maxsplit=1)[0] if text.startswith("/") else ""
        if len(command) > 1:
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_len(command)}
            ]
        self._messages[(chat, message["message_id"])] = copy.deepcopy(message)
        return self.inject({"message": message})

    def press(self, user_id: int, message: JSONDict, data: str) -> JSONDict:
        """A user presses the inline button with ``data`` under the bot's ``message``;
        returns the queued ``callback_query`` update (the message in it is the current
        state of that message when the fake knows it)."""
        user = self._user(user_id, None)
        chat_id = int(message["chat"]["id"])
        current = self._messages.get((chat_id, int(message["message_id"])), message)
        self._next_query += 1
        query_id = str(4_611_686_018_427_387_904 + self._next_query)
        query = {
            "id": query_id,
            "from": user,
            "message": copy.deepcopy(current),
            "chat_instance": str(abs(chat_id) * 7919 + 1),
            "data": data,
        }
        return self.inject({"callback_query": query})

    def inject(self, update: JSONDict) -> JSONDict:
        """Queue a raw update. Without ``update_id`` it gets the next id; with one (e.g. a
        re-delivery of an earlier update) it is kept, and, as on Telegram, only reaches a
        client whose offset has not moved past it. Returns the queued update."""
        update = copy.deepcopy(update)
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
        self._next_update_id = max(self._next_update_id, int(update["update_id"]) + 1)
        query = update.get("callback_query")
        if isinstance(query, dict) and "id" in query:
            self._queries.setdefault(str(query["id"]), False)
        bisect.insort_right(self._queue, update, key=lambda u: int(u["update_id"]))
        self._changed()
        return copy.deepcopy(update)

    # -- test knobs and views --------------------------------------------------------------

    def flood(self, method: str, retry_after: int, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` answer 429 (and not take effect)."""
        name, _ = self._method(method)
        self._floods[name] = (retry_after, times)

    def fail(self, method: str, status: int = 502, times: int = 1, after: int = 0) -> None:
        """Make ``times`` calls of ``method`` fail with ``status`` (a server error: they do
        not take effect), once ``after`` more calls of it have gone through."""
        name, _ = self._method(method)
        self._failures[name] = (status, times, after)

    def stall(self, method: str, after: int = 0) -> None:
        """Calls of ``method`` from now on, once ``after`` more have gone through, get no
        answer until ``unstall()`` (they are recorded as they arrive, and take effect only
        then)."""
        name, _ = self._method(method)
        self._stalled[name] = after
        self._unstalled = asyncio.Event()

    def unstall(self) -> None:
        self._stalled.clear()
        self._unstalled.set()

    @property
    def stalled_calls(self) -> list[str]:
        """Methods of the calls waiting for ``unstall()`` now."""
        return list(self._waiting)

    @property
    def pending(self) -> list[JSONDict]:
        """Updates not yet confirmed by a getUpdates offset, in id order."""
        return copy.deepcopy(self._queue)

    @property
    def webhook(self) -> Webhook | None:
        return self._webhook

    @property
    def polls_waiting(self) -> int:
        """getUpdates requests parked on the server right now (long polls with nothing to
        return yet); ``wait_for(lambda a: a.polls_waiting)`` waits until a bot is polling."""
        return self._polls_waiting

    def calls_to(self, method: str) -> list[Call]:
        name, _ = self._method(method)
        return [call for call in self.calls if call.method == name]

    def sent(self, chat_id: int | None = None) -> list[JSONDict]:
        """Messages the bot sent (sendMessage, sendDocument) in order, in their current
        state (edits applied; deleted ones as they were last)."""
        return [
            copy.deepcopy(self._messages[key])
            for key in self._sent
            if chat_id is None or key[0] == chat_id
        ]

    def message(self, chat_id: int, message_id: int) -> JSONDict:
        """The current state of a message; KeyError if unknown or deleted."""
        key = (chat_id, message_id)
        if key in self._deleted or key not in self._messages:
            raise KeyError(f"no message {message_id} in chat {chat_id}")
        return copy.deepcopy(self._messages[key])

    def commands(self, scope: JSONDict | None = None, language_code: str = "") -> list[JSONDict]:
        """The commands the last setMyCommands set for a scope and language."""
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    def send_times(self, chat_id: int) -> list[float]:
        """Arrival times (monotonic) of sendMessage/sendDocument/editMessageText calls to a
        chat, answered or not."""
        return list(self._send_times.get(chat_id, []))

    async def wait_for(
        self,
        predicate: Callable[[FakeBotAPI], object],
        timeout: float = 5.0,  # noqa: ASYNC109 - the deadline is the point of the helper
    ) -> None:
        """Wait until ``predicate(self)`` is true; re-checked on every call and injected
        update (and every 50 ms). Raises AssertionError naming the recent calls."""
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

    async def deliver_webhook(self, update: JSONDict, *, secret: str | None) -> int:
        """POST ``update`` as JSON to the registered webhook URL as Telegram would, with
        the secret header unless ``secret`` is None; returns the HTTP status."""
        if self._webhook is None:
            raise RuntimeError("no webhook is set")
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        if self._session is None or self._session.closed:
            self._session = ClientSession()
        async with self._session.post(
            self._webhook.url, data=json.dumps(update), headers=headers
        ) as response:
            await response.read()
            return response.status

    # -- plumbing ------------------------------------------------------------------------

    def _changed(self) -> None:
        self._changed_event.set()
        self._changed_event = asyncio.Event()

    async def _wait_changed(self, seconds: float) -> None:
        event = self._changed_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def _method(self, method: str) -> tuple[str, Handler]:
        found = self._methods.get(method.lower())
        if found is None:
            raise ValueError(f"the fake does not implement {method!r}")
        return found

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._changed()

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            error = BotAPIError(401, "Unauthorized")
        elif method.lower() not in self._methods:
            error = BotAPIError(404, "Not Found: method not found")
        else:
            return await self._dispatch(request, at)
        self._record(Call(method, {}, at, error.code, error.description))
        return web.json_response(error.payload(), status=error.code)

    async def _dispatch(self, request: web.Request, at: float) -> web.Response:
        name, handler = self._method(request.match_info["method"])
        params: JSONDict = {}
        try:
            params = await self._read_params(request)  # as sent, should decoding fail
            params = {key: _decode_param(key, value) for key, value in params.items()}
            if name in _RATED_METHODS:
                self._note_send(name, params, at)
            if self._stalled.get(name):
                self._stalled[name] -= 1
            elif name in self._stalled:
                self._waiting.append(name)
                self._changed()
                try:
                    await self._unstalled.wait()
                finally:
                    self._waiting.remove(name)
            failure = self._failures.get(name)
            if failure is not None and failure[1] > 0:
                status, times, after = failure
                if after > 0:
                    self._failures[name] = (status, times, after - 1)
                else:
                    self._failures[name] = (status, times - 1, 0)
                    raise BotAPIError(status, "Bad Gateway" if status == 502 else "Server Error")
            flood = self._floods.get(name)
            if flood is not None and flood[1] > 0:
                retry_after, times = flood
                self._floods[name] = (retry_after, times - 1)
                raise BotAPIError(
                    429,
                    f"Too Many Requests: retry after {retry_after}",
                    {"retry_after": retry_after},
                )
            result = await handler(params)
        except BotAPIError as error:
            self._record(Call(name, params, at, error.code, error.description))
            return web.json_response(error.payload(), status=error.code)
        except Exception as exc:  # a bug in the fake: make it visible in the calls as well
            failure = BotAPIError(500, f"Internal Server Error: fake failed with {exc!r}")
            self._record(Call(name, params, at, failure.code, failure.description))
            return web.json_response(failure.payload(), status=failure.code)
        self._record(Call(name, params, at, result=copy.deepcopy(result)))
        return web.json_response({"ok": True, "result": result})

    async def _read_params(self, request: web.Request) -> JSONDict:
        """The query and body parameters, file parts as :class:`UploadedFile`, undecoded."""
        raw: JSONDict = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise _bad("can't parse JSON body") from None
                if not isinstance(body, dict):
                    raise _bad("the JSON body must be an object")
                raw.update(body)
            elif request.content_type in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        raw[key] = UploadedFile(
                            key, value.filename, value.file.read(), value.content_type
                        )
                    elif isinstance(value, bytes):
                        raw[key] = value.decode()
                    else:
                        raw[key] = value
        return raw

    def _note_send(self, method: str, params: JSONDict, at: float) -> None:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int) or isinstance(chat_id, bool):
            return
        times = self._send_times.setdefault(chat_id, [])
        if times and self.limit_per_chat:
            gap = at - times[-1]
            if gap < 1 / self.limit_per_chat:
                self.rate_violations.append(RateViolation(chat_id, method, gap, at))
        times.append(at)

    # -- state helpers -------------------------------------------------------------------

    def _user(self, user_id: int, first_name: str | None) -> JSONDict:
        user = self._users.get(user_id)
        if user is None or (first_name is not None and user["first_name"] != first_name):
            user = {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name or "Op",
                "language_code": "en",
            }
            self._users[user_id] = user
        return dict(user)

    def _chat(self, chat_id: int) -> JSONDict:
        if chat_id > 0:
            user = self._users.get(chat_id)
            return {
                "id": chat_id,
                "type": "private",
                "first_name": user["first_name"] if user else "Op",
            }
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}

    def _new_message_id(self, chat_id: int) -> int:
        self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        return self._last_message_id[chat_id]

    def _chat_id(self, params: JSONDict) -> int:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int):
            raise _bad("chat not found")
        return chat_id

    def _sendable(self, params: JSONDict) -> int:
        """The chat a new message goes to, unless its user blocked the bot."""
        chat_id = self._chat_id(params)
        if chat_id in self.blocked:
            raise BotAPIError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.migrated:
            raise BotAPIError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self.migrated[chat_id]},
            )
        return chat_id

    def _bot_message(self, params: JSONDict) -> tuple[tuple[int, int], JSONDict]:
        if params.get("inline_message_id") is not None:
            raise _bad("MESSAGE_ID_INVALID")
        key = (self._chat_id(params), _int_param(params, "message_id"))
        message = self._messages.get(key)
        if message is None or key in self._deleted:
            raise _bad("message to edit not found")
        if not message["from"].get("is_bot") or message["from"]["id"] != self.bot_id:
            raise _bad("message can't be edited")
        return key, message

    def _formatted(
        self, params: JSONDict, name: str, limit: int, *, required: bool
    ) -> tuple[str | None, list[JSONDict]]:
        raw = _text_param(params, name)
        if raw is None and not required:
            return None, []
        entities = params.get("entities" if name == "text" else "caption_entities")
        if entities is not None and not isinstance(entities, list):
            raise _bad(f"can't parse {name} entities JSON object")
        text, parsed = format_text(raw or "", _text_param(params, "parse_mode"), entities)
        if not text and required:
            raise _bad("message text is empty")
        if len(text) > limit:
            raise _bad("message is too long" if name == "text" else "message caption is too long")
        return text, parsed

    def _topic(self, params: JSONDict) -> int | None:
        """The forum topic a new message goes to: only a supergroup has topics."""
        if params.get("message_thread_id") is None:
            return None
        topic = _int_param(params, "message_thread_id")
        if self._chat(self._chat_id(params))["type"] != "supergroup":
            raise _bad("message thread not found")
        return topic

    def _markup(self, params: JSONDict) -> JSONDict | None:
        """The reply_markup a message shows: inline keyboards only, empty ones dropped."""
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            return None
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise _bad("can't parse inline keyboard markup JSON object")
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise _bad("can't parse inline keyboard button: Text must be a string")
                data = button.get("callback_data")
                if data is not None and (
                    not isinstance(data, str) or not 0 < len(data.encode()) <= MAX_CALLBACK_DATA
                ):
                    raise _bad("BUTTON_DATA_INVALID")
        if not any(keyboard):
            return None
        return {"inline_keyboard": copy.deepcopy(keyboard)}

    def _store_sent(self, chat_id: int, message: JSONDict) -> JSONDict:
        key = (chat_id, message["message_id"])
        self._messages[key] = message
        self._sent.append(key)
        return copy.deepcopy(message)

    def _new_bot_message(
        self, chat_id: int, markup: JSONDict | None, topic: int | None = None
    ) -> JSONDict:
        message: JSONDict = {
            "message_id": self._new_message_id(chat_id),
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
        }
        if topic is not None:
            message.update(message_thread_id=topic, is_topic_message=True)
        if markup is not None:
            message["reply_markup"] = markup
        return message

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._queue = [u for u in self._queue if u["update_id"] >= offset]
        elif offset < 0:
            self._queue = self._queue[offset:]

    def _deliverable(self, offset: int, limit: int) -> list[JSONDict]:
        ready: list[JSONDict] = []
        for update in self._queue:
            if update["update_id"] < offset:
                continue
            kind = _update_type(update)
            allowed = self._allowed_updates
            if (kind not in allowed) if allowed is not None else (kind in _OPT_IN_UPDATES):
                continue
            ready.append(copy.deepcopy(update))
            if len(ready) == limit:
                break
        return ready

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> str:
        scope = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps([scope, language_code or ""], sort_keys=True)

    # -- methods -------------------------------------------------------------------------

    async def _get_me(self, params: JSONDict) -> JSONDict:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        if self._webhook is not None:
            raise BotAPIError(409, _WEBHOOK_CONFLICT)
        offset = _int_param(params, "offset", 0)
        if "offset" in params:
            self.offsets.append(offset)
        limit = min(max(_int_param(params, "limit", 100), 1), 100)
        timeout = params.get("timeout", 0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise _bad("invalid timeout specified")
        allowed = params.get("allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise _bad("can't parse allowed_updates JSON object")
            self._allowed_updates = frozenset(allowed) or None
        self._confirm(offset)
        self._poll_generation += 1
        generation = self._poll_generation
        self._changed()  # a getUpdates still waiting is terminated by this one
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(float(timeout), 0.0)
        while True:
            if self._poll_generation != generation:
                raise BotAPIError(409, _POLL_CONFLICT)
            if self._webhook is not None:
                raise BotAPIError(409, _WEBHOOK_CONFLICT)
            ready = [] if self._closing else self._deliverable(offset, limit)
            remaining = deadline - loop.time()
            if ready or remaining <= 0 or self._closing:
                return ready
            self._polls_waiting += 1
            self._changed()
            try:
                await self._wait_changed(remaining)
            finally:
                self._polls_waiting -= 1

    async def _set_webhook(self, params: JSONDict) -> bool:
        url = _text_param(params, "url") or ""
        if not url:
            return await self._delete_webhook(params)
        secret = _text_param(params, "secret_token")
        if secret is not None and not _SECRET_RE.fullmatch(secret):
            raise _bad("secret token contains unallowed characters")
        allowed = params.get("allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise _bad("can't parse allowed_updates JSON object")
            self._allowed_updates = frozenset(allowed) or None
        max_connections = _int_param(params, "max_connections", 40)
        if params.get("drop_pending_updates") is True:
            self._queue.clear()
        self._webhook = Webhook(url, secret, allowed, max_connections)
        return True

    async def _delete_webhook(self, params: JSONDict) -> bool:
        self._webhook = None
        if params.get("drop_pending_updates") is True:
            self._queue.clear()
        return True

    async def _get_webhook_info(self, params: JSONDict) -> JSONDict:
        info: JSONDict = {
            "url": self._webhook.url if self._webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }
        if self._webhook is not None:
            info["max_connections"] = self._webhook.max_connections
            if self._webhook.allowed_updates is not None:
                info["allowed_updates"] = list(self._webhook.allowed_updates)
        return info

    async def _send_message(self, params: JSONDict) -> JSONDict:
        chat_id = self._sendable(params)
        text, entities = self._formatted(params, "text", MAX_TEXT, required=True)
        message = self._new_bot_message(chat_id, self._markup(params), self._topic(params))
        message["text"] = text
        if entities:
            message["entities"] = entities
        return self._store_sent(chat_id, message)

    async def _send_document(self, params: JSONDict) -> JSONDict:
        chat_id = self._sendable(params)
        document = params.get("document")
        if isinstance(document, UploadedFile):
            file_id = f"BQACAgIAAxkBAAI{len(self.uploads) + 1:06d}"
            self.uploads[file_id] = document
        elif isinstance(document, str) and document in self.uploads:
            file_id = document
        else:
            raise _bad("there is no document in the request")
        upload = self.uploads[file_id]
        caption, entities = self._formatted(params, "caption", MAX_CAPTION, required=False)
        message = self._new_bot_message(chat_id, self._markup(params), self._topic(params))
        message["document"] = {
            "file_id": file_id,
            "file_unique_id": f"AgAD{file_id[-6:]}",
            "file_name": upload.filename,
            "mime_type": upload.content_type,
            "file_size": len(upload.content),
        }
        if caption:
            message["caption"] = caption
            if entities:
                message["caption_entities"] = entities
        return self._store_sent(chat_id, message)

    async def _edit_message_text(self, params: JSONDict) -> JSONDict:
        _, message = self._bot_message(params)
        if "text" not in message:
            raise _bad("there is no text in the message to edit")
        text, entities = self._formatted(params, "text", MAX_TEXT, required=True)
        markup = self._markup(params)
        if (text, entities, markup) == (
            message["text"],
            message.get("entities", []),
            message.get("reply_markup"),
        ):
            raise _bad(_NOT_MODIFIED)
        message["text"] = text
        message.pop("entities", None)
        if entities:
            message["entities"] = entities
        message.pop("reply_markup", None)
        if markup is not None:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    async def _edit_message_reply_markup(self, params: JSONDict) -> JSONDict:
        _, message = self._bot_message(params)
        markup = self._markup(params)
        if markup == message.get("reply_markup"):
            raise _bad(_NOT_MODIFIED)
        message.pop("reply_markup", None)
        if markup is not None:
            message["reply_markup"] = markup
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    async def _delete_message(self, params: JSONDict) -> bool:
        key = (self._chat_id(params), _int_param(params, "message_id"))
        if key not in self._messages or key in self._deleted:
            raise _bad("message to delete not found")
        self._deleted.add(key)
        return True

    async def _send_chat_action(self, params: JSONDict) -> bool:
        self._chat_id(params)
        if not _text_param(params, "action"):
            raise _bad("wrong parameter action in request")
        return True

    async def _answer_callback_query(self, params: JSONDict) -> bool:
        query_id = _text_param(params, "callback_query_id")
        if query_id is None or self._queries.get(query_id, True):
            raise _bad(_QUERY_INVALID)
        text = _text_param(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER:
            raise _bad("MESSAGE_TOO_LONG")
        self._queries[query_id] = True
        return True

    async def _set_my_commands(self, params: JSONDict) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        for command in commands:
            if not isinstance(command, dict):
                raise _bad("can't parse BotCommand JSON object")
            name, description = command.get("command"), command.get("description")
            if not isinstance(name, str) or not _COMMAND_RE.fullmatch(name):
                raise _bad("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise _bad("command description must be 1-256 characters long")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, params: JSONDict) -> list[JSONDict]:
        return self.commands(params.get("scope"), _text_param(params, "language_code") or "")

    async def _delete_my_commands(self, params: JSONDict) -> bool:
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands.pop(key, None)
        return True


def _describe(call: Call) -> str:
    params = {
        key: (
            f"<{value.filename}: {len(value.content)} bytes>"
            if isinstance(value, UploadedFile)
            else value
        )
        for key, value in call.params.items()
    }
    shown = json.dumps(params, default=str, ensure_ascii=False)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    outcome = "ok" if call.ok else f"{call.status} {call.description}"
    return f"{call.method} {shown} -> {outcome}"
