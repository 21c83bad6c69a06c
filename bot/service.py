"""``steward run`` with chat platforms configured: every channel, the HTTP server when
one needs it, and the scheduler, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.app import Steward
from bot.channel import Channel, Notify, for_operators_of_one_channel
from bot.hooks import HookEndpoint
from bot.http import HttpServer
from bot.scheduler import DigestTime, Scheduler
from bot.settings import Settings
from bot.worker_slot import SHELL, ShellSlot, WorkerSlot, gone_shells
from graph.cards import outcome
from graph.hooks import HookRouter, load_hooks, unhandled_events
from graph.messages import CardOutcome, Reply
from memory.embeddings import EmbeddingFailed
from memory.ledger import LEASE, Ledger, Outage, utcnow

log = logging.getLogger(__name__)
DRAIN_SECONDS = 10.0  # a stop lets the channels finish their work and replies for this long
BEAT_SECONDS = 5.0  # how often a worker says it lives, and looks for work a gone one left
FEEDING_SECONDS = 2.0  # a stop waits this long for long-term memory's batch
# The reader of the audit log that settles the cards decided in another process.
DECISIONS_READER = "cards decided elsewhere"


def configured_names(settings: Settings) -> list[str]:
    """The names of the chat platforms the settings configure, none of their SDKs imported."""
    tokens = (("telegram", settings.telegram_bot_token), ("slack", settings.slack_bot_token))
    return [name for name, token in tokens if token]


def configured_channels(steward: Steward) -> list[Channel]:
    """The chat platforms configured; each one's SDK is imported only where it is."""
    settings, memory = steward.settings, steward.coordinator.memory
    channels: list[Channel] = []
    names = configured_names(settings)
    if "telegram" in names:
        from bot.telegram import TelegramChannel

        channels.append(TelegramChannel.from_settings(settings, steward.door))
    if "slack" in names:
        from bot.slack import SlackChannel

        channels.append(SlackChannel.from_settings(settings, steward.door, memory))
    return channels


async def a_service_lives(ledger: Ledger) -> bool:
    """Whether a `steward run` or `steward chat` lives on this ledger: a shell command's
    worker is none."""
    return any(not worker.startswith(SHELL) for worker in await ledger.live_workers())


@asynccontextmanager
async def shell_worker(ledger: Ledger, home: Path) -> AsyncIterator[None]:
    """A shell command that moves runs is a worker while it lasts: no service takes a run
    it moves while it lives, and one it leaves mid-step (Ctrl-C, a kill) goes on in a
    service of its home at once (at the service's start or next beat), or in one
    elsewhere once its lease lapses."""
    slot = ShellSlot.claim(home)
    try:
        await ledger.register_worker(slot.worker)
    except BaseException:
        slot.release()
        raise

    async def beat() -> None:
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            try:
                await ledger.heartbeat()
            except Exception as exc:  # the ledger is down: the command fails on its own
                log.warning("worker heartbeat failed: %s", exc)

    beating = asyncio.create_task(beat(), name="shell worker heartbeat")
    try:
        yield
    finally:
        beating.cancel()
        with suppress(asyncio.CancelledError):
            await beating
        try:
            await ledger.retire_worker()
        except Exception as exc:
            log.warning("could not retire this worker; its lease will lapse: %s", exc)
        finally:
            slot.release()


async def forget_gone_shells(ledger: Ledger, home: Path) -> None:
    """The shell commands of this home that were killed are gone from the ledger's
    workers at once: what they held is anyone's to take up."""
    for worker in gone_shells(home):
        await ledger.forget_worker(worker)


class Service:
    def __init__(
        self,
        steward: Steward,
        channels: list[Channel],
        tick_seconds: float = 5.0,
        fallback: Notify | None = None,
        defers_to_platforms: bool = False,
        serves_hooks: bool = True,
    ):
        self.steward = steward
        self.channels = channels
        self.fallback = fallback  # where news goes with no channel to take it: the terminal
        self.tick_seconds = tick_seconds
        self.http = HttpServer(
            steward.settings.http_host,
            steward.settings.http_port,
            refused=steward.door.refuse_unverified,
        )
        settings = steward.settings
        digest = DigestTime(time.fromisoformat(settings.digest_at), ZoneInfo(settings.timezone))
        self.hook_sources = load_hooks(
            settings.hooks_path, steward.catalog, settings.webhook_secret
        )
        self.scheduler = Scheduler(
            steward.ledger,
            steward.engine,
            steward.coordinator,
            self.notify,
            tick_seconds,
            digest=digest,
            # A terminal beside a `steward run` serving Telegram or Slack, while it lives:
            # timers and the daily list are for its chats; the terminal must not take them.
            defers=steward.ledger.platforms_served if defers_to_platforms else None,
            unhandled=functools.partial(unhandled_events, steward.ledger, self.hook_sources),
            channels=[channel.name for channel in channels],
            # Its list is never dropped as unserved: a `steward run` merely stopped serves it.
            configured=configured_names(settings),
        )
        router = HookRouter(steward.engine, steward.coordinator)
        # False: another steward on this ledger serves the webhooks, on the same port.
        serving = self.hook_sources and serves_hooks
        self.hooks = (
            HookEndpoint(steward.door, router, self.hook_sources, self.notify) if serving else None
        )
        self._started: list[Channel] = []
        for channel in channels:
            channel.settled_here = functools.partial(self._settle_elsewhere, channel.name)
        self._ticking: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._feeding: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        self._beating: asyncio.Task[None] | None = None
        self._moving: asyncio.Task[None] | None = None  # runs a worker gone left
        self._slot: WorkerSlot | None = None

    async def start(self) -> None:
        # Before any channel takes up what is stored or owed: that is this worker's own,
        # and what a worker gone left, never what a live one beside this one holds.
        self._slot = WorkerSlot.claim(self.steward.settings.home)
        await self.steward.ledger.register_worker(self._slot.worker, bool(self.channels))
        self._beating = asyncio.create_task(self._beat(), name="worker heartbeat")
        self._warming = asyncio.create_task(self._warm_up(), name="embedding model")
        if self.hooks is not None or any(channel.needs_http for channel in self.channels):
            for channel in self.channels:
                channel.mount(self.http)
            if self.hooks is not None:
                self.hooks.mount(self.http)
                await self.hooks.queue_stored()
            await self.http.start()
            log.info("HTTP server on %s", self.http.url)
        for channel in self.channels:
            await channel.start()
            self._started.append(channel)
            log.info("%s channel started", channel.name)
        self.scheduler.serve([channel.account for channel in self._started])
        await forget_gone_shells(self.steward.ledger, self.steward.settings.home)
        for view in await self.steward.engine.recover():  # runs a crash left mid-step
            await self.notify(self.steward.coordinator.describe(view), view.run.reply_to)
        if self.hooks is not None:
            await self.hooks.start()
        self._ticking = asyncio.create_task(self.scheduler.run(), name="scheduler")
        if self._started:
            read = await self._decisions_read()
            self._watching = asyncio.create_task(
                self._settle_decided_elsewhere(read), name="cards decided elsewhere"
            )
        self._feeding = asyncio.create_task(self.steward.history.sync.run(), name="memory")

    async def _beat(self) -> None:
        """Says this worker lives, and takes up what a worker gone left, every beat.

        After beats failed (the ledger was down, for every worker alike), it takes up
        nothing for a lease: the others' beats were failing too, and they get the time
        to say they live before anything of theirs looks abandoned."""
        loop = asyncio.get_running_loop()
        healthy_since: float | None = loop.time() - LEASE.total_seconds()
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            try:
                await self.steward.ledger.heartbeat()
                await forget_gone_shells(self.steward.ledger, self.steward.settings.home)
            except Exception as exc:  # the ledger is down, say: the next beat tries again
                if healthy_since is not None:
                    log.warning("worker heartbeat failed, retrying each beat: %s", exc)
                healthy_since = None
                continue
            if healthy_since is None:
                log.info("worker heartbeat works again")
                healthy_since = loop.time()
            taking_over = loop.time() - healthy_since >= LEASE.total_seconds()
            if taking_over:
                try:
                    for channel in self._started:
                        await channel.take_over()
                    if self.hooks is not None:
                        await self.hooks.queue_stored(own=False)
                except Exception:
                    log.exception("could not take up the work of a worker gone; next beat again")
            if taking_over and (self._moving is None or self._moving.done()):
                self._moving = asyncio.create_task(  # beats go on while runs move
                    self._move_runs_on(), name="runs left"
                )

    async def _move_runs_on(self) -> None:
        """Moves on the runs a worker gone left mid-step; tells of each."""
        try:
            for view in await self.steward.engine.recover(own=False):
                await self.notify(self.steward.coordinator.describe(view), view.run.reply_to)
        except Exception:
            log.exception("could not move runs on; next beat again")

    def _decisions_reader(self) -> str:
        """This worker's place in the audit log: another steward on the ledger, serving
        other chats, reads on while this one is down."""
        return f"{DECISIONS_READER} by {self.steward.ledger.worker}"

    async def _decisions_read(self) -> int:
        """Where this worker's last watcher stopped reading the audit log, kept in the
        ledger beside the cards' records: a card decided while steward was down
        (``steward approve`` in a shell) is settled as it starts. A new worker reads on
        from where the stewards before workers had their own place stopped; on a new
        ledger, from its end."""
        ledger = self.steward.ledger
        end = await ledger.audit_end()
        shared = await ledger.cursor(DECISIONS_READER, unread=-1)
        read = await ledger.cursor(self._decisions_reader(), unread=shared)
        if not 0 <= read <= end:  # never read (a new ledger), or the log was cut back
            read = end
            await ledger.move_cursor(self._decisions_reader(), read)
        return read

    async def _settle_decided_elsewhere(self, read: int) -> None:
        """A card decided by another process (``steward approve`` in a shell) loses its
        buttons in these chats too: each tick, every decision the audit log holds after
        those read is settled wherever a channel still shows its card with buttons (one
        settled here shows none). A decision is left two ticks to the chat it was made
        in, which settles its own card, and says so where it was asked."""
        outage = Outage(log, "settling the cards decided elsewhere")
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                before = utcnow() - timedelta(seconds=2 * self.tick_seconds)
                after, decided = await self.steward.ledger.decided_after(read, before)
                for approval_id in decided:
                    await self._settle_everywhere(approval_id)
                if after != read:
                    await self.steward.ledger.move_cursor(self._decisions_reader(), after)
                read = after
                outage.worked()
            except Exception as exc:  # the ledger is down, say: the next tick looks again
                outage.failed(exc)

    async def _settle_everywhere(self, approval_id: str) -> None:
        approval = await self.steward.ledger.get_approval(approval_id)
        if approval is None or approval.is_pending:
            return
        decided = outcome(approval, self.steward.coordinator.zone)
        for channel in self._started:
            if await channel.shows(approval_id):
                await channel.settle(decided)

    async def _warm_up(self) -> None:
        """Readies long-term memory and the embedding model while the channels start, so
        that the first record or question about history need not wait for them."""
        try:
            await self.steward.history.store.warm_up()
        except Exception as exc:  # searches read what they need themselves
            log.warning("long-term memory not readied: %s", exc)
        embedder = self.steward.history.embedder
        if embedder is None:
            return
        log.info("readying the embedding model %s", embedder.name)
        try:
            await embedder.warm_up()
        except EmbeddingFailed as exc:  # memory keeps the records and embeds them later
            log.warning("embedding model not ready, records wait for it: %s", exc)

    async def __aenter__(self) -> Service:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Stops everything; the channels finish what they took and send their replies
        within ``drain_seconds`` in all, and leave the rest for the next start."""
        deadline = asyncio.get_running_loop().time() + drain_seconds
        if self._feeding is not None:  # long-term memory: the batch it feeds, then it stops
            self.steward.history.sync.stop()
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._feeding), FEEDING_SECONDS)
        # Nothing new is taken up while stopping; the lease outlasts the drain.
        tasks = (self._beating, self._warming, self._ticking, self._watching, self._feeding)
        for task in tasks:
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

        def left() -> float:
            return max(0.0, deadline - asyncio.get_running_loop().time())

        # Nothing new comes in over HTTP (a sender tries again later; what came is
        # stored), then what was taken is finished: the webhooks' first, while the
        # channels are there to take their news.
        await self.http.stop()
        if self.hooks is not None:
            await self.hooks.stop(left())
        if self._moving is not None:  # what is not done by then, the next worker moves on
            with suppress(TimeoutError):
                await asyncio.wait_for(self._moving, left())
        for channel in reversed(self._started):
            await channel.stop(left())
        self._started.clear()
        await self._retire()

    async def _retire(self) -> None:
        """Hands what this worker leaves undone to the others at once, not after its
        lease; a failure leaves it to the lease, or to this slot's next start."""
        if self._slot is None:
            return
        try:
            await self.steward.ledger.retire_worker()
        except Exception as exc:
            log.warning("could not retire this worker; its lease will lapse: %s", exc)
        finally:
            self._slot.release()
            self._slot = None

    async def notify(self, reply: Reply, reply_to: dict[str, Any] | None) -> bool:
        """A run's news goes to the channel it came from; news of a run started
        elsewhere goes to every channel's operators, and news for one channel's operators
        (the day's list) to that channel alone, or that one account of it (a bot's).
        False when no channel took it (a channel that could not is logged; the others go
        on)."""
        wanted = reply_to.get("channel") if reply_to else None
        targets = [c for c in self._started if wanted in (c.name, c.account)]
        if not targets and for_operators_of_one_channel(reply_to):
            return False  # that channel is not served here
        targets = targets or self._started
        if not targets and self.fallback is not None:
            if await self.steward.door.to_show(reply):
                await self.fallback(reply, reply_to)
                await self.steward.door.shown(reply)
            return True
        taken = False
        for channel in targets:
            try:
                await channel.deliver(reply, reply_to)
                taken = True
            except Exception:
                log.exception("could not deliver news to %s", channel.name)
        return taken

    async def idle(self) -> None:
        """Returns once every channel has handled what it took and sent its replies."""
        for channel in self._started:
            await channel.idle()

    async def _settle_elsewhere(self, here: str, outcome: CardOutcome) -> None:
        """A card decided in one channel loses its buttons in the others too: those
        started, and those starting (a reply owed from before the start may decide)."""
        for channel in self.channels:
            if channel.name != here:
                try:
                    await channel.settle(outcome)
                except Exception:
                    log.exception("could not settle card %s in %s", outcome.approval_id, channel)

    def summary(self) -> str:
        parts = [channel.describe() for channel in self._started]
        if self.hooks is not None:
            parts.append("webhooks: " + ", ".join(f"/hooks/{n}" for n in self.hooks.sources))
        if self.http.started:
            parts.append(f"HTTP on {self.http.url}")
        return ", ".join(parts)


async def wait_for_signal() -> None:
    """Returns on SIGINT or SIGTERM; after, SIGTERM does what Ctrl-C does."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        stop_as_ctrl_c_does()


def stop_as_ctrl_c_does() -> None:
    """SIGTERM does what Ctrl-C does now: in ``asyncio.run``, cancels the command's task,
    so that what it opened closes (its worker retired, the ledger shut); before or after,
    raises KeyboardInterrupt. Where nothing waits for a stop yet (a start under way), it
    ended the process by the default action, its worker left on the ledger."""
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
