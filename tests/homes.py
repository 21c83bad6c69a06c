"""A steward home holding user process definitions, for tests that need their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.app import Steward
from bot.settings import load_settings


def home_with(tmp_path: Path, processes: dict[str, str]) -> Path:
    """A home whose ``processes/`` holds each definition as ``NAME.yaml``."""
    home = tmp_path / "home"
    (home / "processes").mkdir(parents=True, exist_ok=True)
    for name, definition in processes.items():
        (home / "processes" / f"{name}.yaml").write_text(definition)
    return home


@asynccontextmanager
async def steward_with(tmp_path: Path, processes: dict[str, str]) -> AsyncIterator[Steward]:
    async with Steward.open(load_settings(home=home_with(tmp_path, processes))) as steward:
        yield steward
