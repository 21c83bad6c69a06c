"""``steward demo``: the tour plays by itself and leaves nothing behind."""

from __future__ import annotations

import pytest

from bot.demo import play


async def test_the_tour_names_no_file_it_throws_away(capsys: pytest.CaptureFixture[str]) -> None:
    """It listed its outbox's files by path, in a home deleted as it ended."""
    assert await play() == 0
    shown = capsys.readouterr().out
    assert "steward-demo-" not in shown
    assert "email · send_email · jane@acme.com" in shown
