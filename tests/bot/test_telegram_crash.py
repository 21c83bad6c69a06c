"""A real crash between receiving Telegram updates and handling them.

``steward run`` runs in a subprocess against the local Bot API. Its first update is
stuck in a model call that never answers, so the updates behind it are stored and
confirmed to Telegram but not handled when the process is SIGKILLed. After a restart
each of them is handled exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from tests.bot.test_telegram import OPERATOR, START, TOKEN, button, cards, outbox, texts
from tests.fakes.bot_api import FakeBotAPI

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def model_that_never_answers() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An OpenAI-compatible endpoint that takes requests and never answers them."""
    asked = asyncio.Event()
    never = asyncio.Event()

    async def complete(request: web.Request) -> web.Response:
        asked.set()
        await never.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", asked
    finally:
        never.set()
        await runner.cleanup()


def stuck_on(model: str) -> dict[str, str]:
    """Settings that point steward's model calls at ``model``, which never answers."""
    return {"STEWARD_LLM_MODEL": "stuck", "OPENAI_BASE_URL": model, "OPENAI_API_KEY": "x"}


async def start_steward(home: Path, api: FakeBotAPI, **extra: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "STEWARD_HOME": str(home),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "STEWARD_TELEGRAM_API_URL": api.root,
        "STEWARD_OPERATORS": f"telegram:{OPERATOR}",
        **extra,
    }
    return await steward_run(env)


async def steward_run(env: dict[str, str]) -> asyncio.subprocess.Process:
    """``steward run`` in a process of its own, with ``env``, no terminal and no output."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def approve_the_card(api: FakeBotAPI) -> None:
    """The operator approves the one card; the run acts and is done."""
    (card,) = cards(api)
    api.press(OPERATOR, card, button(card, "Approve"))
    await api.wait_for(lambda a: any("is done" in t for t in texts(a)), timeout=30)


async def kill(bot: asyncio.subprocess.Process) -> None:
    bot.send_signal(signal.SIGKILL)
    await bot.wait()
    assert bot.returncode == -signal.SIGKILL


async def stop(bot: asyncio.subprocess.Process) -> None:
    bot.send_signal(signal.SIGTERM)
    await asyncio.wait_for(bot.wait(), 30)
    assert bot.returncode == 0


def inbox(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "steward.db") as db:
        rows = db.execute("select external_id, status from inbox order by id").fetchall()
    return [(str(e), str(s)) for e, s in rows]


async def test_updates_stored_before_a_sigkill_are_handled_once_after_restart(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    async with FakeBotAPI(token=TOKEN) as api, model_that_never_answers() as (model, asked):
        bot = await start_steward(home, api, **stuck_on(model))
        try:
            await api.wait_for(lambda a: a.polls_waiting > 0, timeout=60)
            vague = api.send_text(OPERATOR, "hmm, what about the thing")
            await asyncio.wait_for(asked.wait(), 30)  # handling is stuck in the model call
            start = api.send_text(OPERATOR, START)
            runs = api.send_text(OPERATOR, "/runs")
            last = runs["update_id"]
            # Telegram is told "delivered" (the offset moves past them) …
            await api.wait_for(lambda a: bool(a.offsets) and a.offsets[-1] > last, timeout=30)
            # … because they are in the inbox, though none is handled yet.
            ids = [f"{api.bot_id}:{u['update_id']}" for u in (vague, start, runs)]
            assert inbox(home) == [(i, "new") for i in ids]
            assert api.sent(OPERATOR) == []
        finally:
            await kill(bot)
        assert api.pending == []  # confirmed: Telegram will not send these again

        bot = await start_steward(home, api)
        try:
            await api.wait_for(lambda a: len(a.sent(OPERATOR)) >= 4, timeout=60)
            await api.wait_for(lambda a: a.polls_waiting > 0, timeout=30)
            await asyncio.sleep(0.5)
            said = texts(api)
            assert sum("not sure what you need" in t for t in said) == 1
            assert sum(t.startswith("Started onboarding") for t in said) == 1
            assert len(cards(api)) == 1
            assert sum(" · onboarding · waiting" in t for t in said) == 1
            assert [status for _, status in inbox(home)] == ["done"] * 3

            await approve_the_card(api)
        finally:
            await stop(bot)
        assert len(outbox(home)) == 1


def replies_owed(home: Path) -> int:
    with sqlite3.connect(home / "steward.db") as db:
        return int(db.execute("select count(*) from replies").fetchone()[0])


async def test_a_reply_cut_off_by_a_sigkill_is_sent_after_restart(tmp_path: Path) -> None:
    """The run reaches its gate and its replies are on their way when the process dies:
    Telegram never got them — the word that it started, the card. After a restart they go
    out, once each; the message is not handled again, and the approval acts once."""
    home = tmp_path / "home"
    async with FakeBotAPI(token=TOKEN) as api:
        bot = await start_steward(home, api)
        try:
            await api.wait_for(lambda a: a.polls_waiting > 0, timeout=60)
            api.stall("sendMessage")
            api.send_text(OPERATOR, START)
            await api.wait_for(lambda a: "sendMessage" in a.stalled_calls, timeout=30)
            await api.wait_for(lambda a: replies_owed(home) == 2, timeout=10)  # the card too
            assert inbox(home)[-1][1] == "done"
        finally:
            await kill(bot)
        await api.wait_for(lambda a: not a.stalled_calls, timeout=10)  # its client is gone
        api.unstall()
        assert api.sent(OPERATOR) == []

        bot = await start_steward(home, api)
        try:
            await api.wait_for(lambda a: cards(a), timeout=60)
            await api.wait_for(lambda a: replies_owed(home) == 0, timeout=10)
            said = texts(api)
            assert sum(t.startswith("Started onboarding") for t in said) == 1
            assert len(cards(api)) == 1 and len(inbox(home)) == 1
            await approve_the_card(api)
        finally:
            await stop(bot)
        assert len(outbox(home)) == 1


async def test_a_reply_of_many_messages_cut_off_by_a_sigkill_sends_only_the_rest(
    tmp_path: Path,
) -> None:
    """A reply too long for one message dies after its first went: after the restart the
    rest goes, and the first not again (it was sent twice)."""
    home = tmp_path / "home"
    (home / "processes").mkdir(parents=True)
    for n in range(30):  # a listing of them runs past Telegram's 4,096 characters
        (home / "processes" / f"chore_{n}.yaml").write_text(
            f"name: chore_{n}\ntitle: Chore {n}\n"
            f"description: {'Something that takes a while to say. ' * 5}\n"
            "steps:\n  - id: ask\n    kind: approval\n    title: Go ahead?\n"
            "    summary: Go ahead with the chore\n"
        )
    async with FakeBotAPI(token=TOKEN) as api:
        bot = await start_steward(home, api)
        try:
            await api.wait_for(lambda a: a.polls_waiting > 0, timeout=60)
            api.stall("sendMessage", after=1)
            api.send_text(OPERATOR, "/processes")
            await api.wait_for(lambda a: "sendMessage" in a.stalled_calls, timeout=30)
            assert len(api.sent(OPERATOR)) == 1
        finally:
            await kill(bot)
        await api.wait_for(lambda a: not a.stalled_calls, timeout=10)  # its client is gone
        api.unstall()
        assert replies_owed(home) == 1

        bot = await start_steward(home, api)
        try:
            await api.wait_for(lambda a: replies_owed(home) == 0, timeout=60)
            await api.wait_for(lambda a: a.polls_waiting > 0, timeout=30)
        finally:
            await stop(bot)
    said = texts(api)
    assert len(said) >= 2 and "chore_29" in said[-1]
    assert sum("chore_0 —" in t for t in said) == 1
    assert "inputs: none" in said[0]  # where it said "inputs: " and nothing


async def test_a_handling_cut_off_after_its_first_write_says_so_after_restart(
    tmp_path: Path,
) -> None:
    """The run is started (its first write, which marks the message done, and keeps the
    word that it started) and its draft is stuck in a model call when the process dies,
    before the rest of the reply was made. The operator has heard that the run started;
    after a restart they hear, once, that steward was cut off; the message is not handled
    again, the run goes on to its gate, and the approval acts once."""
    home = tmp_path / "home"
    async with FakeBotAPI(token=TOKEN) as api, model_that_never_answers() as (model, asked):
        bot = await start_steward(home, api, **stuck_on(model))
        try:
            await api.wait_for(lambda a: a.polls_waiting > 0, timeout=60)
            api.send_text(OPERATOR, START)
            await asyncio.wait_for(asked.wait(), 30)  # the run's draft is stuck
            assert inbox(home) == [(inbox(home)[0][0], "done")]
            await api.wait_for(lambda a: replies_owed(home) == 1, timeout=10)  # the word
            started = texts(api)
            assert len(started) == 1 and started[0].startswith("Started onboarding as run ")
        finally:
            await kill(bot)

        bot = await start_steward(home, api)
        try:
            await api.wait_for(lambda a: cards(a), timeout=60)
            await api.wait_for(lambda a: replies_owed(home) == 0, timeout=10)
            said = texts(api)
            assert said[1] == (
                f"I was cut off while handling “{START}”: steward stopped before I could "
                "answer. Whatever I did before that stands; /runs shows where things are."
            )
            assert sum("cut off" in t for t in said) == 1
            assert len(cards(api)) == 1 and len(inbox(home)) == 1
            await approve_the_card(api)
        finally:
            await stop(bot)
        assert len(outbox(home)) == 1
