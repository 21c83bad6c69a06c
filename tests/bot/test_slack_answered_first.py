"""A command that only shows something (``/runs``) is answered before its delivery is
stored, and stored after (``FrontDoor.claim_unstored``): what Slack sends again is still
answered once, what cannot go at once is kept before Slack hears "delivered", and a
command that would write after all is stored first, as any other."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from bot.channel import ANSWER_FIRST_WITHIN
from graph.messages import Inbound, Reply
from memory.ledger import LedgerUnavailable
from tests.bot.disk import DiskWatch
from tests.bot.test_slack import (
    OPERATOR,
    START,
    bot_texts,
    running,
    sent_steps,
)
from tests.fakes.slack_api import FakeSlackAPI

NO_RUNS = "No runs in progress."


def inbox(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "steward.db") as db:
        rows = db.execute("select external_id, status from inbox order by id").fetchall()
    return [(str(e), str(s)) for e, s in rows]


async def test_runs_is_answered_before_it_is_stored_and_on_disk_before_slack_hears(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        disk = DiskWatch(bot.steward.ledger, slow=0.2)
        event = slack.message_event(OPERATOR, "/runs")
        assert (await slack.post_event(bot.url, event))[0] == 200
        acked = time.monotonic()
        delivery = f"{slack.bot_id}:message:{dm}:{event['event']['ts']}"
        (answer,) = slack.calls_to("chat.postMessage")
        assert answer.at < disk.stored[delivery]  # answered first
        assert disk.on_disk_by(acked) == {delivery}  # stored before Slack heard
        assert inbox(bot.home) == [(delivery, "done")] and sent_steps(bot.home) == []
        for attempt in (1, 2):  # Slack sends it again: not answered again
            assert (await slack.post_event(bot.url, event, retry_num=attempt))[0] == 200
        await bot.channel.idle()
        assert bot_texts(slack, dm) == [NO_RUNS] and len(inbox(bot.home)) == 1


@pytest.mark.parametrize(
    "command",
    [
        "/runs",
        "/runs all",
        "runs",
        "/help",
        "help",
        "/processes",
        "/budget",
    ],
)
async def test_every_command_that_only_shows_is_answered_first(
    tmp_path: Path, slack: FakeSlackAPI, command: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        answered: list[bool] = []
        answer_unstored = bot.steward.door.answer_unstored

        async def watched(inbound: Inbound, account: str | None = None) -> object:
            owed = await answer_unstored(inbound, account)
            answered.append(owed is not None)
            return owed

        bot.steward.door.answer_unstored = watched  # type: ignore[method-assign]
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, command)))[0]
        await bot.channel.idle()
        assert answered == [True]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(bot_texts(slack, slack.dm_channel(OPERATOR))) == 1
        assert [status for _, status in inbox(bot.home)] == ["done"]


async def test_today_is_stored_first_as_its_list_holds_buttons(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    """Made ahead, a list with items (cards) would be made again, stored: twice the
    work, and the list of 10,000 items takes a tenth of a second."""
    async with running(tmp_path / "home", slack) as bot:
        tried: list[Inbound] = []
        answer_unstored = bot.steward.door.answer_unstored

        async def watched(inbound: Inbound, account: str | None = None) -> object:
            tried.append(inbound)
            return await answer_unstored(inbound, account)

        bot.steward.door.answer_unstored = watched  # type: ignore[method-assign]
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, "/today")))[0]
        await bot.channel.idle()
        assert tried == [] and len(bot_texts(slack, slack.dm_channel(OPERATOR))) == 1


async def test_runs_of_one_run_is_answered_first_too(tmp_path: Path, slack: FakeSlackAPI) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, START)))[0]
        await bot.channel.idle()
        (run,) = await bot.steward.ledger.list_runs()
        before = len(bot_texts(slack, dm))
        disk = DiskWatch(bot.steward.ledger)
        event = slack.message_event(OPERATOR, f"/runs {run.id}")
        assert (await slack.post_event(bot.url, event))[0] == 200
        await bot.channel.idle()
        timeline = slack.calls_to("chat.postMessage")[-1]
        assert timeline.at < disk.stored[f"{slack.bot_id}:message:{dm}:{event['event']['ts']}"]
        assert len(bot_texts(slack, dm)) == before + 1


async def test_an_answer_slack_cannot_take_at_once_is_kept_before_slack_hears_and_sent_once(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        slack.fail("chat.postMessage", 503, times=2)  # slack_sdk tries again meanwhile
        event = slack.message_event(OPERATOR, "/runs")
        assert (await slack.post_event(bot.url, event))[0] == 200
        assert sent_steps(bot.home) == [0]  # kept, unsent, before the ack
        # Sent again while the answer still waits for Slack: a duplicate, not answered.
        assert (await slack.post_event(bot.url, event, retry_num=1))[0] == 200
        await slack.wait_for(lambda s: bot_texts(s, dm) == [NO_RUNS], timeout=30)
        await bot.channel.idle()
        assert bot_texts(slack, dm) == [NO_RUNS]
        assert sent_steps(bot.home) == [] and [s for _, s in inbox(bot.home)] == ["done"]


async def test_a_command_said_to_only_show_that_writes_is_stored_first_and_handled_once(
    tmp_path: Path, slack: FakeSlackAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)

        async def everything_shows(inbound: Inbound) -> bool:
            return True

        bot.steward.coordinator.only_shows = everything_shows  # type: ignore[method-assign]
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, START)))[0]
        await slack.wait_for(lambda s: any("Started" in t for t in bot_texts(s, dm)))
        await bot.channel.idle()
        assert len(await bot.steward.ledger.list_runs()) == 1
        assert len([t for t in bot_texts(slack, dm) if "Started" in t]) == 1
        assert [s for _, s in inbox(bot.home)] == ["done"]
        assert any("wrote to the ledger" in r.getMessage() for r in caplog.records)


async def test_a_command_that_only_shows_waits_for_what_came_before_it(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, START)))[0]
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, "/runs")))[0]
        await slack.wait_for(lambda s: len(bot_texts(s, dm)) >= 2)
        await bot.channel.idle()
        texts = bot_texts(slack, dm)
        started = next(i for i, t in enumerate(texts) if "Started" in t)
        listed = next(i for i, t in enumerate(texts) if "onboarding" in t and i != started)
        assert started < listed and NO_RUNS not in texts


async def test_runs_typed_while_a_question_waits_is_its_answer_stored_first(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        shows: list[bool] = []
        only_shows = bot.steward.coordinator.only_shows

        async def watched(inbound: Inbound) -> bool:
            shows.append(await only_shows(inbound))
            return shows[-1]

        bot.steward.coordinator.only_shows = watched  # type: ignore[method-assign]
        assert (
            await slack.post_event(
                bot.url, slack.message_event(OPERATOR, "help me onboard Jane from Acme")
            )
        )[0]
        await slack.wait_for(lambda s: "email address?" in bot_texts(s, dm)[-1])
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, "runs")))[0]
        await slack.wait_for(lambda s: "got 'runs'" in bot_texts(s, dm)[-1])
        assert shows == [False, False]  # words, then the answer: neither only shows
        command = slack.slash_command(OPERATOR, dm, "runs")  # with its slash: a command
        assert (await slack.post_command(bot.url, command))[0] == 200
        await slack.wait_for(lambda s: "No runs in progress." in bot_texts(s, dm)[-1])
        assert shows == [False, False, True]


async def test_slack_s_retry_while_the_first_is_still_being_answered_is_answered_once(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        ledger = bot.steward.ledger
        stored_inbound = ledger.stored_inbound

        async def slow(channel: str, external_id: str) -> bool:
            stored = await stored_inbound(channel, external_id)
            await asyncio.sleep(0.5)  # a ledger slow to answer: Slack tries again
            return stored

        ledger.stored_inbound = slow  # type: ignore[method-assign]
        event = slack.message_event(OPERATOR, "/runs")
        first = asyncio.create_task(slack.post_event(bot.url, event))
        await asyncio.sleep(0.2)
        assert (await slack.post_event(bot.url, event, retry_num=1))[0] == 200
        assert (await first)[0] == 200
        await bot.channel.idle()
        assert bot_texts(slack, dm) == [NO_RUNS] and len(inbox(bot.home)) == 1


def _order(texts: list[str]) -> tuple[int, int]:
    """Where the run's start was told, and where the runs were listed."""
    started = next(i for i, t in enumerate(texts) if "Started" in t)
    listed = next(i for i, t in enumerate(texts) if t == NO_RUNS or "onboarding ·" in t)
    return started, listed


async def test_runs_too_slow_to_answer_first_is_still_answered_before_what_came_after_it(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        coordinator = bot.steward.coordinator
        runs_reply, slow_once = coordinator.runs_reply, [True]

        async def slow(show_all: bool = False) -> Reply:
            if slow_once:
                slow_once.clear()
                await asyncio.sleep(ANSWER_FIRST_WITHIN + 0.15)  # stored and handled again
            return await runs_reply(show_all)

        coordinator.runs_reply = slow  # type: ignore[method-assign]
        runs = asyncio.create_task(
            slack.post_event(bot.url, slack.message_event(OPERATOR, "/runs"))
        )
        await asyncio.sleep(0.1)
        assert (await slack.post_event(bot.url, slack.message_event(OPERATOR, START)))[0] == 200
        assert (await runs)[0] == 200
        await slack.wait_for(lambda s: len(bot_texts(s, dm)) >= 2, timeout=30)
        await bot.channel.idle()
        started, listed = _order(bot_texts(slack, dm))
        assert listed < started and bot_texts(slack, dm)[listed] == NO_RUNS


async def test_runs_after_a_run_whose_store_waits_for_another_process_is_answered_after_it(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    async with running(tmp_path / "home", slack) as bot:
        dm = slack.dm_channel(OPERATOR)
        other = sqlite3.connect(bot.home / "steward.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a shell's `steward approve`, say
        start = asyncio.create_task(slack.post_event(bot.url, slack.message_event(OPERATOR, START)))
        await asyncio.sleep(0.2)  # the run's delivery waits to be stored
        runs = asyncio.create_task(
            slack.post_event(bot.url, slack.message_event(OPERATOR, "/runs"))
        )
        await asyncio.sleep(0.3)
        other.execute("COMMIT")
        other.close()
        assert [(await start)[0], (await runs)[0]] == [200, 200]
        await slack.wait_for(lambda s: len(bot_texts(s, dm)) >= 3, timeout=30)
        await bot.channel.idle()
        started, listed = _order(bot_texts(slack, dm))
        assert started < listed


async def test_an_answer_that_cannot_be_kept_leaves_slack_sending_it_again_until_it_is(
    tmp_path: Path, slack: FakeSlackAPI
) -> None:
    home, dm = tmp_path / "home", slack.dm_channel(OPERATOR)
    event = slack.message_event(OPERATOR, "/runs")
    async with running(home, slack) as bot:
        slack.fail("chat.postMessage", 503, times=10_000)  # the answer cannot go …

        async def down(*args: object, **kwargs: object) -> None:
            raise LedgerUnavailable("the ledger is down")  # … nor be kept

        bot.steward.ledger.answered_inbound = down  # type: ignore[method-assign]
        assert (await slack.post_event(bot.url, event))[0] == 500
        assert (await slack.post_event(bot.url, event, retry_num=1))[0] == 500
        assert inbox(home) == []
    slack.fail("chat.postMessage", 503, times=0)
    async with running(home, slack) as bot:  # Slack's last try reaches the next start
        assert (await slack.post_event(bot.url, event, retry_num=2))[0] == 200
        await bot.channel.idle()
        assert bot_texts(slack, dm) == [NO_RUNS] and [s for _, s in inbox(home)] == ["done"]
