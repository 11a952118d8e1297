"""statement format: MT940 or camt, sniffed at upload; pages without balances (camt.054)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:20:00

Every statement stored before this revision was read as MT940, so the new column's default
says so. A camt.054 debit notification states no balance: its pages store NULL ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from g2p_bridge.models.base import Amount

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite changes a column's nullability only by rebuilding the table.
    with op.batch_alter_table("account_statements", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("format", sa.String(length=16), server_default="mt940", nullable=False)
        )
    with op.batch_alter_table("statement_pages", schema=None) as batch_op:
        batch_op.alter_column(
            "opening_balance", existing_type=Amount(precision=22, scale=4), nullable=True
        )
        batch_op.alter_column(
            "closing_balance", existing_type=Amount(precision=22, scale=4), nullable=True
        )


def downgrade() -> None:
    # A page without balances cannot go back under NOT NULL: 0 is what it would have read.
    op.execute("UPDATE statement_pages SET opening_balance = 0 WHERE opening_balance IS NULL")
    op.execute("UPDATE statement_pages SET closing_balance = 0 WHERE closing_balance IS NULL")
    with op.batch_alter_table("statement_pages", schema=None) as batch_op:
        batch_op.alter_column(
            "closing_balance", existing_type=Amount(precision=22, scale=4), nullable=False
        )
        batch_op.alter_column(
            "opening_balance", existing_type=Amount(precision=22, scale=4), nullable=False
        )
    with op.batch_alter_table("account_statements", schema=None) as batch_op:
        batch_op.drop_column("format")
