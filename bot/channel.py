"""What the service needs of a chat channel (Telegram, Slack): a translator between one
platform and the neutral message model, started and stopped with the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bot.http import HttpServer
from graph.messages import CardOutcome, Reply

# Told of every card a channel settles, so that the other channels settle it too.
Settled = Callable[[CardOutcome], Awaitable[None]]


class ChannelUnavailable(Exception):
    """The platform refused the channel's credentials or could not be reached at start."""


class Channel(Protocol):
    name: str
    settled_here: Settled | None

    @property
    def needs_http(self) -> bool: ...

    def mount(self, http: HttpServer) -> None: ...

    async def start(self) -> None: ...

    async def stop(self, drain_seconds: float = 10.0) -> None: ...

    async def deliver(self, reply: Reply, reply_to: dict[str, Any] | None) -> None: ...

    async def settle(self, outcome: CardOutcome) -> None:
        """Shows the outcome on every message of this channel showing the card, if any,
        without its buttons; posts nothing new."""

    def describe(self) -> str: ...
