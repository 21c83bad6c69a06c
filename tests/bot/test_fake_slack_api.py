"""The fake Slack (tests/fakes/slack_api.py), driven by the real slack_sdk and slack-bolt."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import FakeSlackAPI, validate_blocks
from tests.net import free_port

ALICE = "U0ALICE"
CHANNEL = "C0GENERAL"
JSONDict = dict[str, Any]


def plain(text: str) -> JSONDict:
    return {"type": "plain_text", "text": text}


def section(text: str) -> JSONDict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(action_id: str, text: str = "Approve", value: str = "v", **extra: Any) -> JSONDict:
    return {"type": "button", "action_id": action_id, "text": plain(text), "value": value, **extra}


def actions(*elements: JSONDict, block_id: str | None = None) -> JSONDict:
    block: JSONDict = {"type": "actions", "elements": list(elements)}
    if block_id is not None:
        block["block_id"] = block_id
    return block


def modal(title: str = "Details", **extra: Any) -> JSONDict:
    return {"type": "modal", "title": plain(title), "blocks": [section("Fill in")], **extra}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackAPI]:
    async with FakeSlackAPI() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlackAPI) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)


async def api_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value


# -- Web API -------------------------------------------------------------------------------


async def test_auth_test_and_post_message_round_trip(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    auth = await client.auth_test()
    assert (auth["team_id"], auth["user_id"], auth["bot_id"]) == ("T0001", "U0BOT", "B0BOT")
    assert auth["url"] == "https://steward.slack.com/"

    blocks = [section("Approve?"), actions(button("approve"), block_id="choice")]
    first = await client.chat_postMessage(channel=CHANNEL, text="Approve?", blocks=blocks)
    reply = await client.chat_postMessage(channel=CHANNEL, text="in thread", thread_ts=first["ts"])

    assert first["channel"] == CHANNEL and re.fullmatch(r"\d{10}\.\d{6}", first["ts"])
    assert float(reply["ts"]) > float(first["ts"])
    message = first["message"]
    assert (message["user"], message["bot_id"], message["text"]) == ("U0BOT", "B0BOT", "Approve?")
    assert message["blocks"][0]["block_id"]  # filled in, as Slack does
    assert message["blocks"][1]["block_id"] == "choice"
    assert reply["message"]["thread_ts"] == first["ts"]
    assert "thread_ts" not in message

    stored = slack.messages(CHANNEL)
    assert [m["text"] for m in stored] == ["Approve?", "in thread"]
    assert stored[0]["reply_count"] == 1 and stored[0]["latest_reply"] == reply["ts"]
    assert slack.message(CHANNEL, first["ts"])["blocks"] == message["blocks"]
    with pytest.raises(KeyError):
        slack.message(CHANNEL, "1.000001")

    [auth_call] = slack.calls_to("auth.test")
    assert auth_call.ok and auth_call.params == {}
    post = slack.calls_to("chat.postMessage")[0]
    assert post.params["blocks"][1]["elements"][0]["action_id"] == "approve"
    assert post.response["ts"] == first["ts"]
    assert len(slack.send_times(CHANNEL)) == 2


async def test_a_user_id_posts_into_the_users_dm_channel(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    sent = await client.chat_postMessage(channel=ALICE, text="Hi Alice")
    again = await client.chat_postMessage(channel=ALICE, text="Still there?")

    dm = slack.dm_channel(ALICE)
    assert dm.startswith("D") and sent["channel"] == again["channel"] == dm
    assert [m["text"] for m in slack.messages(dm)] == ["Hi Alice", "Still there?"]
    assert slack.messages(ALICE) == slack.messages(dm)
    assert len(slack.send_times(ALICE)) == 2
    assert slack.dm_channel("U0BOB") != dm

    error = await api_error(client.chat_postMessage(channel="#general", text="x"))
    assert error.response["error"] == "channel_not_found"


async def test_form_bodies_and_the_token_parameter(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    blocks = [section("From a form")]
    sent = await client.api_call(
        "chat.postMessage",
        data={"channel": CHANNEL, "text": "form", "blocks": json.dumps(blocks)},
    )
    assert sent["message"]["blocks"][0]["text"]["text"] == "From a form"
    assert slack.calls_to("chat.postMessage")[0].params["blocks"][0]["type"] == "section"

    async with (
        ClientSession() as session,
        session.post(
            f"{slack.base_url}chat.postMessage",
            data={"token": slack.bot_token, "channel": CHANNEL, "text": "token param"},
        ) as response,
    ):
        answer = await response.json()
    assert response.status == 200 and answer["ok"] is True
    assert "token" not in slack.calls_to("chat.postMessage")[1].params


async def test_tokens_are_checked_and_unknown_methods_are_404(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url)
    assert (await api_error(wrong.auth_test())).response["error"] == "invalid_auth"
    anonymous = AsyncWebClient(base_url=slack.base_url)
    assert (await api_error(anonymous.auth_test())).response["error"] == "not_authed"
    bot_for_socket = client.apps_connections_open(app_token=slack.bot_token)
    assert (await api_error(bot_for_socket)).response["error"] == "not_allowed_token_type"
    app_for_chat = AsyncWebClient(token=slack.app_token, base_url=slack.base_url)
    error = await api_error(app_for_chat.chat_postMessage(channel=CHANNEL, text="x"))
    assert error.response["error"] == "not_allowed_token_type"

    unknown = await api_error(client.api_call("conversations.list"))
    assert unknown.response.status_code == 404
    assert unknown.response["error"] == "unknown_method"

    opened = await client.apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith(f"ws://127.0.0.1:{slack.root.rsplit(':', 1)[1]}/link/?ticket=")
    assert [c.error for c in slack.calls[:5]] == [
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "not_allowed_token_type",
        "unknown_method",
    ]
    assert slack.messages(CHANNEL) == []


async def test_chat_update_keeps_left_out_blocks_and_removes_them_with_an_empty_list(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    blocks = [section("Approve?"), actions(button("approve"))]
    sent = await client.chat_postMessage(channel=ALICE, text="Approve?", blocks=blocks)
    channel, ts = sent["channel"], sent["ts"]

    updated = await client.chat_update(channel=channel, ts=ts, text="Approve? (reminder)")
    assert updated["text"] == "Approve? (reminder)" and updated["ts"] == ts
    assert updated["message"]["blocks"] == sent["message"]["blocks"]  # as Slack documents

    await client.chat_update(channel=channel, ts=ts, text="Approved", blocks=[])
    current = slack.message(channel, ts)
    assert current["text"] == "Approved" and "blocks" not in current
    assert current["edited"]["user"] == "U0BOT"

    new_blocks = [section("Done")]
    await client.chat_update(channel=channel, ts=ts, text="Done", blocks=new_blocks)
    assert slack.message(channel, ts)["blocks"][0]["text"]["text"] == "Done"
    history = slack.versions(channel, ts)
    assert [v["text"] for v in history] == ["Approve?", "Approve? (reminder)", "Approved", "Done"]
    assert [len(v.get("blocks", [])) for v in history] == [2, 2, 0, 1]

    missing = await api_error(client.chat_update(channel=channel, ts="1.000001", text="x"))
    assert missing.response["error"] == "message_not_found"
    nowhere = await api_error(client.chat_update(channel="C0NOWHERE", ts=ts, text="x"))
    assert nowhere.response["error"] == "channel_not_found"
    user_message = slack.message_event(ALICE, "my own words")["event"]
    theirs = client.chat_update(channel=user_message["channel"], ts=user_message["ts"], text="x")
    assert (await api_error(theirs)).response["error"] == "cant_update_message"


async def test_post_ephemeral(slack: FakeSlackAPI, client: AsyncWebClient) -> None:
    answer = await client.chat_postEphemeral(
        channel=CHANNEL, user=ALICE, text="Only you", blocks=[section("Only you")]
    )
    assert re.fullmatch(r"\d{10}\.\d{6}", answer["message_ts"])
    [ephemeral] = slack.ephemerals
    assert (ephemeral["channel"], ephemeral["user"], ephemeral["text"]) == (
        CHANNEL,
        ALICE,
        "Only you",
    )
    assert ephemeral["blocks"][0]["type"] == "section"
    assert slack.messages(CHANNEL) == []


def long(n: int) -> str:
    return "x" * n


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        pytest.param([{"type": "divider"}] * 51, "/blocks]", id="51-blocks"),
        pytest.param([section(long(3001))], "/blocks/0/text/text]", id="section-text"),
        pytest.param(
            [{"type": "section", "fields": [plain("f")] * 11}],
            "/blocks/0/fields]",
            id="11-fields",
        ),
        pytest.param(
            [{"type": "section", "fields": [plain(long(2001))]}],
            "/blocks/0/fields/0/text]",
            id="long-field",
        ),
        pytest.param(
            [{"type": "header", "text": plain(long(151))}], "/blocks/0/text/text]", id="header"
        ),
        pytest.param(
            [{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}],
            "/blocks/0/text/type]",
            id="header-mrkdwn",
        ),
        pytest.param(
            [actions(button("a", text=long(76)))],
            "/blocks/0/elements/0/text/text]",
            id="button-text",
        ),
        pytest.param(
            [actions(button("a", value=long(2001)))],
            "/blocks/0/elements/0/value]",
            id="button-value",
        ),
        pytest.param(
            [actions(button(long(256)))], "/blocks/0/elements/0/action_id]", id="action-id"
        ),
        pytest.param(
            [actions(button("same"), button("same"))],
            "/blocks/0/elements/1/action_id]",
            id="duplicate-action-id",
        ),
        pytest.param(
            [actions(button("a", style="secondary"))],
            "/blocks/0/elements/0/style]",
            id="style",
        ),
        pytest.param(
            [
                actions(
                    button(
                        "a",
                        confirm={
                            "title": plain("Sure?"),
                            "text": plain("Really"),
                            "confirm": plain("Yes"),
                        },
                    )
                )
            ],
            "/blocks/0/elements/0/confirm/deny]",
            id="confirm-without-deny",
        ),
        pytest.param(
            [{"type": "context", "elements": [plain("c")] * 11}],
            "/blocks/0/elements]",
            id="11-context-elements",
        ),
        pytest.param(
            [
                {
                    "type": "input",
                    "label": plain("Why"),
                    "element": {
                        "type": "plain_text_input",
                        "action_id": "why",
                        "max_length": 5,
                        "initial_value": "too long",
                    },
                }
            ],
            "/blocks/0/element/initial_value]",
            id="initial-value",
        ),
        pytest.param(
            [
                {
                    "type": "input",
                    "label": plain("Why"),
                    "element": {"type": "plain_text_input", "max_length": 3001},
                }
            ],
            "/blocks/0/element/max_length]",
            id="max-length",
        ),
        pytest.param([{"type": "table", "rows": []}], "/blocks/0/type]", id="unknown-type"),
    ],
)
async def test_invalid_blocks_are_refused(
    slack: FakeSlackAPI, client: AsyncWebClient, blocks: list[JSONDict], pointer: str
) -> None:
    error = await api_error(client.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks))
    assert error.response["error"] == "invalid_blocks"
    assert any(e.endswith(f"[json-pointer:{pointer}") for e in error.response["errors"]), error
    assert error.response["response_metadata"]["messages"][0].startswith("[ERROR] ")
    assert slack.messages(CHANNEL) == [] and slack.send_times(CHANNEL) == []
    assert validate_blocks(blocks) == error.response["errors"]


async def test_valid_blocks_pass_and_texts_are_checked(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    blocks: list[JSONDict] = [
        {"type": "header", "text": plain(long(150))},
        {"type": "section", "text": plain(long(3000)), "accessory": button("more")},
        {"type": "context", "elements": [plain("c")] * 10},
        actions(
            button("ok", style="primary"),
            button(
                "no",
                style="danger",
                confirm={
                    "title": plain("Sure?"),
                    "text": plain("Really"),
                    "confirm": plain("Yes"),
                    "deny": plain("No"),
                },
            ),
        ),
        {"type": "divider"},
        {"type": "image", "image_url": "https://example.com/a.png", "alt_text": "a"},
        {"type": "rich_text", "elements": []},
    ]
    blocks += [{"type": "divider"}] * 43
    assert len(blocks) == 50 and validate_blocks(blocks) == []
    await client.chat_postMessage(channel=CHANNEL, text="ok", blocks=blocks)

    too_long = await api_error(client.chat_postMessage(channel=CHANNEL, text=long(40_001)))
    assert too_long.response["error"] == "msg_too_long"
    no_text = await api_error(client.api_call("chat.postMessage", json={"channel": CHANNEL}))
    assert no_text.response["error"] == "no_text"
    assert len(slack.messages(CHANNEL)) == 1


async def test_views_open_takes_a_fresh_trigger_once(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    sent = await client.chat_postMessage(
        channel=ALICE, text="Approve?", blocks=[actions(button("details", value="42"))]
    )
    payload = slack.block_action(ALICE, sent["channel"], sent["ts"], "details")
    trigger = payload["trigger_id"]

    view = modal(callback_id="why", private_metadata="run-7")
    opened = await client.views_open(trigger_id=trigger, view=view)
    stored = opened["view"]
    assert stored["id"].startswith("V") and stored["hash"]
    assert (stored["callback_id"], stored["private_metadata"]) == ("why", "run-7")
    assert stored["state"] == {"values": {}} and slack.views[stored["id"]] == stored

    again = await api_error(client.views_open(trigger_id=trigger, view=view))
    assert again.response["error"] == "exchanged_trigger_id"
    unknown = await api_error(client.views_open(trigger_id="1.2.abc", view=view))
    assert unknown.response["error"] == "invalid_trigger_id"

    slack.trigger_ttl = 0.05
    late = slack.slash_command(ALICE, CHANNEL, "help")["trigger_id"]
    await asyncio.sleep(0.1)
    expired = await api_error(client.views_open(trigger_id=late, view=view))
    assert expired.response["error"] == "expired_trigger_id"

    # The view may also come as a JSON string (form-encoded, as older clients send it).
    fresh = slack.slash_command(ALICE, CHANNEL, "help")["trigger_id"]
    slack.trigger_ttl = 3.0
    as_string = await client.api_call(
        "views.open", data={"trigger_id": fresh, "view": json.dumps(view)}
    )
    assert as_string["view"]["callback_id"] == "why"


@pytest.mark.parametrize(
    ("view", "pointer"),
    [
        pytest.param(modal(long(25)), "/view/title/text]", id="title"),
        pytest.param(modal(submit=plain(long(25))), "/view/submit/text]", id="submit"),
        pytest.param(modal(close=plain(long(25))), "/view/close/text]", id="close"),
        pytest.param(
            {**modal(), "blocks": [{"type": "divider"}] * 101}, "/view/blocks]", id="101-blocks"
        ),
        pytest.param(
            {
                **modal(),
                "blocks": [
                    {
                        "type": "input",
                        "label": plain("Why"),
                        "element": {"type": "plain_text_input"},
                    }
                ],
            },
            "/view/submit]",
            id="input-without-submit",
        ),
    ],
)
async def test_views_open_refuses_invalid_modals(
    slack: FakeSlackAPI, client: AsyncWebClient, view: JSONDict, pointer: str
) -> None:
    trigger = slack.slash_command(ALICE, CHANNEL, "")["trigger_id"]
    error = await api_error(client.views_open(trigger_id=trigger, view=view))
    assert error.response["error"] == "invalid_arguments"
    messages = error.response["response_metadata"]["messages"]
    assert any(m.startswith("[ERROR] ") and m.endswith(pointer) for m in messages), messages
    assert slack.views == {}
    # The trigger is not used up by a refused view.
    await client.views_open(trigger_id=trigger, view=modal())


async def test_interaction_payloads_have_slacks_shape(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="Plan")
    sent = await client.chat_postMessage(
        channel=CHANNEL,
        text="Approve?",
        thread_ts=parent["ts"],
        blocks=[actions(button("approve", value="run-7", style="primary"), block_id="choice")],
    )
    payload = slack.block_action(ALICE, CHANNEL, sent["ts"], "approve")
    assert payload["type"] == "block_actions" and payload["api_app_id"] == "A0APP"
    assert payload["user"] == {
        "id": ALICE,
        "username": "u0alice",
        "name": "u0alice",
        "team_id": "T0001",
    }
    assert payload["container"] == {
        "type": "message",
        "message_ts": sent["ts"],
        "channel_id": CHANNEL,
        "is_ephemeral": False,
        "thread_ts": parent["ts"],
    }
    assert payload["channel"]["id"] == CHANNEL and payload["team"]["id"] == "T0001"
    assert payload["message"] == slack.message(CHANNEL, sent["ts"])
    [action] = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == (
        "approve",
        "choice",
        "run-7",
    )
    assert (action["type"], action["style"], action["text"]["text"]) == (
        "button",
        "primary",
        "Approve",
    )
    assert payload["response_url"].startswith(f"{slack.root}/response/")
    [other] = slack.block_action(ALICE, CHANNEL, sent["ts"], "approve", "other")["actions"]
    assert other["value"] == "other" and other["action_ts"] != action["action_ts"]

    command = slack.slash_command(ALICE, ALICE, "status now")
    assert command["channel_id"] == slack.dm_channel(ALICE)
    assert command["channel_name"] == "directmessage"
    assert (command["command"], command["text"], command["user_id"]) == (
        "/steward",
        "status now",
        ALICE,
    )
    assert all(isinstance(value, str) for value in command.values())

    view_id = (
        await client.views_open(
            trigger_id=command["trigger_id"],
            view=modal(callback_id="why", private_metadata="run-7", submit=plain("Send")),
        )
    )["view"]["id"]
    submitted = slack.view_submission(ALICE, view_id, {"reason": {"text": "because"}})
    assert submitted["type"] == "view_submission" and submitted["trigger_id"]
    assert submitted["view"]["id"] == view_id
    assert submitted["view"]["private_metadata"] == "run-7"
    assert submitted["view"]["callback_id"] == "why"
    assert submitted["view"]["hash"] == slack.views[view_id]["hash"]
    assert submitted["view"]["state"]["values"] == {
        "reason": {"text": {"type": "plain_text_input", "value": "because"}}
    }
    closed = slack.view_closed(ALICE, view_id)
    assert closed["type"] == "view_closed" and closed["is_cleared"] is False
    assert closed["view"]["id"] == view_id

    event = slack.message_event(ALICE, "hello")
    assert event["type"] == "event_callback" and event["event_id"].startswith("Ev")
    assert event["authorizations"][0]["user_id"] == "U0BOT"
    assert event["authorizations"][0]["is_bot"] is True
    inner = event["event"]
    assert (inner["type"], inner["channel"], inner["channel_type"]) == (
        "message",
        slack.dm_channel(ALICE),
        "im",
    )
    assert inner["ts"] == inner["event_ts"]
    assert slack.messages(ALICE)[-1]["text"] == "hello"
    mention = slack.mention_event(ALICE, "what's up?", CHANNEL, thread_ts=parent["ts"])["event"]
    assert mention["type"] == "app_mention" and mention["text"] == "<@U0BOT> what's up?"
    assert mention["thread_ts"] == parent["ts"]
    assert slack.message(CHANNEL, parent["ts"])["reply_count"] == 2


async def test_rate_limit_answers_429_and_the_retry_handler_gets_through(
    slack: FakeSlackAPI, client: AsyncWebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack.rate_limit("chat.postMessage", 7)
    limited = await api_error(client.chat_postMessage(channel=CHANNEL, text="x"))
    assert limited.response.status_code == 429
    assert limited.response.headers["Retry-After"] == "7"
    assert limited.response["error"] == "ratelimited"
    assert slack.messages(CHANNEL) == []

    # The handler sleeps Retry-After plus up to a second of jitter: no jitter here.
    monkeypatch.setattr("slack_sdk.http_retry.builtin_async_handlers.random.random", lambda: 0.0)
    retrying = AsyncWebClient(
        token=slack.bot_token,
        base_url=slack.base_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )
    slack.rate_limit("chat.postMessage", 0, times=2)
    sent = await retrying.chat_postMessage(channel=CHANNEL, text="through")
    assert sent["ok"] and [m["text"] for m in slack.messages(CHANNEL)] == ["through"]
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 429, 429, 200]
    assert len(slack.send_times(CHANNEL)) == 1


# -- Signed delivery to an app -----------------------------------------------------------


async def test_signatures_verify_with_slack_sdk(slack: FakeSlackAPI) -> None:
    verifier = SignatureVerifier(slack.signing_secret)
    received: list[tuple[dict[str, str], str]] = []

    async def endpoint(request: web.Request) -> web.Response:
        body = await request.text()
        received.append((dict(request.headers), body))
        ok = verifier.is_valid_request(body, dict(request.headers))
        return web.Response(status=200 if ok else 401, text="ok" if ok else "bad")

    app = web.Application()
    app.router.add_post("/slack/events", endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        event = slack.message_event(ALICE, "hi")
        assert await slack.post_event(url, event) == (200, "ok")
        headers, body = received[-1]
        assert json.loads(body) == event and headers["Content-Type"] == "application/json"
        assert "X-Slack-Retry-Num" not in headers

        assert (await slack.post_event(url, event, retry_num=1))[0] == 200
        headers, _ = received[-1]
        assert (headers["X-Slack-Retry-Num"], headers["X-Slack-Retry-Reason"]) == (
            "1",
            "http_timeout",
        )

        stale = int(time.time()) - 600
        assert (await slack.post_event(url, event, timestamp=stale))[0] == 401
        assert received[-1][0]["X-Slack-Request-Timestamp"] == str(stale)
        assert (await slack.post_event(url, event, signature="v0=" + "0" * 64))[0] == 401

        sent = slack.slash_command(ALICE, CHANNEL, "a b&c")
        assert (await slack.post_command(url, sent))[0] == 200
        headers, body = received[-1]
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert "text=a+b%26c" in body

        payload = {"type": "block_actions", "actions": []}
        assert (await slack.post_interaction(url, payload))[0] == 200
        _, body = received[-1]
        assert body.startswith("payload=")
        assert [d.kind for d in slack.deliveries] == ["event"] * 4 + ["command", "interaction"]
    finally:
        await runner.cleanup()

    body = '{"type":"event_callback"}'
    signed = slack.sign(body, 1_700_000_000)
    assert signed["X-Slack-Request-Timestamp"] == "1700000000"
    expected = verifier.generate_signature(timestamp="1700000000", body=body)
    assert signed["X-Slack-Signature"] == expected


@pytest.fixture
async def bolt_url(slack: FakeSlackAPI) -> AsyncIterator[tuple[AsyncApp, str]]:
    """A bolt AsyncApp on aiohttp on a free port, talking to the fake."""
    app = AsyncApp(
        client=AsyncWebClient(token=slack.bot_token, base_url=slack.base_url),
        signing_secret=slack.signing_secret,
    )
    runner = web.AppRunner(app.web_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app, f"http://127.0.0.1:{port}/slack/events"
    finally:
        await runner.cleanup()


async def test_a_bolt_app_over_http(slack: FakeSlackAPI, bolt_url: tuple[AsyncApp, str]) -> None:
    app, url = bolt_url

    @app.event("message")
    async def on_message(event: JSONDict, say: Any) -> None:
        await say(
            text=f"echo: {event['text']}",
            blocks=[section(f"echo: {event['text']}"), actions(button("approve"))],
        )

    @app.action("approve")
    async def on_approve(ack: Any, body: JSONDict, client: AsyncWebClient, respond: Any) -> None:
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=modal(callback_id="why"))
        await respond(replace_original=True, text="Approved")

    @app.command("/steward")
    async def on_command(ack: Any, command: JSONDict) -> None:
        await ack(f"status: {command['text']}")

    assert await slack.post_event(url, slack.message_event(ALICE, "hi")) == (200, "")
    await slack.wait_for(lambda s: len(s.messages(ALICE)) == 2)
    reply = slack.messages(ALICE)[1]
    assert reply["text"] == "echo: hi" and reply["bot_id"] == "B0BOT"
    assert [c.method for c in slack.calls] == ["auth.test", "chat.postMessage"]

    pressed = slack.block_action(ALICE, ALICE, reply["ts"], "approve")
    assert (await slack.post_interaction(url, pressed))[0] == 200
    await slack.wait_for(lambda s: bool(s.responses) and bool(s.views))
    assert slack.message(ALICE, reply["ts"])["text"] == "Approved"
    assert "blocks" not in slack.message(ALICE, reply["ts"])
    assert slack.responses[0].body["replace_original"] is True

    status, text = await slack.post_command(url, slack.slash_command(ALICE, CHANNEL, "now"))
    assert (status, text) == (200, "status: now")  # bolt answers a text-only ack as text/plain

    forged = await slack.post_event(url, slack.message_event(ALICE, "x"), signature="v0=00")
    stale = await slack.post_event(
        url, slack.message_event(ALICE, "y"), timestamp=int(time.time()) - 600
    )
    assert forged[0] == stale[0] == 401


# -- Socket Mode ---------------------------------------------------------------------------


async def test_a_socket_mode_client_connects_acks_and_closes(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    socket_client = SocketModeClient(app_token=slack.app_token, web_client=client)
    received: list[SocketModeRequest] = []
    hellos: list[JSONDict] = []

    async def on_request(sm: Any, request: SocketModeRequest) -> None:
        received.append(request)
        payload = {"text": "pong"} if request.type == "slash_commands" else None
        response = SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
        await sm.send_socket_mode_response(response)

    async def on_message(sm: Any, message: JSONDict, raw: str | None) -> None:
        if message.get("type") == "hello":
            hellos.append(message)

    socket_client.socket_mode_request_listeners.append(on_request)
    socket_client.message_listeners.append(on_message)
    try:
        await socket_client.connect()
        await slack.wait_socket(2.0)
        await slack.wait_for(lambda s: bool(hellos))
        assert hellos[0]["connection_info"]["app_id"] == "A0APP"
        [opened] = slack.calls_to("apps.connections.open")
        assert opened.ok and opened.params == {}

        event = slack.message_event(ALICE, "over the socket")
        ack = await slack.socket_send("events_api", event, retry_attempt=1, retry_reason="timeout")
        assert ack == {"envelope_id": received[0].envelope_id}
        assert received[0].payload == event
        assert (received[0].retry_attempt, received[0].retry_reason) == (1, "timeout")
        assert received[0].accepts_response_payload is False

        command = slack.slash_command(ALICE, CHANNEL, "ping")
        ack = await slack.socket_send("slash_commands", command)
        assert ack["payload"] == {"text": "pong"}
        assert received[1].accepts_response_payload is True
        assert slack.envelopes[1].ack == ack and slack.envelopes[1].acked_at is not None

        # Slack recycles connections: the client asks for a new URL and reconnects.
        await slack.socket_disconnect("refresh_requested")
        await slack.wait_for(lambda s: s.socket_connects == 2 and s.socket_connected)
        assert len(slack.calls_to("apps.connections.open")) == 2
        sent = await client.chat_postMessage(channel=ALICE, text="?", blocks=[actions(button("a"))])
        pressed = slack.block_action(ALICE, ALICE, sent["ts"], "a")
        ack = await slack.socket_send("interactive", pressed)
        assert ack["envelope_id"] == received[2].envelope_id
        assert received[2].payload == pressed and received[2].retry_attempt is None

        # A connection dropped by the server: the client reconnects with a new URL.
        await slack.socket_drop()
        await slack.wait_for(lambda s: s.socket_connects == 3 and s.socket_connected)
        assert len(slack.calls_to("apps.connections.open")) == 3
    finally:
        await socket_client.close()
    await slack.wait_for(lambda s: not s.socket_connected)
    assert slack.socket_messages == []


async def test_socket_send_times_out_without_an_ack(
    slack: FakeSlackAPI, client: AsyncWebClient
) -> None:
    socket_client = SocketModeClient(app_token=slack.app_token, web_client=client)
    try:
        await socket_client.connect()
        await slack.wait_socket(2.0)
        with pytest.raises(TimeoutError):
            await slack.socket_send("events_api", slack.message_event(ALICE, "x"), timeout=0.2)
        assert slack.envelopes[0].ack is None
    finally:
        await socket_client.close()
    await slack.wait_for(lambda s: not s.socket_connected)
    with pytest.raises(RuntimeError, match="no Socket Mode client"):
        await slack.socket_send("events_api", {})


async def test_a_bolt_app_over_socket_mode(slack: FakeSlackAPI, client: AsyncWebClient) -> None:
    app = AsyncApp(client=client)

    @app.event("message")
    async def on_message(event: JSONDict, say: Any) -> None:
        await say(f"echo: {event['text']}")

    @app.command("/steward")
    async def on_command(ack: Any, command: JSONDict) -> None:
        await ack(f"status: {command['text']}")

    handler = AsyncSocketModeHandler(app, slack.app_token)
    try:
        await handler.connect_async()
        await slack.wait_socket(2.0)
        ack = await slack.socket_send("events_api", slack.message_event(ALICE, "hi"))
        assert set(ack) == {"envelope_id"}
        await slack.wait_for(lambda s: len(s.messages(ALICE)) == 2)
        assert slack.messages(ALICE)[1]["text"] == "echo: hi"

        ack = await slack.socket_send("slash_commands", slack.slash_command(ALICE, CHANNEL, "go"))
        assert ack["payload"]["text"] == "status: go"
    finally:
        await handler.close_async()
