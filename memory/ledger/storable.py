"""Text the ledger and the run checkpoints can hold.

PostgreSQL stores no NUL character and no lone surrogate, in text or in JSON; one typed,
pasted, forged or sent back by a service would fail its storing at every try. So what
comes in from outside — a delivery, a run's inputs, a connector's answer, a model's
text — is made storable as it enters, each such character becoming U+FFFD.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass, replace
from typing import Any, TypeVar

T = TypeVar("T")

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: T) -> T:
    """``value`` with U+FFFD for each NUL and lone surrogate in its strings, within
    dicts, lists, tuples and dataclasses; the very same object when it holds none."""
    # Two walks, not one that rebuilds as it goes: what comes in is nearly always clean,
    # and the check allocates nothing (half the time of a single rebuilding walk).
    return _clean(value) if _unstorable(value) else value


def _unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(key) or _unstorable(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_unstorable(item) for item in value)
    if is_dataclass(value) and not isinstance(value, type):
        return any(_unstorable(getattr(value, f.name)) for f in fields(value) if f.init)
    return False


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, tuple):
        items = [_clean(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _clean(getattr(value, f.name)) for f in fields(value) if f.init}
        return replace(value, **changes)
    return value
