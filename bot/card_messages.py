"""Where each approval card was posted, so that its outcome replaces it in place.

A card can show in several chats (every operator's, a thread and the Details view), and
the press that decides it may come from any of them: each channel notes every message
showing the card in the ledger (shared by every steward process on it, and kept across
restarts), and edits them all when it is decided.

A channel's messages are those one account of it can edit: a Telegram bot's are noted
under ``telegram:`` and its id, since each bot counts its message ids on its own, and a
Slack app's under ``slack:`` and its bot id (one app in one workspace): a card another
bot or app on the same ledger showed is no message of this one's to edit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.outbox import SendLater, once_the_ledger_takes
from memory.ledger import CardMessage, Ledger, Outage

log = logging.getLogger(__name__)

# The ledger down, a card's messages taken are given back (and Telegram's polling tries
# it again) this often until it is back; polling's backoff, to 30 s, is for Telegram's own.
LEDGER_AGAIN_SECONDS = 1.0


class CardMessages:
    def __init__(
        self, ledger: Ledger, channel: str, again_after: float = LEDGER_AGAIN_SECONDS
    ) -> None:
        self.ledger = ledger
        self.channel = channel
        self.again_after = again_after

    async def take_unnamed(self, channel: str) -> None:
        """Notes as this account's the cards noted under its channel's name alone, as
        they were before accounts were told apart."""
        await self.ledger.rename_card_messages(channel, self.channel)

    async def remember(self, approval_id: str, chat_id: str, message_id: str) -> str | None:
        """Notes a message showing the card. When the card was decided while the message
        was on its way, returns the outcome text to show on it at once. The ledger down,
        the note waits for it: the card, posted, is not posted again."""
        return await once_the_ledger_takes(
            lambda: self.ledger.remember_card_message(
                self.channel, approval_id, (chat_id, message_id)
            ),
            Outage(log, f"noting where card {approval_id} shows"),
            self.again_after,
        )

    async def showing(self, approval_id: str) -> bool:
        """Whether a message of this channel shows the card with its buttons."""
        return await self.ledger.card_shown(self.channel, approval_id)

    async def take(self, approval_id: str, outcome: str) -> list[CardMessage]:
        """Every message showing the card, handed out once; a message posted later is
        told ``outcome`` by ``remember``."""
        return await self.ledger.take_card_messages(self.channel, approval_id, outcome)

    async def to_settle(
        self, approval_id: str, outcome: str, pressed: CardMessage | None
    ) -> list[CardMessage]:
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
        messages: Sequence[CardMessage],
        update: Callable[[CardMessage], Awaitable[None]],
        elsewhere: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Shows the outcome on each of ``messages`` (taken by ``take``) with ``update``.
        Those the platform cannot take now (``update`` raises ``SendLater``) are given
        back, to be taken on the next try, and ``SendLater`` is raised after the rest:
        a card whose update failed keeps no live buttons for good. The ledger down then,
        the giving back waits for it (taken and not given back, those messages would be
        handed out to nobody again). ``elsewhere``, which settles the card on the other
        platforms, runs either way: none waits for this one.
        """
        later: list[CardMessage] = []
        failure: SendLater | None = None
        for message in messages:
            try:
                await update(message)
            except SendLater as exc:
                later.append(message)
                failure = exc
        if failure is not None:
            outage = Outage(log, f"giving back the messages of card {approval_id}")
            await once_the_ledger_takes(
                lambda: self.ledger.give_back_card_messages(self.channel, approval_id, later),
                outage,
                self.again_after,
            )
        if elsewhere is not None:
            await elsewhere()
        if failure is not None:
            raise failure
