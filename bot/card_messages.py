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

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from bot.outbox import SendLater, once_the_ledger_takes
from memory.ledger import CardMessage, Ledger, Outage

log = logging.getLogger(__name__)

# The ledger down, where a card shows (or shows its outcome) is noted (and Telegram's
# polling tries it again) this often until it is back; polling's backoff, to 30 s, is
# for Telegram's own.
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

    async def remember(
        self,
        approval_id: str,
        chat_id: str,
        message_id: str,
        unshow: Callable[[], Awaitable[None]] | None = None,
    ) -> str | None:
        """Notes a message showing the card. When the card was decided while the message
        was on its way, returns the outcome text to show on it at once. The ledger down,
        the note waits for it: the card, posted, is not posted again. A stop before the
        note is made leaves the card to be posted again at the next start (its reply's
        step is not done); ``unshow`` then takes the buttons off this message, which no
        outcome would ever replace."""
        try:
            return await once_the_ledger_takes(
                lambda: self.ledger.remember_card_message(
                    self.channel, approval_id, (chat_id, message_id)
                ),
                Outage(log, f"noting where card {approval_id} shows"),
                self.again_after,
            )
        except asyncio.CancelledError:
            if unshow is not None:
                await unshow()
            raise

    async def showing(self, approval_id: str) -> bool:
        """Whether a message of this channel shows the card with its buttons."""
        return await self.ledger.card_shown(self.channel, approval_id)

    async def take(self, approval_id: str, outcome: str) -> list[CardMessage]:
        """Every message showing the card, handed out until ``settle`` says it shows
        ``outcome``: a stop before that leaves it to the next try. A message posted later
        is told ``outcome`` by ``remember``."""
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
        """Shows the outcome on each of ``messages`` (taken by ``take``) with ``update``,
        and then tells the ledger which show it: those are handed out no more. Those the
        platform cannot take now (``update`` raises ``SendLater``) stay to be taken on the
        next try (one not noted before is noted), and ``SendLater`` is raised after the
        rest: a card whose update failed keeps no live buttons for good. The ledger down,
        telling it waits for it; a stop meanwhile leaves every message taken to the next
        try, which shows the outcome again where it shows already (that changes nothing).
        ``elsewhere``, which settles the card on the other platforms, runs either way:
        none waits for this one.
        """
        later: list[CardMessage] = []
        failure: SendLater | None = None
        for message in messages:
            try:
                await update(message)
            except SendLater as exc:
                later.append(message)
                failure = exc
        if messages:
            settled = [message for message in messages if message not in later]
            outage = Outage(log, f"noting where card {approval_id} shows its outcome")
            await once_the_ledger_takes(
                lambda: self.ledger.settle_card_messages(self.channel, approval_id, settled, later),
                outage,
                self.again_after,
            )
        if elsewhere is not None:
            await elsewhere()
        if failure is not None:
            raise failure
