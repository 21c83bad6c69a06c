"""The front door: every message from every channel comes in here, once.

It stores the delivery in the durable inbox, where a duplicate delivery is dropped,
then checks who sent it. Operators on the allow-list go on to the coordinator; anyone
else gets one polite refusal a day, every attempt goes into the audit log, and nothing
of theirs reaches the coordinator.

A command that only shows something (``/runs``) writes nothing, so a channel may answer
it first and store it after (``claim_unstored``): the delivery is stored, handled, once
its answer went, and in any case before its platform hears it arrived, with what of the
answer could not go yet. A duplicate meanwhile is dropped as a stored one is.

Replies go out the same way: what a channel owes a chat is kept in the ledger until
the channel has sent all of it, so a stop or an outage of the platform delays a reply,
and the channel sends it when it can. The reply to a delivery is kept once the handling
is over, with the delivery's "done" when the handling wrote nothing else. A handling
that writes keeps a word in its reply's place with its first write (where the "done"
goes too), and the reply replaces it: a crash in between leaves the sender that word —
they were cut off, and what was done stands — instead of silence. An approval card the
lost reply held is not lost either: each approval notes when its card was first handed
to a channel, and the scheduler announces a pending card never handed out.

Part of a reply can go ahead of the rest (``Reply.send_ahead``): the word that a run
started, kept with the write that records the run and sent once that has committed,
before the run goes on to its card — which, with a model drafting, takes seconds. That
write holds the delivery's done mark too, and the platform is told "delivered" only once
what came before is on disk: a power cut that undid the run undoes the mark, and the
message is handled again. The operator then hears of a run the cut undid, and of the one
that replaced it; nothing acts twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

from graph.access import Allowlist
from graph.cards import decision_line
from graph.coordinator import QUESTION_TTL, Coordinator
from graph.messages import Inbound, Owed, Reply, as_shown, sending_ahead
from memory.ledger import (
    ApprovalStatus,
    Ledger,
    LedgerTx,
    NewAuditEvent,
    OwedReply,
    RunStatus,
    WroteWhileReading,
    cannot_store,
    cause,
    storable,
    utcnow,
)
from memory.working import WorkingMemory

log = logging.getLogger(__name__)

REFUSAL_TTL = 24 * 3600
AHEAD_WAIT = 0.5  # seconds a handling waits, at most, for what it sent ahead to be sent
UNVERIFIED_TTL = 60
UNVERIFIED_MOST = 20  # audit events a minute per channel for refused requests, all addresses
# Deliveries from people not on the allow-list stored (and audited) a day, per sender and
# from all of them: past these a stranger's flood is dropped unstored, so that it cannot
# grow the ledger without end. Operators' deliveries are never counted.
STRANGER_MOST = 100
STRANGERS_MOST = 2_000
REFUSAL = "Sorry, I only work for the operator of this account, so I can't help you here."
# Where the terminal's replies meant once per chat are noted (``to_show``): every terminal
# on a ledger is one chat, the operator at their machine.
TERMINAL = ("console", "terminal")


@dataclass
class FrontDoor:
    ledger: Ledger
    allowlist: Allowlist
    memory: WorkingMemory
    coordinator: Coordinator
    # Deliveries being answered before they are stored (``claim_unstored``), by channel
    # and id; each future is done once the delivery is stored, or will not be so.
    _unstored: dict[tuple[str, str], asyncio.Future[None]] = field(
        default_factory=dict, init=False, repr=False
    )
    # Audits of requests refused, under way: their answers did not wait for them.
    _auditing: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    async def receive(self, inbound: Inbound) -> Reply | None:
        """Stores the delivery, then handles it. None for a duplicate delivery.

        The sender hears nothing until the handling is over, so the delivery's record
        need not wait for the disk on its own: the handling's first write, or the reply
        after a handling that wrote nothing, is what the sender learns of.
        """
        inbox_id = await self.accept(inbound, durable=False)
        if inbox_id is None:
            return None
        return await self.handle_stored(inbox_id, inbound)

    async def accept(self, inbound: Inbound, durable: bool = True) -> int | None:
        """Stores the delivery in the durable inbox; None when it is a duplicate, or
        when it cannot be stored at all (it is set aside in the audit log).

        A channel whose platform must be told "delivered" calls this first, tells the
        platform, then calls ``handle_stored``; a crash in between is recovered on restart.
        With ``durable=False`` the channel may start handling at once, and tells its
        platform once ``sync()`` returns. A delivery being answered before it is stored
        (``claim_unstored``) is stored once that is over: it is a duplicate then, unless
        its answer could not be stored.
        """
        channel = inbound.sender.channel
        if (claim := self._unstored.get((channel, inbound.external_id))) is not None:
            await asyncio.shield(claim)  # answered before it is stored: delivered again
        if not self.allowlist.allows(inbound.sender) and await self._a_flood(inbound):
            return None
        try:
            return await self.ledger.accept_inbound(
                channel, inbound.external_id, inbound.to_payload(), durable
            )
        except Exception as exc:
            if not cannot_store(exc):
                raise  # the ledger failed: the platform delivers it again
            # It would fail at every delivery, and a platform that delivers in order
            # (Telegram) would bring nothing after it: it is set aside, in the audit log.
            error = cause(exc)[:500]  # not the statement's parameters: the message's text
            log.warning("set aside a %s delivery the ledger refuses: %s", channel, error)
            data = {"delivery": inbound.external_id[:200], "error": error}
            await self.ledger.audit(
                NewAuditEvent(inbound.sender.key[:200], "delivery.unstorable", channel, data)
            )
            return None

    async def _a_flood(self, inbound: Inbound) -> bool:
        """Whether a stranger's delivery is past what is stored of strangers today; the
        first one past either most is audited, and the rest only logged."""
        sender = inbound.sender.key
        counts = (
            (f"stored:{sender}", STRANGER_MOST, "this sender"),
            ("stored:strangers", STRANGERS_MOST, "all strangers"),
        )
        for counter, most, whose in counts:
            stored = await self.memory.count(counter, REFUSAL_TTL)
            if stored <= most:
                continue
            if stored == most + 1:
                flood = {"most": most, "of": whose}
                await self.ledger.audit(NewAuditEvent(sender[:200], "access.flood", sender, flood))
            log.warning("dropped a delivery from %s unstored: a flood of strangers", sender)
            return True
        return False

    async def prefix_deliveries(
        self, channel: str, prefix: str, newest: int | None = 1000, kinds: Sequence[str] = ()
    ) -> None:
        """The recent deliveries of ``channel`` stored with bare ids, named as a channel
        that has since put ``prefix`` before its ids (see ``Ledger.prefix_deliveries``)."""
        if named := await self.ledger.prefix_deliveries(channel, prefix, newest, kinds):
            log.info("named %d %s deliveries stored before their ids had a prefix", named, channel)

    async def awaits_answer(self, inbound: Inbound) -> bool:
        """Whether ``inbound`` is the answer steward waits for: the first message its
        sender writes in its chat after a question to them there. A channel that
        overhears conversations (Slack's channels) takes only that: not what follows
        while the answer waits to be handled, nor anything once the question is gone."""
        asked = await self.question_to(inbound)
        if asked is None:
            return False
        # A message claims one asking, once: delivered again, it answers only that one
        # (stored already or not), never the question asked after it.
        claimed = await self.memory.get(f"claimed:{inbound.external_id}")
        if claimed is not None:
            return claimed.get("asked") == asked
        claim = {"by": inbound.external_id}
        if not await self.memory.add(f"answered:{asked}", claim, QUESTION_TTL):
            return False
        await self.memory.set(f"claimed:{inbound.external_id}", {"asked": asked}, QUESTION_TTL)
        return True

    async def decided(self, approval_id: str) -> str | None:
        """Who decided an approval and when ("Approved by … at …"); None while it waits
        (or when there is no such approval: its handling says so)."""
        approval = await self.ledger.get_approval(approval_id)
        if approval is None or approval.is_pending:
            return None
        return decision_line(approval, self.coordinator.zone)

    async def edit_refused(self, approval_id: str, edited: Inbound) -> str | None:
        """Why the new text from an Edit form would not be used now, told in the form,
        which stays open and keeps it: the approval was decided meanwhile, or its run is
        paused. None when it would be used, or was: approved with this very text by this
        sender (the form sent again when its first submission took too long to
        acknowledge); None too when there is no such approval: its handling says so."""
        approval = await self.ledger.get_approval(approval_id)
        if approval is None:
            return None
        if (
            approval.status is ApprovalStatus.APPROVED
            and approval.decided_by == edited.sender.key
            and approval.edited_text is not None
            and as_shown(storable(edited.text or ""), approval.edited_text)
        ):
            return None
        if not approval.is_pending:
            decided = decision_line(approval, self.coordinator.zone)
            return f"{decided}, so this text was not sent. Copy it if you need it."
        run = await self.ledger.get_run(approval.run_id)
        if run is not None and run.status is RunStatus.PAUSED:
            return (
                f"Run {run.id} is paused, so this text was not sent. Resume it "
                f"(/resume {run.id}) and press Approve again, or copy the text if you need it."
            )
        return None

    async def question_to(self, inbound: Inbound) -> str | None:
        """The id of the question that waits for an answer from ``inbound``'s sender, an
        operator, in its chat; None when none does."""
        if not self.allowlist.allows(inbound.sender):
            return None
        return await self.coordinator.awaits_answer(inbound)

    async def sync(self) -> None:
        """Returns once every delivery accepted so far is on disk."""
        await self.ledger.sync()

    async def only_reads(self, inbound: Inbound) -> bool:
        """Whether ``inbound`` is an operator's command that only shows something
        (``/runs``, ``/help``): it may be answered before it is stored."""
        allowed = self.allowlist.allows(inbound.sender)
        return allowed and await self.coordinator.only_shows(inbound)

    def claimed(self, inbound: Inbound) -> bool:
        """Whether ``inbound`` is being answered before it is stored: delivered again,
        it is stored (``accept``) once that is over, as any duplicate."""
        return (inbound.sender.channel, inbound.external_id) in self._unstored

    async def claim_unstored(self, inbound: Inbound) -> bool:
        """Takes a delivery that ``only_reads``, and no other ``claimed``, to answer
        before it is stored (``answer_unstored``); False for a duplicate, stored before.

        Nothing is written before its answer goes, which is what a command that only
        shows needs no write for: a crash before the answer is stored (with the
        delivery, once sent) leaves its platform told nothing, and the platform's next
        try is answered; at worst the answer comes twice, as any reply a crash cut off
        after it went (see ``bot.outbox``)."""
        key = (inbound.sender.channel, inbound.external_id)
        assert key not in self._unstored, "claimed twice"
        self._unstored[key] = asyncio.get_running_loop().create_future()
        try:
            stored = await self.ledger.stored_inbound(*key)
        except BaseException:
            self._release(inbound)
            raise
        if stored:
            self._release(inbound)
        return not stored

    async def answer_unstored(self, inbound: Inbound, account: str | None = None) -> Owed | None:
        """The answer to a delivery ``claim_unstored`` took, made while nothing may be
        written (``Ledger.reading_only``), for the channel to send before anything is
        stored; sent, it is stored with the delivery (``answered_unstored``), and the
        channel keeps it first where it cannot all go at once (``keep_unstored``). None
        when the handling failed, or would write after all: nothing of it was written,
        and the channel stores the delivery and handles it as any other (as it does one
        it cancels, taking too long)."""
        try:
            with self.ledger.reading_only():
                reply = await self._handle(inbound)
        except BaseException as exc:
            self._release(inbound)
            if isinstance(exc, WroteWhileReading):  # only_shows is wrong about it
                log.error("%r wrote to the ledger; it was handled again, stored", inbound.text)
            if isinstance(exc, Exception):
                return None
            raise  # cancelled: taking too long, say
        if reply.cards or reply.once is not None:  # none that only shows has them
            self._release(inbound)
            return None
        owed = _owed(account or inbound.sender.channel, inbound.chat_id, reply, inbound)
        owed.held_through = self.ledger.lapses
        owed.kept = False
        return owed

    async def answered_unstored(self, owed: Owed) -> None:
        """The answer ``answer_unstored`` made is sent: its delivery is stored, handled.
        Where that fails (the ledger down), nothing is left to keep either: the answer
        went, and the platform may be told the delivery arrived."""
        try:
            await self._store_answered(owed, None)
        finally:
            owed.kept = True  # nothing of it is left to keep

    async def keep_unstored(self, owed: Owed) -> None:
        """Keeps what is left to send of an answer ``answer_unstored`` made, with its
        delivery, stored as handled: the answer could not all go at once (a platform
        that failed, a second message), or its platform is to be told the delivery
        arrived. From here on it is a reply like any kept one."""
        sent = owed.sent  # kept as it stands now
        await self._store_answered(owed, _kept(owed))
        owed.kept = True
        owed.noted = sent

    async def _store_answered(self, owed: Owed, rest: OwedReply | None) -> None:
        """Stores the delivery an unstored answer answers, as handled, with ``rest`` of
        the answer to send; its claim is over either way: a duplicate then stores it, or
        fails as this did."""
        answering = owed.answering
        assert answering is not None and not owed.kept
        try:
            await self.ledger.answered_inbound(
                answering.sender.channel, answering.external_id, answering.to_payload(), rest
            )
        finally:
            self._release(answering)

    def _release(self, inbound: Inbound) -> None:
        claim = self._unstored.pop((inbound.sender.channel, inbound.external_id), None)
        if claim is not None and not claim.done():
            claim.set_result(None)

    async def handle_stored(self, inbox_id: int, inbound: Inbound) -> Reply:
        """Handles a stored delivery; the caller shows the reply at once (a terminal)."""
        async with self.ledger.handling(inbox_id):
            reply = await self._handle(inbound)
        if cards := _card_ids(reply):  # for the scheduler, which announces them after 30 s
            self.ledger.soon(lambda tx: tx.announce(cards))
        return reply

    async def answer(
        self,
        inbox_id: int,
        inbound: Inbound,
        ahead: Callable[[Owed], asyncio.Future[None]] | None = None,
        account: str | None = None,
    ) -> Owed:
        """Handles a stored delivery and keeps its reply until the channel has sent it;
        the approvals whose cards it shows are noted as announced in the same write.
        Until the reply is kept, a word that the handling was cut off stands in for it,
        kept with the handling's first write (see the module's docstring).

        What the handling sends ahead (``Reply.send_ahead``) before its first write is
        kept with that write, before the word; once it has committed, it goes to
        ``ahead``, which says when it is sent. The reply kept at the end is the rest. The
        first write need not wait for the disk for it: it holds the delivery's done mark
        too, so a power cut that undid it would have the delivery handled again (see the
        module's docstring). The reply is kept under ``account``, the channel's account
        that sends it (a Telegram bot's, a Slack app's), else under the delivery's channel."""
        channel, chat_id = account or inbound.sender.channel, inbound.chat_id
        cut_off = _owed(channel, chat_id, Reply(private=True).say(cut_off_text(inbound)), inbound)
        cut_off.held_through = self.ledger.lapses  # counted before anything is kept
        worker = self.ledger.worker
        pledged = False  # the word went into a transaction, which may have committed
        over = not self.allowlist.allows(inbound.sender)  # a stranger hears no such word
        failed = False
        told: list[_Ahead] = []  # sent ahead before the first write, which keeps them

        def pledge(tx: LedgerTx) -> None:
            nonlocal pledged
            for early in [] if failed else told:
                tx.owe_reply(_kept(early.owed), worker)
            if not over:  # the handling writes before it is over
                tx.owe_reply(_kept(cut_off), worker)
                pledged = True

        def pledged_ahead() -> None:
            if ahead is not None and not failed:
                for early in told:
                    early.send(ahead)

        def send_ahead(said: Reply) -> asyncio.Future[None] | None:
            if pledged:  # what it tells of was written already: it goes with the rest
                return None
            owed = _owed(channel, chat_id, said, inbound)
            owed.held_through = self.ledger.lapses
            early = _Ahead(owed, asyncio.get_running_loop().create_future())
            told.append(early)
            return early.gone

        async with self.ledger.handling(inbox_id):
            self.ledger.defer(pledge, durable=lambda: False, then=pledged_ahead)
            try:
                with sending_ahead(send_ahead) if ahead is not None else nullcontext():
                    reply = await self._handle(inbound)
            except Exception:
                over = failed = True
                if pledged:  # the channel says the handling failed, once
                    self.ledger.defer(lambda tx: tx.forget_reply(cut_off.key, worker))
                raise
            over = True
            owed = replace(cut_off, reply=reply.unsent())
            cards = _card_ids(reply)

            def keep(tx: LedgerTx) -> None:
                # In the word's place, if this worker still keeps it (it may not have been
                # written, or, while this worker looked gone, another took it over and
                # sends it); else under a key of its own.
                if not (pledged and tx.replace_reply(_kept(owed), worker)):
                    if pledged:
                        owed.key = uuid.uuid4().hex
                    tx.owe_reply(_kept(owed), worker)
                tx.announce(cards)

            self.ledger.defer(keep, durable=lambda: False)
        return owed

    async def owe(
        self, channel: str, chat_id: str, reply: Reply, answering: Inbound | None = None
    ) -> Owed | None:
        """Keeps a reply that answers no handling — a run's news, word of a failure —
        until the channel has sent it. None for a reply meant once per chat
        (``Reply.once``) that was owed to this chat before."""
        owed = _owed(channel, chat_id, reply, answering)
        owed.held_through = self.ledger.lapses
        if not await self.ledger.owe_reply(_kept(owed), _card_ids(reply), reply.once):
            return None
        return owed

    async def to_show(self, reply: Reply) -> bool:
        """Whether a reply for the terminal is to be shown: one meant once per chat
        (``Reply.once``) is shown by one terminal of those on the ledger, once."""
        return reply.once is None or await self.ledger.note_once(reply.once, *TERMINAL)

    async def shown(self, reply: Reply) -> None:
        """Notes the cards of a reply shown outside any channel (the terminal), so that
        the scheduler does not announce them again."""
        if cards := _card_ids(reply):
            await self.ledger.shown(cards)

    async def name_replies(self, channel: str, account: str) -> None:
        """Keeps the replies ``channel`` owes under ``account``, one account of it that
        now keeps its replies under its own name (a Telegram bot's, a Slack app's): as
        they were kept before accounts were told apart."""
        if named := await self.ledger.rename_replies(channel, account):
            log.info("%d %s replies owed are now %s's", named, channel, account)

    async def owed(self, channel: str, own: bool = True) -> list[Owed]:
        """What ``channel`` still owes — a crash or a stop came first — oldest first:
        what a worker gone left, taken over, and with ``own`` what this one holds."""
        lapses = self.ledger.lapses
        taken = [
            Owed.from_payload(
                kept.key, kept.channel, kept.chat_id, kept.payload, kept.created_at, kept.sent_steps
            )
            for kept in await self.ledger.take_over_replies(channel, own)
        ]
        for owed in taken:
            owed.held_through = lapses
        return taken

    async def holds(self, owed: Owed) -> bool:
        """Whether this worker may send ``owed``: yes, unless it may have looked gone to
        the others since the reply was known to be its own (its last beat is old, or came
        after a lapse: it was frozen, say). Then the ledger says, and a reply another
        worker took over meanwhile is that one's to send. When the ledger cannot say, the
        reply goes: at least once."""
        ledger = self.ledger
        if not ledger.lease_in_doubt() and ledger.lapses == owed.held_through:
            return True
        try:
            held = await ledger.still_holds_reply(owed.key)
        except Exception:
            log.exception("could not learn whether this worker still holds a reply; sending")
            return True
        if held:  # as of the beat it just made, after any lapse counted so far
            owed.held_through = ledger.lapses
        return held

    async def sent_part(self, owed: Owed) -> None:
        """Notes how much of a reply is sent, so that a restart sends only the rest."""
        await self.ledger.reply_progress(owed.key, owed.sent, owed.to_payload())

    async def sent(self, owed: Owed) -> None:
        await self.ledger.reply_sent(owed.key)

    async def give_up(self, owed: Owed, reason: str) -> None:
        """Forgets a reply that cannot be sent, and says so in the audit log."""
        data = {"items": len(owed.reply.items), "sent": owed.sent, "reason": storable(reason[:500])}
        subject = f"{owed.channel}:{owed.chat_id}"
        await self.ledger.drop_reply(
            owed.key, NewAuditEvent(owed.channel, "reply.dropped", subject, data)
        )

    async def _handle(self, inbound: Inbound) -> Reply:
        if not self.allowlist.allows(inbound.sender):
            return await self._refuse(inbound)
        return await self.coordinator.handle(inbound)

    async def form_opened(self, inbound: Inbound, approval_id: str) -> None:
        """The channel showed an edit prompt as a form, which brings its own answer: the
        next message in the chat is not the new text."""
        await self.coordinator.form_opened(inbound, approval_id)

    async def stored(
        self, channel: str, own: bool = True, prefix: str = ""
    ) -> list[tuple[int, Inbound]]:
        """Deliveries stored but not handled — a crash came between — oldest first: what
        a worker gone left, taken over, and with ``own`` what this one holds. With
        ``prefix``, only those whose delivery ids begin with it (sent to one bot)."""
        items = await self.ledger.take_over_inbound(channel, own, prefix)
        return [(item.id, Inbound.from_payload(item.payload)) for item in items]

    async def recover_inbox(self, channel: str) -> list[tuple[Inbound, Reply]]:
        """Handles every delivery that was stored but not handled before a crash."""
        return [
            (inbound, await self.handle_stored(inbox_id, inbound))
            for inbox_id, inbound in await self.stored(channel)
        ]

    async def message_refused(self, channel: str, chat_id: str, reason: str) -> None:
        """Audits a message its platform refused for good (a chat closed to steward, a
        request it calls bad): it is not tried again, and the reply's other messages go
        on. The log line alone would be all an operator could learn of it. One event a
        day per chat and reason: a chat that blocked steward does not grow the log with
        every message meant for it."""
        data = {"reason": storable(reason[:500])}
        await self._audit_seldom(
            NewAuditEvent(channel, "reply.refused", f"{channel}:{chat_id}"[:200], data),
            f"refused-message:{channel}:{chat_id}:{reason[:200]}",
            REFUSAL_TTL,
            f"a message {channel} refused",
        )

    def refuse_unverified(self, channel: str, reason: str, details: dict[str, str]) -> None:
        """Audits a request a channel refused because it could not prove where it came
        from (a bad signature, a stale timestamp): nothing of it was stored. One event a
        minute per address and reason, and UNVERIFIED_MOST a minute in all, so that a
        flood, from however many addresses, cannot grow the log; the rest is logged.

        The audit goes on in the background (``audited`` waits for it): the channel
        answers the request as refused at once, not once the ledger has taken the event
        — another process holding its write lock keeps it waiting up to the busy
        timeout, a PostgreSQL out of reach up to the connect timeout — nor as its own
        failure when the ledger or the memory is away: that is logged."""
        data = {"reason": reason, **details}
        self._in_background(
            self._audit_seldom(
                NewAuditEvent(f"{channel}:unverified", "request.refused", channel, data),
                f"unverified:{channel}:{details.get('remote', '')}:{reason}",
                UNVERIFIED_TTL,
                f"an unverified {channel} request refused ({reason})",
                flood=f"unverified:{channel}",
            )
        )

    def audit_later(self, event: NewAuditEvent, what: str) -> None:
        """Audits ``event`` as a refusal is, in the background and never raising (a
        failure is logged as ``what``), for a request answered at once whatever its
        audit does: a webhook's body no run can keep, answered 400."""
        self._in_background(self._audit_seldom(event, None, 0, what))

    def _in_background(self, audit: Coroutine[None, None, None]) -> None:
        """Runs ``audit`` (which never raises) on a task of its own, in a context of its
        own: it takes no part in a handling's ledger writes (see ``Ledger.batching``)."""
        task = asyncio.create_task(audit, context=contextvars.Context())
        self._auditing.add(task)
        task.add_done_callback(self._auditing.discard)

    async def audited(self) -> None:
        """Returns once the audits started so far are written, or given up (logged)."""
        while self._auditing:
            await asyncio.wait(list(self._auditing))

    async def _audit_seldom(
        self,
        event: NewAuditEvent,
        seen: str | None,
        ttl: float,
        what: str,
        flood: str | None = None,
    ) -> None:
        """Audits ``event`` unless ``seen`` (given) was within ``ttl`` seconds, and, given
        ``flood``, unless UNVERIFIED_MOST events under it were (logged instead). Never
        raises: a failure is logged, and ``seen`` forgotten, so that the next one is
        audited in its place."""
        try:
            if seen is not None and not await self.memory.add(seen, {"at": "now"}, ttl):
                return
            if flood is not None and await self.memory.count(flood, ttl) > UNVERIFIED_MOST:
                log.warning("%s: not audited, a flood", what)
                return
            try:
                await self.ledger.audit(event)
            except Exception:
                if seen is not None:
                    await self.memory.delete(seen)
                raise
        except Exception:
            log.exception("could not audit %s", what)

    def unusable(self, channel: str, delivery: str, reason: str) -> None:
        """Sets aside a delivery a channel cannot use (``bot.channel.Unusable``): nothing
        of it was stored, and the platform is told it arrived. One log line each; one
        audit event a minute per reason, and UNVERIFIED_MOST a minute in all.

        As a refusal's, the audit goes on in the background and never raises: steward
        could never use the delivery, so the platform is told it arrived at once, not
        once the ledger has taken the event, nor told to send it again (a 500, which
        Telegram would repeat, holding back the updates after it) when the ledger or the
        memory is away: the log line keeps what the event would, and the next one is
        audited in its place."""
        delivery, reason = storable(delivery[:200]), storable(reason[:300])
        log.warning("set aside a %s delivery (%s) it cannot use: %s", channel, delivery, reason)
        data = {"delivery": delivery, "reason": reason}
        self._in_background(
            self._audit_seldom(
                NewAuditEvent(channel, "delivery.unusable", channel, data),
                f"unusable:{channel}:{reason}",
                UNVERIFIED_TTL,
                f"a {channel} delivery set aside ({delivery})",
                flood=f"unusable:{channel}",
            )
        )

    async def _refuse(self, inbound: Inbound) -> Reply:
        sender = inbound.sender
        attempt = await self.memory.count(f"attempts:{sender.key}", REFUSAL_TTL)
        await self.ledger.audit(
            NewAuditEvent(
                sender.key,
                "access.denied",
                sender.key,
                {
                    "chat": inbound.chat_id,
                    "button": inbound.button,
                    "text": (inbound.text or "")[:200],
                    "attempt": attempt,  # of this sender's today, as working memory counts
                },
            )
        )
        refused_key = f"refused:{sender.key}"
        if not await self.memory.add(refused_key, {"at": "now"}, REFUSAL_TTL):
            return Reply(private=True)  # refused once today already
        return Reply(private=True).say(REFUSAL)


@dataclass
class _Ahead:
    """A reply sent ahead of the rest, and when the handling that sent it may go on."""

    owed: Owed
    gone: asyncio.Future[None]

    def send(self, ahead: Callable[[Owed], asyncio.Future[None]]) -> None:
        """Hands it to the channel; the handling goes on once it is sent (or given up,
        or the channel stopped), or after AHEAD_WAIT at most."""
        sending = ahead(self.owed)
        waited = asyncio.get_running_loop().call_later(AHEAD_WAIT, self._go_on)

        def tried(_: object) -> None:
            waited.cancel()
            self._go_on()

        sending.add_done_callback(tried)

    def _go_on(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)


def cut_off_text(inbound: Inbound) -> str:
    """What the sender hears when steward stopped while handling their message."""
    said = _quoted(inbound.text) if inbound.text else "your press of a button"
    return (
        f"I was cut off while handling {said}: steward stopped before I could answer. "
        "Whatever I did before that stands; /runs shows where things are."
    )


def _quoted(text: str, most: int = 80) -> str:
    line = " ".join(text.split())
    return f"“{line if len(line) <= most else line[: most - 1] + '…'}”"


def _owed(channel: str, chat_id: str, reply: Reply, answering: Inbound | None) -> Owed:
    return Owed(uuid.uuid4().hex, channel, chat_id, reply, answering, utcnow())


def _kept(owed: Owed) -> OwedReply:
    return OwedReply(
        owed.key, owed.channel, owed.chat_id, owed.to_payload(), owed.sent, owed.created_at
    )


def _card_ids(reply: Reply) -> list[str]:
    return [card.approval_id for card in reply.cards]
