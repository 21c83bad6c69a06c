"""Crash safety with a real process: SIGKILL while a run waits, restart, approve once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def steward(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEWARD_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def outbox_files(home: Path) -> list[Path]:
    return sorted((home / "outbox").glob("*.json"))


def test_sigkill_while_waiting_then_approve_exactly_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_id = steward(
        home, "start", "onboarding", "client=Acme", "email=jane@acme.com", "package=basic"
    ).stdout.strip()
    runs = json.loads(steward(home, "runs", "--json").stdout)
    (approval_id,) = next(r for r in runs if r["id"] == run_id)["pending_approvals"]

    # The bot is running (terminal chat reading stdin, scheduler ticking) when it is killed.
    env = {**os.environ, "STEWARD_HOME": str(home)}
    with subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    ) as bot:
        assert bot.stdout is not None
        assert b"listening" in bot.stdout.readline()
        bot.send_signal(signal.SIGKILL)
        bot.wait(timeout=10)
    assert bot.returncode == -signal.SIGKILL

    runs = json.loads(steward(home, "runs", "--json").stdout)
    run = next(r for r in runs if r["id"] == run_id)
    assert run["status"] == "waiting" and run["pending_approvals"] == [approval_id]
    assert outbox_files(home) == []

    steward(home, "approve", approval_id)
    assert len(outbox_files(home)) == 1
    again = steward(home, "approve", approval_id, check=False)
    assert again.returncode == 1 and "Already decided" in again.stdout
    assert len(outbox_files(home)) == 1
    runs = json.loads(steward(home, "runs", "--json", "--all").stdout)
    assert next(r for r in runs if r["id"] == run_id)["status"] == "succeeded"
    assert "intact" in steward(home, "audit", "verify").stdout


def test_sigkill_during_the_effect_never_sends_twice(tmp_path: Path) -> None:
    """Kill the process in the middle of approving, many times; the effect lands once."""
    home = tmp_path / "home"
    run_ids = []
    for i in range(2):
        run_ids.append(
            steward(
                home, "start", "onboarding", f"client=C{i}", f"email=c{i}@x.com", "package=basic"
            ).stdout.strip()
        )
    started = time.monotonic()
    runs = json.loads(steward(home, "runs", "--json").stdout)
    lifetime = time.monotonic() - started  # how long one CLI process lives here
    approvals = [a for r in runs for a in r["pending_approvals"]]
    env = {**os.environ, "STEWARD_HOME": str(home)}
    # Kill each approving process at points spread over the end of its life, where
    # it decides, resumes the run and writes the effect.
    for fraction in (0.8, 0.95, 1.1):
        for approval_id in approvals:
            with subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "approve", approval_id],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parents[2],
            ) as proc:
                time.sleep(lifetime * fraction)
                proc.send_signal(signal.SIGKILL)
    # Restart: recovery finishes whatever was mid-flight, then every approval is settled.
    bot = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        env=env,
        input="/quit\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert bot.returncode == 0, bot.stderr
    for approval_id in approvals:
        steward(home, "approve", approval_id, check=False)
    runs = json.loads(steward(home, "runs", "--json", "--all").stdout)
    assert sorted(r["status"] for r in runs) == ["succeeded"] * 2
    sent = [json.loads(p.read_text())["key"] for p in outbox_files(home)]
    assert sorted(sent) == sorted(f"{r}:send_welcome" for r in run_ids)
