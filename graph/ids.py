"""Short ids an operator can read aloud and type: no 0/o, 1/l/i."""

import secrets

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_run_id() -> str:
    return new_id("r", 9)


def new_approval_id() -> str:
    return new_id("a", 7)


def is_run_id(text: str) -> bool:
    return _is_id(text, "r", 9)


def is_approval_id(text: str) -> bool:
    return _is_id(text, "a", 7)


def _is_id(text: str, prefix: str, length: int) -> bool:
    body = text.removeprefix(prefix)
    return len(text) == len(prefix) + length and body != text and set(body) <= _LETTERS


_LETTERS = frozenset(ALPHABET)
