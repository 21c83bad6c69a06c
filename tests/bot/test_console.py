"""The terminal channel's text: what an operator's terminal shows."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from bot.app import Steward
from bot.console import ConsoleChannel, render
from bot.settings import load_settings
from graph.messages import Button, Card, Reply


def test_text_from_outside_cannot_drive_the_terminal() -> None:
    card = Card(
        "a2b3c4d",
        "Send the welcome email",
        "Email \x1b[2Jjane@acme.com",
        fields=[("Client", "Evil\x1b[31mCo\x9b")],
        text="Dear Jane,\n\n\tthanks\x07",
        buttons=[Button("Approve", "approve:a2b3c4d")],
    )
    shown = render(Reply([card]).say("Done\x1b]0;owned\x07."))
    assert not any((ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert "Evil\\x1b[31mCo\\x9b" in shown and "Email \\x1b[2Jjane@acme.com" in shown
    assert "thanks\\x07" in shown and "Done\\x1b]0;owned\\x07." in shown


def test_windows_line_endings_are_line_breaks() -> None:
    assert render(Reply().say("Dear Jane,\r\nthanks\r")) == "Dear Jane,\nthanks\\x0d"


async def test_a_signal_ends_the_chat_after_the_turn_under_way(tmp_path: Path) -> None:
    """SIGINT or SIGTERM (``until``) ends the chat while it waits for a line, which it
    never gets; a turn under way is answered first."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    out = io.StringIO()
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        console = ConsoleChannel(steward.door, out=out, read_line=lines.get)
        stop = asyncio.Event()
        answering = console.say

        async def say(text: str) -> Reply:
            stop.set()  # the signal comes while the turn is under way
            return await answering(text)

        console.say = say  # type: ignore[method-assign]
        await lines.put("/runs")
        ended = await asyncio.wait_for(console.run(until=stop.wait()), 10)
    assert ended == "stopped"
    assert "No runs" in out.getvalue() and out.getvalue().rstrip().endswith("bye.")


async def test_the_chat_says_how_it_ended(tmp_path: Path) -> None:
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        for said, ending in ((["/quit"], "quit"), ([], "input")):
            lines = iter(said)

            async def read_line(lines: Iterator[str] = lines) -> str | None:
                return next(lines, None)

            console = ConsoleChannel(steward.door, out=io.StringIO(), read_line=read_line)
            assert await console.run() == ending


async def test_a_number_that_answers_a_question_presses_no_button(tmp_path: Path) -> None:
    """A card shown earlier kept its numbers: "1", the amount due, approved it."""
    home = tmp_path / "home"
    async with Steward.open(load_settings(home=home)) as steward:
        out = io.StringIO()
        console = ConsoleChannel(steward.door, out=out)
        await console.say("/run onboarding client=Acme email=jane@acme.com package=basic")
        assert console.choices  # the welcome card: [1] Approve …
        start = "/run invoice_followup client=Globex email=b@globex.com invoice=INV-7"
        asked = await console.say(start)
        assert "How much is due?" in "\n".join(asked.texts)
        assert console.choices == {}  # what was shown last has no buttons
        answered = await console.say("1")  # the amount, not [1] Approve
        assert "When is it due" in "\n".join(answered.texts)
        assert not (home / "outbox").exists() or not list((home / "outbox").iterdir())
        (waiting,) = await steward.ledger.pending_approvals(None)
        assert waiting.card["process"] == "onboarding"


async def test_news_numbers_its_buttons_on_from_what_is_on_the_screen(tmp_path: Path) -> None:
    """Two cards on the screen each showed [1] Approve, the lower one news that came after
    the operator's turn, and 1 approved the lower one: an email the operator never meant
    to approve went out."""
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        out = io.StringIO()
        console = ConsoleChannel(steward.door, out=out)
        await console.say("/run onboarding client=Alpha email=a@alpha.com package=basic")
        elsewhere = ConsoleChannel(steward.door, out=io.StringIO())
        news = await elsewhere.say("/run onboarding client=Beta email=b@beta.com package=basic")
        console.show(news)  # as the scheduler announces a card no chat was shown
        assert "[1] Approve" in out.getvalue() and "[5] Approve" in out.getvalue()
        await console.say("1")
        (waiting,) = await steward.ledger.pending_approvals(None)
        assert waiting.card["fields"]["Client"] == "Beta"


async def test_two_terminals_on_one_working_memory_are_two_conversations(
    tmp_path: Path,
) -> None:
    """With Redis every terminal shared one chat: B's question answered A's form. And a
    session's message ids came from the clock's whole seconds, shared by every terminal
    started in the same one (after a reboot too): the later messages were dropped."""
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        a = ConsoleChannel(steward.door, out=io.StringIO())
        b = ConsoleChannel(steward.door, out=io.StringIO())
        asked = await a.say("/run onboarding email=zed@zeta.com package=basic")
        assert "Which client" in "\n".join(asked.texts)
        heard = await b.say("/runs")  # answered as B's own, not as A's client
        assert heard.texts and not await steward.ledger.list_runs(None)
        await a.say("Zeta Corp")
        (run,) = await steward.ledger.list_runs(None)
        assert run.inputs["client"] == "Zeta Corp"
        assert (await b.say("/runs")).texts  # not dropped as a message seen before


async def test_a_database_that_does_not_answer_ends_no_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL out of reach for a moment ended the terminal chat with exit 1."""
    async with Steward.open(load_settings(home=tmp_path / "home")) as steward:
        console = ConsoleChannel(steward.door, out=io.StringIO())
        accept = steward.ledger.accept_inbound

        async def unreachable(*args: Any, **kwargs: Any) -> int | None:
            raise OperationalError("connect", {}, ConnectionRefusedError("connection refused"))

        monkeypatch.setattr(steward.ledger, "accept_inbound", unreachable)
        told = await console.say("/runs")
        assert "The database did not answer" in "\n".join(told.texts)
        monkeypatch.setattr(steward.ledger, "accept_inbound", accept)
        assert "No runs" in "\n".join((await console.say("/runs")).texts)
