"""Payment files taken in over SFTP (pain.001) and their answers (pain.002).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_files",
        sa.Column("message_id", sa.String(length=35), nullable=False),
        sa.Column("file_name", sa.String(length=100), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("message_name", sa.String(length=35), nullable=True),
        sa.Column("group_status", sa.String(length=4), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("transaction_count", sa.Integer(), nullable=False),
        sa.Column("accepted_count", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(length=35), nullable=False),
        sa.Column("pain002", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["payment_batches.id"],
            name=op.f("fk_payment_files_batch_id_payment_batches"),
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_payment_files")),
    )


def downgrade() -> None:
    op.drop_table("payment_files")
