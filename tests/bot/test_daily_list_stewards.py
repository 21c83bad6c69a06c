"""The daily list with two `steward run` processes on one PostgreSQL ledger, one serving
Telegram and one Slack: each operator gets the day's list once, whichever steward's
timer ticks first, and one whose steward was down when it was due (Slack unreachable at
its start) gets it once that steward is back."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.slack.channel import SERVER_ERROR_RETRIES
from memory.database_url import DatabaseURL
from memory.ledger import utcnow
from tests.fakes.bot_api import FakeBotAPI
from tests.fakes.slack_api import FakeSlackAPI
from tests.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
TELEGRAM_TOKEN = "4242:steward-test-token"
TELEGRAM_OPERATOR = 1001
SLACK_OPERATOR = "U0OPS"
TICK = 5.0  # a `steward run`'s scheduler ticks this often
EMPTY_DAY = "nothing needs you today"


def stderr_of(home: Path) -> Path:
    home.mkdir(exist_ok=True)
    return home / "stderr"


def said(home: Path) -> str:
    return stderr_of(home).read_text()


async def start_steward(home: Path, ledger: DatabaseURL, due: datetime, **env: str) -> Process:
    """A `steward run` on ``ledger`` whose daily list is due at ``due`` (UTC), its stderr
    in ``home``/stderr (that of its last start)."""
    with stderr_of(home).open("w") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            env={
                **os.environ,
                "STEWARD_HOME": str(home),
                "STEWARD_DATABASE_URL": ledger.setting,
                "STEWARD_DIGEST_AT": f"{due:%H:%M}",
                **env,
            },
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def running(bot: Process, home: Path) -> None:
    """Returns once ``bot`` says it is running: its scheduler has begun its first tick."""
    for _ in range(600):
        if "steward is running" in said(home):
            await asyncio.sleep(1.0)  # the first tick plans the next list
            return
        assert bot.returncode is None, said(home)
        await asyncio.sleep(0.1)
    raise AssertionError(f"not running in time: {said(home)}")


async def stop(bot: Process) -> None:
    if bot.returncode is None:
        bot.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bot.wait(), 30)


class Stewards:
    """The two stewards' homes and settings, and the fake platforms they serve."""

    def __init__(
        self, tmp_path: Path, ledger: DatabaseURL, telegram: FakeBotAPI, slack: FakeSlackAPI
    ) -> None:
        self.tmp_path = tmp_path
        self.ledger = ledger
        self.telegram = telegram
        self.slack = slack
        self.slack_port = free_port()
        # The day's list falls due while the test runs, after the stewards have started.
        self.due = a_whole_minute_ahead(40)

    async def telegram_steward(self) -> Process:
        home = self.tmp_path / "telegram"
        bot = await start_steward(
            home,
            self.ledger,
            self.due,
            TELEGRAM_BOT_TOKEN=TELEGRAM_TOKEN,
            STEWARD_TELEGRAM_API_URL=self.telegram.root,
            STEWARD_OPERATORS=f"telegram:{TELEGRAM_OPERATOR}",
        )
        await running(bot, home)
        return bot

    async def slack_steward(self, runs: bool = True) -> Process:
        home = self.tmp_path / "slack"
        bot = await start_steward(
            home,
            self.ledger,
            self.due,
            SLACK_BOT_TOKEN=self.slack.bot_token,
            SLACK_SIGNING_SECRET=self.slack.signing_secret,
            STEWARD_SLACK_API_URL=self.slack.base_url,
            STEWARD_OPERATORS=f"slack:{SLACK_OPERATOR}",
            STEWARD_HTTP_PORT=str(self.slack_port),
        )
        if runs:
            await running(bot, home)
        return bot

    def lists_in_telegram(self) -> list[Any]:
        return [m for m in self.telegram.sent(TELEGRAM_OPERATOR) if EMPTY_DAY in m["text"]]

    def lists_in_slack(self) -> list[Any]:
        dm = self.slack.dm_channel(SLACK_OPERATOR)
        return [m for m in self.slack.messages(dm) if EMPTY_DAY in m.get("text", "")]


def a_whole_minute_ahead(seconds: float) -> datetime:
    """The first whole minute at least ``seconds`` from now: STEWARD_DIGEST_AT is HH:MM."""
    soon = utcnow() + timedelta(seconds=seconds)
    minute = soon.replace(second=0, microsecond=0)
    return minute if minute == soon else minute + timedelta(minutes=1)


async def until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - utcnow()).total_seconds()))


@asynccontextmanager
async def two_stewards(tmp_path: Path, postgres_database: DatabaseURL) -> AsyncIterator[Stewards]:
    async with FakeBotAPI(token=TELEGRAM_TOKEN) as telegram, FakeSlackAPI() as slack:
        yield Stewards(tmp_path, postgres_database, telegram, slack)


async def test_each_steward_sends_the_day_s_list_to_its_own_channel_once(
    tmp_path: Path, postgres_database: DatabaseURL
) -> None:
    """The day's list was one timer: the steward whose tick came first sent it to its
    channel and took it, and the other steward's operator had no list that day."""
    async with two_stewards(tmp_path, postgres_database) as stewards:
        telegram, slack = await asyncio.gather(
            stewards.telegram_steward(), stewards.slack_steward()
        )
        try:
            await until(stewards.due)
            await stewards.telegram.wait_for(lambda _: stewards.lists_in_telegram(), 4 * TICK)
            await stewards.slack.wait_for(lambda _: stewards.lists_in_slack(), 4 * TICK)
            await asyncio.sleep(2 * TICK)  # each ticks again, twice
            assert len(stewards.lists_in_telegram()) == 1
            assert len(stewards.lists_in_slack()) == 1
        finally:
            await stop(telegram)
            await stop(slack)


async def test_a_channel_down_when_the_list_went_out_gets_it_once_it_is_back(
    tmp_path: Path, postgres_database: DatabaseURL
) -> None:
    """Slack was unreachable when the list was due, so its steward could not start; the
    Telegram one sent the day's list, and the Slack operator had none that day."""
    async with two_stewards(tmp_path, postgres_database) as stewards:
        telegram, slack = await asyncio.gather(
            stewards.telegram_steward(), stewards.slack_steward()
        )  # each plans its list
        await stop(slack)
        try:
            stewards.slack.fail("auth.test", times=1 + SERVER_ERROR_RETRIES)
            down = await stewards.slack_steward(runs=False)
            assert await asyncio.wait_for(down.wait(), 60) == 1
            await until(stewards.due)
            await stewards.telegram.wait_for(lambda _: stewards.lists_in_telegram(), 4 * TICK)
            assert stewards.lists_in_slack() == []

            slack = await stewards.slack_steward()  # Slack is back
            await stewards.slack.wait_for(lambda _: stewards.lists_in_slack(), 4 * TICK)
            await asyncio.sleep(2 * TICK)
            assert len(stewards.lists_in_telegram()) == 1
            assert len(stewards.lists_in_slack()) == 1
        finally:
            await stop(telegram)
            await stop(slack)
