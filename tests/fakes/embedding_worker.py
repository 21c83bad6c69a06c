"""A stand-in for the local model's process: the real protocol (``serve``), hashed
vectors instead of torch. Texts steer it: "die" ends the process, "fail" raises inside
the model, "slow" takes half a second, "hang" an hour. It prints on stdout while
loading, as libraries do, which must not reach the answers.

    python -m tests.fakes.embedding_worker
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from memory.embedding_worker import Encode, serve
from tests.fakes.embeddings import hashed


def _load() -> Encode:
    print("Loading weights: 100%")

    def encode(texts: list[str]) -> Sequence[Sequence[float]]:
        if "die" in texts:
            os._exit(3)
        if "fail" in texts:
            raise RuntimeError("the model choked")
        if "slow" in texts:
            time.sleep(0.5)
        if "hang" in texts:
            time.sleep(3600)
        return [hashed(text) for text in texts]

    return encode


if __name__ == "__main__":
    serve(_load)
