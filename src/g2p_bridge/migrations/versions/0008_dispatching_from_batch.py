"""DISPATCHING is read off the bank batch, no longer stored on each disbursement

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:30:00

A disbursement in a payment batch whose sending has started used to be rewritten from BATCHED
to DISPATCHING; it now stays BATCHED and is reported DISPATCHING while its batch is not PENDING
(core/states.py). Rows left DISPATCHING by the code before are therefore put back to BATCHED:
their batch is RUNNING, DONE or FAILED (it was claimed before they were rewritten), so they are
reported as before, stay uncancellable, and the dispatch that re-sends or records their batch
finds them where it now looks. No column changes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE disbursements SET state = 'BATCHED' WHERE state = 'DISPATCHING'")


def downgrade() -> None:
    # The code before stored what is now derived: a BATCHED row of a started batch.
    op.execute(
        "UPDATE disbursements SET state = 'DISPATCHING' WHERE state = 'BATCHED' AND EXISTS "
        "(SELECT 1 FROM bank_batches b WHERE b.id = disbursements.bank_batch_id "
        "AND b.state <> 'PENDING')"
    )
