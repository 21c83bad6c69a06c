"""Alembic environment: migrations always run on a connection the ledger hands over."""

from __future__ import annotations

from alembic import context

from memory.ledger.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "steward applies migrations itself on start: run `steward run` or call Ledger.setup()"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
