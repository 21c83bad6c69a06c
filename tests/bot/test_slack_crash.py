"""A real crash around a command that only shows something (``/runs``), which steward
answers before it stores the delivery (``FrontDoor.claim_unstored``).

``steward run`` runs in a subprocess against the local Slack, in HTTP mode, and is
SIGKILLed: once just as its answer reaches Slack, before anything is stored, and once
while Slack cannot take the answer, after Slack was told the delivery arrived. Nothing
is lost either way: Slack, told nothing, sends the event again and it is answered; an
answer Slack could not take was kept, and goes after the restart, once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.bot.test_slack import OPERATOR, bot_texts, sent_steps
from tests.bot.test_telegram_crash import inbox, steward_run, stop
from tests.fakes.slack_api import FakeSlackAPI
from tests.net import free_port

pytestmark = pytest.mark.slow
NO_RUNS = "No runs in progress."


async def start_steward(home: Path, slack: FakeSlackAPI, port: int) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "STEWARD_HOME": str(home),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "STEWARD_SLACK_API_URL": slack.base_url,
        "STEWARD_OPERATORS": f"slack:{OPERATOR}",
        "STEWARD_HTTP_PORT": str(port),
    }
    bot = await steward_run(env)
    await listening(port)
    return bot


async def listening(port: int) -> None:
    for _ in range(600):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise AssertionError(f"steward never listened on {port}")


async def kill(bot: asyncio.subprocess.Process) -> None:
    if bot.returncode is None:
        bot.send_signal(signal.SIGKILL)
    await bot.wait()
    # 255 where asyncio's child watcher lost the status of a child killed meanwhile
    assert bot.returncode in (-signal.SIGKILL, 255), bot.returncode


def killing_at_the_first_post(slack: FakeSlackAPI, bot: Callable[[], Any]) -> None:
    """The fake Slack takes the first chat.postMessage, then SIGKILLs steward before it
    can hear back."""
    post: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] = slack._methods["chat.postMessage"]
    killed = False

    async def post_then_kill(params: dict[str, Any]) -> dict[str, Any]:
        nonlocal killed
        body = await post(params)
        if not killed:
            killed = True
            bot().send_signal(signal.SIGKILL)
        return body

    slack._methods["chat.postMessage"] = post_then_kill


async def test_killed_as_its_answer_reaches_slack_the_event_sent_again_is_answered(
    tmp_path: Path,
) -> None:
    home, port = tmp_path / "home", free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    async with FakeSlackAPI() as slack:
        dm = slack.dm_channel(OPERATOR)
        bot = await start_steward(home, slack, port)
        try:
            killing_at_the_first_post(slack, lambda: bot)
            event = slack.message_event(OPERATOR, "/runs")
            with pytest.raises(aiohttp.ClientError):  # it died before its ack
                await slack.post_event(url, event)
            await kill(bot)
            assert bot_texts(slack, dm) == [NO_RUNS] and inbox(home) == []

            bot = await start_steward(home, slack, port)
            assert (await slack.post_event(url, event, retry_num=1))[0] == 200
            await slack.wait_for(lambda s: len(bot_texts(s, dm)) == 2, timeout=30)
            # At least once, as any reply a crash cut off after it went: stored once.
            delivery = f"{slack.bot_id}:message:{dm}:{event['event']['ts']}"
            assert inbox(home) == [(delivery, "done")]
            assert (await slack.post_event(url, event, retry_num=2))[0] == 200
            await stop(bot)
            assert bot_texts(slack, dm) == [NO_RUNS, NO_RUNS] and sent_steps(home) == []
        finally:
            if bot.returncode is None:
                await kill(bot)


async def test_killed_while_slack_cannot_take_its_answer_it_goes_after_the_restart_once(
    tmp_path: Path,
) -> None:
    home, port = tmp_path / "home", free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    async with FakeSlackAPI() as slack:
        dm = slack.dm_channel(OPERATOR)
        bot = await start_steward(home, slack, port)
        try:
            slack.fail("chat.postMessage", 503, times=1_000)
            event = slack.message_event(OPERATOR, "/runs")
            assert (await slack.post_event(url, event))[0] == 200  # told "delivered"
            await kill(bot)
            delivery = f"{slack.bot_id}:message:{dm}:{event['event']['ts']}"
            assert inbox(home) == [(delivery, "done")] and sent_steps(home) == [0]

            slack.fail("chat.postMessage", 503, times=0)
            bot = await start_steward(home, slack, port)
            await slack.wait_for(lambda s: bot_texts(s, dm) == [NO_RUNS], timeout=30)
            assert (await slack.post_event(url, event, retry_num=1))[0] == 200
            await stop(bot)
            assert bot_texts(slack, dm) == [NO_RUNS] and sent_steps(home) == []
            assert inbox(home) == [(delivery, "done")]
        finally:
            if bot.returncode is None:
                await kill(bot)
