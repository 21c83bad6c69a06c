"""The ``steward`` command, called in-process: exit codes, stdout for scripts, stderr for people.

``main`` runs its own event loop with ``asyncio.run``, so these tests are plain functions.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import graph.engine
from bot import cli
from bot.app import Steward
from bot.cli import _parser, main
from bot.console import CONTROLS
from bot.hooks import signature
from bot.service import SHELL
from bot.settings import load_settings
from graph.errors import UncertainEffect
from processes import BUILTIN_DIR
from tests.net import free_port

START = ["start", "onboarding", "client=Acme", "email=jane@acme.com", "package=basic"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("STEWARD_HOME", str(path))
    return path


def steward(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Runs ``steward ARGV``; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    umask = os.umask(0)  # steward sets its own: the tests' process keeps the one it had
    try:
        with pytest.raises(SystemExit) as exited:
            main(list(argv))
    finally:
        os.umask(umask)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1 if code else 0), out, err


def outbox_files(home: Path) -> list[Path]:
    return sorted((home / "outbox").glob("*.json"))


def start(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Starts an onboarding run; returns (run id, approval id)."""
    code, out, err = steward(capsys, *START)
    assert code == 0, err
    run_id = out.strip()
    approval_id = err.split("waiting for approval ", 1)[1].split(":", 1)[0]
    return run_id, approval_id


def test_start_prints_only_the_run_id_and_the_approval_on_stderr(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(capsys, *START)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("r") and " " not in lines[0]
    assert "waiting for approval a" in err
    assert "Send the welcome email to jane@acme.com" in err
    assert outbox_files(home) == []


def test_start_runs_approve_show_and_audit(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, approval_id = start(capsys)

    code, out, _ = steward(capsys, "runs", "--json")
    assert code == 0
    runs: list[dict[str, Any]] = json.loads(out)
    [run] = [r for r in runs if r["id"] == run_id]
    assert run["status"] == "waiting"
    assert run["pending_approvals"] == [approval_id]
    assert run["process"] == "onboarding"

    code, out, _ = steward(capsys, "approve", approval_id)
    assert code == 0
    assert "Approved by cli:shell" in out
    assert len(outbox_files(home)) == 1

    code, out, _ = steward(capsys, "approve", approval_id)
    assert code == 1
    assert "Already decided" in out
    assert len(outbox_files(home)) == 1

    code, out, _ = steward(capsys, "runs", "show", run_id, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["id"] == run_id and shown["status"] == "succeeded"
    assert shown["pending_approvals"] == []
    assert shown["inputs"]["email"] == "jane@acme.com"
    steps = [s["step_id"] for s in shown["steps"]]
    assert steps[:3] == ["draft_welcome", "approve_welcome", "send_welcome"]

    code, out, _ = steward(capsys, "runs", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = steward(capsys, "runs", "--all", "--json")
    assert [r["id"] for r in json.loads(out)] == [run_id]

    code, out, _ = steward(capsys, "audit", "verify")
    assert code == 0
    assert "intact" in out
    code, out, _ = steward(capsys, "audit", "verify", "--json")
    verified = json.loads(out)
    assert code == 0 and verified["ok"] and verified["checked"] > 0 and not verified["problems"]


def test_ids_and_a_process_typed_in_capitals_are_found(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As in chat: `steward approve A5FZBEYT` said there was no such approval."""
    code, out, err = steward(capsys, "start", "Onboarding", *START[2:])
    assert code == 0, err
    run_id = out.strip()
    approval_id = err.split("waiting for approval ", 1)[1].split(":", 1)[0]
    code, out, _ = steward(capsys, "runs", "show", run_id.upper())
    assert code == 0 and run_id in out
    code, out, _ = steward(capsys, "approve", approval_id.upper())
    assert code == 0 and "Approved by cli:shell" in out
    assert len(outbox_files(home)) == 1


def test_runs_as_text(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = steward(capsys, "runs")
    assert code == 0 and "no runs in progress" in out
    run_id, approval_id = start(capsys)
    code, out, _ = steward(capsys, "runs")
    assert code == 0
    assert run_id in out and approval_id in out and "waiting" in out


def test_runs_and_processes_keep_their_columns_past_a_long_process_name(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name past 18 characters pushed its run's status and approvals right of the others'."""
    long = "onboarding_for_enterprise_clients"
    (home / "processes").mkdir(parents=True)
    definition = (BUILTIN_DIR / "onboarding.yaml").read_text()
    (home / "processes" / f"{long}.yaml").write_text(
        definition.replace("name: onboarding", f"name: {long}", 1)
    )
    start(capsys)
    assert steward(capsys, "start", long, *START[2:])[0] == 0
    code, out, _ = steward(capsys, "runs")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert len({line.index("waiting") for line in lines}) == 1
    assert len({line.index("approvals:") for line in lines}) == 1
    code, out, _ = steward(capsys, "processes")
    descriptions = [len(line) - len(line.split(maxsplit=1)[1]) for line in out.splitlines()]
    assert code == 0 and len(descriptions) == 4 and len(set(descriptions)) == 1


def test_runs_keep_their_columns_beside_an_undo_run(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An undo run's id is two characters longer than a run's: its line pushed the
    process, status and approvals right of the others'."""
    run_id, approval_id = start(capsys)
    assert steward(capsys, "approve", approval_id)[0] == 0
    assert steward(capsys, "undo", run_id, "send_welcome")[0] == 0
    start(capsys)
    code, out, _ = steward(capsys, "runs")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert len({len(line.split()[0]) for line in lines}) == 2
    assert len({line.index(line.split()[1]) for line in lines}) == 1, out
    for column in ("waiting", "approvals:"):
        assert len({line.index(column) for line in lines}) == 1, out


def test_runs_all_says_how_a_run_ended(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rejected, approval_id = start(capsys)
    assert steward(capsys, "reject", approval_id, "--reason", "wrong")[0] == 0
    code, out, _ = steward(capsys, "runs", "--all")
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0
    assert "cancelled" in lines[rejected] and "(rejected at approve_welcome)" in lines[rejected]


def test_a_listing_cut_at_its_limit_says_so(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Past 50 runs in progress, `steward runs` listed 50 as if they were all."""
    for _ in range(3):
        assert steward(capsys, *START)[0] == 0
    code, out, err = steward(capsys, "runs", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 2
    assert "the newest 2 runs; --limit N lists more" in err
    code, out, err = steward(capsys, "runs", "--limit", "3", "--json")
    assert code == 0 and len(json.loads(out)) == 3 and not err


def test_runs_show_unknown_or_missing_id(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = steward(capsys, "runs", "show", "rnope")
    assert code == 2 and "no run 'rnope'; `steward runs --all` lists them" in err
    code, _, err = steward(capsys, "runs", "show")
    assert code == 2 and "usage" in err
    code, _, err = steward(capsys, "runs", "rnope", "rnope")
    assert code == 2 and "usage: steward runs [show] ID" in err
    for flags in (["--all"], ["--limit", "5"]):  # they list runs: not for one
        code, _, err = steward(capsys, "runs", "rnope", *flags)
        assert code == 2 and "--all and --limit list runs" in err


def test_a_built_in_replaced_by_the_operators_definition_is_said(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "processes").mkdir(parents=True)
    mine = home / "processes" / "onboarding.yaml"
    mine.write_text((BUILTIN_DIR / "onboarding.yaml").read_text().replace("Onboard", "My onboard"))
    code, out, err = steward(capsys, "processes")
    assert code == 0 and "onboarding" in out
    assert f"steward: {mine} replaces the built-in onboarding" in err


def test_a_process_budget_of_no_process_is_said(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt name caps nothing, and nothing said so."""
    monkeypatch.setenv("STEWARD_PROCESS_BUDGETS", "onboardng=10,onboarding=5")
    code, _, err = steward(capsys, "processes")
    assert code == 0
    assert "STEWARD_PROCESS_BUDGETS names onboardng: no process" in err
    assert "names onboarding" not in err


def test_a_budget_over_a_model_with_no_price_is_said(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its calls counted $0, and the budget never stopped one, with not a word of it."""
    monkeypatch.setenv("STEWARD_LLM_MODEL", "gpt-5")
    monkeypatch.setenv("STEWARD_LLM_FAST_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("STEWARD_BUDGET_DAILY", "5")
    code, _, err = steward(capsys, "processes")
    assert code == 0
    assert "steward: gpt-5 has no price, so the budgets count its calls as free" in err
    assert "gpt-4o-mini has no price" not in err
    monkeypatch.delenv("STEWARD_BUDGET_DAILY")
    assert "has no price" not in steward(capsys, "processes")[2]  # nothing to cap


def test_runs_with_an_id_shows_that_run(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, _ = start(capsys)
    assert steward(capsys, "runs", run_id) == steward(capsys, "runs", "show", run_id)
    code, out, _ = steward(capsys, "runs", run_id, "--json")
    assert code == 0 and json.loads(out)["id"] == run_id


def test_budget_as_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = steward(capsys, "budget", "--json")
    spending = json.loads(out)
    assert code == 0 and spending["today"] == spending["month"] == 0
    assert spending["calls"] == 0 and spending["by_process"] == spending["by_day"] == []
    code, out, _ = steward(capsys, "budget")  # zeros, as if a model were there to spend
    assert code == 0 and out.startswith("No model is set up (STEWARD_LLM_MODEL)")


def test_reject_with_a_reason(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, approval_id = start(capsys)
    code, out, _ = steward(capsys, "reject", approval_id, "--reason", "wrong")
    assert code == 0
    assert "Rejected by cli:shell" in out and "wrong" in out
    assert outbox_files(home) == []
    code, out, _ = steward(capsys, "runs", "show", run_id, "--json")
    assert json.loads(out)["status"] == "cancelled"


def test_undo_asks_for_approval_then_sends_the_correction_once(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, approval_id = start(capsys)
    code, _, err = steward(capsys, "undo", run_id, "send_welcome")
    assert code == 1 and "has not acted" in err
    assert steward(capsys, "approve", approval_id)[0] == 0
    code, out, err = steward(capsys, "undo", run_id, "send_welcome")
    assert code == 0 and out.strip().startswith("u")
    assert "Send a correction of the welcome email to jane@acme.com" in err
    assert len(outbox_files(home)) == 1
    undo_approval = err.split("waiting for approval ", 1)[1].split(":", 1)[0]
    assert steward(capsys, "approve", undo_approval)[0] == 0
    assert len(outbox_files(home)) == 2
    code, _, err = steward(capsys, "undo", run_id, "send_welcome")
    assert code == 1 and "undone already" in err


def test_pause_resume_and_cancel_a_run(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, approval_id = start(capsys)
    code, out, _ = steward(capsys, "pause", run_id)
    assert code == 0 and f"`steward resume {run_id}`" in out
    code, _, err = steward(capsys, "approve", approval_id)
    assert code == 1 and "paused" in err
    code, out, _ = steward(capsys, "resume", run_id)
    assert code == 0 and "Send the welcome email to jane@acme.com" in out
    code, out, _ = steward(capsys, "cancel", run_id)
    assert code == 0 and f"Cancelled run {run_id} (onboarding)." in out
    assert outbox_files(home) == []
    code, out, _ = steward(capsys, "runs", "show", run_id, "--json")
    assert json.loads(out)["status"] == "cancelled"


@pytest.mark.parametrize("command", ["retry", "confirm", "resume"])
def test_retry_confirm_and_resume_say_why_a_run_is_not_theirs(
    home: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    run_id, _ = start(capsys)
    code, _, err = steward(capsys, command, run_id)
    assert code == 1 and run_id in err and "waiting" in err
    code, _, err = steward(capsys, command, "rnope")
    assert code == 2 and "no run 'rnope'; `steward runs --all` lists them" in err


def test_today_names_the_shell_commands_for_each_item_and_has_json(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, approval_id = start(capsys)
    code, out, _ = steward(capsys, "today")
    assert code == 0 and "1 thing needs you — 1 approval." in out
    assert f"steward approve {approval_id} · steward reject {approval_id}" in out
    assert "[1]" not in out  # no buttons a shell cannot press
    code, out, _ = steward(capsys, "today", "--json")
    assert code == 0
    listed = json.loads(out)
    [item] = listed["items"]
    assert (listed["total"], item["kind"], item["about"]) == (1, "approval", approval_id)
    assert item["commands"] == [f"steward approve {approval_id}", f"steward reject {approval_id}"]
    assert run_id in item["why"]


def test_today_keeps_each_item_s_lines_under_its_title_past_item_nine(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under "10. …" the lines were indented as under "9. …", a character short."""
    for _ in range(10):
        start(capsys)
    code, out, _ = steward(capsys, "today")
    assert code == 0
    lines = out.splitlines()
    tenth = next(i for i, line in enumerate(lines) if line.startswith("10. "))
    assert lines[tenth + 1].startswith("    ") and lines[tenth + 1][4] != " "
    assert lines[tenth + 2].startswith("    steward approve ")
    ninth = lines.index(next(line for line in lines if line.startswith("9. ")))
    assert lines[ninth + 1].startswith("   ") and lines[ninth + 1][3] != " "


def test_today_gives_a_runs_advice_in_the_shells_words(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, _ = start(capsys)
    uncertain = UncertainEffect(f"{run_id}:send_welcome", "email")

    async def stop_uncertain() -> None:
        async with Steward.open(load_settings()) as app:
            await app.ledger.write(
                lambda tx: tx.update_run(
                    run_id, status="failed", error_class="uncertain", error=str(uncertain)
                )
            )

    asyncio.run(stop_uncertain())
    code, out, _ = steward(capsys, "today")
    assert code == 0 and "steward confirm the run if it happened, steward retry" in out
    assert "/confirm" not in out and "/retry" not in out


def another_steward_lives(worker: str = "host:4242", serves_platforms: bool = True) -> None:
    """A worker on the ledger of STEWARD_HOME, as a `steward run` beside is."""

    async def register() -> None:
        async with Steward.open(load_settings()) as other:
            await other.ledger.register_worker(worker, serves_platforms)

    asyncio.run(register())


def test_chat_leaves_timers_to_a_steward_run_serving_telegram_and_takes_them_alone(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "4242:steward-test-token")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # the chat leaves at once
    code, _, alone = steward(capsys, "chat")
    assert code == 0 and "is serving Telegram or Slack" not in alone

    another_steward_lives()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, beside = steward(capsys, "chat")
    assert code == 0 and "`steward run` is serving Telegram or Slack" in beside


def test_a_shell_command_in_flight_is_no_steward_beside_the_chat(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `steward approve` moving a run is a worker while it lasts; a chat started then
    still sends the daily list, fires the timers and serves the webhooks."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "4242:steward-test-token")
    another_steward_lives(f"{SHELL}0123", serves_platforms=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = steward(capsys, "chat")
    assert code == 0 and "is serving Telegram or Slack" not in err


@pytest.mark.parametrize("stdin", [None, "a terminal that hung up"])
def test_a_chat_without_its_input_ends_as_at_its_end(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str | None,
) -> None:
    """`steward run <&-` ended in a traceback ("input(): lost sys.stdin"), and so did a
    read that failed (EIO once an ssh session's terminal is gone)."""

    class HungUp(io.StringIO):
        def readline(self, size: int | None = -1) -> str:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(sys, "stdin", None if stdin is None else HungUp())
    code, _, err = steward(capsys, "chat")
    assert code == 0 and err == "", err


def test_approve_unknown_id(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = steward(capsys, "approve", "azzzzzz")
    assert code == 2 and "no approval 'azzzzzz'; `steward runs` lists the pending ones" in err


def test_approve_past_the_deadline_exits_1_and_says_nothing_was_approved(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate expires instead (its timer had not fired yet): a script is not told
    its approval went through, as it is not when the timer fired first."""
    _, approval_id = start(capsys)
    late = datetime.now(UTC) + timedelta(days=4)  # past the 72 h default
    monkeypatch.setattr(graph.engine, "utcnow", lambda: late)

    code, out, _ = steward(capsys, "approve", approval_id)

    assert code == 1
    assert "Expired by steward" in out and "Too late" in out and "Nothing was approved" in out
    assert outbox_files(home) == []


def test_start_with_a_bad_value_exits_2_and_names_the_field(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(capsys, "start", "onboarding", "email=bad")
    assert code == 2
    assert out == ""
    assert "email" in err and "expected an email address" in err


def test_start_with_a_positional_input_exits_2(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(capsys, "start", "onboarding", "Acme")
    assert code == 2 and out == "" and "key=value" in err


def test_start_of_an_unknown_process_exits_2(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(capsys, "start", "nope")
    assert code == 2
    assert out == ""
    assert "no process named 'nope'" in err


def test_start_with_an_unknown_input_fails_and_names_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(capsys, "start", "onboarding", "colour=red")
    assert code != 0 and out == ""
    assert "no input 'colour'" in err


def test_start_with_missing_inputs_exits_2_and_lists_them(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(capsys, "start", "onboarding", "client=Acme")
    assert code == 2 and out == ""
    assert "missing email, package" in err


def test_start_with_an_input_given_twice_two_ways_exits_2(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(
        capsys,
        "start",
        "onboarding",
        "client=Acme",
        "email=j@acme.com",
        "package=basic",
        "Client=Acme Corp",
    )
    assert code == 2 and out == ""
    assert err == (
        'steward: client is given twice, client=Acme and client="Acme Corp": give it once\n'
    )
    code, out, _ = steward(capsys, "runs", "--all", "--json")
    assert json.loads(out) == []


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ('Acme "Rockets" Ltd', 'Acme "Rockets" Ltd'),
        ("Café Müller\\ 東京", "Café Müller\\ 東京"),
        ("Ac\udcffme", "Ac\ufffdme"),  # a byte the shell gave that is not UTF-8
    ],
)
def test_start_keeps_each_value_as_the_shell_gave_it(
    home: Path, capsys: pytest.CaptureFixture[str], given: str, kept: str
) -> None:
    code, out, err = steward(
        capsys, "start", "onboarding", f"client={given}", "email=j@acme.com", "package=basic"
    )
    assert code == 0, err
    code, out, _ = steward(capsys, "runs", "show", out.strip(), "--json")
    assert json.loads(out)["inputs"]["client"] == kept


def test_paid_records_a_payment_as_a_webhooks_is(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client who paid by cheque: the shell had no way to tell the run."""
    invoice = ["invoice=INV-7", "amount=€2,500", "due_date=2026-11-01"]
    code, out, err = steward(
        capsys, "start", "invoice_followup", "client=Acme", "email=ap@acme.com", *invoice
    )
    assert code == 0, err
    run_id = out.strip()
    approval_id = err.split("waiting for approval ", 1)[1].split(":", 1)[0]
    assert steward(capsys, "approve", approval_id)[0] == 0

    code, out, err = steward(capsys, "paid", run_id, "500", "USD")
    assert code == 1 and out == ""
    assert err == (
        f"steward: Run {run_id} counts none of it: the payment pays in USD (500 USD), where "
        "EUR is owed: steward converts none. Nothing changed.\n"
    )
    code, out, err = steward(capsys, "paid", run_id, "1.000")
    assert code == 1 and out == ""
    assert err == (
        f"steward: Run {run_id} counts none of it: the payment names an amount steward "
        "cannot read: '1.000'. Nothing changed. Amounts read "
        "like 1000.00, 1,000.00, 1.000,00 or €1,000; 1.000 alone is 1,000 to some and 1.00 "
        "to others: write 1000 or 1,00.\n"
    )
    code, out, _ = steward(capsys, "paid", run_id, "1,000", "EUR")
    assert code == 0
    assert out.startswith(f"Recorded for run {run_id}: €1,000.00 paid.\n")
    assert "Still owed: €1,500.00" in out
    code, out, _ = steward(capsys, "runs", "show", run_id, "--json")
    [approval_id] = json.loads(out)["pending_approvals"]
    assert steward(capsys, "approve", approval_id)[0] == 0
    code, out, _ = steward(capsys, "paid", run_id)
    assert code == 0 and out.startswith(f"Recorded for run {run_id}: all of it paid.\n")
    code, out, _ = steward(capsys, "runs", "show", run_id, "--json")
    assert json.loads(out)["status"] == "succeeded"


def test_paid_while_the_reminder_waits_names_that_approval_and_how_to_reject_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`steward paid` while the reminder waited for approval said only that the payment
    was kept, where /paid in chat names the approval and how to reject it: approved
    later, the reminder asking for all of it went to a client who had paid. It says so
    as /paid does, with the shell's own command, which rejects the card."""
    invoice = ["invoice=INV-7", "amount=€2,500", "due_date=2026-11-01"]
    code, out, err = steward(
        capsys, "start", "invoice_followup", "client=Acme", "email=ap@acme.com", *invoice
    )
    assert code == 0, err
    run_id = out.strip()
    approval_id = err.split("waiting for approval ", 1)[1].split(":", 1)[0]

    code, out, err = steward(capsys, "paid", run_id)
    assert (code, err) == (0, "")
    assert out == (
        f"Recorded the payment for run {run_id}: it does not wait for one yet, and counts it "
        "when it gets there.\n\n"
        f"Approval {approval_id} still waits (Send a payment reminder for invoice INV-7 "
        "(€2,500.00) to ap@acme.com): reject it if that should not happen now "
        f"(steward reject {approval_id} --reason paid).\n"
    )
    code, out, err = steward(capsys, "reject", approval_id, "--reason", "paid")
    assert code == 0, err
    code, out, _ = steward(capsys, "runs", "show", run_id, "--json")
    assert json.loads(out)["pending_approvals"] == []
    assert outbox_files(home) == []


def test_processes_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = steward(capsys, "processes", "--json")
    assert code == 0
    processes = json.loads(out)
    assert sorted(p["name"] for p in processes) == [
        "invoice_followup",
        "newsletter_issue",
        "onboarding",
    ]
    [onboarding] = [p for p in processes if p["name"] == "onboarding"]
    assert onboarding["inputs"]["package"]["choices"] == ["basic", "standard", "premium"]


@pytest.mark.parametrize("value", ["25:99", "0800"])
def test_invalid_digest_time_exits_2_with_one_line_naming_it(
    value: str, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEWARD_DIGEST_AT", value)
    code, out, err = steward(capsys, "runs")
    assert code == 2
    assert out == ""
    named = [line for line in err.splitlines() if "STEWARD_DIGEST_AT" in line]
    assert len(named) == 1 and repr(value) in named[0] and "HH:MM" in named[0]
    assert "Traceback" not in err
    assert not home.exists()


def test_invalid_database_url_exits_2(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEWARD_DATABASE_URL", "not a url")
    code, _, err = steward(capsys, "runs")
    assert code == 2
    assert "STEWARD_DATABASE_URL" in err and "Traceback" not in err


def test_an_unreadable_database_exits_1_with_one_clear_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a sqlite database, just some bytes\n" * 100)
    monkeypatch.setenv("STEWARD_DATABASE_URL", f"sqlite:///{garbage}")
    code, out, err = steward(capsys, "runs")
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "STEWARD_DATABASE_URL" in lines[0]
    assert "Traceback" not in err


def test_a_database_path_under_a_file_exits_1_with_one_clear_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("STEWARD_DATABASE_URL", f"sqlite:///{blocker}/steward.db")
    code, _, err = steward(capsys, "runs")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "STEWARD_DATABASE_URL" in err


def test_an_unusable_home_exits_with_one_clear_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("STEWARD_HOME", str(blocker / "home"))
    code, _, err = steward(capsys, "runs")
    assert code in (1, 2)
    assert len(err.strip().splitlines()) == 1 and "STEWARD_HOME" in err


def test_demo_runs_offline_and_the_chain_is_intact(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = steward(capsys, "demo")
    assert code == 0
    assert "chain intact: True" in out
    assert "now holds 2;" in out
    assert not home.exists()


def test_demo_touches_nothing_of_the_operators(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mail server, Redis, Weaviate, models and processes of the operator's, set in the
    environment or .env, stay out of the tour: it would email jane@acme.com. (Of their
    two models it set aside one, and the settings refused the other alone.)"""
    port = free_port()
    monkeypatch.setenv("STEWARD_LLM_MODEL", "gpt-4o")
    monkeypatch.setenv("STEWARD_LLM_FAST_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("STEWARD_SMTP_URL", f"smtp://127.0.0.1:{port}")
    monkeypatch.setenv("STEWARD_EMAIL_FROM", "me@example.com")
    monkeypatch.setenv("STEWARD_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("STEWARD_WEAVIATE_URL", f"http://127.0.0.1:{port}")
    mine = home.parent / "mine"
    mine.mkdir()
    (mine / "onboarding.yaml").write_text("not: a process\n")
    monkeypatch.setenv("STEWARD_PROCESSES_DIR", str(mine))
    code, out, _ = steward(capsys, "demo")
    assert code == 0, out
    assert "now holds 2;" in out


def test_demo_with_an_invalid_setting_says_which_in_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEWARD_HTTP_PORT", "eighty")
    code, _, err = steward(capsys, "demo")
    assert code == 2
    assert "Traceback" not in err and "STEWARD_HTTP_PORT" in err


def test_no_command_is_a_usage_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = steward(capsys)
    assert code == 2 and "usage" in err


@pytest.mark.parametrize(
    ("argv", "needed"),
    [(("start",), "process"), (("paid",), "RUN"), (("replay",), "id, --from")],
)
def test_what_a_command_lacks_is_named_without_what_it_may_go_without(
    home: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needed: str
) -> None:
    """`steward start` said "required: process, key=value", though a process may need no
    inputs; `steward paid` called the amount required, which, left out, is all owed."""
    code, _, err = steward(capsys, *argv)
    assert code == 2 and err.endswith(f"error: the following arguments are required: {needed}\n")


def test_history_cites_what_happened_and_memory_can_be_rebuilt(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, approval_id = start(capsys)
    assert steward(capsys, "reject", approval_id, "--reason", "wrong package")[0] == 0
    code, out, _ = steward(capsys, "history", "why was the welcome email for Acme rejected?")
    assert code == 0
    assert out.startswith("Best matching records:\n[1] ")
    assert "Reason: wrong package" in out and f"run {run_id}" in out

    code, out, _ = steward(capsys, "history", "welcome email", "--json", "--limit", "2")
    hits = json.loads(out)
    assert len(hits) == 2 and all(hit["run_id"] == run_id for hit in hits)
    code, out, _ = steward(capsys, "history", "welcome email", "--limit", "1")
    assert code == 0 and "[1] " in out and "[2] " not in out  # the answer weighs one

    code, out, _ = steward(capsys, "memory", "status", "--json")
    status = json.loads(out)
    assert status["records"] >= 4 and status["waiting_in_ledger"] == 0
    assert status["embeddings"] == "none (keywords only)"

    (home / "memory.db").unlink()  # long-term memory is lost; the ledger is not
    for suffix in ("-wal", "-shm"):
        (home / f"memory.db{suffix}").unlink(missing_ok=True)
    # An empty store is fed again from the ledger by itself...
    assert "Reason: wrong package" in steward(capsys, "history", "wrong package")[1]
    # ... and on request.
    code, out, _ = steward(capsys, "memory", "rebuild")
    assert code == 0 and f"{status['records']} records" in out
    assert "Reason: wrong package" in steward(capsys, "history", "wrong package")[1]


def test_a_read_only_ledger_is_one_line_not_a_traceback(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert steward(capsys, "processes")[0] == 0
    ledger = home / "steward.db"
    if subprocess.run(["chattr", "+i", str(ledger)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here, so the ledger cannot be made read-only")
    try:
        code, _, err = steward(capsys, *START)
    finally:
        subprocess.run(["chattr", "-i", str(ledger)], check=True)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("steward: the database failed: attempt to")
    assert "Traceback" not in err


def test_a_reader_that_goes_away_ends_steward_quietly(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(capsys)
    gone = (  # stdout is a pipe nobody reads any more, as for `steward runs | head -1`
        "import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
        "from bot.cli import main; main(['runs', '--all', '--json'])"
    )
    done = subprocess.run([sys.executable, "-c", gone], capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["-v", "runs"], True),
        (["runs", "-v"], True),
        (["runs", "--verbose"], True),
        (["runs"], False),
    ],
)
def test_verbose_goes_before_or_after_the_command(argv: list[str], verbose: bool) -> None:
    """`steward runs -v` was "unrecognized arguments"."""
    assert _parser().parse_args(argv).verbose is verbose


def test_an_argument_too_many_is_told_with_the_command_s_usage(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`steward runs show a b` printed the usage of `steward` itself."""
    code, _, err = steward(capsys, "runs", "show", "a", "b")
    assert code == 2 and err.startswith("usage: steward runs ")
    assert "unrecognized arguments: b" in err


def test_an_empty_history_question_is_bad_input(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = steward(capsys, "history", "  ")
    assert code == 2 and out == "" and "usage: steward history" in err


@pytest.mark.parametrize("command", ["runs", "history"])
def test_a_limit_below_one_is_bad_input(
    home: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = [command, *(["Acme"] if command == "history" else []), "--limit", "0"]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "is not a whole number of at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["runs", "history"])
def test_a_limit_past_a_million_is_bad_input(
    home: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """--limit 99999999999999999999 ended in an OverflowError traceback on SQLite (on
    PostgreSQL: "the database failed: bigint out of range", exit 1)."""
    question = ["Acme"] if command == "history" else []
    code, _, err = steward(capsys, command, *question, "--limit", "99999999999999999999")
    assert code == 2 and "'99999999999999999999' is more than 1,000,000" in err
    code, _, _ = steward(capsys, command, *question, "--limit", "1000000")
    assert code == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_output_on_a_full_disk_is_told_as_that(home: Path) -> None:
    """The chat's output on a full disk was told as "cannot serve HTTP on
    http://127.0.0.1:8080: No space left on device" (and a coroutine never awaited):
    every OSError under the service was taken for its port."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", "chat"],
            env={**os.environ, "STEWARD_HOME": str(home)},
            input="/help\n",
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr == "steward: No space left on device\n"


def _steward_process(
    home: Path,
    *argv: str,
    entry: tuple[str, ...] = ("-m", "bot.cli"),
    stdin: int = subprocess.PIPE,
    **env: str,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *entry, *argv],
        env={**os.environ, "STEWARD_HOME": str(home), **env},
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def _until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _live_workers(home: Path) -> list[str]:
    async def read() -> list[str]:
        async with Steward.open(load_settings(home=home)) as steward:
            return await steward.ledger.live_workers()

    return asyncio.run(read())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_terminal_chat_as_a_stop_should(home: Path, signum: int) -> None:
    """Ctrl-C left the chat waiting for one more line; SIGTERM killed it where it stood,
    its worker still on the ledger. Both now stop it: the worker retired, exit 0. With
    stdin a pipe left open (`docker run -i`, a process manager), the exit then aborted
    the interpreter, its reading thread holding stdin's lock: it no longer holds one."""
    with _steward_process(home, "run") as chat:  # stdin stays open: it waits for a line
        assert chat.stdout is not None
        assert "listening" in chat.stdout.readline()
        _until(lambda: bool(_live_workers(home)))
        chat.send_signal(signum)
        chat.wait(timeout=20)  # stdin still open: the signal, not the input's end, stops it
        out, err = chat.communicate()
    assert chat.returncode == 0, err
    assert "bye." in out and "Traceback" not in err
    assert _live_workers(home) == []


LOADING_HELD = """
import importlib.abc, os, pathlib, sys, time

class Held(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "bot.cli":  # steward's imports are under way: say so, and take long
            pathlib.Path(os.environ["LOADING_MARK"]).touch()
            time.sleep(60)
        return None

sys.meta_path.insert(0, Held())
"""


@pytest.mark.slow
def test_ctrl_c_while_a_command_loads_ends_it_without_a_traceback(
    home: Path, tmp_path: Path
) -> None:
    """The `steward` script's entry (`python -m bot` is the same): its imports take
    seconds, and Ctrl-C among them printed one. The import of bot.cli is held (a
    sitecustomize the interpreter runs first) so the signal comes among the imports,
    where half a second's sleep let a fast run finish and a slow one not begin."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(LOADING_HELD)
    mark = tmp_path / "loading"
    with _steward_process(
        home,
        "runs",
        entry=("-m", "bot"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        LOADING_MARK=str(mark),
    ) as shell:
        _until(mark.exists, seconds=60)
        shell.send_signal(signal.SIGINT)
        _, err = shell.communicate(timeout=30)
    assert shell.returncode == 130 and "Traceback" not in err, err


@pytest.mark.slow
def test_a_stop_while_steward_run_loads_ends_it_as_ctrl_c_does(home: Path) -> None:
    """SIGTERM was caught only once steward run listened: in the seconds of its imports
    and its start (a process manager restarting it, `docker stop`), the default action
    ended it where it stood."""
    with _steward_process(home, "run", entry=("-m", "bot")) as server:
        _until_it_catches(server.pid, signal.SIGTERM)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 130, err
    assert "listening" not in out and "Traceback" not in err


STOPPED_WHILE_STARTING = """
import asyncio, os, signal
from bot import service
from bot.__main__ import main

started = service.Service.start

async def start_slowly(self):
    await started(self)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(60)

service.Service.start = start_slowly
main()
"""


@pytest.mark.slow
def test_a_stop_while_the_service_starts_retires_its_worker(home: Path) -> None:
    """Its worker registered, its start not done: the stop unwinds the start, the worker
    retired and the ledger closed, where the process ended leaving them to the lease."""
    with _steward_process(home, "run", entry=("-c", STOPPED_WHILE_STARTING)) as server:
        out, err = server.communicate(timeout=60)
    assert server.returncode == 130, err
    assert "listening" not in out and "Traceback" not in err
    assert _live_workers(home) == []


def _until_it_catches(pid: int, signum: int) -> None:
    """Waits until process ``pid`` has a handler for ``signum``: on a loaded machine a
    new interpreter may not have set its own before half a second is out, and the signal
    then ends it by the default action, before a line of steward's runs."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        time.sleep(0.5)
        return
    for _ in range(1000):
        caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt"))
        if int(caught.split()[1], 16) & (1 << (signum - 1)):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} set no handler for signal {signum} in 10 s")


@pytest.mark.slow
def test_a_server_with_webhooks_and_no_terminal_serves_until_stopped(home: Path) -> None:
    """`steward run` under a process manager: stdin is /dev/null, no chat platform; the
    webhooks are what it serves, until SIGTERM."""
    secret = "form-secret-0123456789"
    home.mkdir(parents=True)
    (home / "hooks.yaml").write_text(f"form:\n  secret: {secret}\n  start: onboarding\n")
    port = free_port()
    with _steward_process(
        home, "run", stdin=subprocess.DEVNULL, STEWARD_HTTP_PORT=str(port)
    ) as server:
        assert server.stderr is not None
        _until(lambda: "no more input; serving the webhooks" in server.stderr.readline())
        body = json.dumps({"client": "Acme", "email": "jane@acme.com", "package": "basic"})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/hooks/form",
            data=body.encode(),
            headers={"X-Steward-Signature": signature(secret, body.encode())},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err

    async def started() -> list[str]:
        async with Steward.open(load_settings(home=home)) as steward:
            return [run.process for run in await steward.ledger.list_runs(None)]

    assert asyncio.run(started()) == ["onboarding"]


@pytest.mark.parametrize(("given", "code"), [("", 2), ("/runs\n", 0)])
def test_a_server_with_nothing_to_serve_stops_saying_what_it_lacks(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    given: str,
    code: int,
) -> None:
    """`docker run -d` without a platform's token: the chat read /dev/null, said "bye."
    and exited 0, and the container's restart policy did it again, with nothing in its log
    to say why. Input piped in is still a chat that ends well."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(given))
    exited, _, err = steward(capsys, "run")
    assert exited == code
    assert ("nothing to serve" in err) == (code == 2)


def test_a_server_beside_one_serving_the_webhooks_says_it_has_nothing_to_serve_here(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said the other served the webhooks, then that there were no webhooks."""
    home.mkdir(parents=True)
    (home / "hooks.yaml").write_text(
        "form:\n  secret: form-secret-0123456789\n  start: onboarding\n"
    )
    another_steward_lives(serves_platforms=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    exited, _, err = steward(capsys, "run")
    assert exited == 2
    assert "the other steward serves the webhooks" in err
    assert (
        "the other steward on this ledger serves the webhooks" in err and "no webhooks" not in err
    )


def test_what_others_wrote_reaches_the_terminal_without_its_control_characters(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message, a webhook's text: an escape sequence in it, printed as it was, would
    retitle, rewrite or clear the operator's terminal (here by `steward history`)."""
    said = "Globex \x1b]0;pwned\x07 prefers calls on Tuesdays\x1b[2J\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(said))
    assert steward(capsys, "chat")[0] == 0
    code, out, _ = steward(capsys, "history", "Globex")
    assert code == 0 and "Globex \ufffd]0;pwned\ufffd prefers calls on Tuesdays\ufffd[2J" in out
    assert not CONTROLS.search(out.replace("\n", ""))


def test_a_terminal_beside_another_steward_leaves_the_webhooks_to_it(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both would serve them on the same port: the second could not start at all."""
    home.mkdir(parents=True)
    (home / "hooks.yaml").write_text(
        "form:\n  secret: form-secret-0123456789\n  start: onboarding\n"
    )
    with socket.socket() as taken:  # the other steward's HTTP server
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("STEWARD_HTTP_PORT", str(taken.getsockname()[1]))
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        code, _, alone = steward(capsys, "chat")  # nobody serves them: it must, and cannot
        assert code == 1 and "cannot serve HTTP" in alone

        another_steward_lives()
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        code, _, beside = steward(capsys, "chat")
    assert code == 0 and "the other steward serves the webhooks" in beside


@pytest.mark.parametrize("command", ["run", "chat"])
def test_a_broken_hooks_file_is_a_bad_setting(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """It stopped steward with exit 1, as a refusal or a failure does, where the README's
    exit codes give bad settings 2."""
    home.mkdir(parents=True)
    (home / "hooks.yaml").write_text("form:\n  secret: form-secret-0123456789\n  start: nosuch\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, said = steward(capsys, command)
    assert code == 2 and "hooks.yaml: form.start: no process 'nosuch'" in said


def test_a_source_signed_with_the_outgoing_secret_is_a_bad_setting(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source whose secret was STEWARD_WEBHOOK_SECRET took a `post` steward signed, to a
    URL filled from an input, for a delivery: the run could pay its own invoice."""
    home.mkdir(parents=True)
    secret = "shared-secret-0123456789"
    (home / "hooks.yaml").write_text(
        f"payments:\n  secret: {secret}\n  event: payment\n  match: {{invoice: invoice}}\n"
    )
    monkeypatch.setenv("STEWARD_WEBHOOK_SECRET", secret)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, said = steward(capsys, "chat")
    assert code == 2 and "hooks.yaml: payments.secret: it is STEWARD_WEBHOOK_SECRET" in said
    assert secret not in said
    monkeypatch.setenv("STEWARD_WEBHOOK_SECRET", "another-secret-0123456789")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert steward(capsys, "chat")[0] == 0


def test_a_skipped_definition_is_told_in_the_chat_and_when_started_by_name(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    processes = home / "processes"
    processes.mkdir(parents=True)
    (processes / "broken.yaml").write_text("name: broken\ntitle: Broken\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, said = steward(capsys, "chat")
    assert code == 0 and "steward: skipped " in said and "broken.yaml" in said
    code, _, said = steward(capsys, "start", "broken")
    assert code == 2
    assert "no process named 'broken': broken.yaml was skipped at the start (" in said


def test_the_shell_names_its_own_commands_not_the_chat_s(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "/resume RUN first" and "[1] Approve" cannot be typed or pressed in a shell."""
    run_id, approval_id = start(capsys)
    assert steward(capsys, "pause", run_id)[0] == 0
    code, _, refused = steward(capsys, "approve", approval_id)
    assert code == 1 and f"steward resume {run_id} first" in refused and "/resume" not in refused
    code, shown, _ = steward(capsys, "resume", run_id)
    assert code == 0 and "[1]" not in shown
    assert f"Approve: steward approve {approval_id} · Reject: steward reject {approval_id}" in shown


def test_a_replay_the_shell_is_told_to_do_is_one_it_takes(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The chat's "/replay RUN STEP" is "steward replay RUN --from STEP" in a shell."""
    run_id, approval_id = start(capsys)
    assert steward(capsys, "approve", approval_id)[0] == 0
    code, _, refused = steward(capsys, "replay", run_id, "--from", "send_welcome")
    told = f"steward replay {run_id} --from approve_welcome"
    assert code == 1 and told in refused
    code, shown, _ = steward(capsys, *told.split()[1:])
    assert code == 0 and "Send the welcome email to jane@acme.com" in shown
    assert len(outbox_files(home)) == 1


def test_a_replay_with_a_bad_value_exits_2_and_names_the_field(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, _ = start(capsys)
    code, _, err = steward(capsys, "replay", run_id, "--from", "draft_welcome", "email=nope")
    assert code == 2 and "email" in err


def test_a_local_embedding_model_not_installed_is_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.settings.local_model_installed", lambda: False, raising=False)
    monkeypatch.setattr("memory.embeddings.local_model_installed", lambda: False)
    monkeypatch.setenv("STEWARD_EMBEDDING_MODEL", "local")
    code, _, err = steward(capsys, "runs")
    assert code == 2
    assert "Traceback" not in err and "STEWARD_EMBEDDING_MODEL=local" in err


def test_an_export_or_import_the_file_system_refuses_is_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(capsys)
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    for folder in (in_the_way, in_the_way / "export"):
        code, _, err = steward(capsys, "export", str(folder))
        assert code == 1
        assert err.startswith(f"steward: cannot write the export to {folder}: ")
        assert len(err.strip().splitlines()) == 1, err
    assert steward(capsys, "export", str(tmp_path / "export"))[0] == 0
    (tmp_path / "export" / "runs.jsonl").unlink()
    (tmp_path / "export" / "runs.jsonl").mkdir()
    monkeypatch.setenv("STEWARD_HOME", str(tmp_path / "new-home"))
    code, _, err = steward(capsys, "import", str(tmp_path / "export"))
    assert code == 1
    assert err.startswith(f"steward: cannot read the export in {tmp_path / 'export'}: ")
    assert len(err.strip().splitlines()) == 1, err


def test_an_export_into_a_folder_that_is_not_there_is_bad_input(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A typo in the path made every folder it named, and the export went there, said
    done: the operator looked for it where they meant it to go."""
    start(capsys)
    mistyped = tmp_path / "bakcups" / "monday"
    code, out, err = steward(capsys, "export", str(mistyped / "export"))
    assert code == 2 and out == ""
    assert err == (
        f"steward: there is no folder {mistyped} to export into: make it first, or name "
        "another; nothing was exported\n"
    )
    assert not (tmp_path / "bakcups").exists()
    (tmp_path / "backups").mkdir()
    assert steward(capsys, "export", str(tmp_path / "backups" / "export"))[0] == 0


@pytest.mark.parametrize(
    ("made", "said"),
    [
        (
            "steward-export/3",
            "{folder} was exported by a newer steward (its format is steward-export/3, this one "
            "reads steward-export/1 and steward-export/2): upgrade this one to import it; "
            "nothing was imported",
        ),
    ],
)
def test_an_import_of_an_export_in_a_format_this_steward_does_not_read_is_refused(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    made: str,
    said: str,
) -> None:
    """An export of a newer steward was "a 'steward-export/3' export … upgrade it": it
    said neither that the export came from a newer steward nor which one to upgrade."""
    start(capsys)
    folder = tmp_path / "export"
    assert steward(capsys, "export", str(folder))[0] == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"format": made}))
    monkeypatch.setenv("STEWARD_HOME", str(tmp_path / "new-home"))
    code, out, err = steward(capsys, "import", str(folder))
    assert (code, out) == (1, "")  # refused, as the README's exit codes say
    assert err == f"steward: {said.format(folder=folder)}\n"
    code, out, _ = steward(capsys, "runs", "--all")
    assert code == 0 and "no runs yet" in out


def test_an_import_of_no_export_is_bad_input(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A folder mistyped was exit 1, as a refusal or a failure is, where a run id mistyped
    is exit 2: a script could not tell a wrong argument from a broken export. So it was
    still for a folder whose manifest.json is none of steward's, "holds no steward
    export" and exit 1."""
    (tmp_path / "a-file").write_text("not an export")
    (tmp_path / "empty").mkdir()
    for folder, manifest in (
        ("not-json", "{'format': 'steward-export/2'"),
        ("a-list", "[]"),
        ("another-format", '{"format": "stewart-export/1", "counts": {}}'),
    ):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.json").write_text(manifest)
    for named, said in (
        (tmp_path / "missing", f"there is no folder {tmp_path / 'missing'}"),
        (tmp_path / "a-file", f"{tmp_path / 'a-file'} is a file, not the folder of an export"),
        (tmp_path / "empty", f"{tmp_path / 'empty'} holds no steward export (no manifest.json)"),
        (
            tmp_path / "not-json",
            f"{tmp_path / 'not-json'} holds no steward export (no readable manifest.json)",
        ),
        (
            tmp_path / "a-list",
            f"{tmp_path / 'a-list' / 'manifest.json'} is not a steward export's manifest",
        ),
        (
            tmp_path / "another-format",
            f"{tmp_path / 'another-format' / 'manifest.json'} is not a steward export's "
            "manifest (its format is 'stewart-export/1')",
        ),
    ):
        code, _, err = steward(capsys, "import", str(named))
        assert code == 2
        assert err == f"steward: {said}: name the folder `steward export` wrote\n"


@pytest.mark.parametrize("link", ["the file", "its folder"])
def test_an_import_over_a_link_to_nothing_is_bad_input(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    link: str,
) -> None:
    """Where the import puts a file of the outbox, a link to nothing: it stopped with
    exit 1, saying it could not read the export, and named a file of its own making
    ("File exists (…/.20261207-….json.import4242)")."""
    _, approval_id = start(capsys)
    assert steward(capsys, "approve", approval_id)[0] == 0
    (effect,) = outbox_files(home)
    assert steward(capsys, "export", str(tmp_path / "export"))[0] == 0
    new_home, nowhere = tmp_path / "new-home", tmp_path / "nowhere"
    (new_home / "outbox").parent.mkdir(mode=0o700)
    if link == "the file":
        (new_home / "outbox").mkdir(mode=0o700)
        dangling = new_home / "outbox" / effect.name
    else:
        dangling = new_home / "outbox"
    dangling.symlink_to(nowhere)
    monkeypatch.setenv("STEWARD_HOME", str(new_home))
    code, _, err = steward(capsys, "import", str(tmp_path / "export"))
    assert code == 2
    assert err == (
        f"steward: {dangling} is a link to {nowhere}, which is not there: the import writes "
        "no file through a link; remove it, then import; nothing was imported\n"
    )
    assert not nowhere.exists()
    code, out, _ = steward(capsys, "runs", "--all")
    assert code == 0 and "no runs yet" in out


def test_a_home_other_users_may_read_is_pointed_out_at_start(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home.mkdir(mode=0o755)
    home.chmod(0o755)  # as a steward before 2026-12-07 made it, under the usual umask
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = steward(capsys, "chat")
    assert code == 0 and f"`chmod 700 {home}` keeps it yours" in err
    home.chmod(0o700)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = steward(capsys, "chat")
    assert code == 0 and "chmod" not in err


def test_what_steward_writes_in_a_home_others_may_read_is_its_owners_alone(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    _, approval_id = start(capsys)
    assert steward(capsys, "approve", approval_id)[0] == 0
    written = [home / "steward.db", *outbox_files(home)]
    assert len(written) > 1
    for path in written:
        assert path.stat().st_mode & 0o077 == 0, path


def test_an_import_beside_a_live_steward_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steward beside went on with what it had read before: the daily list it had
    planned, the cards it had handed out, its writes colliding with the import's."""
    start(capsys)
    assert steward(capsys, "export", str(tmp_path / "export"))[0] == 0
    monkeypatch.setenv("STEWARD_HOME", str(tmp_path / "new-home"))
    another_steward_lives()
    code, _, err = steward(capsys, "import", str(tmp_path / "export"))
    assert code == 1 and "stop it, then import; nothing was imported" in err
    code, out, _ = steward(capsys, "runs", "--all")
    assert code == 0 and "no runs yet" in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_on_a_terminal_draws_itself_again_in_place(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its carriage return went through the filter of others' control characters: each
    bar came after the last on one line, each behind a U+FFFD."""
    start(capsys)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with pytest.raises(SystemExit) as exited:
        main(["export", str(tmp_path / "export")])
    assert exited.value.code == 0
    shown = terminal.getvalue()
    assert shown.startswith("\rexporting ") and shown.count("\r") > 1
    assert "\ufffd" not in shown


def test_a_server_left_by_ctrl_d_at_its_terminal_ends_well(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat says Ctrl-D leaves: done first thing, it was "nothing to serve … give it a
    terminal" and exit 2, which a restart policy (`docker run -it --restart on-failure`)
    took for a failure and started it again."""
    monkeypatch.setattr(sys, "stdin", _Terminal(""))
    exited, _, err = steward(capsys, "run")
    assert exited == 0 and "nothing to serve" not in err


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_closed_standard_stream_is_written_nothing_as_print_does(
    home: Path, monkeypatch: pytest.MonkeyPatch, closed: str
) -> None:
    """`steward start … >&-` in a script: Python makes a closed one None, which print()
    writes nothing to; as a Printable of None it failed with a traceback instead."""
    monkeypatch.setattr(sys, closed, None)
    with pytest.raises(SystemExit) as exited:
        main(list(START))
    assert exited.value.code == 0


def test_a_long_term_memory_that_cannot_open_is_one_line_not_a_traceback(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk (SQLite's "disk I/O error") or a folder in the way of memory.db."""
    (home / "memory.db").mkdir(parents=True)
    code, _, err = steward(capsys, "runs")
    assert code == 1
    assert err.strip() == (
        f"steward: cannot open long-term memory at {home / 'memory.db'}: "
        "unable to open database file"
    )


@pytest.mark.parametrize(("command", "moves_runs"), [("import", False), ("approve", True)])
def test_an_interrupted_command_speaks_of_runs_only_where_it_moves_them(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    moves_runs: bool,
) -> None:
    """An import cut short by Ctrl-C was told that a run it left mid-step goes on."""

    async def interrupted(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    code, _, err = steward(capsys, command, "somewhere")
    assert code == 130
    assert ("A run it left mid-step goes on" in err) is moves_runs
    assert err.startswith("steward: interrupted.")
