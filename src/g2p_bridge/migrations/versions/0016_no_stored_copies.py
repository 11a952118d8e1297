"""reconciliation rows without copies: what the disbursement row holds is read from it, the
console's daily sums are kept apart, and a statement's callbacks name the rows it wrote

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 21:00:00

disbursement_recons was the largest table of a payday (about 470 bytes per disbursement after a
VACUUM FULL, indexes included), most of it stored twice:

- ``envelope_id``, ``bank_batch_id`` and ``remittance_amount`` are the disbursement's own (a row
  is written with its remittance, whose amount equals the disbursement's or it is an
  AMOUNT_MISMATCH error; the batch of a remitted disbursement never changes): read through
  the disbursement's primary key (models/statement.py, column properties);
- ``reversal_found`` is ``reversal_statement_id IS NOT NULL`` (both set by the one write);
- ``created_at`` was read by nothing; ``updated_at`` only told a statement's callbacks which
  rows its pass wrote, which statement processing now hands them itself;
- so the partial (statement id, disbursement id) indexes of 0013 have no reader left;
- the covering indexes (entry date, envelope, amount) behind the console's "paid / returned
  today" become a small table of per-day totals, ``recon_day_totals``, filled here from the
  rows as they stand and kept by statement processing from now on.

resolved_addresses kept the resolver's answer and the time of resolution beside the
disbursement, which holds both for an inline program (its own address, resolved at ingest in
the instant of its receipt): ``answered_address`` and ``answered_at`` keep them only where they
differ, and ``financial_address`` / ``resolved_at`` read the one or the other.

disbursements' (state, id) index served one query, the console's list of failed and unresolved
disbursements by id: it becomes ``ix_disbursements_failed_id``, (id) over those rows only.

Data: the totals are summed before the columns go. Nothing else changes value. On PostgreSQL a
dropped column's space is reused by new rows and given back by ``VACUUM FULL``.

Downgrade restores the columns from what remains: envelope, batch and amount from the
disbursement, ``reversal_found`` from the reversal's statement id, and both timestamps, which
nothing kept, from the processing time of the statement that wrote the row (the reversal's for
``updated_at``); then the indexes, and drops the totals.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import g2p_bridge.models.base

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATEMENT_INDEXES = (
    ("ix_disbursement_recons_remittance_statement", "remittance_statement_id"),
    ("ix_disbursement_recons_reversal_statement", "reversal_statement_id"),
)
_DAY_INDEXES = (
    ("ix_disbursement_recons_remitted", "remittance_entry_date"),
    ("ix_disbursement_recons_reversed", "reversal_entry_date"),
)
_DROPPED = (
    "envelope_id",
    "bank_batch_id",
    "remittance_amount",
    "reversal_found",
    "created_at",
    "updated_at",
)

# The failures list's rows (models/console.py FAILED_ROWS), the only ones it reads by id.
_FAILED = "state IN ('UNRESOLVED', 'FAILED')"
_BATCHED = "state = 'BATCHED'"
_PAID_TOTALS = (
    "INSERT INTO recon_day_totals (entry_date, envelope_id, kind, amount) "
    "SELECT remittance_entry_date, envelope_id, 'paid', COALESCE(SUM(remittance_amount), 0) "
    "FROM disbursement_recons WHERE remittance_entry_date IS NOT NULL "
    "GROUP BY remittance_entry_date, envelope_id"
)
_RETURNED_TOTALS = (
    "INSERT INTO recon_day_totals (entry_date, envelope_id, kind, amount) "
    "SELECT reversal_entry_date, envelope_id, 'returned', COALESCE(SUM(remittance_amount), 0) "
    "FROM disbursement_recons WHERE reversal_entry_date IS NOT NULL "
    "GROUP BY reversal_entry_date, envelope_id"
)
_RESTORE = (
    "UPDATE disbursement_recons SET "
    "envelope_id = (SELECT d.envelope_id FROM disbursements d "
    "WHERE d.id = disbursement_recons.disbursement_id), "
    "bank_batch_id = (SELECT d.bank_batch_id FROM disbursements d "
    "WHERE d.id = disbursement_recons.disbursement_id), "
    "remittance_amount = CASE WHEN remittance_statement_id IS NOT NULL THEN "
    "(SELECT d.amount FROM disbursements d WHERE d.id = disbursement_recons.disbursement_id) END, "
    "reversal_found = (reversal_statement_id IS NOT NULL), "
    "created_at = COALESCE("
    "(SELECT s.processed_at FROM account_statements s "
    "WHERE s.id = disbursement_recons.remittance_statement_id), "
    "(SELECT s.processed_at FROM account_statements s "
    "WHERE s.id = disbursement_recons.reversal_statement_id), CURRENT_TIMESTAMP), "
    "updated_at = COALESCE("
    "(SELECT s.processed_at FROM account_statements s "
    "WHERE s.id = disbursement_recons.reversal_statement_id), "
    "(SELECT s.processed_at FROM account_statements s "
    "WHERE s.id = disbursement_recons.remittance_statement_id), CURRENT_TIMESTAMP)"
)

# resolved_addresses: the answer and the time only where the disbursement row does not hold them.
_KEEP_ANSWERS = (
    "UPDATE resolved_addresses SET answered_address = financial_address WHERE NOT EXISTS "
    "(SELECT 1 FROM disbursements d WHERE d.id = resolved_addresses.disbursement_id "
    "AND d.financial_address = resolved_addresses.financial_address)"
)
_KEEP_TIMES = (
    "UPDATE resolved_addresses SET answered_at = resolved_at WHERE NOT EXISTS "
    "(SELECT 1 FROM disbursements d WHERE d.id = resolved_addresses.disbursement_id "
    "AND d.receipt_at = resolved_addresses.resolved_at)"
)
_RESTORE_ADDRESSES = (
    "UPDATE resolved_addresses SET "
    "financial_address = COALESCE(answered_address, (SELECT d.financial_address "
    "FROM disbursements d WHERE d.id = resolved_addresses.disbursement_id)), "
    "resolved_at = COALESCE(answered_at, (SELECT d.receipt_at "
    "FROM disbursements d WHERE d.id = resolved_addresses.disbursement_id))"
)


def upgrade() -> None:
    op.create_table(
        "recon_day_totals",
        sa.Column("entry_date", sa.Date(), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("amount", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=False),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_recon_day_totals_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint(
            "entry_date", "envelope_id", "kind", name=op.f("pk_recon_day_totals")
        ),
    )
    # What the dashboard summed: the remittance's amount on the remittance's entry date, and on
    # the reversal's entry date for the reversed ones. Rows without the date were never counted.
    op.execute(_PAID_TOTALS)
    op.execute(_RETURNED_TOTALS)
    with op.batch_alter_table("disbursement_recons", schema=None) as batch_op:
        for name, _ in (*_STATEMENT_INDEXES, *_DAY_INDEXES):
            batch_op.drop_index(name)
        for column in _DROPPED:
            batch_op.drop_column(column)
    with op.batch_alter_table("disbursements", schema=None) as batch_op:
        batch_op.create_index(
            "ix_disbursements_failed_id",
            ["id"],
            unique=False,
            postgresql_where=sa.text(_FAILED),
            sqlite_where=sa.text(_FAILED),
        )
        batch_op.drop_index("ix_disbursements_state_id")
        # The /metrics gauge's DISPATCHING count used (state, id); it reads the BATCHED rows.
        batch_op.create_index(
            "ix_disbursements_batched",
            ["bank_batch_id"],
            unique=False,
            postgresql_where=sa.text(_BATCHED),
            sqlite_where=sa.text(_BATCHED),
        )
    utc = g2p_bridge.models.base.UTCDateTime()
    with op.batch_alter_table("resolved_addresses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answered_address", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("answered_at", utc, nullable=True))
    op.execute(_KEEP_ANSWERS)
    op.execute(_KEEP_TIMES)
    with op.batch_alter_table("resolved_addresses", schema=None) as batch_op:
        batch_op.drop_column("financial_address")
        batch_op.drop_column("resolved_at")


def downgrade() -> None:
    amount = g2p_bridge.models.base.Amount(precision=22, scale=4)
    utc = g2p_bridge.models.base.UTCDateTime()
    with op.batch_alter_table("resolved_addresses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("financial_address", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", utc, nullable=True))
    op.execute(_RESTORE_ADDRESSES)
    with op.batch_alter_table("resolved_addresses", schema=None) as batch_op:
        batch_op.alter_column(
            "financial_address", existing_type=sa.String(length=256), nullable=False
        )
        batch_op.alter_column("resolved_at", existing_type=utc, nullable=False)
        batch_op.drop_column("answered_address")
        batch_op.drop_column("answered_at")
    with op.batch_alter_table("disbursement_recons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("envelope_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("bank_batch_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("remittance_amount", amount, nullable=True))
        batch_op.add_column(sa.Column("reversal_found", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("created_at", utc, nullable=True))
        batch_op.add_column(sa.Column("updated_at", utc, nullable=True))
    op.execute(_RESTORE)
    with op.batch_alter_table("disbursement_recons", schema=None) as batch_op:
        batch_op.alter_column("envelope_id", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("reversal_found", existing_type=sa.Boolean(), nullable=False)
        batch_op.alter_column("created_at", existing_type=utc, nullable=False)
        batch_op.alter_column("updated_at", existing_type=utc, nullable=False)
        for name, column in _STATEMENT_INDEXES:
            where = sa.text(f"{column} IS NOT NULL")
            batch_op.create_index(
                name,
                [column, "disbursement_id"],
                unique=False,
                postgresql_where=where,
                sqlite_where=where,
            )
        for name, column in _DAY_INDEXES:
            batch_op.create_index(name, [column, "envelope_id", "remittance_amount"], unique=False)
    op.drop_table("recon_day_totals")
    with op.batch_alter_table("disbursements", schema=None) as batch_op:
        batch_op.create_index("ix_disbursements_state_id", ["state", "id"], unique=False)
        batch_op.drop_index("ix_disbursements_failed_id")
        batch_op.drop_index("ix_disbursements_batched")
