"""dispatch planning indexes: the planner serves the envelope least recently batched first and
takes each envelope's share of a tick in id order

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 15:10:00

Two index changes, built on the existing rows as they stand; no data changes.

- bank_batches (envelope_id, created_at): when an envelope was last batched, one probe.
- disbursements (envelope_id, state) becomes (envelope_id, state, id): every look-up by the
  first two columns is still served, and the planner's ``ORDER BY id LIMIT n`` for one envelope's
  RESOLVED rows reads n index entries instead of sorting all of them (or walking every
  envelope's RESOLVED rows through (state, id)). It is replaced, not added, so a disbursement's
  writes keep the same number of index entries. On a large table the build holds off writes to
  disbursements while it runs: upgrade between paydays.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bank_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bank_batches_envelope_created", ["envelope_id", "created_at"], unique=False
        )
    with op.batch_alter_table("disbursements", schema=None) as batch_op:
        batch_op.create_index(
            "ix_disbursements_envelope_state_id", ["envelope_id", "state", "id"], unique=False
        )
        batch_op.drop_index("ix_disbursements_envelope_state")


def downgrade() -> None:
    with op.batch_alter_table("disbursements", schema=None) as batch_op:
        batch_op.create_index(
            "ix_disbursements_envelope_state", ["envelope_id", "state"], unique=False
        )
        batch_op.drop_index("ix_disbursements_envelope_state_id")
    with op.batch_alter_table("bank_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_bank_batches_envelope_created")
