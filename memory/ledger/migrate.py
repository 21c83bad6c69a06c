"""Applies the ledger's Alembic migrations on a live connection.

A ledger already at ``HEAD`` is left alone without loading Alembic or its scripts, which
would cost every start and every shell command half a second or more.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0018"  # the newest migration's revision (a test holds it to the scripts)


class UnknownRevision(Exception):
    """The ledger is at a revision this steward has no migration for: a newer one's."""


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection) -> None:
    if revision(connection) == HEAD:
        return
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(connection), "head")
    except CommandError as exc:
        raise UnknownRevision(str(exc)) from exc


def is_known(revision: str) -> bool:
    """Whether this steward has a migration of that revision (else a newer one's, or none:
    "head" and "" name no revision)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    return revision in {script.revision for script in scripts.walk_revisions()}


def revision(connection: Connection) -> str | None:
    """The revision the ledger is at; None for a new one."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    version = connection.execute(text("SELECT version_num FROM alembic_version"))
    return version.scalar_one_or_none()
