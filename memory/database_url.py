"""One database URL, spelled for each driver that reads it.

Operators write ordinary URLs (``sqlite:///path`` or ``postgresql://user@host/db``);
SQLAlchemy wants the async driver named, psycopg and aiosqlite want neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ledger URL: SQLite file or PostgreSQL server."""

    url: URL

    @classmethod
    def parse(cls, raw: str) -> DatabaseURL:
        try:
            url = make_url(raw)
        except ArgumentError:
            raise ValueError(
                f"{raw!r} is not a database URL; use sqlite:////path/to/file.db "
                "or postgresql://user@host/db"
            ) from None
        if url.host and "@" in url.host:  # never echoed: the rest of a password is after it
            raise ValueError(
                "its user or password holds an @: write it as %40, e.g. "
                "postgresql://steward:p%40ss@db/steward"
            )
        if url.drivername == "postgres":  # libpq's and most hosts' spelling, too
            url = url.set(drivername="postgresql")
        backend = url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
        if backend == "sqlite" and not url.database:
            raise ValueError("a SQLite URL needs a file path, e.g. sqlite:////home/me/steward.db")
        if backend == "postgresql" and not url.database:  # not the server's own `postgres`
            raise ValueError(
                "a PostgreSQL URL names its database, e.g. postgresql://steward@db/steward"
            )
        return cls(url)

    @classmethod
    def for_sqlite_file(cls, path: Path) -> DatabaseURL:
        return cls(URL.create("sqlite", database=str(path)))

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> Path:
        assert self.is_sqlite and self.url.database
        return Path(self.url.database)

    @property
    def sqlalchemy(self) -> URL:
        """The URL for SQLAlchemy's async engine."""
        driver = "sqlite+aiosqlite" if self.is_sqlite else "postgresql+psycopg"
        return self.url.set(drivername=driver)

    @property
    def setting(self) -> str:
        """The URL as STEWARD_DATABASE_URL takes it, password and all."""
        return self.url.render_as_string(hide_password=False)

    @property
    def libpq(self) -> str:
        """A plain ``postgresql://`` conninfo string for psycopg."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def __str__(self) -> str:
        return self.url.render_as_string(hide_password=True)
