"""Where each approval card was posted, so that its outcome replaces it in place.

A card can show in several chats (every operator's, a thread and the Details view), and
the press that decides it may come from any of them: each channel remembers every
message showing the card, in working memory, and edits them all when it is decided.
"""

from __future__ import annotations

from memory.working import WorkingMemory

CARD_TTL = 30 * 24 * 3600  # how long a card's messages are remembered for editing


class CardMessages:
    def __init__(self, memory: WorkingMemory, channel: str) -> None:
        self.memory = memory
        self.channel = channel

    async def remember(self, approval_id: str, chat_id: str, message_id: str) -> None:
        key = self._key(approval_id)
        known = await self.memory.get(key) or {"messages": []}
        known["messages"].append([chat_id, message_id])
        await self.memory.set(key, known, CARD_TTL)

    async def take(self, approval_id: str) -> list[tuple[str, str]]:
        """Every message showing the card, forgotten as they are handed out."""
        key = self._key(approval_id)
        known = await self.memory.get(key)
        if known is None:
            return []
        await self.memory.delete(key)
        return [(str(chat), str(message)) for chat, message in known["messages"]]

    def _key(self, approval_id: str) -> str:
        return f"{self.channel}:card:{approval_id}"
