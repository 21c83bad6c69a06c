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
    """Replaces each ``{name}`` with its value ``as_text``. ``{{``/``}}`` stay literal."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is None:  # an escaped brace
            return match.group(0)[0]
        return as_text(values.get(match.group(1)))

    return TOKEN.sub(fill, template)


def as_text(value: Any) -> str:
    """A value as a template shows it: missing, empty; a mapping (a wait's event, an
    action's result) as its fields, "key: value" a line in the order of their names (a
    PostgreSQL ledger keeps no other), a nested one indented under its key; a list as its
    items, comma-separated, or "- " a line when they have fields; anything else as
    ``str`` writes it. A mapping showed as Python writes a dict."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        fields = sorted(value.items(), key=lambda field: str(field[0]))
        return "\n".join(_field(str(key), item) for key, item in fields)
    if isinstance(value, list | tuple):
        if not any(isinstance(item, Mapping | list | tuple) for item in value):
            return ", ".join(as_text(item) for item in value)
        return "\n".join(_indented(as_text(item), "- ") for item in value)
    return str(value)


def _field(key: str, value: Any) -> str:
    """A field as its line, or its lines indented under it: a name that is not one line
    of plain text (a delivery's may be anything) as Python writes it, quoted, so that
    neither starts a line of its own."""
    name = key if key.isprintable() else repr(key)
    text = as_text(value)
    if len(text.splitlines()) > 1 or (isinstance(value, Mapping) and text):
        return f"{name}:\n{_indented(text, '  ')}"
    return f"{name}: {text}"


def _indented(text: str, first: str) -> str:
    """``text`` with ``first`` before its first line and as many spaces before the rest,
    whatever breaks its lines."""
    return first + ("\n" + " " * len(first)).join(text.splitlines())
