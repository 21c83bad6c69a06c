"""The terminal channel's text: what an operator's terminal shows."""

from __future__ import annotations

from bot.console import render
from graph.messages import Button, Card, Reply


def test_text_from_outside_cannot_drive_the_terminal() -> None:
    card = Card(
        "a2b3c4d",
        "Send the welcome email",
        "Email \x1b[2Jjane@acme.com",
        fields=[("Client", "Evil\x1b[31mCo\x9b")],
        text="Dear Jane,\n\n\tthanks\x07",
        buttons=[Button("Approve", "approve:a2b3c4d")],
    )
    shown = render(Reply([card]).say("Done\x1b]0;owned\x07."))
    assert not any((ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert "Evil\\x1b[31mCo\\x9b" in shown and "Email \\x1b[2Jjane@acme.com" in shown
    assert "thanks\\x07" in shown and "Done\\x1b]0;owned\\x07." in shown


def test_windows_line_endings_are_line_breaks() -> None:
    assert render(Reply().say("Dear Jane,\r\nthanks\r")) == "Dear Jane,\nthanks\\x0d"
