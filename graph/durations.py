"""Durations as operators write them in YAML and chat: ``30m``, ``72h``, ``3d``, ``1w``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


LONGEST = timedelta(days=3650)


def refuse_months(text: str) -> None:
    """A duration as written in a definition file: ``M``, a month as many write it, would
    be read as a minute. (A definition stored with one reads on as it began: minutes.)"""
    if "M" in text:
        raise ValueError(f"{text!r}: M is minutes or months? write 30m for minutes, 30d or 4w")


def parse_duration(text: str) -> timedelta:
    cleaned = text.strip().lower().replace(" ", "")
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration; write e.g. 30m, 72h, 3d or 1w")
    total = timedelta()
    try:
        for number, unit in parts:
            total += timedelta(**{_UNITS[unit]: int(number)})
    except OverflowError:  # past what a timedelta holds: past LONGEST too
        total = timedelta.max
    if total <= timedelta():
        raise ValueError(f"{text!r} must be longer than zero")
    if total > LONGEST:  # a deadline past it is no deadline, and dates end at year 9999
        raise ValueError(f"{text!r} is longer than {LONGEST.days // 365} years")
    return total


def describe_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
