"""The daily list's benchmark builds its list over every item it seeds, at any hour."""

from __future__ import annotations

import pytest

from bench.digest import main


async def test_the_daily_list_benchmark_lists_every_item_it_seeds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its follow-ups fell due over ten hours from the start: run after two in the
    afternoon (Berlin), those past midnight were not today's, and it failed."""
    await main(items=2000, builds=1, freeze=False)
    assert "daily list over 2,000 open items" in capsys.readouterr().out
