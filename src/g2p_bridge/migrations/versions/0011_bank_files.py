"""bank files: the outbox polls of file-channel banks, and the files taken from them

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 12:30:00

Two new tables, nothing existing changes: a database from before carries on as it was, its
banks on their API channel; a bank configured with a file channel gets its poll row at the
first producer tick.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from g2p_bridge.models.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bank_outbox_polls",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_polled_at", UTCDateTime(), nullable=True),
        sa.Column("files_taken", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_outbox_polls")),
    )
    op.create_index("ix_bank_outbox_polls_due", "bank_outbox_polls", ["state", "next_attempt_at"])
    op.create_table(
        "bank_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bank_code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("statement_id", sa.String(length=36), nullable=True),
        sa.Column("bank_batch_id", sa.String(length=36), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("archived_as", sa.String(length=512), nullable=True),
        sa.Column("archived_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_files")),
        sa.UniqueConstraint(
            "bank_code",
            "name",
            "content_sha256",
            name=op.f("uq_bank_files_bank_code_name_content_sha256"),
        ),
    )
    op.create_index("ix_bank_files_batch", "bank_files", ["bank_batch_id"])


def downgrade() -> None:
    op.drop_index("ix_bank_files_batch", table_name="bank_files")
    op.drop_table("bank_files")
    op.drop_index("ix_bank_outbox_polls_due", table_name="bank_outbox_polls")
    op.drop_table("bank_outbox_polls")
