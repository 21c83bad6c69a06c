"""Short ids an operator can read aloud and type: no 0/o, 1/l/i."""

import secrets

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_run_id() -> str:
    return new_id("r", 9)


def new_approval_id() -> str:
    return new_id("a", 7)
