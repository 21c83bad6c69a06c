"""The front door: every message from every channel comes in here, once.

It stores the delivery in the durable inbox, where a duplicate delivery is dropped,
then checks who sent it. Operators on the allow-list go on to the coordinator; anyone
else gets one polite refusal a day, every attempt goes into the audit log, and nothing
of theirs reaches the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass

from graph.access import Allowlist
from graph.coordinator import Coordinator
from graph.messages import Inbound, Reply
from memory.ledger import Ledger, NewAuditEvent
from memory.working import WorkingMemory

REFUSAL_TTL = 24 * 3600
UNVERIFIED_TTL = 60
REFUSAL = "Sorry, I only work for the operator of this account, so I can't help you here."


@dataclass
class FrontDoor:
    ledger: Ledger
    allowlist: Allowlist
    memory: WorkingMemory
    coordinator: Coordinator

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
        """Stores the delivery in the durable inbox; None when it is a duplicate.

        A channel whose platform must be told "delivered" calls this first, tells the
        platform, then calls ``handle_stored``; a crash in between is recovered on restart.
        With ``durable=False`` the channel may start handling at once, and tells its
        platform once ``sync()`` returns.
        """
        return await self.ledger.accept_inbound(
            inbound.sender.channel, inbound.external_id, inbound.to_payload(), durable
        )

    async def sync(self) -> None:
        """Returns once every delivery accepted so far is on disk."""
        await self.ledger.sync()

    async def handle_stored(self, inbox_id: int, inbound: Inbound) -> Reply:
        async with self.ledger.handling(inbox_id):
            if not self.allowlist.allows(inbound.sender):
                return await self._refuse(inbound)
            return await self.coordinator.handle(inbound)

    async def form_opened(self, inbound: Inbound, approval_id: str) -> None:
        """The channel showed an edit prompt as a form, which brings its own answer: the
        next message in the chat is not the new text."""
        await self.coordinator.form_opened(inbound, approval_id)

    async def stored(self, channel: str | None = None) -> list[tuple[int, Inbound]]:
        """Deliveries stored but not handled — a crash came between — oldest first."""
        items = await self.ledger.unhandled_inbound(channel)
        return [(item.id, Inbound.from_payload(item.payload)) for item in items]

    async def recover_inbox(self, channel: str | None = None) -> list[tuple[Inbound, Reply]]:
        """Handles every delivery that was stored but not handled before a crash."""
        return [
            (inbound, await self.handle_stored(inbox_id, inbound))
            for inbox_id, inbound in await self.stored(channel)
        ]

    async def refuse_unverified(self, channel: str, reason: str, details: dict[str, str]) -> None:
        """Audits a request a channel refused because it could not prove where it came
        from (a bad signature, a stale timestamp): nothing of it was stored. One event a
        minute per address and reason, so that a flood cannot grow the log."""
        seen = f"unverified:{channel}:{details.get('remote', '')}:{reason}"
        if not await self.memory.add(seen, {"at": "now"}, UNVERIFIED_TTL):
            return
        data = {"reason": reason, **details}
        await self.ledger.audit(
            NewAuditEvent(f"{channel}:unverified", "request.refused", channel, data)
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
