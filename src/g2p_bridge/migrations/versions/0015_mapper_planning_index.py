"""mapper planning index: the mapper planner serves the envelope least recently planned first

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 15:40:00

- mapper_batches (envelope_id, created_at): when an envelope's last mapper batch was planned,
  one probe instead of reading every batch of the envelope. Built on the existing rows; no data
  changes. mapper_batches holds one row per thousand disbursements, so the build is short.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mapper_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mapper_batches_envelope_created", ["envelope_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mapper_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_mapper_batches_envelope_created")
