"""Where each approval card was posted, so that its outcome replaces it in place.

A card can show in several chats (every operator's, a thread and the Details view), and
the press that decides it may come from any of them: each channel remembers every
message showing the card, in working memory (Redis, with STEWARD_REDIS_URL: shared by
every steward process and kept across restarts), and edits them all when it is decided.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from bot.outbox import SendLater
from memory.working import WorkingMemory

Message = tuple[str, str]  # a chat and a message in it, as the platform names them

CARD_TTL = 30 * 24 * 3600  # how long a card's messages are remembered for editing


class CardMessages:
    def __init__(self, memory: WorkingMemory, channel: str) -> None:
        self.memory = memory
        self.channel = channel

    async def remember(self, approval_id: str, chat_id: str, message_id: str) -> str | None:
        """Notes a message showing the card. When the card was decided while the message
        was on its way, returns the outcome text to show on it at once."""
        key = self._key(approval_id)
        async with self.memory.lock(key):  # one read-and-write at a time, or one is lost
            known = await self.memory.get(key) or {"messages": []}
            if known.get("outcome") is not None:
                return str(known["outcome"])
            known["messages"].append([chat_id, message_id])
            await self.memory.set(key, known, CARD_TTL)
        return None

    async def showing(self, approval_id: str) -> bool:
        """Whether a message of this channel shows the card with its buttons."""
        known = await self.memory.get(self._key(approval_id))
        return known is not None and known.get("outcome") is None and bool(known["messages"])

    async def take(self, approval_id: str, outcome: str) -> list[Message]:
        """Every message showing the card, handed out once; a message posted later is
        told ``outcome`` by ``remember``."""
        key = self._key(approval_id)
        async with self.memory.lock(key):
            known = await self.memory.get(key) or {"messages": []}
            await self.memory.set(key, {"messages": [], "outcome": outcome}, CARD_TTL)
        return [(str(chat), str(message)) for chat, message in known["messages"]]

    async def to_settle(
        self, approval_id: str, outcome: str, pressed: Message | None
    ) -> list[Message]:
        """Every message to show ``outcome`` on: those showing the card, and the one whose
        button was pressed (if it is not among them). Empty: the card shows nowhere, and
        the outcome goes out as a message of its own."""
        targets = await self.take(approval_id, outcome)
        if pressed is not None and pressed not in targets:
            targets.append(pressed)
        return targets

    async def settle(
        self,
        approval_id: str,
        messages: Sequence[Message],
        update: Callable[[Message], Awaitable[None]],
        elsewhere: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Shows the outcome on each of ``messages`` (taken by ``take``) with ``update``.
        Those the platform cannot take now (``update`` raises ``SendLater``) are given
        back, to be taken on the next try, and ``SendLater`` is raised after the rest:
        a card whose update failed keeps no live buttons for good. ``elsewhere``, which
        settles the card on the other platforms, runs either way: none waits for this one.
        """
        later: list[Message] = []
        failure: SendLater | None = None
        for message in messages:
            try:
                await update(message)
            except SendLater as exc:
                later.append(message)
                failure = exc
        if failure is not None:
            await self._give_back(approval_id, later)
        if elsewhere is not None:
            await elsewhere()
        if failure is not None:
            raise failure

    async def _give_back(self, approval_id: str, messages: list[Message]) -> None:
        key = self._key(approval_id)
        async with self.memory.lock(key):
            known = await self.memory.get(key) or {"messages": []}
            held = [tuple(map(str, each)) for each in known["messages"]]
            known["messages"] += [list(each) for each in messages if each not in held]
            await self.memory.set(key, known, CARD_TTL)

    def _key(self, approval_id: str) -> str:
        return f"{self.channel}:card:{approval_id}"
