"""Fills ``{name}`` placeholders from a run's data; nothing else is evaluated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"(?<!\{)\{([a-z_][a-z0-9_]*)\}(?!\})")
TOKEN = re.compile(r"\{\{|\}\}|\{([a-z_][a-z0-9_]*)\}")


# What looks meant as a placeholder and is none: ``{Client}``, ``{ client }``, ``{client.name}``,
# and Python's ``{amount:,.2f}``, ``{email[0]}`` or ``{client!r}``.
LOOKALIKE = re.compile(r"(?<!\{)\{\s*[A-Za-z_][^{}\s]*\s*\}(?!\})")


def placeholders(template: str) -> set[str]:
    """The names ``render`` fills in ``template``, read as it reads them: ``{{{ref}}}`` is a
    brace, ``{ref}`` and a brace."""
    return {name for name in (m.group(1) for m in TOKEN.finditer(template)) if name}


def mistyped(template: str) -> str | None:
    """The first ``{…}`` in ``template`` that looks like a placeholder but is none (it
    would be sent as written); None when there is none."""
    for match in LOOKALIKE.finditer(template):
        if not PLACEHOLDER.fullmatch(match.group(0)):
            return match.group(0)
    return None


def render(template: str, values: Mapping[str, Any]) -> str:
    """Replaces each ``{name}``; a missing value renders empty. ``{{``/``}}`` stay literal."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is None:  # an escaped brace
            return match.group(0)[0]
        value = values.get(match.group(1))
        return "" if value is None else str(value)

    return TOKEN.sub(fill, template)
