"""The terminal channel: the same coordinator, cards with numbered choices."""

from __future__ import annotations

import asyncio
import itertools
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import TextIO

from graph.front_door import FrontDoor
from graph.messages import Card, CardOutcome, EditPrompt, Inbound, Reply, Sender
from memory.ledger import TakenOver

PROMPT = "you › "
TAKEN_OVER = (
    "This terminal was stopped for so long that another steward took that message over "
    "and handles it; nothing of it was done here."
)


def render(reply: Reply, choices: dict[str, str] | None = None) -> str:
    """Plain text for a reply; fills ``choices`` with number → button payload."""
    blocks = []
    number = itertools.count(1)
    for item in reply.items:
        if isinstance(item, str):
            blocks.append(item)
        elif isinstance(item, CardOutcome):
            blocks.append(f"[{item.approval_id}] {item.text}")
        elif isinstance(item, Card):
            blocks.append(_card(item, number, choices))
        elif isinstance(item, EditPrompt):
            blocks.append(item.as_message)
    if reply.notice:
        blocks.append(reply.notice)
    return "\n\n".join(blocks).replace("\r\n", "\n").translate(VISIBLE)


# Control characters as their escapes, but tab and newline: text from outside (a webhook's
# field, a client's name) cannot clear the terminal or colour what follows.
VISIBLE = {
    code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)] if chr(code) not in "\t\n"
}


def _card(card: Card, number: itertools.count[int], choices: dict[str, str] | None) -> str:
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
        n = str(next(number))
        if choices is not None:
            choices[n] = button.payload
        options.append(f"[{n}] {button.label}")
    lines.append("└─ " + "  ".join(options))
    return "\n".join(lines)


class ConsoleChannel:
    def __init__(
        self,
        door: FrontDoor,
        user: str = "operator",
        out: TextIO = sys.stdout,
        read_line: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.door = door
        self.sender = Sender("console", user, user)
        self.out = out
        self.choices: dict[str, str] = {}
        self._read_line = read_line or _stdin_line
        self._counter = itertools.count(1)
        self._session = f"{asyncio.get_running_loop().time():.0f}"

    def show(self, reply: Reply) -> None:
        choices: dict[str, str] = {}
        text = render(reply, choices)
        if choices:
            self.choices = choices
        if text:
            print(f"steward › {text}\n", file=self.out, flush=True)

    async def say(self, text: str) -> Reply:
        """One operator turn: a number presses a button on the last card."""
        stripped = text.strip()
        external_id = f"{self._session}-{next(self._counter)}"
        if stripped in self.choices:
            inbound = Inbound(self.sender, "terminal", external_id, button=self.choices[stripped])
        else:
            inbound = Inbound(self.sender, "terminal", external_id, text=stripped)
        try:
            reply = await self.door.receive(inbound) or Reply()
        except TakenOver:  # stopped (Ctrl-Z) past its lease, another steward chat took it
            reply = Reply().say(TAKEN_OVER)
        self.show(reply)
        return reply

    async def run(self) -> None:
        print(
            "steward is listening. /help lists commands; Ctrl-D or /quit leaves.\n",
            file=self.out,
            flush=True,
        )
        while True:
            line = await self._read_line()
            if line is None or line.strip() in ("/quit", "/exit"):
                print("bye.", file=self.out, flush=True)
                return
            if line.strip():
                await self.say(line)


async def _stdin_line() -> str | None:
    def read() -> str | None:
        try:
            return input(PROMPT)
        except EOFError:
            return None

    return await asyncio.to_thread(read)
