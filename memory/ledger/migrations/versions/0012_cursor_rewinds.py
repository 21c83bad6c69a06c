"""how many times each cursor was rewound, so a rewind to where it stood is seen

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("memory_cursors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rewinds", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("memory_cursors", schema=None) as batch_op:
        batch_op.drop_column("rewinds")
