"""The Slack app manifest asks for exactly the scopes the channel uses: each Web API
method it calls, each event it subscribes to, its slash command."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

# The bot scope each Web API method needs (None: none); a method the channel calls that
# is not here fails the test, until its scope is known and in the manifest.
METHOD_SCOPES: dict[str, str | None] = {
    "auth_test": None,
    "apps_connections_open": None,  # the app-level token's connections:write
    "chat_postMessage": "chat:write",  # a user's id as the channel: their DM with the app
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "views_open": None,
    "send_socket_mode_response": None,  # Socket Mode's ack, on its connection
}
EVENT_SCOPES = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
}


def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "slack-app-manifest.yaml").read_text()))


def web_api_calls() -> set[str]:
    """The Web API methods the channel's code calls on a client (``….client.chat_update``)."""
    called = set()
    for source in (ROOT / "bot" / "slack").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            named = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if named == "client":
                called.add(node.func.attr)
    return called


def test_the_manifest_asks_for_the_scopes_the_channel_uses_and_no_more() -> None:
    app = manifest()
    calls = web_api_calls()
    assert calls, "no Web API call found: the scan no longer matches the code"
    assert calls <= METHOD_SCOPES.keys(), f"the scope of {calls - METHOD_SCOPES.keys()}?"
    events = app["settings"]["event_subscriptions"]["bot_events"]
    needed = {METHOD_SCOPES[m] for m in calls} | {EVENT_SCOPES[e] for e in events}
    if app["features"].get("slash_commands"):
        needed.add("commands")
    needed.discard(None)
    assert set(app["oauth_config"]["scopes"]["bot"]) == needed
