"""The Telegram channel, on python-telegram-bot."""

import os

# python-telegram-bot 22 gives time periods (a 429's retry_after) as timedelta when this
# is set, and warns on every flood error when it is not; steward reads either form.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from bot.telegram.channel import TelegramChannel, TelegramUnavailable

__all__ = ["TelegramChannel", "TelegramUnavailable"]
