"""Exactly once under crashes: SIGKILL a steward that is onboarding 50 clients.

The driver process starts runs and decides their welcome emails while the test kills
it at random moments — before, during and after sending — and starts it again, until
all 50 runs are over. Counted at a real SMTP server, every approved run sent its email
once, no rejected run sent one, and no run was lost. A kill after the server took a
message but before the ledger recorded it cannot be told from one before: such a run
stops as uncertain, with the Message-ID to look for, and never sends again by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from connectors.email import message_id
from tests.connectors.email_driver import rejected
from tests.net import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RUNS = 50


class SlowInbox:
    """Takes its time over each message, so that kills land mid-conversation."""

    def __init__(self) -> None:
        self.message_ids: Counter[str] = Counter()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(random.uniform(0.0, 0.05))
        assert isinstance(envelope.content, bytes)
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.message_ids[str(parsed["Message-ID"])] += 1
        await asyncio.sleep(random.uniform(0.0, 0.05))
        return "250 2.0.0 queued"


def runs(home: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "steward.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("select id, status, inputs, error_class from runs")]


async def test_sigkill_at_random_points_never_sends_twice_or_unapproved(tmp_path: Path) -> None:
    home = tmp_path / "home"
    inbox = SlowInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    kills = 0
    try:
        for _ in range(200):
            driver = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.connectors.email_driver",
                str(home),
                str(port),
                str(RUNS),
                cwd=ROOT,
                env={**os.environ, "STEWARD_HOME": str(home)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert driver.stdout is not None
            ready = await asyncio.wait_for(driver.stdout.readline(), 120)
            if ready != b"ready\n":  # it died starting: say why
                assert driver.stderr is not None
                pytest.fail((await driver.stderr.read()).decode()[-3000:])
            try:  # "done", or the end of its output when it dies
                await asyncio.wait_for(driver.stdout.readline(), random.uniform(0.02, 0.4))
            except TimeoutError:
                driver.send_signal(signal.SIGKILL)
                await driver.wait()
                kills += 1
                continue
            await driver.wait()  # closing and exiting is not what is tested: no kill there
            assert driver.stderr is not None
            assert driver.returncode == 0, (await driver.stderr.read()).decode()[-3000:]
            break
        else:
            states = Counter((r["status"], r["error_class"]) for r in runs(home))
            pytest.fail(f"the driver never finished after {kills} kills: {dict(states)}")
    finally:
        controller.stop()

    final = runs(home)
    assert len(final) == RUNS  # none lost
    statuses = Counter(r["status"] for r in final)
    uncertain = 0
    for run in final:
        client = json.loads(run["inputs"])["client"]
        sent = inbox.message_ids[message_id(f"{run['id']}:send_welcome", "steward@example.com")]
        if rejected(client):
            assert run["status"] == "cancelled" and sent == 0, run
        elif run["status"] == "succeeded":
            assert sent == 1, run
        else:
            assert run["status"] == "failed" and run["error_class"] == "uncertain", run
            assert sent <= 1, run
            uncertain += 1
    assert statuses["succeeded"] >= RUNS // 4  # most kills miss the send: most runs finish
    known = {message_id(f"{r['id']}:send_welcome", "steward@example.com") for r in final}
    assert set(inbox.message_ids) <= known  # no email that is not one of these runs'
    print(
        f"\n{RUNS} onboarding runs, {kills} SIGKILLs: {dict(statuses)}; "
        f"{uncertain} stopped as uncertain; {sum(inbox.message_ids.values())} emails"
    )
