"""Fund releases: part of a block given back, once per idempotency key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 12:20:00

A new table only: blocks made before this revision simply have no releases yet.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fund_releases",
        sa.Column("release_reference", sa.String(length=40), nullable=False),
        sa.Column("block_reference", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_reference"],
            ["fund_blocks.block_reference"],
            name=op.f("fk_fund_releases_block_reference_fund_blocks"),
        ),
        sa.PrimaryKeyConstraint("release_reference", name=op.f("pk_fund_releases")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_fund_releases_idempotency_key")),
    )
    op.create_index(
        op.f("ix_fund_releases_block_reference"),
        "fund_releases",
        ["block_reference"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_fund_releases_block_reference"), table_name="fund_releases")
    op.drop_table("fund_releases")
