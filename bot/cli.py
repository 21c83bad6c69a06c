"""The ``steward`` command: the product, and the same coordinator for scripts and shells."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import re
import shlex
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from bot.app import Steward
from bot.channel import ChannelUnavailable
from bot.console import ConsoleChannel, Printable, printable_output, render
from bot.http import CannotServe
from bot.service import (
    Service,
    a_service_lives,
    configured_channels,
    forget_gone_shells,
    shell_worker,
    stop_as_ctrl_c_does,
    wait_for_signal,
)
from bot.settings import Settings, SettingsError, load_settings
from connectors.outbox import EFFECT_FILES
from graph.budget import parse_process_budgets
from graph.catalog import DEFINITION_SUFFIXES
from graph.coordinator import ACTIVE, LEFT_MID_STEP
from graph.engine import InputProblem, RunView
from graph.errors import NotFound, StewardError
from graph.history import SOURCES
from graph.hooks import HookConfigError
from graph.messages import Button, Reply, Sender
from graph.routing import add_named, keyed
from graph.timeline import render_timeline, timeline
from memory import archive
from memory.ledger import LedgerUnavailable, RunStatus, RunTakenOver, cause
from memory.longterm import MemoryUnavailable

CLI = Sender("cli", "shell", "shell")
# Where the shell lists what a NotFound was looking for.
LISTINGS = {
    "runs": "`steward runs --all` lists them",
    "approvals": "`steward runs` lists the pending ones",
}
Command = Callable[[Steward, argparse.Namespace], Awaitable[int]]
NOTHING_TO_SERVE = (
    "steward: no chat platform is set (TELEGRAM_BOT_TOKEN, SLACK_BOT_TOKEN), no webhooks, "
    "and the terminal's input ended before a line: nothing to serve. Set a platform, "
    "or give it a terminal (`docker run -it`)."
)
OTHERS_TO_SERVE = (
    "steward: the other steward on this ledger serves the webhooks and no chat platform is "
    "set, and the terminal's input ended before a line: nothing to serve here."
)
PRIVATE = 0o077  # the umask bits of every file steward makes: its owner's alone
RUNS_LISTED = 50  # `steward runs` lists at most this many, newest first, unless told
# The commands that may move a run on, each a worker while it lasts (see shell_worker).
MOVES_RUNS = frozenset(
    ("start", "approve", "reject", "replay", "resume", "retry", "confirm", "undo", "paid")
)


def main(argv: list[str] | None = None) -> None:
    stop = signal.getsignal(signal.SIGTERM)
    try:
        with printable_output():  # what it prints holds others' words: never a terminal's escape
            _main(argv)
    except KeyboardInterrupt:  # Ctrl-C or a stop before its work began: nothing to say
        sys.exit(130)
    finally:  # the caller's, should it go on (a test)
        signal.signal(signal.SIGTERM, stop)


def _main(argv: list[str] | None) -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop while it starts, too
    os.umask(os.umask(PRIVATE) | PRIVATE)  # what steward writes holds its clients' emails
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "replay":  # key=value after --from STEP
        args.inputs = [*args.inputs, *extra]
    elif extra:  # told with the command's usage, not the top level's
        args.own_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpcore"):  # they log each request's URL, which holds tokens
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"steward: invalid settings\n{exc}", file=sys.stderr)
        sys.exit(2)
    if args.command == "demo":
        from bot.demo import play

        work = play()
    else:
        work = _with_steward(settings, COMMANDS[args.command], args)
    try:
        code = asyncio.run(work)
    except LedgerUnavailable as exc:
        print(f"steward: {exc}", file=sys.stderr)
        code = 1
    except BrokenPipeError:  # the reader went away (`steward runs | head -1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        code = 1
    except OSError as exc:  # a full disk under what it writes: its output, the outbox
        print(
            f"steward: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}",
            file=sys.stderr,
        )
        with suppress(OSError, ValueError):  # what it could not print is not printed at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except (DBAPIError, sqlite3.Error) as exc:  # read-only, full, gone meanwhile
        print(f"steward: the database failed: {cause(exc)} ({settings.database})", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        if args.command in MOVES_RUNS:
            print(
                "steward: interrupted. A run it left mid-step goes on, once, in the "
                "`steward run` or `steward chat` beside it, or when one next starts.",
                file=sys.stderr,
            )
        elif args.command not in ("run", "chat"):  # those stop as a stop should
            print("steward: interrupted.", file=sys.stderr)
        code = 130
    sys.exit(code)


async def _with_steward(settings: Any, command: Command, args: argparse.Namespace) -> int:
    stop_as_ctrl_c_does()  # asyncio.run cancels this task on Ctrl-C
    async with Steward.open(settings) as steward:
        try:
            if args.command in MOVES_RUNS:
                async with shell_worker(steward.ledger, steward.settings.home):
                    return await command(steward, args)
            return await command(steward, args)
        except NotFound as exc:  # bad input: no such process, run or approval
            print(f"steward: {exc.told(LISTINGS)}", file=sys.stderr)
            return 2
        except (InputProblem, HookConfigError) as exc:  # bad input; bad settings
            print(f"steward: {_in_shell_words(str(exc))}", file=sys.stderr)
            return 2
        except StewardError as exc:
            print(f"steward: {_in_shell_words(str(exc))}", file=sys.stderr)
            return 1
        except RunTakenOver:  # stopped (Ctrl-Z, a paused machine) past its lease
            print(
                "steward: this command was stopped for so long that the steward beside it "
                "took its run over; it moves the run on (`steward runs` shows where).",
                file=sys.stderr,
            )
            return 1


# -- the product -------------------------------------------------------------------------


def _say_skipped(steward: Steward) -> None:
    """The definitions skipped, the built-ins a definition of the operator's replaces, the
    process budgets of no process, and a model with no price that budgets are to cap."""
    for problem in steward.catalog.problems:
        print(f"steward: skipped {problem}", file=sys.stderr)
    for name, source in steward.catalog.replaced.items():
        print(f"steward: {source} replaces the built-in {name}", file=sys.stderr)
    for name in sorted(parse_process_budgets(steward.settings.process_budgets)):
        if steward.catalog.get(name) is None:  # a misspelt name caps nothing
            print(f"steward: STEWARD_PROCESS_BUDGETS names {name}: no process", file=sys.stderr)
    budgets, settings = steward.coordinator.budgets, steward.settings
    if budgets is not None and (budgets.daily is not None or budgets.per_process):
        for model in dict.fromkeys(filter(None, (settings.llm_model, settings.llm_fast_model))):
            if budgets.price(model) is None:  # its calls count nothing: no budget stops them
                print(
                    f"steward: {model} has no price, so the budgets count its calls as free: "
                    f"set one in STEWARD_MODEL_PRICES, e.g. {model}=2.50/10",
                    file=sys.stderr,
                )


def _say_if_shared(steward: Steward) -> None:
    """A home other users of the machine may read (one made before homes were made
    private): the clients' emails and drafts are in it."""
    home = steward.settings.home
    if home.stat().st_mode & PRIVATE:
        print(
            f"steward: other users of this machine may read {home}, which holds your clients' "
            f"emails and drafts: `chmod 700 {home}` keeps it yours",
            file=sys.stderr,
        )


async def cmd_run(steward: Steward, args: argparse.Namespace) -> int:
    _say_skipped(steward)
    _say_if_shared(steward)
    channels = configured_channels(steward)
    if not channels:
        return await _terminal(steward, serving=True)
    service = Service(steward, channels)
    try:
        async with service:
            # What start-up built lives as long as the process: out of the collector's
            # way, so that a full collection never pauses a reply for it.
            gc.freeze()
            print(f"steward is running: {service.summary()}. Ctrl-C stops it.", file=sys.stderr)
            await wait_for_signal()
    except (ChannelUnavailable, CannotServe) as exc:  # the HTTP port is taken, say
        print(f"steward: {exc}", file=sys.stderr)
        return 1
    print("steward stopped.", file=sys.stderr)
    return 0


async def cmd_chat(steward: Steward, args: argparse.Namespace) -> int:
    _say_skipped(steward)
    _say_if_shared(steward)
    return await _terminal(steward, serving=False)


async def _terminal(steward: Steward, serving: bool) -> int:
    """The terminal chat, with the scheduler and the webhooks beside it. ``serving``
    (``steward run`` with no chat platform): once its input ends — a server's is
    /dev/null — it goes on serving the webhooks until a signal."""
    console = ConsoleChannel(steward.door)

    async def news(reply: Reply, reply_to: dict[str, Any] | None) -> None:
        console.show(reply)

    beside = await a_service_lives(steward.ledger)  # another steward on this ledger
    # While a `steward run` serves Telegram or Slack, timers and the daily list are its
    # own: their news is for those chats. Alone, this terminal takes them.
    if await steward.ledger.platforms_served():
        print(
            "steward: `steward run` is serving Telegram or Slack, so it sends the daily list "
            "and fires timers; this terminal does neither while it does.",
            file=sys.stderr,
        )
    service = Service(steward, [], fallback=news, defers_to_platforms=True, serves_hooks=not beside)
    if beside and service.hook_sources:
        print(
            "steward: the other steward serves the webhooks; this terminal does not.",
            file=sys.stderr,
        )
    try:
        async with service:  # runs a crash left mid-step go on first
            for _, reply in await steward.door.recover_inbox("console"):
                console.show(reply)
            if service.hooks is not None:
                print(f"steward: serving {service.summary()}", file=sys.stderr)
            ended = await console.run(until=wait_for_signal())
            # Input that ended before a line, but at a terminal: there it is the operator's
            # Ctrl-D, the way out the chat names.
            unread = ended == "input" and not console.lines_read and not _at_a_terminal()
            if unread and serving and service.hooks is None:  # a restart would do it again
                print(
                    OTHERS_TO_SERVE if service.hook_sources else NOTHING_TO_SERVE, file=sys.stderr
                )
                return 2
            if ended == "input" and serving and service.hooks is not None:
                print(
                    "steward: no more input; serving the webhooks until SIGTERM or Ctrl-C.",
                    file=sys.stderr,
                )
                await wait_for_signal()
    except CannotServe as exc:  # the HTTP port is taken, say
        print(f"steward: {exc}", file=sys.stderr)
        return 1
    return 0


# -- for scripts and shells --------------------------------------------------------------


async def cmd_processes(steward: Steward, args: argparse.Namespace) -> int:
    definitions = list(steward.catalog)
    if args.json:
        _print_json(
            [
                {
                    "name": d.name,
                    "title": d.title,
                    "description": d.description,
                    "version": d.version,
                    "inputs": {n: s.model_dump(mode="json") for n, s in d.inputs.items()},
                }
                for d in definitions
            ]
        )
    else:
        width = max((len(d.name) for d in definitions), default=0)
        for d in definitions:
            print(f"{d.name:<{width}}  {d.description}")
    _say_skipped(steward)
    return 0


def _named(inputs: list[str]) -> dict[str, str] | None:
    """``key=value`` arguments, each taken as the shell split it; None, and a line on
    stderr, for anything else."""
    named: dict[str, str] = {}
    for argument in inputs:
        if (pair := keyed(argument)) is None:
            print(f"steward: expected key=value, got {argument!r}", file=sys.stderr)
            return None
        try:
            add_named(named, *pair)
        except StewardError as exc:
            print(f"steward: {exc}", file=sys.stderr)
            return None
    return named


def _print_started(view: RunView) -> None:
    """The run's id on stdout; the approval it waits for on stderr."""
    print(view.run.id)
    if view.approval is not None:
        print(
            f"waiting for approval {view.approval.id}: {view.approval.card['summary']}",
            file=sys.stderr,
        )


async def cmd_start(steward: Steward, args: argparse.Namespace) -> int:
    named = _named(args.inputs)
    if named is None:
        return 2
    view = await steward.engine.start(args.process, named, CLI.key)
    _print_started(view)
    if view.approval is None and view.run.status is RunStatus.FAILED:
        print(f"run failed: {view.run.error}", file=sys.stderr)
        return 1
    return 0


async def cmd_runs(steward: Steward, args: argparse.Namespace) -> int:
    if args.action is not None:  # `runs show ID`, or `runs ID`
        shown = args.id if args.action == "show" else args.action
        if shown is None or (args.action != "show" and args.id is not None):
            print("steward: usage: steward runs [show] ID", file=sys.stderr)
            return 2
        if args.all or args.limit is not None:
            print(
                "steward: --all and --limit list runs; steward runs ID shows one", file=sys.stderr
            )
            return 2
        return await _show_run(steward, shown, args.json)
    limit = RUNS_LISTED if args.limit is None else args.limit
    runs = await steward.ledger.list_runs(None if args.all else ACTIVE, limit=limit + 1)
    if len(runs) > limit:
        runs = runs[:limit]
        print(f"steward: the newest {limit} runs; --limit N lists more", file=sys.stderr)
    pending: dict[str, list[str]] = {}
    for approval in await steward.ledger.pending_approvals([r.id for r in runs]):
        pending.setdefault(approval.run_id, []).append(approval.id)
    if args.json:
        _print_json([_run_json(r, pending.get(r.id, [])) for r in runs])
        return 0
    if not runs:
        print("no runs in progress" if not args.all else "no runs yet")
    left = await steward.ledger.left_mid_step(runs)
    ids = max((len(run.id) for run in runs), default=0)
    width = max((len(run.process) for run in runs), default=0)
    for run in runs:
        approvals = ",".join(pending.get(run.id, [])) or "-"
        line = (
            f"{run.id:<{ids}}  {run.process:<{width}}  {run.status.value:<10} "
            f"approvals: {approvals}"
        )
        if run.status in (RunStatus.CANCELLED, RunStatus.FAILED) and run.error:
            line += f"  ({_in_shell_words(run.error.splitlines()[0][:120])})"  # "rejected at …"
        elif run.id in left:
            line += f"  ({_in_shell_words(LEFT_MID_STEP.format(run=run.id))})"
        print(line)
    return 0


async def _show_run(steward: Steward, run_id: str, as_json: bool) -> int:
    run = await steward.ledger.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", "runs")
    pending = [a.id for a in await steward.ledger.pending_approvals([run.id])]
    steps = await steward.ledger.run_steps(run.id)
    rows = await timeline(steward.ledger, run)
    data = _run_json(run, pending) | {
        "inputs": run.inputs,
        "steps": [asdict(s) | {"at": s.at.isoformat()} for s in steps],
        "timeline": [row.to_json() for row in rows],
    }
    if as_json:
        _print_json(data)
        return 0
    print(render_timeline(run, rows, steward.coordinator.zone))
    if pending:
        print(f"  pending approvals: {', '.join(pending)}")
    return 0


async def cmd_approve(steward: Steward, args: argparse.Namespace) -> int:
    return _print_decision(await steward.coordinator.decide(args.id, True, CLI.key))


async def cmd_reject(steward: Steward, args: argparse.Namespace) -> int:
    return _print_decision(await steward.coordinator.decide(args.id, False, CLI.key, args.reason))


def _brought_along(settings: Settings) -> dict[str, archive.Along]:
    """What of the home an export brings along beside the ledger: the outbox (the effects
    made with no SMTP server), the operator's process definitions, and the webhooks with
    their secrets. Not the workers: each machine's stewards hold slots of their own."""
    return {
        "outbox": archive.Along(settings.outbox_dir, (EFFECT_FILES,)),
        "processes": archive.Along(
            settings.user_processes_dir, tuple(f"*{s}" for s in DEFINITION_SUFFIXES)
        ),
        "hooks.yaml": archive.Along(settings.hooks_path),
    }


def _files(summary: archive.Summary) -> str:
    return f" and {summary.files:,} files" if summary.files else ""


async def cmd_export(steward: Steward, args: argparse.Namespace) -> int:
    folder = Path(args.folder or f"steward-export-{datetime.now():%Y%m%d-%H%M%S}")
    try:
        summary = await archive.export(
            steward.ledger,
            steward.engine.checkpointer,
            folder,
            _progress("exporting"),
            _brought_along(steward.settings),
        )
    except archive.NoSuchFolder as exc:  # bad input, as a mistyped run id is
        print(f"steward: {exc}", file=sys.stderr)
        return 2
    except archive.ArchiveError as exc:
        print(f"steward: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file in the way, no permission, a full disk
        print(f"steward: cannot write the export to {folder}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"exported {summary.total:,} records{_files(summary)} to {folder}")
    return 0


async def cmd_import(steward: Steward, args: argparse.Namespace) -> int:
    if await a_service_lives(steward.ledger):  # it would go on from what it read before
        print(
            "steward: a `steward run` or `steward chat` is using this ledger: stop it, then "
            "import; nothing was imported",
            file=sys.stderr,
        )
        return 1
    try:
        summary = await archive.import_(
            steward.ledger,
            steward.engine.checkpointer,
            Path(args.folder),
            _progress("importing"),
            _brought_along(steward.settings),
        )
    except archive.NotAnExport as exc:  # bad input, as an unknown run id is
        print(f"steward: {exc}: name the folder `steward export` wrote", file=sys.stderr)
        return 2
    except archive.DanglingLink as exc:
        print(f"steward: {exc}", file=sys.stderr)
        return 2
    except archive.ArchiveError as exc:
        print(f"steward: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file of it unreadable, or a folder where a file should be
        print(
            f"steward: cannot read the export in {args.folder}: {exc.strerror} ({exc.filename})",
            file=sys.stderr,
        )
        return 1
    print(f"imported {summary.total:,} records{_files(summary)} from {args.folder}")
    return 0


def _at_a_terminal() -> bool:
    """Whether stdin is a terminal (an operator types there), not /dev/null or a pipe."""
    return sys.stdin is not None and sys.stdin.isatty()


def _progress(verb: str) -> archive.Progress:
    """A bar on a terminal; nothing when stderr is a file or a pipe."""

    def show(what: str, done: int, of: int) -> None:
        if not sys.stderr.isatty():
            return
        filled = round(24 * done / of)
        bar = "█" * filled + "·" * (24 - filled)
        end = "\n" if done == of else ""
        # Its own carriage return, which draws the bar again: Printable would show it as
        # U+FFFD, and each bar after the last on one line.
        shown = sys.stderr.stream if isinstance(sys.stderr, Printable) else sys.stderr
        print(f"\r{verb} {bar} {done}/{of} {what:<16}", end=end, file=shown, flush=True)

    return show


async def cmd_budget(steward: Steward, args: argparse.Namespace) -> int:
    if args.json:
        _print_json((await steward.coordinator.spending()).to_json())
    else:
        print(await steward.coordinator.budget_report())
    return 0


async def cmd_today(steward: Steward, args: argparse.Namespace) -> int:
    found = await steward.coordinator.today(show_all=args.all)
    if args.json:
        _print_json(
            {
                "day": found.day,
                "total": found.total,
                "items": [
                    {
                        "rank": rank,
                        "kind": item.kind,
                        "score": round(item.score, 2),
                        "title": item.title,
                        "why": item.why,
                        "about": item.key,
                        "commands": _commands_for(item.buttons),
                    }
                    for rank, item in enumerate(found.items, 1)
                ],
            }
        )
        return 0
    print(found.heading)
    for rank, item in enumerate(found.items, 1):
        under = " " * len(f"{rank}. ")  # under its title, past item 9 too
        print(_in_shell_words(f"{rank}. {item.title}\n{under}{item.why}"))
        if commands := _commands_for(item.buttons):
            print(under + " · ".join(commands))
    if found.more is not None:
        print(found.more.replace("/today all", "`steward today --all`"))
    return 0


def _commands_for(buttons: list[Button]) -> list[str]:
    """The shell's commands for an item's buttons, which a shell cannot press."""
    return [command for button in buttons if (command := _shell_command(button))]


def _shell_command(button: Button) -> str | None:
    verb, _, about = button.payload.partition(":")
    return f"steward {verb} {about}" if verb in COMMANDS else None


def _for_the_shell(reply: Reply) -> str:
    """A reply as the shell shows it: a card's buttons as the commands that do what they
    do, and a chat command the text suggests (``/resume RUN``) as the shell's own."""
    return _in_shell_words(render(reply, shell=_shell_command))


def _in_shell_words(text: str) -> str:
    text = CHAT_REPLAY.sub(r"steward replay \1 --from \2", text)  # the shell's STEP is --from
    text = CHAT_REJECT.sub(  # and a reason is --reason
        lambda m: f"steward reject {m[1]} --reason {shlex.quote(m[2])}", text
    )
    return CHAT_COMMAND.sub(lambda m: f"steward {m.group(1)}", text)


async def cmd_replay(steward: Steward, args: argparse.Namespace) -> int:
    named = _named(args.inputs)
    if named is None:
        return 2
    return _print_view(
        steward, await steward.engine.replay(args.id, args.from_step, named, CLI.key)
    )


async def cmd_cancel(steward: Steward, args: argparse.Namespace) -> int:
    run = await steward.engine.cancel(args.id, CLI.key)
    print(f"Cancelled run {run.id} ({run.process}).")
    return 0


async def cmd_pause(steward: Steward, args: argparse.Namespace) -> int:
    run = await steward.engine.pause(args.id, CLI.key)
    print(f"Paused run {run.id}. `steward resume {run.id}` to go on.")
    return 0


async def cmd_resume(steward: Steward, args: argparse.Namespace) -> int:
    return _print_view(steward, await steward.engine.resume(args.id, CLI.key))


async def cmd_retry(steward: Steward, args: argparse.Namespace) -> int:
    # A run a killed shell command left mid-step is anyone's at once, as at a service's beat.
    await forget_gone_shells(steward.ledger, steward.settings.home)
    return _print_view(steward, await steward.engine.retry(args.id, CLI.key))


async def cmd_confirm(steward: Steward, args: argparse.Namespace) -> int:
    return _print_view(steward, await steward.engine.confirm(args.id, CLI.key))


async def cmd_paid(steward: Steward, args: argparse.Namespace) -> int:
    amount = " ".join(args.amount) or None
    reply, view = await steward.coordinator.record_payment(args.id, amount, CLI.key)
    print(_for_the_shell(reply))
    return 1 if view is not None and view.run.status is RunStatus.FAILED else 0


def _print_view(steward: Steward, view: RunView) -> int:
    """The run where it stopped; 1 when it stopped failed."""
    print(_for_the_shell(steward.coordinator.describe(view)))
    return 1 if view.run.status is RunStatus.FAILED else 0


async def cmd_undo(steward: Steward, args: argparse.Namespace) -> int:
    _print_started(await steward.engine.compensate(args.run, args.step, CLI.key))
    return 0


async def cmd_history(steward: Steward, args: argparse.Namespace) -> int:
    question = " ".join(args.question).strip()
    if not question:
        print('steward: usage: steward history "what did we quote Acme?"', file=sys.stderr)
        return 2
    if args.json:
        found = await steward.history.search(question, datetime.now(UTC), args.limit)
        _print_json([{**hit.record.to_dict(), "score": hit.score} for hit in found.hits])
        return 0
    print(await steward.history.answer(question, datetime.now(UTC), limit=args.limit))
    return 0


async def cmd_memory(steward: Steward, args: argparse.Namespace) -> int:
    sync = steward.history.sync
    if args.action == "rebuild":
        fed = await sync.rebuild()
        print(f"rebuilt {sync.store.name} from the ledger: {fed} records")
        return 0
    try:
        records: int | str = await sync.store.count()
    except MemoryUnavailable as exc:
        records = f"unknown: {exc}"
    status = {
        "store": sync.store.name,
        "embeddings": sync.embedder.name if sync.embedder else "none (keywords only)",
        "records": records,
        "waiting_in_ledger": await sync.behind(),
    }
    if args.json:
        _print_json(status)
    else:
        print("\n".join(f"{key.replace('_', ' ')}: {value}" for key, value in status.items()))
    return 0


async def cmd_audit(steward: Steward, args: argparse.Namespace) -> int:
    report = await steward.ledger.verify_audit()
    if args.json:
        _print_json({"ok": report.ok, "checked": report.checked, "problems": report.problems})
        return 0 if report.ok else 1
    if report.ok:
        print(f"audit log intact: {report.checked} events verified")
        return 0
    for problem in report.problems:
        print(f"audit: {problem}")
    print(f"audit log BROKEN: {len(report.problems)} problem(s) in {report.checked} events")
    return 1


def _print_decision(reply: Reply) -> int:
    print(_for_the_shell(reply))
    return 1 if reply.notice else 0


def _run_json(run: Any, approvals: list[str]) -> dict[str, Any]:
    return {
        "id": run.id,
        "process": run.process,
        "status": run.status.value,
        "version": run.version,
        "current_step": run.current_step,
        "pending_approvals": approvals,
        "error": run.error,
        "error_class": run.error_class,
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
    }


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


COMMANDS: dict[str, Command] = {
    "run": cmd_run,
    "chat": cmd_chat,
    "processes": cmd_processes,
    "start": cmd_start,
    "runs": cmd_runs,
    "approve": cmd_approve,
    "cancel": cmd_cancel,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "retry": cmd_retry,
    "confirm": cmd_confirm,
    "paid": cmd_paid,
    "undo": cmd_undo,
    "replay": cmd_replay,
    "today": cmd_today,
    "budget": cmd_budget,
    "export": cmd_export,
    "import": cmd_import,
    "reject": cmd_reject,
    "audit": cmd_audit,
    "history": cmd_history,
    "memory": cmd_memory,
}


# A chat command in a reply's text — "/resume RUN first" — that the shell has too.
CHAT_COMMAND = re.compile(r"(?<![\w/.:])/(" + "|".join(COMMANDS) + r")\b")
CHAT_REPLAY = re.compile(r"(?<![\w/.:])/replay ([\w-]+) ([\w-]+)")
# A rejection with its reason, which the text ends with a bracket: "(/reject ID paid)".
CHAT_REJECT = re.compile(r"(?<![\w/.:])/reject ([\w-]+) ([^()\n]+)(?=\))")


MOST_LIMIT = 1_000_000  # a --limit past what a database takes ended in a traceback


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    if number > MOST_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MOST_LIMIT:,}")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steward", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="start every configured channel and the scheduler")
    sub.add_parser("chat", help="talk to steward in this terminal")
    sub.add_parser("demo", help="a scripted tour, offline, in a throwaway home")
    processes = sub.add_parser("processes", help="list the processes steward can run")
    processes.add_argument("--json", action="store_true")
    start = sub.add_parser("start", help="start a run; prints its id")
    start.add_argument("process", type=str.lower)
    # A default keeps argparse from calling a "*" argument required ("the following
    # arguments are required: process, key=value" when none may be needed).
    start.add_argument(
        "inputs", nargs="*", default=[], metavar="key=value", help="its inputs, if it has any"
    )
    runs = sub.add_parser("runs", help="runs in progress (or `runs [show] ID`: one run)")
    runs.add_argument("action", nargs="?", type=str.lower, metavar="[show] ID")
    runs.add_argument("id", nargs="?", type=str.lower, help=argparse.SUPPRESS)
    runs.add_argument("--json", action="store_true")
    runs.add_argument("--all", action="store_true", help="finished runs too")
    runs.add_argument("--limit", type=_at_least_one, help=f"at most (default {RUNS_LISTED})")
    approve = sub.add_parser("approve", help="approve a pending approval")
    approve.add_argument("id", type=str.lower)
    reject = sub.add_parser("reject", help="reject a pending approval")
    reject.add_argument("id", type=str.lower)
    reject.add_argument("--reason")
    for name, what in (
        ("cancel", "cancel a run"),
        ("pause", "pause a run: its approvals wait, and their deadlines with them"),
        ("resume", "go on with a paused run"),
        ("retry", "try a failed run's step again"),
        ("confirm", "an uncertain run's attempt did happen: go on without acting again"),
    ):
        sub.add_parser(name, help=what).add_argument("id", type=str.lower, metavar="RUN")
    paid = sub.add_parser("paid", help="record a payment that came another way (a cheque)")
    paid.add_argument("id", type=str.lower, metavar="RUN")
    paid.add_argument(
        "amount", nargs="*", default=[], metavar="AMOUNT", help="none: all that is owed"
    )
    budget = sub.add_parser("budget", help="model spend by day, month and process")
    budget.add_argument("--json", action="store_true")
    export = sub.add_parser("export", help="everything, as JSON Lines in a new folder")
    export.add_argument("folder", nargs="?", help="default: steward-export-DATE-TIME")
    restore = sub.add_parser("import", help="restore an export into an empty home")
    restore.add_argument("folder")
    today = sub.add_parser("today", help="what needs you today, ranked")
    today.add_argument("--all", action="store_true", help="every item, not the top ten")
    today.add_argument("--json", action="store_true")
    replay = sub.add_parser("replay", help="run a run again from a step, inputs changed")
    replay.add_argument("id", type=str.lower)
    replay.add_argument("--from", dest="from_step", type=str.lower, required=True, metavar="STEP")
    replay.add_argument("inputs", nargs="*", default=[], metavar="key=value")
    undo = sub.add_parser("undo", help="undo a step that acted; prints the undo run's id")
    undo.add_argument("run", type=str.lower)
    undo.add_argument("step", type=str.lower)
    history = sub.add_parser("history", help="ask about anything that happened, with sources")
    history.add_argument("question", nargs="+")
    history.add_argument("--json", action="store_true", help="the matching records, scored")
    history.add_argument(
        "--limit", type=_at_least_one, default=SOURCES, help="the most sources it weighs"
    )
    memory = sub.add_parser("memory", help="long-term memory: status, or rebuild from the ledger")
    memory.add_argument("action", choices=["status", "rebuild"])
    memory.add_argument("--json", action="store_true")
    audit = sub.add_parser("audit", help="check the audit log's hash chain")
    audit.add_argument("action", choices=["verify"])
    audit.add_argument("--json", action="store_true")
    for command in sub.choices.values():  # `steward run -v` as `steward -v run`
        command.set_defaults(own_parser=command)
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log what happens",
        )
    return parser


if __name__ == "__main__":
    main()
