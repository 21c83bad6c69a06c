"""Shared fixtures: a steward home per test, and the ledger on SQLite and PostgreSQL.

PostgreSQL tests use STEWARD_TEST_POSTGRES_URL (default postgresql://postgres@localhost:5432/test):
each test gets a fresh database created there and dropped after, and the tests skip
with the reason when no server answers.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from bot.app import Steward
from bot.settings import Settings, load_settings
from memory.database_url import DatabaseURL
from memory.ledger import Ledger

POSTGRES_URL = os.environ.get(
    "STEWARD_TEST_POSTGRES_URL", "postgresql://postgres@localhost:5432/test"
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's .env or real tokens."""
    for name in list(os.environ):
        if name.startswith(("STEWARD_", "TELEGRAM_", "SLACK_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    # Where the local-embeddings extra is installed it would load torch in every test:
    # tests that want vectors say so.
    monkeypatch.setenv("STEWARD_EMBEDDING_MODEL", "none")
    monkeypatch.chdir(tmp_path)


def _postgres_reason() -> str | None:
    url = DatabaseURL.parse(POSTGRES_URL)
    host, port = url.url.host or "localhost", url.url.port or 5432
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError as exc:
        return f"no PostgreSQL server at {host}:{port} ({exc}); set STEWARD_TEST_POSTGRES_URL"
    try:
        with psycopg.connect(url.libpq, connect_timeout=2):
            pass
    except psycopg.Error as exc:
        return f"PostgreSQL at {host}:{port} refused the test login: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_available() -> str | None:
    return _postgres_reason()


@pytest.fixture
def postgres_database(postgres_available: str | None) -> Iterator[DatabaseURL]:
    """A fresh, empty PostgreSQL database for one test."""
    if postgres_available:
        pytest.skip(postgres_available)
    admin = DatabaseURL.parse(POSTGRES_URL)
    name = f"steward_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin.libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield DatabaseURL(admin.url.set(database=name))
    finally:
        with psycopg.connect(admin.libpq, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseURL:
    if request.param == "sqlite":
        return DatabaseURL.for_sqlite_file(tmp_path / "ledger.db")
    return request.getfixturevalue("postgres_database")  # type: ignore[no-any-return]


@pytest.fixture
async def ledger(database_url: DatabaseURL) -> AsyncIterator[Ledger]:
    ledger = Ledger.from_url(database_url)
    await ledger.setup()
    try:
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture
async def steward(settings: Settings) -> AsyncIterator[Steward]:
    async with Steward.open(settings) as app:
        yield app
