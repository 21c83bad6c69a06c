"""What the OpenAI clients steward makes, its chat models' and its embedder's, share: the
endpoint they call when none is set, an HTTP client that refuses an answer no API would
give, the endpoint's URL as it may be said in chat, and how a failed call is made again.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx

# Given to the OpenAI clients when no other is set: left to themselves they read
# OPENAI_BASE_URL from the environment, and set empty ("docker run -e OPENAI_BASE_URL=")
# it was the base of every call, which all failed.
OPENAI_API = "https://api.openai.com/v1"


# A Retry-After longer than this is not waited out: the call fails.
MOST_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Retry:
    """How steward makes a call to the API again, each attempt its own (the clients'
    own retries are off: an attempt they made was billed and never recorded): one that
    fails for a passing reason (no answer in ``timeout`` seconds, a lost connection, a
    408, 409, 429 or 5xx) is made again after a while, or after the Retry-After the
    API asks for, up to ``attempts`` in all."""

    timeout: float  # seconds an attempt is waited for
    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def pause(self, exc: BaseException, attempt: int) -> float | None:
        """How long to wait before the call is made again after ``exc`` on its
        ``attempt``; None when it is not: the attempts are spent, or ``exc`` will not
        pass by itself."""
        import openai

        if attempt >= self.attempts:
            return None
        if isinstance(exc, openai.APIConnectionError):  # no answer in time among them
            return self.delay(attempt)
        if not isinstance(exc, openai.APIStatusError):
            return None
        told = exc.response.headers.get("x-should-retry")
        passing = exc.status_code in (408, 409, 429) or exc.status_code >= 500
        if told == "false" or not (passing or told == "true"):
            return None
        try:
            after = float(exc.response.headers.get("retry-after", ""))
        except ValueError:
            return self.delay(attempt)
        return after if 0 <= after <= MOST_RETRY_AFTER else None

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def given_up(exc: BaseException) -> bool:
    """Whether a call that failed with ``exc`` was given up on while the model may have
    been at work (no answer in time, its caller stopped waiting): the model read, and
    the API bills, what it was sent. A call refused is billed nothing."""
    import openai

    return isinstance(exc, asyncio.CancelledError | TimeoutError | openai.APITimeoutError)


class NotAnApi(Exception):
    """The endpoint answered, but not as an OpenAI-compatible API (a web page, say)."""


def api_client(base_url: str) -> httpx.AsyncClient:
    """The HTTP client for the OpenAI clients at ``base_url``: an answer that is no JSON
    raises NotAnApi, naming the endpoint and its setting, where the clients went on with
    the text and failed with "'str' object has no attribute 'choices'"."""
    import httpx

    where = shown_url(base_url)

    async def answered_as_api(response: httpx.Response) -> None:
        if not response.is_success:
            return  # the clients read an error's status
        await response.aread()
        try:
            json.loads(response.content)
        except ValueError:
            sent = "a web page" if "html" in response.headers.get("content-type", "") else "no JSON"
            raise NotAnApi(
                f"{where} did not answer as an OpenAI-compatible API (it sent {sent}): "
                "check OPENAI_BASE_URL"
            ) from None

    return httpx.AsyncClient(event_hooks={"response": [answered_as_api]})


def shown_url(url: str) -> str:
    """``url`` without what may hold a secret (``user:password@``, a query): it is said
    in chat."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))
