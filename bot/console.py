"""The terminal channel: the same coordinator, cards with numbered choices."""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import textwrap
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Literal, TextIO

from graph.front_door import FrontDoor
from graph.messages import Button, Card, CardOutcome, EditPrompt, Inbound, Reply, Sender, shown
from memory.ledger import RunTakenOver, TakenOver, cause, ledger_down

PROMPT = "you › "
Ended = Literal["input", "quit", "stopped"]  # Ctrl-D or no more lines; /quit; a signal
LEDGER_DOWN = (
    "The database did not answer ({}). If it kept your message, steward handles it when it "
    "next starts; /runs shows what stands once the database answers."
)
TAKEN_OVER = (
    "This terminal was stopped for so long that another steward took that message over "
    "and handles it; nothing of it was done here."
)
RUN_TAKEN_OVER = (
    "This terminal was stopped for so long that another steward took the run over; it "
    "moves the run on from there. /runs shows where it is."
)


# What a terminal would act on rather than show: C0 controls but tab and newline (an
# escape sequence, a carriage return that writes over a line), DEL, and C1 controls.
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class Printable:
    """A text stream that shows each control character as U+FFFD: what steward prints
    holds what others wrote (a webhook's inputs, a client's name), and an escape
    sequence in it would retitle, rewrite or clear the operator's terminal; a bidi
    control (``shown``) would reorder it in a terminal that shows text both ways."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(shown(CONTROLS.sub("\ufffd", text)))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding …
        return getattr(self.stream, name)


@contextmanager
def printable_output() -> Iterator[None]:
    """Standard output and error as ``Printable`` while it lasts; one closed (``>&-``) stays
    None, which print() writes nothing to."""
    out, err = sys.stdout, sys.stderr
    sys.stdout = None if out is None else Printable(out)
    sys.stderr = None if err is None else Printable(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


Press = Callable[[Button], str | None]  # a button as a shell command, None: none does it


def render(
    reply: Reply,
    choices: dict[str, str] | None = None,
    shell: Press | None = None,
    first: int = 1,
) -> str:
    """Plain text for a reply; fills ``choices`` with number → button payload, numbering
    from ``first``. With ``shell`` (the command line, where nothing can be pressed) a card
    names the command for each of its buttons instead of a number."""
    blocks = []
    number = itertools.count(first)
    for item in reply.items:
        if isinstance(item, str):
            blocks.append(item)
        elif isinstance(item, CardOutcome):
            blocks.append(f"[{item.approval_id}] {item.text}")
        elif isinstance(item, Card):
            blocks.append(_card(item, number, choices, shell))
        elif isinstance(item, EditPrompt):
            blocks.append(item.as_message)
    if reply.notice:
        blocks.append(reply.notice)
    return "\n\n".join(blocks).replace("\r\n", "\n").translate(VISIBLE)


# The controls as their escapes in a reply: text from outside (a webhook's field, a
# client's name) cannot clear the terminal or colour what follows.
VISIBLE = {code: f"\\x{code:02x}" for code in range(0xA0) if CONTROLS.match(chr(code))}


def _card(
    card: Card,
    number: itertools.count[int],
    choices: dict[str, str] | None,
    shell: Press | None = None,
) -> str:
    width = 72
    lines = [f"┌─ {card.title} ".ljust(width, "─"), f"│ {card.summary}"]
    for label, value in card.fields:
        first, *rest = str(value).splitlines() or [""]
        lines.append(f"│   {label}: {first}")
        lines += [f"│     {more}" for more in rest]
    if card.risk:
        lines.append(f"│   Risk: {card.risk}")
    if card.text:
        lines.append("│")
        for paragraph in card.text.splitlines():
            wrapped = textwrap.wrap(paragraph, width - 4) or [""]
            lines += [f"│   {w}" for w in wrapped]
    if card.footer:
        lines.append("│")
        lines.append(f"│ {card.footer}")
    options = []
    for button in card.buttons:
        if shell is not None:
            if command := shell(button):
                options.append(f"{button.label}: {command}")
            continue
        n = str(next(number))
        if choices is not None:
            choices[n] = button.payload
        options.append(f"[{n}] {button.label}")
    lines.append("└─ " + ("  ".join(options) if shell is None else " · ".join(options)))
    return "\n".join(lines)


class ConsoleChannel:
    def __init__(
        self,
        door: FrontDoor,
        user: str = "operator",
        out: TextIO | None = None,
        read_line: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.door = door
        self.sender = Sender("console", user, user)
        self.out = out if out is not None else sys.stdout
        self.choices: dict[str, str] = {}
        self._read_line = read_line or _stdin_line
        self._counter = itertools.count(1)
        self.lines_read = 0
        # Each terminal session is a chat of its own, whoever else talks to the same
        # ledger and working memory: its questions, its turns, its messages' ids.
        self._session = uuid.uuid4().hex[:16]
        self.chat_id = f"terminal:{self._session}"

    def show(self, reply: Reply, answering: bool = False) -> None:
        """The answer to a turn numbers its buttons from 1, and they alone are pressed
        then; news shown after it (a card the scheduler announces, a webhook's run)
        numbers on, so that a number on the screen presses the one button it is beside:
        two cards each showed [1] Approve, and 1 approved the lower one."""
        choices: dict[str, str] = {} if answering else dict(self.choices)
        text = render(reply, choices, first=len(choices) + 1)
        if text:
            self.choices = choices
            print(f"steward › {text}\n", file=self.out, flush=True)

    async def say(self, text: str) -> Reply:
        """One operator turn: a number presses a button shown last, unless steward
        waits for an answer: then it is the answer (an amount, a choice)."""
        stripped = text.strip()
        external_id = f"{self._session}-{next(self._counter)}"
        inbound = Inbound(self.sender, self.chat_id, external_id, text=stripped)
        if stripped in self.choices and await self.door.question_to(inbound) is None:
            inbound = Inbound(self.sender, self.chat_id, external_id, button=self.choices[stripped])
        try:
            reply = await self.door.receive(inbound) or Reply()
        except RunTakenOver:  # stopped past its lease mid-step: another steward took the run
            reply = Reply().say(RUN_TAKEN_OVER)
        except TakenOver:  # stopped (Ctrl-Z) past its lease, another steward chat took it
            reply = Reply().say(TAKEN_OVER)
        except Exception as exc:
            if not ledger_down(exc):
                raise
            reply = Reply().say(LEDGER_DOWN.format(cause(exc)))  # the session goes on
        self.show(reply, answering=True)
        return reply

    async def run(self, until: Awaitable[None] | None = None) -> Ended:
        """Answers each line until the input ends, /quit, or ``until`` returns (a
        signal); a turn under way is finished first."""
        stop = asyncio.ensure_future(until) if until is not None else None
        try:  # the stop is awaited or cancelled, should even this fail (a full disk)
            print(
                "steward is listening. /help lists commands; Ctrl-D or /quit leaves.\n",
                file=self.out,
                flush=True,
            )
            return await self._converse(stop)
        finally:
            print("bye.", file=self.out, flush=True)
            if stop is not None:
                stop.cancel()
                with suppress(asyncio.CancelledError):
                    await stop

    async def _converse(self, stop: asyncio.Future[None] | None) -> Ended:
        while True:
            reading = asyncio.ensure_future(self._read_line())
            waits: set[asyncio.Future[Any]] = {reading} if stop is None else {reading, stop}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                print(file=self.out)  # off the prompt
                return "stopped"
            line = reading.result()
            if line is None:
                return "input"
            self.lines_read += 1
            if line.strip() in ("/quit", "/exit"):
                return "quit"
            if line.strip():
                await self.say(line)


async def _stdin_line() -> str | None:
    """The next line typed; None once there are no more. Read on a thread of its own
    that never holds up the exit: a signal leaves while it waits for a line."""
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str | None] = loop.create_future()

    def take(got: str | None, error: Exception | None) -> None:
        if line.done():
            return
        if error is not None:
            line.set_exception(error)
        else:
            line.set_result(got)

    def read() -> None:
        got, error = None, None
        try:
            got = _typed_line()
        except (EOFError, RuntimeError, OSError):  # no stdin (`<&-`), its terminal hung up
            pass
        except Exception as exc:  # stdin closed under it, say: the caller hears of it
            error = exc
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(take, got, error)

    threading.Thread(target=read, name="terminal", daemon=True).start()
    return await line


def _typed_line() -> str | None:
    """Reads a line from stdin below its buffer, which holds a lock while it waits: a
    thread still waiting there when steward exits made the interpreter abort ("could not
    acquire lock for <stdin> at interpreter shutdown"). A stand-in stdin (a test's) is
    read as ``input`` reads it."""
    raw = getattr(getattr(sys.stdin, "buffer", None), "raw", None)
    if raw is None:
        return input(PROMPT)
    print(PROMPT, end="", flush=True)
    line: bytes = raw.readline()
    if not line:
        return None
    return line.decode(sys.stdin.encoding or "utf-8", "replace").removesuffix("\n")
