"""the messages showing each approval card, kept with the ledger rather than in working
memory, so that a card decided elsewhere loses its buttons after a restart too

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "card_messages",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("approval_id", sa.String(length=16), nullable=False),
        sa.Column(
            "messages",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("channel", "approval_id"),
    )


def downgrade() -> None:
    op.drop_table("card_messages")
