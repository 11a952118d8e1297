"""payroll files: envelopes submitted as a CSV or XLSX file, keyed by the file's SHA-256

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 12:20:00

A new table only: envelopes already stored came from a PBMS and have no file, so nothing
existing changes and none of them starts needing approval.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import g2p_bridge.models.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payroll_files",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.String(length=256), nullable=True),
        sa.Column("file_format", sa.String(length=8), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.Column("submitted_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_payroll_files_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_payroll_files")),
    )
    op.create_index(
        op.f("ix_payroll_files_envelope_id"), "payroll_files", ["envelope_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_payroll_files_envelope_id"), table_name="payroll_files")
    op.drop_table("payroll_files")
