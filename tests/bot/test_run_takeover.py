"""A run moved by a worker that dies mid-step, with a real process and a real SIGKILL:
no service beside it takes the run while that worker lives, not at its start nor at a
beat; once the worker is gone, the live service moves the run on (at its next beat, for
a shell of its home: the shell's slot tells), and the step's effect goes out again
under the same idempotency key."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot import service as service_module
from bot.app import Steward
from bot.service import Service, forget_gone_shells
from bot.settings import load_settings
from graph.errors import InvalidState
from memory.ledger import RunStatus
from memory.ledger import ledger as ledger_module
from tests.net import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
LEASE = timedelta(seconds=8)  # longer than a shell's beat (5 s), which is not shortened
PARTNER = """
name: notify_partner
title: Notify the partner
description: tells the partner's system about a client, once approved
inputs:
  client: {{type: string}}
steps:
  - id: approve
    kind: approval
    summary: Tell the partner about {{client}}
  - id: post
    kind: action
    gate: approve
    connector: webhook
    action: post
    with: {{url: "{url}", client: "{{client}}"}}
"""


class Partner:
    """A webhook receiver that holds its first ``held`` calls, each until the test lets
    it go (or ends), and answers every later one."""

    def __init__(self, held: int) -> None:
        self.keys: list[str] = []
        self.holds = [asyncio.Event() for _ in range(held)]

    async def receive(self, request: web.Request) -> web.Response:
        self.keys.append(request.headers["Idempotency-Key"])
        if len(self.keys) <= len(self.holds):
            await self.holds[len(self.keys) - 1].wait()
        return web.json_response({"ok": True})


@asynccontextmanager
async def partner_at(port: int, held: int = 1) -> AsyncIterator[Partner]:
    partner = Partner(held)
    app = web.Application()
    app.router.add_post("/hook", partner.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield partner
    finally:
        for hold in partner.holds:
            hold.set()
        await runner.cleanup()


async def until(condition: Callable[[], bool | Awaitable[bool]], seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        met = condition()
        if await met if inspect.isawaitable(met) else met:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


async def status(steward: Steward, run_id: str) -> RunStatus | None:
    run = await steward.ledger.get_run(run_id)
    return run.status if run is not None else None


async def moved_on(steward: Steward, run_id: str) -> bool:
    return await status(steward, run_id) is not RunStatus.RUNNING


def partner_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, int]:
    """A home whose process calls the partner, and the partner's port; beats and leases
    short enough for a test, in this process."""
    monkeypatch.setattr(service_module, "BEAT_SECONDS", 0.1)
    monkeypatch.setattr(service_module, "LEASE", LEASE)
    monkeypatch.setattr(ledger_module, "LEASE", LEASE)
    home, port = tmp_path / "home", free_port()
    (home / "processes").mkdir(parents=True)
    url = f"http://127.0.0.1:{port}/hook"
    (home / "processes" / "partner.yaml").write_text(PARTNER.format(url=url))
    return home, port


async def approve_in_a_shell(home: Path, approval_id: str, stderr: Any) -> Process:
    """`steward approve` in a process of its own."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot.cli", "approve", approval_id),
        env={**os.environ, "STEWARD_HOME": str(home)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
        cwd=ROOT,
    )


async def in_the_shell(home: Path, *argv: str) -> str:
    """What `steward ARGV` said, out and err; it must exit 0."""
    command = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot.cli", *argv),
        env={**os.environ, "STEWARD_HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    said, _ = await asyncio.wait_for(command.communicate(), 60)
    assert command.returncode == 0, said.decode()
    return said.decode()


async def test_a_run_left_mid_step_by_a_dead_worker_goes_on_in_the_live_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, port = partner_home(tmp_path, monkeypatch)
    settings = load_settings(home=home)
    async with partner_at(port) as partner, Steward.open(settings) as steward:
        view = await steward.engine.start("notify_partner", {"client": "Acme"}, "cli:shell")
        assert view.approval is not None
        said = tmp_path / "shell.err"
        with said.open("w") as stderr:
            shell = await approve_in_a_shell(home, view.approval.id, stderr)
        try:
            await until(lambda: partner.keys or shell.returncode is not None, 60)
            assert partner.keys, said.read_text()  # the shell is mid-step, in the call
            async with Service(steward, []):  # its start leaves the shell's run alone
                await asyncio.sleep(2)  # and so do its beats
                assert len(partner.keys) == 1
                assert await status(steward, view.run.id) is RunStatus.RUNNING
                shell.send_signal(signal.SIGKILL)
                assert await shell.wait() == -signal.SIGKILL
                # its slot let go: known gone at the next beat, well within its lease
                await until(lambda: len(partner.keys) == 2, LEASE.total_seconds() / 2)
                await until(lambda: moved_on(steward, view.run.id), 10)
        finally:
            if shell.returncode is None:
                shell.kill()
                await shell.wait()
        assert await status(steward, view.run.id) is RunStatus.SUCCEEDED
        assert partner.keys[0] == partner.keys[1]  # the same call, which the partner dedups
        await asyncio.sleep(0.5)
        assert len(partner.keys) == 2


async def test_a_shell_stopped_past_its_lease_finds_its_run_moved_on_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP (Ctrl-Z, a paused machine) mid-call: the service takes the run over and
    finishes it; the shell, woken, records nothing of its step and says what happened."""
    home, port = partner_home(tmp_path, monkeypatch)
    async with (
        partner_at(port, held=2) as partner,
        Steward.open(load_settings(home=home)) as steward,
    ):
        view = await steward.engine.start("notify_partner", {"client": "Acme"}, "cli:shell")
        assert view.approval is not None
        shell = await approve_in_a_shell(home, view.approval.id, asyncio.subprocess.PIPE)
        try:
            await until(lambda: partner.keys or shell.returncode is not None, 60)
            assert partner.keys
            async with Service(steward, []):
                shell.send_signal(signal.SIGSTOP)
                await until(lambda: len(partner.keys) == 2, 3 * LEASE.total_seconds())
                shell.send_signal(signal.SIGCONT)  # the service is mid-call: its run now
                partner.holds[0].set()  # the woken shell's call comes back
                assert shell.stderr is not None
                said = (await asyncio.wait_for(shell.stderr.read(), 30)).decode()
                assert await shell.wait() == 1, said
                assert await status(steward, view.run.id) is RunStatus.RUNNING
                partner.holds[1].set()
                await until(lambda: moved_on(steward, view.run.id), 10)
        finally:
            if shell.returncode is None:
                shell.kill()
                await shell.wait()
        assert "took its run over; it moves the run on" in said and "Traceback" not in said
        assert await status(steward, view.run.id) is RunStatus.SUCCEEDED
        assert len(partner.keys) == 2


async def test_a_run_a_killed_shell_left_mid_step_goes_on_at_a_retry_in_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No steward beside it: `steward retry` moves the run on, its effect under the same
    key, where it said only a failed run can be retried."""
    home, port = partner_home(tmp_path, monkeypatch)
    async with partner_at(port) as partner, Steward.open(load_settings(home=home)) as steward:
        view = await steward.engine.start("notify_partner", {"client": "Acme"}, "cli:shell")
        assert view.approval is not None
        shell = await approve_in_a_shell(home, view.approval.id, asyncio.subprocess.DEVNULL)
        try:
            await until(lambda: partner.keys or shell.returncode is not None, 60)
            assert partner.keys
            shell.send_signal(signal.SIGKILL)
            assert await shell.wait() == -signal.SIGKILL
        finally:
            if shell.returncode is None:
                shell.kill()
                await shell.wait()
        assert await status(steward, view.run.id) is RunStatus.RUNNING
        # Within its lease the shell may live: retry said only a failed run can be retried.
        with pytest.raises(InvalidState, match="lives, or was stopped less than 30 s ago"):
            await steward.engine.retry(view.run.id, "cli:shell")
        # The lists said "running" and no more, as of a run that moves.
        await forget_gone_shells(steward.ledger, home)
        listed = (await steward.coordinator.runs_reply()).texts[0]
        assert f"stopped mid-step: /retry {view.run.id} moves it on" in listed
        said = await in_the_shell(home, "runs")
        assert f"stopped mid-step: steward retry {view.run.id} moves it on" in said
        said = await in_the_shell(home, "retry", view.run.id)
        assert f"Run {view.run.id} (notify_partner) is done." in said
        assert await status(steward, view.run.id) is RunStatus.SUCCEEDED
        assert len(partner.keys) == 2 and partner.keys[0] == partner.keys[1]
