"""What the channel tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.slack_api import FakeSlackAPI


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackAPI]:
    """A local Slack, its Web API and its platform side, for one test."""
    async with FakeSlackAPI(bot_token="xoxb-test", app_token="xapp-test") as fake:
        yield fake
