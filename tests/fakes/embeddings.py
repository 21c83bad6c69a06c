"""Embedders for tests: deterministic, offline, and able to fail on demand."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from memory.embeddings import EmbeddingFailed

DIMS = 64


def hashed(text: str, dims: int = DIMS) -> list[float]:
    """A bag of words hashed into ``dims`` buckets, unit length: texts sharing words
    point the same way, texts sharing none are orthogonal (mostly)."""
    vector = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()):
        bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
        vector[bucket % dims] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class HashingEmbedder:
    def __init__(self, name: str = "test:hashing", dims: int = DIMS) -> None:
        self.name = name
        self.dims = dims
        self.failing = False

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.failing:
            raise EmbeddingFailed(f"{self.name}: the model is down")
        return [hashed(text, self.dims) for text in texts]

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

    async def warm_up(self) -> None:
        if self.failing:
            raise EmbeddingFailed(f"{self.name}: the model is down")

    async def close(self) -> None:
        return None
