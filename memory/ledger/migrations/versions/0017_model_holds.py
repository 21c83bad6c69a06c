"""room in the budgets held by the model calls under way, in every steward on the ledger,
so that stewards sharing it cannot together spend past a budget

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_holds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("process", sa.String(length=100), nullable=True),
        sa.Column("worst_usd", sa.Float(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("model_holds")
