"""Runs go on after PostgreSQL drops steward's connections (a restart of the server, an
administrator, a network blip): the checkpoints' connections are checked before use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from bot.app import Steward
from bot.settings import load_settings
from memory.database_url import DatabaseURL
from memory.ledger import RunStatus

pytestmark = pytest.mark.postgres

ONBOARD = {"client": "Acme", "email": "jane@acme.com", "package": "basic"}


def drop_every_connection(database: DatabaseURL) -> int:
    """What a restart of the server does to the connections steward holds."""
    with psycopg.connect(database.libpq, autocommit=True) as admin:
        killed = admin.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchone()
    return int(killed[0]) if killed else 0


async def test_runs_go_on_after_postgresql_drops_every_connection(
    postgres_database: DatabaseURL, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=postgres_database.setting)
    async with Steward.open(settings) as steward:
        before = await steward.engine.start("onboarding", ONBOARD, "cli:shell")
        assert before.approval is not None
        assert drop_every_connection(postgres_database) > 0
        for client in ("Beta", "Gamma"):  # the one after the drop, and the next
            view = await steward.engine.start("onboarding", ONBOARD | {"client": client}, "x")
            assert view.run.status is RunStatus.WAITING, view.run.error
        decided = await steward.engine.decide(before.approval.id, True, "cli:shell")
        assert decided.view is not None and decided.view.run.status is RunStatus.SUCCEEDED


async def test_stewards_starting_together_on_a_new_database_all_start(
    postgres_database: DatabaseURL, tmp_path: Path
) -> None:
    """The checkpoints' tables were created by each at once, and some failed to start
    ("duplicate key value violates unique constraint")."""

    async def start(n: int) -> bool:
        home = tmp_path / f"home{n}"
        settings = load_settings(home=home, database_url=postgres_database.setting)
        async with Steward.open(settings):
            return True

    for _ in range(3):  # each time on a database as new as the first
        with psycopg.connect(postgres_database.libpq, autocommit=True) as admin:
            admin.execute("drop schema public cascade; create schema public")
        assert await asyncio.gather(*(start(n) for n in range(4))) == [True] * 4
