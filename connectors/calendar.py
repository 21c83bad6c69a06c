"""Meeting invitations as iCalendar (RFC 5545) text, to send as an email attachment.

An invitation's UID is fixed for its step of its run, and its SEQUENCE counts the
times it was sent again: a changed invitation updates the one in the attendee's
calendar instead of adding a second meeting, and a cancellation (the same UID, a higher
SEQUENCE, METHOD:CANCEL) removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Invitation:
    uid: str
    sequence: int
    organizer: str
    attendee: str
    title: str
    start: datetime  # aware
    duration: timedelta  # elapsed time: across a change of the clocks, not on the wall clock
    description: str = ""
    cancelled: bool = False

    @property
    def method(self) -> str:
        return "CANCEL" if self.cancelled else "REQUEST"

    def to_ics(self, now: datetime | None = None) -> str:
        stamp = _utc(now or datetime.now(UTC))
        lines = [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//steward//invitations//EN",
            f"METHOD:{self.method}",
            "BEGIN:VEVENT",
            f"UID:{_text(self.uid)}",
            f"SEQUENCE:{self.sequence}",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{_utc(self.start)}",
            f"DTEND:{_utc(self.start.astimezone(UTC) + self.duration)}",
            f"SUMMARY:{_text(self.title)}",
            f"DESCRIPTION:{_text(self.description)}",
            f"ORGANIZER:mailto:{_address(self.organizer)}",
            f"ATTENDEE;ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:{_address(self.attendee)}",
            "STATUS:CANCELLED" if self.cancelled else "STATUS:CONFIRMED",
            "END:VEVENT",
            "END:VCALENDAR",
        ]
        return "".join(_fold(line) + "\r\n" for line in lines)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _text(value: str) -> str:
    """RFC 5545 TEXT: backslash, semicolon, comma and line breaks escaped."""
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value.replace("\n", "\\n")


def _address(value: str) -> str:
    return value.rsplit("<", 1)[-1].rstrip(">").strip()


def _fold(line: str) -> str:
    """Lines longer than 75 octets continue on the next line after a space."""
    parts: list[str] = []
    current = b""
    for char in line:
        encoded = char.encode()
        limit = 75 if not parts else 74
        if len(current) + len(encoded) > limit:
            parts.append(current.decode())
            current = b""
        current += encoded
    parts.append(current.decode())
    return "\r\n ".join(parts)
