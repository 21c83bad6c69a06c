"""What the service needs of a chat channel (Telegram, Slack): a translator between one
platform and the neutral message model, started and stopped with the service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from contextlib import suppress
from dataclasses import replace
from typing import Any, Protocol

from bot.http import HttpServer
from bot.in_order import InOrder, catch_up
from bot.outbox import Outbox
from graph.messages import CardOutcome, Inbound, Owed, Reply
from memory.ledger import TakenOver

log = logging.getLogger(__name__)

# Told of every card a channel settles, so that the other channels settle it too.
Settled = Callable[[CardOutcome], Awaitable[None]]
# Hands a run's news to the channels: the reply, and the chat the run was started from
# (None for a run started from the CLI): {"channel": "telegram", "chat_id": "12345"};
# or a channel alone, whose operators it is for (``to_operators_of``).
# False when none of them took it (None: not known).
Notify = Callable[[Reply, dict[str, Any] | None], Awaitable[bool | None]]
# Seconds a command that only shows something may take to answer before it is stored:
# past them it is stored and handled as any other (see ``take``).
ANSWER_FIRST_WITHIN = 0.25
# What the sender hears when handling their message or press failed.
FAILED = "Something went wrong; it is logged."


class ChannelUnavailable(Exception):
    """The platform refused the channel's credentials or could not be reached at start."""


class Unusable(ValueError):
    """A delivery the platform sent (its signature or secret checked) whose shape the
    channel cannot use: a field it reads missing or of another type. Raised only where a
    channel reads a delivery, before anything of it is stored; the channel acknowledges
    it and it is set aside (``FrontDoor.unusable``), so that the platform neither sends it
    again nor holds back what comes after it."""


class Channel(Protocol):
    name: str
    settled_here: Settled | None

    @property
    def account(self) -> str:
        """This channel among those of its platform on the same ledger (a Telegram bot's,
        ``telegram:`` and its id); known once it started."""

    @property
    def needs_http(self) -> bool: ...

    def mount(self, http: HttpServer) -> None: ...

    async def start(self) -> None: ...

    async def stop(self, drain_seconds: float = 10.0) -> None: ...

    async def take_over(self) -> None:
        """Takes up what a worker gone (a stopped or dead process on the same ledger)
        left of this channel: deliveries not handled, replies not sent."""

    async def idle(self) -> None:
        """Returns once everything taken so far is handled and its replies sent."""

    async def deliver(self, reply: Reply, reply_to: dict[str, Any] | None) -> None: ...

    async def settle(self, outcome: CardOutcome) -> None:
        """Shows the outcome of a card decided on another platform on every message of
        this channel showing it, if any, without its buttons; posts nothing new. By way
        of the ledger, as a reply: tried again until the platform takes it, across
        restarts."""

    async def shows(self, approval_id: str) -> bool:
        """Whether a message of this channel shows the card with its buttons."""

    def describe(self) -> str: ...


# The chat of a kept reply that settles a card decided on another platform (``settling:``
# and the approval): an outbox lane of its own, posted nowhere.
SETTLING = "settling"


async def settle_by_outbox(outbox: Outbox, outcome: CardOutcome) -> None:
    """Keeps the settling of a card decided on another platform as a reply of
    ``outbox``'s channel, and queues it; before the outbox has loaded what this worker
    owes (the channel is starting), the load queues it. (Kept while the load reads, it
    may be queued twice: the second finds the card settled.)"""
    quiet = replace(outcome, decided_elsewhere=True)
    chat = f"{SETTLING}:{outcome.approval_id}"
    owed = await outbox.door.owe(outbox.account, chat, Reply().add(quiet))
    if owed is not None and outbox.loaded:
        outbox.put(owed)


async def take_up(
    outbox: Outbox, enqueue: Callable[[int, Inbound], None], own: bool, sent_to: str = ""
) -> None:
    """Queues the replies a worker gone owed in the outbox's channel and hands its stored
    deliveries to ``enqueue``; with ``own`` (at start) this worker's too. With
    ``sent_to``, only the deliveries whose ids begin with it (a Telegram bot's)."""
    await outbox.load(own)
    for inbox_id, inbound in await outbox.door.stored(outbox.channel, own, sent_to):
        enqueue(inbox_id, inbound)


async def take(
    outbox: Outbox,
    queue: InOrder[tuple[int, Inbound]],
    idle: Callable[[], Coroutine[Any, Any, None]],
    inbound: Inbound,
) -> None:
    """Stores a delivery and queues its handling, then gives the channel's worker its
    moment (``catch_up``; the channel's ``idle``) before the channel tells its platform
    the delivery arrived.

    A command that only shows something (``FrontDoor.only_reads``) is answered first,
    where nothing came before it that is still to be handled (``InOrder.ahead``): its
    answer goes, then it is stored (``FrontDoor.claim_unstored``), and whatever of the
    answer has not gone once the worker had its moment is kept with it then. One whose
    answer takes longer than ANSWER_FIRST_WITHIN, or would write after all, is stored
    and handled as any other, before what came after it (its answer is made again; it
    wrote nothing)."""
    door = outbox.door
    answer: Owed | None = None
    async with queue.ahead() as first:
        if first and not door.claimed(inbound) and await door.only_reads(inbound):
            if not await door.claim_unstored(inbound):
                return  # stored before: a duplicate
            try:
                answering = door.answer_unstored(inbound, outbox.account)
                answer = await asyncio.wait_for(answering, ANSWER_FIRST_WITHIN)
            except TimeoutError:
                answer = None
            if answer is not None:
                outbox.put(answer)
        if answer is None:
            with queue.arriving():
                inbox_id = await door.accept(inbound, durable=False)
                if inbox_id is None:
                    return  # a duplicate
                (queue.put_first if first else queue.put)((inbox_id, inbound))
    await catch_up(idle())
    if answer is not None:
        await outbox.keep(answer)


async def answer(
    outbox: Outbox,
    send: Callable[[str, Reply, Inbound], Awaitable[None]],
    item: tuple[int, Inbound],
) -> None:
    """Handles a stored delivery and queues its reply; the sender hears if handling it
    failed. One another worker took over meanwhile is that worker's to answer."""
    inbox_id, inbound = item
    try:
        owed = await outbox.door.answer(inbox_id, inbound, ahead=outbox.put, account=outbox.account)
    except TakenOver as exc:
        log.warning("%s: the worker that took it over answers it", exc)
        return
    except Exception:
        with suppress(Exception):  # the failure itself is what gets logged
            await send(inbound.chat_id, Reply(private=True).say(FAILED), inbound)
        raise
    outbox.put(owed)


def operator_ids(channel: str, operators: Iterable[str]) -> list[str]:
    """This channel's operators, from STEWARD_OPERATORS entries like ``telegram:12345``."""
    prefix = f"{channel}:"
    return [entry.removeprefix(prefix) for entry in operators if entry.startswith(prefix)]


def to_operators_of(channel: str) -> dict[str, Any]:
    """Where news for every operator of ``channel`` (or of one account of it, a bot's),
    and for nobody elsewhere, goes: the day's list, which each channel's account is sent
    under a timer of its own."""
    return {"channel": channel}


def for_operators_of_one_channel(reply_to: dict[str, Any] | None) -> bool:
    """Whether news goes to one channel's operators alone (``to_operators_of``)."""
    return reply_to is not None and "chat_id" not in reply_to


def news_chats(channel: str, reply_to: dict[str, Any] | None, operators: list[str]) -> list[str]:
    """Where a run's news goes in ``channel``: the chat the run came from, or, for a run
    started elsewhere or news for the channel's operators, every operator's (a user id
    is their chat with steward)."""
    if reply_to and reply_to.get("channel") == channel and "chat_id" in reply_to:
        return [str(reply_to["chat_id"])]
    return operators
