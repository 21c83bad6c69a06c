"""A local server that speaks OpenAI's ``/v1/embeddings`` and ``/v1/chat/completions``
wire formats, for the real langchain-openai client; its vectors are the hashing
embedder's, its chat answers are scripted (a word a token, cut at the request's
``max_completion_tokens`` as a model stops there), and it fails or dawdles on demand
(``trouble``, ``embedding_trouble``: a request met with an error status, a 429 with
``retry_after`` when set, or answered only after a while, as a model busy reading its
prompt — and billing it). Like OpenAI,
it refuses a wrong key and a model it does not serve (when told them), and a strict
``json_schema`` with an object that may hold keys it does not name."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.embeddings import hashed


@dataclass
class FakeOpenAI:
    url: str = ""
    failing: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # chat answers, in turn
    chats: list[dict[str, Any]] = field(default_factory=list)
    key: str | None = None  # the one API key taken, when set
    models: list[str] | None = None  # the models it serves, when set
    # What the next chat requests meet, in turn: a status to answer with, or seconds to
    # wait before answering.
    trouble: list[int | float] = field(default_factory=list)
    embedding_trouble: list[int | float] = field(default_factory=list)  # and embeddings
    retry_after: str | None = None  # the Retry-After of a 429
    embedded_at: list[float] = field(default_factory=list)  # when each embedding request came
    page: str | None = None  # served to every request instead, as a web server's base URL

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.embedded_at.append(time.monotonic())
        if self.failing:
            error = {"error": {"message": "the model is loading", "type": "server_error"}}
            return web.json_response(error, status=503)
        trouble = self.embedding_trouble.pop(0) if self.embedding_trouble else None
        if isinstance(trouble, int):
            return self._failed(trouble)
        if isinstance(trouble, float):
            await asyncio.sleep(trouble)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(inputs):
            vector = hashed(text)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        reply = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return web.json_response(reply)

    async def chat(self, request: web.Request) -> web.Response:
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            message = "Incorrect API key provided."
            error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        body = await request.json()
        if self.models is not None and body["model"] not in self.models:
            message = f"The model `{body['model']}` does not exist or you do not have access to it."
            error = {"message": message, "type": "invalid_request_error", "code": "model_not_found"}
            return web.json_response({"error": error}, status=404)
        self.chats.append(body)
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format["json_schema"]
            if schema.get("strict") and (where := _open_object(schema["schema"])) is not None:
                message = (
                    f"Invalid schema for response_format '{schema['name']}': In context={where}, "
                    "'additionalProperties' is required to be supplied and to be false."
                )
                error = {"message": message, "type": "invalid_request_error"}
                return web.json_response({"error": error}, status=400)
        content = self.answers.pop(0) if self.answers else ""
        trouble = self.trouble.pop(0) if self.trouble else None
        if isinstance(trouble, int):
            return self._failed(trouble)
        if isinstance(trouble, float):
            await asyncio.sleep(trouble)
        words, most = content.split(" "), body.get("max_completion_tokens")
        finish_reason = "stop"
        if most is not None and len(words) > most:
            content, finish_reason = " ".join(words[:most]), "length"
        message = {"role": "assistant", "content": content}
        said = min(len(words), most or len(words))
        usage = {"prompt_tokens": 100, "completion_tokens": said, "total_tokens": 100 + said}
        choice = {"index": 0, "message": message, "finish_reason": finish_reason}
        reply = {"object": "chat.completion", "model": body["model"], "usage": usage}
        return web.json_response({**reply, "id": "chat-1", "created": 0, "choices": [choice]})

    def _failed(self, status: int) -> web.Response:
        message = "The server had an error processing your request."
        error = {"message": message, "type": "server_error"}
        told = {}
        if status == 429:
            error = {"message": "Rate limit reached.", "type": "requests"}
            told = {"retry-after": self.retry_after} if self.retry_after else {}
        return web.json_response({"error": error}, status=status, headers=told)


def _open_object(schema: Any, where: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Where ``schema`` has an object that does not set ``additionalProperties: false``."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            if (found := _open_object(item, (*where, str(index)))) is not None:
                return found
        return None
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        return where
    for key, value in schema.items():
        if (found := _open_object(value, (*where, key))) is not None:
            return found
    return None


@asynccontextmanager
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()

    @web.middleware
    async def paged(request: web.Request, handler: Any) -> web.StreamResponse:
        if fake.page is not None:
            return web.Response(text=fake.page, content_type="text/html")
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[paged])
    app.router.add_post("/v1/embeddings", fake.embeddings)
    app.router.add_post("/v1/chat/completions", fake.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        await runner.cleanup()
