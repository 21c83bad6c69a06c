"""The scheduler: fires due timers (waits, approval expiry, the daily list), announces
approval cards no channel was handed, resumes runs whose stop the ledger failed to
record, and reports what changed.

Every timer is in the ledger and is claimed atomically before it fires, so it fires
once however many schedulers share the database, and a time missed while steward was
down fires at the next start. The daily list is a timer too: one for each day and
channel, due at STEWARD_DIGEST_AT on the operator's clock (STEWARD_TIMEZONE, daylight
saving included), fired by a scheduler that serves the channel (one for each of its
bots or apps: two Telegram bots on one ledger each send their own list) and claimed once
each of its chats' list is kept (see ``Scheduler._send_digest``): stewards serving other
platforms on one ledger each send their own operators the list, and a channel whose
steward is down when it is due has it when that steward is back, within a week; after
that a scheduler whose settings do not name the channel drops it (the channel was taken
out of the settings, say), as does one serving the platform through another bot or app
(that one's token was replaced, say). A terminal with no such steward beside it shows
the day's list of a channel's timer due, once, and leaves the timer to the channel's
steward.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.channel import Notify, to_operators_of
from graph.coordinator import Coordinator
from graph.digest import next_digest_at
from graph.engine import Decision, ProcessEngine, RunView
from graph.messages import Reply
from memory.ledger import Ledger, Outage, RunTakenOver, Timer, utcnow

log = logging.getLogger(__name__)

DIGEST = "digest"
# A pending card no channel was handed this long after its gate opened is announced: a
# crash came between the two, or the run was started from a shell or by another process.
ANNOUNCE_AFTER = timedelta(seconds=30)
# A scheduler's claim to announce a card lapses this long after, unless the card was
# handed to a channel meanwhile: a crash between the claim and the card loses nothing.
ANNOUNCE_CLAIM = timedelta(minutes=5)
# A list sent late (steward was down) stands for the day's own list due this soon after.
LATE_LIST_STANDS = timedelta(hours=3)
# A channel's list that no steward serving the channel has sent this long after it was due
# is dropped by a scheduler whose settings do not name the channel: it was taken out of
# the settings, most likely, and its steward, if it comes back, plans its next list.
UNSERVED_LIST_LAPSES = timedelta(days=7)
BATCH = 500  # timers taken per tick
IN_FLIGHT = 16  # fired at once: their ledger writes share commits


@dataclass(frozen=True)
class DigestTime:
    """When the daily list goes out: ``at`` on the clock of ``zone``."""

    at: time
    zone: ZoneInfo


class Scheduler:
    def __init__(
        self,
        ledger: Ledger,
        engine: ProcessEngine,
        coordinator: Coordinator,
        notify: Notify,
        interval: float = 5.0,
        digest: DigestTime | None = None,
        clock: Callable[[], datetime] = utcnow,
        defers: Callable[[], Awaitable[bool]] | None = None,
        unhandled: Callable[[], Awaitable[dict[str, datetime]]] | None = None,
        channels: Sequence[str] = (),
        configured: Sequence[str] = (),
    ) -> None:
        self.ledger = ledger
        self.engine = engine
        self.coordinator = coordinator
        self.notify = notify
        self.interval = interval
        self.digest = digest
        self.clock = clock
        # While it says so, timers, the daily list and missed cards are another
        # process's, whose chats their news is for (a terminal beside `steward run`).
        self.defers = defers
        # When the oldest delivery of each event not handled yet came (the webhooks').
        self.unhandled = unhandled
        # The channels whose daily list this scheduler sends, each under a timer of its
        # own; none (the terminal): one timer, for whatever ``notify`` reaches. Once they
        # started, each one account of its platform (see ``serve``).
        self.channels = tuple(channels)
        # The channels this steward's settings name, served here or not (the terminal's
        # steward run may be merely stopped): their list is never dropped here as unserved.
        self.configured = frozenset((*channels, *configured))
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._next_digest: tuple[list[str], datetime] | None = None  # planned: keys, time
        self._shown_here: set[str] = set()  # the days whose list this scheduler handed on

    def serve(self, accounts: Sequence[str]) -> None:
        """Sends the daily list of each of ``accounts`` (a Telegram bot's, ``telegram:``
        and its id; a Slack app's), the channels started here, under a timer of its own:
        two bots of one platform on one ledger (two stewards) each send their own
        operators the list. A timer naming the platform alone (planned before accounts
        were told apart) is sent by the first steward of the platform to fire it. Another
        account of a platform served here is another steward's, and its list unsent a
        week is dropped here (its bot's token was replaced, say)."""
        platforms = {_platform(account) for account in accounts}
        others = (name for name in self.configured if _platform(name) not in platforms)
        self.channels = tuple(accounts)
        self.configured = frozenset((*accounts, *others))

    async def tick(self) -> int:
        """Fires every due timer once; returns how many this worker fired. Several fire
        at a time, so that their transactions share commits."""
        fired = 0
        if self.defers is None or not await self.defers():
            fired = await self._fire_due(self.clock())
        for view in await self.engine.resume_stalled():  # the ledger failed at their stop
            try:
                await self.notify(self.coordinator.describe(view), view.run.reply_to)
            except Exception:  # its card is announced in time all the same
                log.exception("could not tell of run %s, resumed", view.run.id)
        return fired

    async def _fire_due(self, now: datetime) -> int:
        await self._plan_digest(now)
        # A wait for an event that a delivery not handled yet may have brought in time,
        # received before the wait was due, is left out: its run takes the event when it
        # is handled, or the wait's timer fires at a tick after that.
        held = await self.unhandled() if self.unhandled is not None else None
        due = await self.ledger.due_timers(now, limit=BATCH, held=held)
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def fire(timer: Timer) -> int:
            async with gate:
                return await self._fire(timer)

        results = await asyncio.gather(*(fire(t) for t in due if t.kind != DIGEST))
        fired = sum(results)
        # After what was due: a list sent late holds no expired gate. Another channel's
        # list is left to a scheduler that serves that channel, for a while.
        platforms = {_platform(channel) for channel in self.channels}
        for timer in (t for t in due if t.kind == DIGEST):
            channel = _channel_of(timer.key)
            if channel is None or channel in self.channels or channel in platforms:
                fired += await self._send_digest(timer, now)
            elif now - timer.due_at > UNSERVED_LIST_LAPSES and not (
                {channel, _platform(channel)} & self.configured
            ):
                await self._drop_unserved(timer)
            elif not self.channels:  # the terminal, with no steward of the channel beside it
                await self._show_here(timer, now)
        await self._announce_missed(now)
        return fired

    async def _announce_missed(self, now: datetime) -> None:
        """Sends the card of every pending approval no channel was handed; the claim
        makes it once however many schedulers share the database, and lapses if the
        card did not reach a channel (it is noted handed out when it does)."""
        lapsed = now - ANNOUNCE_CLAIM
        for approval in await self.ledger.unannounced_approvals(now - ANNOUNCE_AFTER, lapsed):
            if not await self.ledger.claim_announcement(approval.id, now, lapsed):
                continue
            try:
                view = await self.engine.view(approval.run_id)
                if view.approval is not None and view.approval.id == approval.id:
                    await self.notify(self.coordinator.describe(view), view.run.reply_to)
            except Exception:
                log.exception("could not announce approval %s; trying again", approval.id)
                await self.ledger.release_announcement(approval.id)

    async def _fire(self, timer: Timer) -> int:
        try:
            result = await self.engine.fire_timer(timer, self.worker)
        except RunTakenOver as exc:  # this worker looked gone meanwhile: the other tells
            log.info("timer %s fired; its run went on in another worker: %s", timer.key, exc)
            return 0
        except Exception:
            log.exception("timer %s failed", timer.key)
            return 0
        if result is None:
            return 0
        reply = self._reply(result)
        if reply.items:
            try:
                await self.notify(reply, _reply_to(result))
            except Exception:  # the timer fired all the same; the others go on
                log.exception("timer %s fired; could not tell of it", timer.key)
        return 1

    async def _plan_digest(self, now: datetime) -> None:
        """Makes sure the next daily list has its timer."""
        if self.digest is None:
            return
        due = next_digest_at(now, self.digest.zone, self.digest.at)
        keys = self._digest_keys(due)
        if (keys, due) != self._next_digest:  # a new day, or STEWARD_DIGEST_AT changed
            for key in keys:
                await self.ledger.plan_timer(key, DIGEST, due)
            self._next_digest = (keys, due)

    async def _send_digest(self, timer: Timer, now: datetime) -> int:
        """Sends the day's list to each chat of the timer's channel (of every channel
        ``notify`` reaches, for a timer naming none) once, however many schedulers share
        the ledger and however often its sending starts again: each chat's reply is kept
        under the day's key (``Reply.once``), and the timer is claimed only once the
        channel has kept it. A crash or a stop between two chats leaves the timer due: at
        the next start the list goes to the chats it missed, and to no other. One the
        channel did not take is tried again at the next tick. A list sent late (steward
        was down) stands for today's own when that is due within LATE_LIST_STANDS: it
        does not follow an hour later."""
        channel = _channel_of(timer.key)
        if not await self._hand_on(timer, now, to_operators_of(channel) if channel else None):
            log.warning("no channel took the daily list for %s; trying again", timer.key)
            return 0  # still due: the next tick tries
        self._shown_here.add(_day_of(timer.key))
        if not await self.ledger.claim_timer(timer.id, self.worker):
            return 0  # another scheduler sent it, to the chats this one did not
        todays = self._digest_keys(now) if channel is None else [self._digest_key(now, channel)]
        await self._stand_for(todays, timer, now)
        return 1

    async def _show_here(self, timer: Timer, now: datetime) -> None:
        """Shows the day's list in the terminal, for a channel whose steward is not
        running, once (``Reply.once``), and leaves the channel's timer due: the channel's
        chats have their list when its steward is back."""
        day = _day_of(timer.key)
        if day in self._shown_here:
            return
        if await self._hand_on(timer, now, None):
            self._shown_here.add(day)
            await self._stand_for(self._digest_keys(now), timer, now)

    async def _hand_on(self, timer: Timer, now: datetime, to: dict[str, Any] | None) -> bool:
        """Hands the day's list of ``timer`` to ``notify``, meant once for each chat;
        whether it was taken."""
        try:
            reply = await self.coordinator.today_reply(now=now)
        except Exception:
            log.exception("the daily list for %s failed", timer.key)
            reply = Reply().say("I could not put today's list together; it is logged. /today")
        reply.once = _day_of(timer.key)
        try:
            return await self.notify(reply, to) is not False
        except Exception:
            log.exception("could not send the daily list for %s", timer.key)
            return False

    async def _stand_for(self, todays: list[str], timer: Timer, now: datetime) -> None:
        """A list sent late stands for the day's own of ``todays`` due within
        LATE_LIST_STANDS: that one does not follow an hour later."""
        for key in todays:
            today = await self.ledger.get_timer(key)
            if today is not None and today.id != timer.id and today.due_at - now < LATE_LIST_STANDS:
                await self.ledger.claim_timer(today.id, self.worker)

    async def _drop_unserved(self, timer: Timer) -> None:
        """Ends a channel's list that no steward serving the channel sent in time, where it
        stayed due for ever, and says so once."""
        if await self.ledger.cancel_timer(timer.id):
            channel = _channel_of(timer.key) or ""
            platform = _platform(channel)
            asked = (
                f"is {channel} still in the settings?"
                if channel == platform
                else f"was that {platform} account replaced in a steward's settings?"
            )
            log.warning(
                "dropped the daily list %s: no steward serving %s sent it in the %d days "
                "since it was due (%s)",
                timer.key,
                channel,
                UNSERVED_LIST_LAPSES.days,
                asked,
            )

    def _digest_keys(self, at: datetime) -> list[str]:
        """The keys of the timers of the list of the day ``at`` falls on: one for each
        channel this scheduler serves, or one naming none."""
        return [self._digest_key(at, channel) for channel in self.channels or [None]]

    def _digest_key(self, at: datetime, channel: str | None) -> str:
        """The key of ``channel``'s list of the day ``at`` falls on, on the operator's
        clock: "digest:2026-10-24:slack", or "digest:2026-10-24" naming no channel."""
        assert self.digest is not None
        day = f"{DIGEST}:{at.astimezone(self.digest.zone).date().isoformat()}"
        return f"{day}:{channel}" if channel else day

    def _reply(self, result: RunView | Decision) -> Reply:
        if isinstance(result, Decision):
            return self.coordinator.decision_reply(result)
        return self.coordinator.describe(result)

    async def run(self) -> None:
        outage = Outage(log, "scheduler tick")
        while True:
            try:
                await self.tick()
                outage.worked()
            except Exception as exc:
                outage.failed(exc)
            await asyncio.sleep(self.interval)


def _day_of(key: str) -> str:
    """The day of a daily list's timer, "digest:2026-10-24": what each chat's list is
    kept under, whichever channel's timer sent it."""
    return ":".join(key.split(":", 2)[:2])


def _channel_of(key: str) -> str | None:
    """The channel a daily list's timer is for ("digest:2026-10-24:slack"); None for one
    naming none (the terminal's, or planned by a steward from before channels had one)."""
    parts = key.split(":", 2)
    return parts[2] if len(parts) == 3 else None


def _platform(channel: str) -> str:
    """The platform of a channel or one account of it: "telegram" of "telegram:4242"."""
    return channel.partition(":")[0]


def _reply_to(result: RunView | Decision) -> dict[str, Any] | None:
    view = result.view if isinstance(result, Decision) else result
    return view.run.reply_to if view is not None else None
