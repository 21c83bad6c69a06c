"""Long text cut into messages at the widest boundary that fits, for every channel."""

from __future__ import annotations


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most ``limit`` UTF-16 units, cut at the widest boundary that fits:
    a blank line, then a line break, then a space, and only then mid-word."""
    parts = []
    rest = text
    while length(rest) > limit:
        head = fit(rest, limit)
        for boundary in ("\n\n", "\n", " "):
            at = head.rfind(boundary)
            if at > len(head) // 2:  # a boundary early on would leave a scrap of a message
                parts.append(rest[:at].rstrip())
                rest = rest[at + len(boundary) :].lstrip("\n")
                break
        else:
            parts.append(head)
            rest = rest[len(head) :]
    if rest.strip() or not parts:
        parts.append(rest)
    return [part for part in parts if part.strip()] or [text]


def length(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts it (never less than Slack's count)."""
    return len(text.encode("utf-16-le")) // 2


def fit(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-16 units."""
    if length(text) <= limit:
        return text
    cut = min(len(text), limit)
    while length(text[:cut]) > limit:
        cut -= 1
    return text[:cut]
