"""statement trust: who uploaded a statement with what authority, and the accounts it names

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:30:00

Statements stored before this revision keep NULL uploader authority and no account rows: the
upload check they passed read the file differently from the parser, so processing refuses
them until an administrator retries or re-processes them (docs/security.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add several columns in one ALTER otherwise.
    with op.batch_alter_table("account_statements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uploader_role", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("uploader_bank_codes", sa.Text(), nullable=True))
    op.create_table(
        "statement_accounts",
        sa.Column("statement_id", sa.String(length=36), nullable=False),
        sa.Column("account_number", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["account_statements.id"],
            name=op.f("fk_statement_accounts_statement_id_account_statements"),
        ),
        sa.PrimaryKeyConstraint(
            "statement_id", "account_number", name=op.f("pk_statement_accounts")
        ),
    )
    with op.batch_alter_table("statement_accounts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_statement_accounts_account", ["account_number", "statement_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("statement_accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_statement_accounts_account")
    op.drop_table("statement_accounts")
    with op.batch_alter_table("account_statements", schema=None) as batch_op:
        batch_op.drop_column("uploader_bank_codes")
        batch_op.drop_column("uploader_role")
