"""What steward reads of Slack's payloads, each field checked for its type on the way.

Bolt hands a listener the payload as Slack's JSON, unchecked. A field steward reads that is
missing or of another type raises ``Unusable`` here, before anything of the delivery is
stored: the channel acknowledges it and sets it aside, where a ``KeyError`` deep in a
listener would be a 500, and Slack would deliver it three times more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest

from bot.channel import Unusable
from bot.slack.render import EDIT_BLOCK, EDIT_INPUT
from graph.messages import Sender

# Message subtypes a person writes; the rest (an edit, a deletion, a join) are not read.
WRITTEN = {None, "file_share", "thread_broadcast"}
MESSAGE_ID_PREFIX = "message:"  # then the message's channel and ts


def text(payload: Mapping[str, Any], key: str) -> str:
    """``payload[key]``, a string; ``Unusable`` when it is missing or is none."""
    value = payload.get(key)
    if not isinstance(value, str):
        raise Unusable(f"{key} is {_kind(value)}, not a string")
    return value


def maybe_text(payload: Mapping[str, Any], key: str) -> str | None:
    """``payload[key]``: a string, or None when it is missing or null."""
    return None if payload.get(key) is None else text(payload, key)


def part(payload: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``payload[key]``, an object; ``Unusable`` when it is missing or is none."""
    value = payload.get(key)
    if not isinstance(value, dict):
        raise Unusable(f"{key} is {_kind(value)}, not an object")
    return value


def maybe_part(payload: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``payload[key]``: an object, empty when it is missing or null."""
    return {} if payload.get(key) is None else part(payload, key)


@dataclass(frozen=True)
class Written:
    """A message a person wrote, as a ``message`` or an ``app_mention`` event tells it."""

    user: str
    channel: str
    ts: str
    text: str
    thread_ts: str | None
    channel_type: str | None
    parent_user_id: str | None  # whose thread it is in, where the event says
    attachment: str | None  # the files and messages shared with it, by name

    @property
    def message_id(self) -> str:
        """The message's own id, the same in every event about it: an ``app_mention``
        Slack sends for an edit, a ``message`` and an ``app_mention`` of one message, and
        a retry are one delivery by it."""
        return f"{MESSAGE_ID_PREFIX}{self.channel}:{self.ts}"

    @property
    def written_at(self) -> float | None:
        """When it was written, by its ``ts`` (seconds since 1970); None for a ``ts`` that
        is no number."""
        try:
            return float(self.ts)
        except ValueError:
            return None


def written(body: Mapping[str, Any], event: Mapping[str, Any]) -> Written | None:
    """The message a person wrote; None for a bot's, and for what is no message of a
    person's (an edit, a deletion, a join: Slack nests or leaves out the fields then)."""
    if event.get("bot_id") or "user" not in event or maybe_text(event, "subtype") not in WRITTEN:
        return None
    return Written(
        user=text(event, "user"),
        channel=text(event, "channel"),
        ts=text(event, "ts"),
        text=maybe_text(event, "text") or "",
        thread_ts=maybe_text(event, "thread_ts"),
        channel_type=maybe_text(event, "channel_type"),
        parent_user_id=maybe_text(event, "parent_user_id"),
        attachment=_attachment(event),
    )


def sender(user: Mapping[str, Any]) -> Sender:
    """Who pressed or submitted: an interaction's ``user``."""
    name = maybe_text(user, "username") or maybe_text(user, "name") or ""
    return Sender("slack", text(user, "id"), name)


@dataclass(frozen=True)
class EditForm:
    """A submitted or closed Edit form: the approval it is for, the conversation it was
    opened from, and the new text typed in it (on submission)."""

    view_id: str
    approval: str
    chat: str
    new_text: str


def edit_form(view: Mapping[str, Any], submitted: bool) -> EditForm:
    """The Edit form ``view`` (steward's own, by its callback id) as Slack sends it back."""
    try:
        meta = json.loads(text(view, "private_metadata"))
    except ValueError as exc:
        raise Unusable(f"private_metadata is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise Unusable(f"private_metadata is {_kind(meta)}, not an object")
    new_text = ""
    if submitted:
        values = part(part(view, "state"), "values")
        new_text = maybe_text(part(part(values, EDIT_BLOCK), EDIT_INPUT), "value") or ""
    return EditForm(text(view, "id"), text(meta, "approval"), text(meta, "chat"), new_text)


# What bolt raises making its request of a body whose ids are not of Slack's shape.
BOLT_FAILS = (LookupError, TypeError, AttributeError, ValueError)


def unreadable(body: object) -> str | None:
    """What bolt itself reads of a request, and fails on, when it is not of its shape:
    the ids it takes for every request (a ``user`` or a ``channel`` that is a number,
    ``authorizations`` that are no list of objects), and what it routes a request by
    (``unroutable``); None when bolt can read it."""
    if not isinstance(body, dict):
        return f"the request is {_kind(body)}, not an object"
    try:
        AsyncBoltRequest(body=body, mode="socket_mode")  # what bolt makes of every request
    except BOLT_FAILS as exc:
        return ids_unreadable(exc)
    return unroutable(body)


def ids_unreadable(error: Exception) -> str:
    """Why bolt could not make its request of a body, as ``error`` says."""
    return f"bolt cannot read its ids ({type(error).__name__}: {error})"


def unroutable(body: Mapping[str, Any]) -> str | None:
    """What bolt routes a request by, and fails on, when it is not of its shape: an
    event that is no object, a press with no action or no ``action_id``, a view without
    its ``type`` or ``callback_id``; None when bolt can route it."""
    kind = body.get("type")
    if kind == "event_callback" and not isinstance(body.get("event"), dict):
        return f"event is {_kind(body.get('event'))}, not an object"
    if kind == "block_actions":
        return _unreadable_press(body.get("actions"))
    if str(kind).startswith("view_"):
        view = body.get("view")
        if not isinstance(view, dict):
            return f"view is {_kind(view)}, not an object"
        if not all(isinstance(view.get(key), str) for key in ("type", "callback_id")):
            return "a view without its type or callback_id"
    return None


def _unreadable_press(actions: object) -> str | None:
    """What bolt fails on in a press's ``actions``: it routes a press by the first's
    ``action_id``."""
    if not (isinstance(actions, list) and actions):
        return "a press without actions"
    if not all(isinstance(a, dict) for a in actions):
        return "a press whose actions are not objects"
    if not isinstance(actions[0].get("action_id"), str):
        return f"a press whose action_id is {_kind(actions[0].get('action_id'))}"
    return None


def delivery_id(body: object) -> str:
    """Slack's id of a delivery, as far as it has one: what the audit log names it by."""
    if not isinstance(body, dict):
        return "?"
    for key in ("event_id", "trigger_id"):
        if isinstance(body.get(key), str):
            return f"{body.get('type') or 'command'}:{body[key]}"
    return str(body.get("type") or body.get("command") or "?")[:100]


def _attachment(event: Mapping[str, Any]) -> str | None:
    """The files and messages shared with a message, by name; None for a message of
    text alone."""
    files, attached = event.get("files") or [], event.get("attachments") or []
    for key, items in (("files", files), ("attachments", attached)):
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise Unusable(f"{key} is not a list of objects")
    names = [maybe_text(f, "name") or maybe_text(f, "title") or "a file" for f in files]
    names += ["a shared message" for a in attached if a.get("is_share")]
    return ", ".join(names) or None


def _kind(value: object) -> str:
    return "missing" if value is None else type(value).__name__
