"""What the OpenAI clients steward makes, its chat models' and its embedder's, share: the
endpoint they call when none is set, an HTTP client that refuses an answer no API would
give, and the endpoint's URL as it may be said in chat.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx

# Given to the OpenAI clients when no other is set: left to themselves they read
# OPENAI_BASE_URL from the environment, and set empty ("docker run -e OPENAI_BASE_URL=")
# it was the base of every call, which all failed.
OPENAI_API = "https://api.openai.com/v1"


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
