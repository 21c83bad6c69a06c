"""Telegram's flood limits, kept without dropping a message.

About one message a second per chat (a short burst allowed), twenty a minute in a group,
and 30 a second overall: no more than 30 in any second (a window: a bucket full of 30 let
30 go at once and 30 more within that second; one holding none spaced every message
33 ms after the last, a card 33 ms after the line before it), and no more than twenty in
any minute in a group, its burst of three among them.
A 429 with ``retry_after`` holds the chat — or everything, for calls without a chat —
for that long, then the same request is sent again; a message is never given up on
because of flood control.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from bot.pacing import Bucket, Sleep, Window

log = logging.getLogger(__name__)

Result = bool | dict[str, Any] | list[dict[str, Any]]


class FloodControl(BaseRateLimiter[None]):
    def __init__(
        self,
        per_chat: float = 1.0,
        chat_burst: float = 3.0,
        group_most: int = 20,
        group_window: float = 60.0,
        overall: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.per_chat = per_chat
        # A group's burst counts against its window: no more than group_most in any.
        self.per_group = (group_most - chat_burst) / group_window
        self.chat_burst = chat_burst
        self._clock = clock  # the time its pacing reads, and how it waits: a test's own
        self._sleep = sleep
        self.overall = Window(int(overall), 1.0, clock, sleep)
        self._chats: dict[str, Bucket] = {}

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> Result:
        chat_id = data.get("chat_id")
        chat = self._chat(str(chat_id)) if chat_id is not None else None
        attempt = 0
        while True:
            if chat is not None:
                await chat.take()
            await self.overall.take()
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                attempt += 1
                seconds = retry_after_seconds(exc)
                log.warning(
                    "Telegram flood control on %s (chat %s): retrying in %.1f s (attempt %d)",
                    endpoint,
                    chat_id,
                    seconds,
                    attempt,
                )
                (chat or self.overall).hold(seconds)

    def _chat(self, chat_id: str) -> Bucket:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            if len(self._chats) > 10_000:
                self._chats.clear()  # idle buckets are full anyway; a fresh one is the same
            group = chat_id.startswith("-")  # groups and channels have negative ids
            rate = self.per_group if group else self.per_chat
            bucket = self._chats[chat_id] = Bucket(rate, self.chat_burst, self._clock, self._sleep)
        return bucket


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB warns that the int form is going away
        warnings.simplefilter("ignore", DeprecationWarning)
        value: int | timedelta = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
