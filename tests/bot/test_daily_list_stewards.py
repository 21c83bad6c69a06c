"""The daily list with two `steward run` processes on one PostgreSQL ledger, one serving
Telegram and one Slack: each operator gets the day's list once, whichever steward's
timer ticks first, and one whose steward was down when it was due (Slack unreachable at
its start) gets it once that steward is back.

The stewards' schedulers read the time from a clock the test moves past the list's
time (a sitecustomize each steward's interpreter runs first gives it them), and each
reading is noted: the test waits for ticks, never for the time of day."""

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
from tests.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
TELEGRAM_TOKEN = "4242:steward-test-token"
TELEGRAM_OPERATOR = 1001
SLACK_OPERATOR = "U0OPS"
TICK = 0.5  # the stewards' schedulers tick this often here (5 s in a `steward run`)
STARTING = 60.0  # a steward under way on however slow a machine, at the most
SENDING = 30.0  # the day's list out once due, at the most
EMPTY_DAY = "nothing needs you today"

# Each steward's interpreter runs this first (its sitecustomize): its scheduler reads the
# time from the clock the test moves, ticks every TICK, and notes each reading.
MOVED_CLOCK = """
import os
from datetime import timedelta
from pathlib import Path

import bot.scheduler
from memory.ledger import utcnow

AHEAD = Path(os.environ["CLOCK_AHEAD"])  # seconds the test moved the clock, once it has
READ = Path(os.environ["CLOCK_READ"])  # a dot for each reading: one a tick


def clock():
    with READ.open("a") as read:
        read.write(".")
    return utcnow() + timedelta(seconds=float(AHEAD.read_text()) if AHEAD.exists() else 0)


made = bot.scheduler.Scheduler.__init__


def moved(self, *args, **kwargs):
    made(self, *args, **kwargs)
    self.clock = clock
    self.interval = float(os.environ["CLOCK_TICK"])


bot.scheduler.Scheduler.__init__ = moved
"""


def stderr_of(home: Path) -> Path:
    home.mkdir(exist_ok=True)
    return home / "stderr"


def said(home: Path) -> str:
    return stderr_of(home).read_text()


def ticks(home: Path) -> int:
    """How often the scheduler of the steward last started in ``home`` read its clock."""
    read = home / "clock-read"
    return len(read.read_text()) if read.exists() else 0


async def start_steward(
    home: Path, ledger: DatabaseURL, due: datetime, ahead: Path, **env: str
) -> Process:
    """A `steward run` on ``ledger`` whose daily list is due at ``due`` (UTC) on a clock
    the seconds in ``ahead`` ahead of the real one, its stderr in ``home``/stderr (that
    of its last start)."""
    hook = home / "hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(MOVED_CLOCK)
    (home / "clock-read").write_text("")
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
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(hook), str(ROOT), os.environ.get("PYTHONPATH")])
                ),
                "CLOCK_AHEAD": str(ahead),
                "CLOCK_READ": str(home / "clock-read"),
                "CLOCK_TICK": str(TICK),
                **env,
            },
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def ticked(home: Path, bot: Process, times: int, since: int = 0) -> None:
    """Returns once the scheduler of ``bot`` has begun ``times`` ticks after its
    ``since``-th: all but the last are over."""
    try:
        await until(lambda: ticks(home) >= since + times or bot.returncode is not None, STARTING)
    except AssertionError:
        raise AssertionError(f"{ticks(home) - since} ticks of {times}: {said(home)}") from None
    assert bot.returncode is None, said(home)


async def running(bot: Process, home: Path) -> None:
    """Returns once ``bot``'s scheduler has ticked once, planning the next list."""
    await ticked(home, bot, 2)


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
        # The day's list falls due when the test moves the stewards' clock past it: ten
        # minutes on, after any start, however slow.
        self.due = a_whole_minute_ahead(600)
        self.ahead = tmp_path / "clock-ahead"

    def list_falls_due(self) -> None:
        """Moves the stewards' clock a second past the list's time: each reads it at its
        next tick, and a steward started after this starts after the list's time."""
        moved = self.tmp_path / "clock-ahead.new"
        moved.write_text(str((self.due - utcnow()).total_seconds() + 1))
        moved.replace(self.ahead)

    async def telegram_steward(self) -> Process:
        home = self.tmp_path / "telegram"
        bot = await start_steward(
            home,
            self.ledger,
            self.due,
            self.ahead,
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
            self.ahead,
            SLACK_BOT_TOKEN=self.slack.bot_token,
            SLACK_SIGNING_SECRET=self.slack.signing_secret,
            STEWARD_SLACK_API_URL=self.slack.base_url,
            STEWARD_OPERATORS=f"slack:{SLACK_OPERATOR}",
            STEWARD_HTTP_PORT=str(self.slack_port),
        )
        if runs:
            await running(bot, home)
        return bot

    async def tick_twice_more(self, telegram: Process, slack: Process) -> None:
        """Returns once each steward's scheduler has ticked twice more, whole."""
        homes = {telegram: self.tmp_path / "telegram", slack: self.tmp_path / "slack"}
        since = {bot: ticks(home) for bot, home in homes.items()}
        for bot, home in homes.items():
            await ticked(home, bot, 3, since[bot])  # the one under way, and two more

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
            stewards.list_falls_due()
            await stewards.telegram.wait_for(lambda _: stewards.lists_in_telegram(), SENDING)
            await stewards.slack.wait_for(lambda _: stewards.lists_in_slack(), SENDING)
            await stewards.tick_twice_more(telegram, slack)
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
            stewards.list_falls_due()
            await stewards.telegram.wait_for(lambda _: stewards.lists_in_telegram(), SENDING)
            assert stewards.lists_in_slack() == []

            slack = await stewards.slack_steward()  # Slack is back
            await stewards.slack.wait_for(lambda _: stewards.lists_in_slack(), SENDING)
            await stewards.tick_twice_more(telegram, slack)
            assert len(stewards.lists_in_telegram()) == 1
            assert len(stewards.lists_in_slack()) == 1
        finally:
            await stop(telegram)
            await stop(slack)
