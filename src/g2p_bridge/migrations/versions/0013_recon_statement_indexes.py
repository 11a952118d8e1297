"""Reconciliation rows are indexed by the statement that recorded them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 15:20:00

A statement's callbacks select the remittances and reversals it recorded. Without an index on
the statement ids that was a scan of every row of each envelope the statement touched, once per
statement and under the statement lock: at 1,000,000 disbursements a few hundred statements
each read the whole envelope. The indexes are partial (a row is indexed once its statement id
is set) and end in the disbursement id, so a chunk of a statement's rows is an index range.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("ix_disbursement_recons_remittance_statement", "remittance_statement_id"),
    ("ix_disbursement_recons_reversal_statement", "reversal_statement_id"),
)


def upgrade() -> None:
    for name, column in _INDEXES:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            name,
            "disbursement_recons",
            [column, "disbursement_id"],
            postgresql_where=where,
            sqlite_where=where,
        )


def downgrade() -> None:
    for name, _ in _INDEXES:
        op.drop_index(name, table_name="disbursement_recons")
