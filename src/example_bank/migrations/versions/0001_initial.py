"""Initial Example Bank schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 13:58:41.077364
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_number", sa.String(length=64), nullable=False),
        sa.Column("holder_name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=200), nullable=True),
        sa.Column("account_type", sa.String(length=16), nullable=False),
        sa.Column("book_balance", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("blocked_amount", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("blocked_amount >= 0", name=op.f("ck_accounts_blocked_not_negative")),
        sa.PrimaryKeyConstraint("account_number", name=op.f("pk_accounts")),
    )
    op.create_index(op.f("ix_accounts_phone"), "accounts", ["phone"], unique=False)

    op.create_table(
        "ledger_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_number", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("mark", sa.String(length=2), nullable=False),
        sa.Column("payment_reference", sa.String(length=100), nullable=True),
        sa.Column("bank_reference", sa.String(length=40), nullable=False),
        sa.Column("return_reason", sa.String(length=40), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("value_date", sa.Date(), nullable=False),
        sa.Column("entry_date", sa.Date(), nullable=False),
        sa.Column("statement_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("bank_reference", name=op.f("uq_ledger_entries_bank_reference")),
    )
    op.create_index(
        "ix_ledger_entries_account_id", "ledger_entries", ["account_number", "id"], unique=False
    )
    op.create_index(
        "ix_ledger_entries_unreported",
        "ledger_entries",
        ["account_number", "id"],
        unique=False,
        postgresql_where=sa.text("statement_id IS NULL"),
        sqlite_where=sa.text("statement_id IS NULL"),
    )

    op.create_table(
        "payment_batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payment_count", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_batches")),
    )
    op.create_index(
        "ix_payment_batches_open",
        "payment_batches",
        ["id"],
        unique=False,
        postgresql_where=sa.text("state IN ('RECEIVED', 'PROCESSING')"),
        sqlite_where=sa.text("state IN ('RECEIVED', 'PROCESSING')"),
    )

    op.create_table(
        "fund_blocks",
        sa.Column("block_reference", sa.String(length=40), nullable=False),
        sa.Column("account_number", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("remaining", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_fund_blocks_remaining_not_negative")),
        sa.ForeignKeyConstraint(
            ["account_number"],
            ["accounts.account_number"],
            name=op.f("fk_fund_blocks_account_number_accounts"),
        ),
        sa.PrimaryKeyConstraint("block_reference", name=op.f("pk_fund_blocks")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_fund_blocks_idempotency_key")),
    )
    op.create_index(
        op.f("ix_fund_blocks_account_number"), "fund_blocks", ["account_number"], unique=False
    )

    op.create_table(
        "payments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("payment_reference_number", sa.String(length=100), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=40), nullable=True),
        sa.Column("remitting_account", sa.String(length=64), nullable=False),
        sa.Column("remitting_account_currency", sa.String(length=3), nullable=False),
        sa.Column("payment_amount", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("funds_blocked_reference_number", sa.String(length=40), nullable=False),
        sa.Column("beneficiary_name", sa.String(length=200), nullable=True),
        sa.Column("beneficiary_account", sa.String(length=64), nullable=True),
        sa.Column("beneficiary_account_currency", sa.String(length=3), nullable=True),
        sa.Column("beneficiary_account_type", sa.String(length=32), nullable=True),
        sa.Column("beneficiary_bank_code", sa.String(length=64), nullable=True),
        sa.Column("beneficiary_branch_code", sa.String(length=64), nullable=True),
        sa.Column("beneficiary_mobile_wallet_provider", sa.String(length=64), nullable=True),
        sa.Column("beneficiary_phone_no", sa.String(length=32), nullable=True),
        sa.Column("beneficiary_email", sa.String(length=200), nullable=True),
        sa.Column("beneficiary_email_wallet_provider", sa.String(length=64), nullable=True),
        sa.Column("narrative_1", sa.String(length=200), nullable=True),
        sa.Column("narrative_2", sa.String(length=200), nullable=True),
        sa.Column("narrative_3", sa.String(length=200), nullable=True),
        sa.Column("narrative_4", sa.String(length=200), nullable=True),
        sa.Column("narrative_5", sa.String(length=200), nullable=True),
        sa.Column("narrative_6", sa.String(length=200), nullable=True),
        sa.Column("payment_date", sa.String(length=40), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["payment_batches.id"], name=op.f("fk_payments_batch_id_payment_batches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint(
            "payment_reference_number", name=op.f("uq_payments_payment_reference_number")
        ),
    )
    op.create_index("ix_payments_batch_id_id", "payments", ["batch_id", "id"], unique=False)
    op.create_index(
        "ix_payments_pending_block",
        "payments",
        ["funds_blocked_reference_number"],
        unique=False,
        postgresql_where=sa.text("state = 'RECEIVED'"),
        sqlite_where=sa.text("state = 'RECEIVED'"),
    )

    op.create_table(
        "statements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_number", sa.String(length=64), nullable=False),
        sa.Column("statement_number", sa.Integer(), nullable=False),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("is_last_page", sa.Boolean(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("opening_balance", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("closing_balance", sa.Numeric(precision=20, scale=2), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("mt940", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_number"],
            ["accounts.account_number"],
            name=op.f("fk_statements_account_number_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statements")),
        sa.UniqueConstraint(
            "account_number",
            "statement_number",
            "sequence_number",
            name=op.f("uq_statements_account_number_statement_number_sequence_number"),
        ),
    )
    op.create_index(
        "ix_statements_pending",
        "statements",
        ["id"],
        unique=False,
        postgresql_where=sa.text("delivery_state = 'PENDING'"),
        sqlite_where=sa.text("delivery_state = 'PENDING'"),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes too.
    for table in (
        "statements",
        "payments",
        "fund_blocks",
        "payment_batches",
        "ledger_entries",
        "accounts",
    ):
        op.drop_table(table)
