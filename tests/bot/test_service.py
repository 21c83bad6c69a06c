"""The long-running service: what it readies before its channels take messages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.app import Steward
from bot.service import Service, configured_channels
from bot.settings import load_settings
from tests.fakes.bot_api import FakeBotAPI
from tests.fakes.embeddings import HashingEmbedder

TOKEN = "4242:steward-test-token"


class RecordingEmbedder(HashingEmbedder):
    """Notes how many Bot API calls the channel had made when the model was ready."""

    def __init__(self, api: FakeBotAPI) -> None:
        super().__init__()
        self.api = api
        self.calls_when_ready: int | None = None

    async def warm_up(self) -> None:
        await super().warm_up()
        self.calls_when_ready = len(self.api.calls)


@pytest.mark.parametrize("loads", [True, False], ids=["model loads", "model fails to load"])
async def test_the_embedding_model_is_readied_before_any_channel_starts(
    tmp_path: Path, loads: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBotAPI(token=TOKEN) as api:
        settings = load_settings(
            home=tmp_path / "home",
            telegram_bot_token=TOKEN,
            telegram_api_url=api.root,
            operators="telegram:1001",
        )
        async with Steward.open(settings) as steward:
            embedder = RecordingEmbedder(api)
            embedder.failing = not loads
            steward.history.embedder = embedder
            with caplog.at_level(logging.WARNING, logger="bot.service"):
                async with Service(steward, configured_channels(steward)):
                    await api.wait_for(lambda a: a.polls_waiting > 0, timeout=10)
    if loads:
        assert embedder.calls_when_ready == 0  # not one call to Telegram before it
        assert "not ready" not in caplog.text
    else:  # steward started all the same (it polled); the records wait for the model
        assert "embedding model not ready, records wait for it" in caplog.text
