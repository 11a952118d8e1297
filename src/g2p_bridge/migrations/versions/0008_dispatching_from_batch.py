"""DISPATCHING is read off the bank batch, no longer stored on each disbursement; the batch-id
indexes of disbursements hold only rows that have a batch

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:30:00

A disbursement in a payment batch whose sending has started used to be rewritten from BATCHED
to DISPATCHING; it now stays BATCHED and is reported DISPATCHING while its batch is not PENDING
(core/states.py). Rows left DISPATCHING by the code before are therefore put back to BATCHED:
their batch is RUNNING, DONE or FAILED (it was claimed before they were rewritten), so they are
reported as before, stay uncancellable, and the dispatch that re-sends or records their batch
finds them where it now looks. No column changes.

The two batch-id indexes become partial (``IS NOT NULL``): every look-up through them is by a
batch id, and a row without one no longer costs an entry on each of its (non-HOT) writes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_BATCH_INDEXES = (
    ("ix_disbursements_mapper_batch", "mapper_batch_id"),
    ("ix_disbursements_bank_batch", "bank_batch_id"),
)


def upgrade() -> None:
    op.execute("UPDATE disbursements SET state = 'BATCHED' WHERE state = 'DISPATCHING'")
    for name, column in _BATCH_INDEXES:
        op.drop_index(name, table_name="disbursements")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "disbursements", [column], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for name, column in _BATCH_INDEXES:
        op.drop_index(name, table_name="disbursements")
        op.create_index(name, "disbursements", [column])
    # The code before stored what is now derived: a BATCHED row of a started batch.
    op.execute(
        "UPDATE disbursements SET state = 'DISPATCHING' WHERE state = 'BATCHED' AND EXISTS "
        "(SELECT 1 FROM bank_batches b WHERE b.id = disbursements.bank_batch_id "
        "AND b.state <> 'PENDING')"
    )
