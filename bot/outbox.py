"""Replies on their way out: kept in the ledger, sent in order per chat, tried again
until they go.

Every reply a channel owes is in the ledger before the channel tries to send it (see
``FrontDoor.answer``). Each chat has a lane of its own, so a chat that is held up — a
429, a chat whose messages fail — holds up no other chat; in a chat, replies go out in
the order they were made. When the platform cannot take a message (it is unreachable,
or answers with a server error) the channel raises ``SendLater``; the reply is tried
again later, from the first step not yet done (see ``Steps``), for up to GIVE_UP_AFTER
(of this process's life: a stop is no try), and only then given up, with an audit
event. When the ledger is down mid-reply (a note of how far it went, where a card was
posted), the reply waits for it, tried again each ``first_retry``, and goes on from the
step it stopped at once the ledger is back: nothing of it is given up, and no message
sent twice. A stop leaves what is unsent in the ledger for the next start. A worker that
may have looked gone to the others (frozen past its lease) first asks the ledger
whether each reply is still its own to send. A message the platform may have taken
before the connection broke is sent again: a reply arrives at least once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta
from functools import partial
from typing import TypeVar, cast

from graph.front_door import FrontDoor
from graph.messages import Inbound, Owed, Reply
from memory.ledger import Outage, ledger_down, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY = 1.0  # seconds; doubled after every failed try
LAST_RETRY = 60.0
GIVE_UP_AFTER = timedelta(days=1)


class SendLater(Exception):
    """The platform cannot take the message now; the reply is tried again later."""


class Steps:
    """A reply's sends in the order a channel makes them — a press's answer, each
    message, a card's update — counted as they go into ``Owed.sent``, so that a reply
    tried again skips what went on an earlier try. A skipped step gives what it gave
    then, if that was in this process (a card's message id), else None. Before a step
    after one done, the ledger is told (``note``): a crash mid-reply leaves at most the
    step under way to send again, not every message before it. The ledger down, the
    note raises, and the reply is tried again from that step (see ``Outbox``)."""

    def __init__(self, owed: Owed, note: Callable[[Owed], Awaitable[None]]) -> None:
        self._owed = owed
        self._note = note
        self._at = 0

    async def take(self, send: Callable[[], Awaitable[T]]) -> T | None:
        step = self._at
        self._at += 1
        if step < self._owed.sent:
            return cast("T | None", self._owed.results.get(step))
        if self._owed.sent > self._owed.noted:
            await self._note(self._owed)
        result = await send()
        self._owed.results[step] = result
        self._owed.sent = self._at
        return result


class Outbox:
    def __init__(
        self,
        door: FrontDoor,
        channel: str,
        send: Callable[[Owed], Awaitable[None]],
        first_retry: float = FIRST_RETRY,
    ) -> None:
        self.door = door
        self.channel = channel
        # What the replies are kept under in the ledger: the channel's name, or one
        # account of it (a Telegram bot's, ``telegram:`` and its id; a Slack app's,
        # ``slack:`` and its bot id), where another account could not send them (see
        # ``TelegramChannel.start``).
        self.account = channel
        self._send = send
        self.first_retry = first_retry
        self._lanes: dict[str, deque[tuple[Owed, asyncio.Future[None]]]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # An answer made before its delivery was stored is stored once: after it is
        # sent, or kept before, where it cannot all go at once (see ``keep``).
        self._storing = asyncio.Lock()
        self.loaded = False  # what this worker owes from before is queued
        # Tries count from here at the earliest: a reply kept before a long stop is not
        # given up at its first failed try after the start.
        self.began = utcnow()

    async def load(self, own: bool = True) -> None:
        """Queues what a worker gone left owed and, with ``own``, what this one held when
        its process last stopped."""
        if own:
            self.loaded = True
        for owed in await self.door.owed(self.account, own):
            self.put(owed)

    async def owe(self, chat_id: str, reply: Reply, answering: Inbound | None = None) -> None:
        """Keeps ``reply`` to a chat in the ledger and queues it; one meant once per chat
        (``Reply.once``) that this chat was owed before is neither. The ledger down, it
        waits for it: news owed to several chats (every operator's) is owed to each once,
        and none is left out."""
        outage = Outage(log, f"keeping a {self.channel} reply to chat {chat_id}")
        owed = await once_the_ledger_takes(
            lambda: self.door.owe(self.account, chat_id, reply, answering),
            outage,
            self.first_retry,
        )
        if owed is not None:
            self.put(owed)

    def put(self, owed: Owed) -> asyncio.Future[None]:
        """Queues a reply in its chat's lane; the future says when its way is over (sent,
        given up or left to another worker) or the lane stopped."""
        lane = self._lanes.setdefault(owed.chat_id, deque())
        done = asyncio.get_running_loop().create_future()
        lane.append((owed, done))
        if owed.chat_id not in self._senders:
            name = f"{self.channel}-send-{owed.chat_id}"
            # A context of its own: a lane put from inside a handling must not take part
            # in that handling's ledger writes (see Ledger.batching).
            self._senders[owed.chat_id] = asyncio.create_task(
                self._drain(owed.chat_id), name=name, context=contextvars.Context()
            )
            self._idle.clear()
        return done

    async def keep(self, owed: Owed) -> None:
        """Keeps an answer made before its delivery was stored (``Owed.kept`` False) in
        the ledger, with the delivery: before the answer's second message, before it is
        tried again, when the lane stops, and when the channel is to tell its platform
        the delivery arrived. A kept one, or one sent already, is left as it is."""
        async with self._storing:
            if not owed.kept:
                await self.door.keep_unstored(owed)

    def steps(self, owed: Owed) -> Steps:
        """What a channel sends a reply's steps through, noting them as they go."""
        return Steps(owed, self._note_before_a_step)

    @property
    def owed_here(self) -> int:
        """Replies queued in this process and not yet sent."""
        return sum(len(lane) for lane in self._lanes.values())

    async def idle(self) -> None:
        """Returns once everything put so far is sent or given up."""
        await self._idle.wait()

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Lets the lanes send for up to ``drain_seconds``, then stops them; what is
        left stays in the ledger for the next start."""
        self.loaded = False  # what is kept from now on waits for the next start
        if drain_seconds > 0 and self._senders:
            try:
                await asyncio.wait_for(self._idle.wait(), drain_seconds)
            except TimeoutError:
                log.warning("stopping with %d %s reply(s) unsent", self.owed_here, self.channel)
        senders = list(self._senders.values())
        for sender in senders:
            sender.cancel()
        for sender in senders:
            with suppress(asyncio.CancelledError):
                await sender
        self._senders.clear()
        for lane in self._lanes.values():  # a sender cancelled before it began
            _stopped(lane)
        self._lanes.clear()
        self._idle.set()

    async def _drain(self, chat_id: str) -> None:
        lane = self._lanes[chat_id]
        try:
            while lane:
                owed, done = lane[0]
                await self._deliver(owed)
                lane.popleft()
                if not done.done():  # a stop may have let it go already
                    done.set_result(None)
        finally:
            if self._senders.get(chat_id) is asyncio.current_task():
                del self._senders[chat_id]
                _stopped(self._lanes.pop(chat_id, deque()))
                if not self._senders:
                    self._idle.set()

    async def _deliver(self, owed: Owed) -> None:
        """Sends one reply, trying again while the platform cannot take it, or the ledger
        cannot take what is noted on its way."""
        delay = self.first_retry
        outage = Outage(log, f"sending a {self.channel} reply to chat {owed.chat_id}")
        tries = 0

        async def send() -> bool:
            """Whether it went: False when another worker took it over."""
            nonlocal tries
            if owed.kept and not await self.door.holds(owed):
                return False
            tries += 1
            try:
                await self._send(owed)
            except asyncio.CancelledError:  # stopping: the next start sends only the rest
                await self._note_progress(owed)
                raise
            return True

        while True:
            try:  # what went is known here: the rest waits for the ledger
                went = await once_the_ledger_takes(send, outage, self.first_retry)
            except SendLater as exc:
                if utcnow() - max(owed.created_at, self.began) > GIVE_UP_AFTER:
                    log.error(
                        "giving up a reply to %s chat %s after %d tries: %s",
                        self.channel,
                        owed.chat_id,
                        tries,
                        exc,
                    )
                    await self._forget(owed, f"undeliverable: {exc}")
                    return
                log.warning(
                    "could not send a reply to %s chat %s (%s); trying again in %.1f s",
                    self.channel,
                    owed.chat_id,
                    exc,
                    delay,
                )
                await self._note_progress(owed)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAST_RETRY)
                continue
            except Exception as exc:
                log.exception("sending a reply to %s chat %s failed", self.channel, owed.chat_id)
                await self._forget(owed, f"failed: {exc!r}")
                return
            if not went:
                log.warning(
                    "a %s reply to chat %s was taken over while this worker looked gone; "
                    "the worker that took it sends it",
                    self.channel,
                    owed.chat_id,
                )
                return
            if not owed.kept:
                async with self._storing:
                    if not owed.kept:  # else kept meanwhile, as the rest are
                        await self._note(self.door.answered_unstored(owed))
                        return
            sent = partial(self.door.sent, owed)
            await self._note(once_the_ledger_takes(sent, outage, self.first_retry))
            return

    async def _note_progress(self, owed: Owed) -> None:
        """Tells the ledger of the steps done since it last heard, if any; an answer made
        before its delivery was stored is kept, with what of it went."""
        if not owed.kept:
            await self._note(self.keep(owed))
            return
        sent = owed.sent
        if sent > owed.noted and await self._note(self.door.sent_part(owed)):
            owed.noted = sent

    async def _note_before_a_step(self, owed: Owed) -> None:
        """Tells the ledger of the steps done before the next goes; raises when the ledger
        is down, so that none goes before it knows. Another failure is logged, and at
        worst those steps are sent again after a restart."""
        try:
            await (self.door.sent_part(owed) if owed.kept else self.keep(owed))
        except Exception as exc:
            if ledger_down(exc):
                raise
            log.exception("could not note a %s reply's progress in the ledger", self.channel)
            return
        owed.noted = owed.sent

    async def _forget(self, owed: Owed, reason: str) -> None:
        if not owed.kept and not await self._note(self.keep(owed)):
            return
        await self._note(self.door.give_up(owed, reason))

    async def _note(self, write: Awaitable[None]) -> bool:
        """A note in the ledger on a reply's way; one that fails is logged, and at worst
        the reply is sent again after a restart."""
        try:
            await write
        except Exception:
            log.exception("could not note a %s reply's progress in the ledger", self.channel)
            return False
        return True


async def once_the_ledger_takes(
    write: Callable[[], Awaitable[T]], outage: Outage, again_after: float
) -> T:
    """``write``'s result, tried again every ``again_after`` seconds while the ledger is
    down (a note of a message sent, which must not be sent again); another failure is
    raised."""
    while True:
        try:
            result = await write()
        except Exception as exc:
            if not ledger_down(exc):
                raise
            outage.failed(exc)
            await asyncio.sleep(again_after)
            continue
        outage.worked()
        return result


def _stopped(lane: deque[tuple[Owed, asyncio.Future[None]]]) -> None:
    """The lane stopped: what waited on its replies goes on."""
    for _, done in lane:
        if not done.done():
            done.set_result(None)
