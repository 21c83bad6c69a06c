"""DatabaseURL parsing and its per-driver spellings, and the ledger's error for a file
that is not a database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from memory.database_url import DatabaseURL
from memory.ledger import Ledger, LedgerUnavailable, database


def test_parse_sqlite_absolute_path() -> None:
    url = DatabaseURL.parse("sqlite:////var/lib/steward/steward.db")

    assert url.is_sqlite
    assert url.sqlite_path == Path("/var/lib/steward/steward.db")
    assert url.sqlalchemy.drivername == "sqlite+aiosqlite"
    assert url.sqlalchemy.database == "/var/lib/steward/steward.db"


def test_parse_sqlite_with_driver_named() -> None:
    url = DatabaseURL.parse("sqlite+aiosqlite:////tmp/x.db")

    assert url.is_sqlite
    assert url.sqlalchemy.drivername == "sqlite+aiosqlite"


def test_for_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "sub dir" / "steward.db"
    url = DatabaseURL.for_sqlite_file(path)

    assert url.is_sqlite
    assert url.sqlite_path == path
    assert str(path) in str(url)
    assert url.sqlalchemy.drivername == "sqlite+aiosqlite"


def test_parse_postgresql() -> None:
    url = DatabaseURL.parse("postgresql://user@host/db")

    assert not url.is_sqlite
    assert url.sqlalchemy.drivername == "postgresql+psycopg"
    assert url.sqlalchemy.username == "user"
    assert url.sqlalchemy.host == "host"
    assert url.sqlalchemy.database == "db"
    assert url.libpq == "postgresql://user@host/db"
    assert isinstance(url.libpq, str)


def test_postgresql_libpq_keeps_password_and_str_hides_it() -> None:
    url = DatabaseURL.parse("postgresql+psycopg://user:s3cret@host:5433/db?sslmode=require")

    assert url.libpq == "postgresql://user:s3cret@host:5433/db?sslmode=require"
    assert "s3cret" not in str(url)
    assert url.sqlalchemy.password == "s3cret"
    assert url.sqlalchemy.drivername == "postgresql+psycopg"


def test_a_password_holding_an_at_sign_is_refused_without_showing_any_of_it() -> None:
    """Read as a password before the first @ and a host after it, the rest of the
    password showed in the error naming the host it could not reach."""
    with pytest.raises(ValueError, match="%40") as refused:
        DatabaseURL.parse("postgresql://steward:p@ss-w0rd@db.example.com/steward")
    assert "ss-w0rd" not in str(refused.value)
    assert DatabaseURL.parse("postgresql://steward:p%40ss@db/steward").sqlalchemy.password == "p@ss"


@pytest.mark.parametrize(
    "raw",
    ["mysql://user@host/db", "mysql+pymysql://user:pw@host/db", "oracle://u@h/db"],
)
def test_parse_rejects_other_databases(raw: str) -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        DatabaseURL.parse(raw)


def test_parse_rejects_sqlite_without_a_path() -> None:
    with pytest.raises(ValueError, match="file path"):
        DatabaseURL.parse("sqlite://")


def test_parse_rejects_garbage_with_value_error() -> None:
    with pytest.raises(ValueError):
        DatabaseURL.parse("not a url")


async def test_unreadable_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not a database" * 293)  # 4102 bytes, not an SQLite header
    ledger = Ledger.from_url(DatabaseURL.for_sqlite_file(path))
    try:
        with pytest.raises(LedgerUnavailable) as raised:
            await ledger.setup()
    finally:
        await ledger.close()

    message = str(raised.value)
    assert str(path) in message
    assert "STEWARD_DATABASE_URL" in message
    assert path.read_bytes().startswith(b"not a database")


async def test_a_ledger_a_newer_steward_set_up_gives_a_clear_error(
    database_url: DatabaseURL,
) -> None:
    """An older steward beside a newer one, or after a rollback, met a traceback."""
    ledger = Ledger.from_url(database_url)
    try:
        await ledger.setup()
        await ledger.db.run(
            lambda conn: conn.execute(text("update alembic_version set version_num = '0099'"))
        )
    finally:
        await ledger.close()
    older = Ledger.from_url(database_url)
    try:
        with pytest.raises(LedgerUnavailable, match="was set up by a newer steward") as raised:
            await older.setup()
    finally:
        await older.close()
    assert "'0099'" in str(raised.value) and "upgrade this one" in str(raised.value)


@pytest.mark.postgres
async def test_stewards_starting_together_on_a_new_postgresql_database_all_start(
    postgres_database: DatabaseURL,
) -> None:
    """Each created the same tables at once, and all but one failed to start."""
    ledgers = [Ledger.from_url(postgres_database) for _ in range(4)]
    try:
        await asyncio.gather(*(ledger.setup() for ledger in ledgers))
    finally:
        for ledger in ledgers:
            await ledger.close()


def test_postgres_is_postgresql_and_a_database_must_be_named() -> None:
    assert DatabaseURL.parse("postgres://steward@db:5432/steward").libpq.startswith(
        "postgresql://steward@db:5432/steward"
    )
    with pytest.raises(ValueError, match="a PostgreSQL URL names its database"):
        DatabaseURL.parse("postgresql://postgres@localhost:5432/")


async def test_a_postgresql_that_never_answers_fails_the_start_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that took the connection and said nothing (hung, or a firewall dropping
    its packets) kept steward's start waiting without a word, for good."""
    monkeypatch.setattr(database, "CONNECT_SECONDS", 2)  # libpq's least
    taken: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken.append(writer)  # never answers

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ledger = Ledger.from_url(DatabaseURL.parse(f"postgresql://steward@127.0.0.1:{port}/steward"))
    try:
        with pytest.raises(LedgerUnavailable, match="STEWARD_DATABASE_URL"):
            await asyncio.wait_for(ledger.setup(), 10)
    finally:
        await ledger.close()
        for writer in taken:
            writer.close()
        server.close()
        await server.wait_closed()
    assert taken
