"""funds releases: what an envelope's block did not spend, given back once at the bank;
batch pages: the per-batch status reads an envelope's batches in id order

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 12:25:00

A new table and two indexes. Envelopes settled before this revision are picked up by the next
producer sweep like any other: their disbursements are final, their block has no release yet,
so the release is planned and sent then, with the same idempotency key a retry would use.
The two (envelope_id, id) indexes are built on the existing batch rows as they stand.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import g2p_bridge.models.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "funds_releases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("block_reference", sa.String(length=128), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("lease_until", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("release_reference", sa.String(length=128), nullable=True),
        sa.Column("released_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_funds_releases_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_funds_releases")),
    )
    with op.batch_alter_table("funds_releases", schema=None) as batch_op:
        batch_op.create_index("ix_funds_releases_due", ["state", "next_attempt_at"], unique=False)
    for table in ("mapper_batches", "bank_batches"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(f"ix_{table}_envelope_page", ["envelope_id", "id"], unique=False)


def downgrade() -> None:
    for table in ("bank_batches", "mapper_batches"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_envelope_page")
    with op.batch_alter_table("funds_releases", schema=None) as batch_op:
        batch_op.drop_index("ix_funds_releases_due")
    op.drop_table("funds_releases")
