"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 14:02:04.292856
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import g2p_bridge.models.base

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_statements",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("filename", sa.String(length=256), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=True),
        sa.Column("account_number", sa.String(length=64), nullable=True),
        sa.Column("program_mnemonic", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("entries_total", sa.Integer(), nullable=False),
        sa.Column("entries_matched", sa.Integer(), nullable=False),
        sa.Column("entries_reversed", sa.Integer(), nullable=False),
        sa.Column("entries_unmatched", sa.Integer(), nullable=False),
        sa.Column("balance_problems", sa.Text(), nullable=True),
        sa.Column("sequence_gaps", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("lease_until", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("uploaded_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("processed_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_statements")),
        sa.UniqueConstraint("content_sha256", name=op.f("uq_account_statements_content_sha256")),
    )
    with op.batch_alter_table("account_statements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_statements_account_number"), ["account_number"], unique=False
        )
        batch_op.create_index(
            "ix_account_statements_due", ["state", "next_attempt_at"], unique=False
        )

    op.create_table(
        "beneficiary_addresses",
        sa.Column("beneficiary_id", sa.String(length=256), nullable=False),
        sa.Column("financial_address", sa.String(length=256), nullable=False),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("beneficiary_id", name=op.f("pk_beneficiary_addresses")),
    )
    op.create_table(
        "benefit_programs",
        sa.Column("mnemonic", sa.String(length=64), nullable=False),
        sa.Column("sponsor_bank_code", sa.String(length=32), nullable=False),
        sa.Column("sponsor_bank_account_number", sa.String(length=64), nullable=False),
        sa.Column("sponsor_bank_branch_code", sa.String(length=32), nullable=True),
        sa.Column("sponsor_bank_account_currency", sa.String(length=3), nullable=False),
        sa.Column("id_mapper_resolution_required", sa.Boolean(), nullable=False),
        sa.Column("resolver", sa.String(length=64), nullable=True),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("mnemonic", name=op.f("pk_benefit_programs")),
        sa.UniqueConstraint(
            "sponsor_bank_account_number",
            name=op.f("uq_benefit_programs_sponsor_bank_account_number"),
        ),
    )
    op.create_table(
        "processed_requests",
        sa.Column("sender_id", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sender_id", "message_id", name=op.f("pk_processed_requests")),
    )
    op.create_table(
        "disbursement_envelopes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("sender_id", sa.String(length=128), nullable=False),
        sa.Column("program_mnemonic", sa.String(length=64), nullable=False),
        sa.Column("disbursement_frequency", sa.String(length=16), nullable=False),
        sa.Column("cycle_code_mnemonic", sa.String(length=64), nullable=False),
        sa.Column("number_of_beneficiaries", sa.Integer(), nullable=False),
        sa.Column("number_of_disbursements", sa.Integer(), nullable=False),
        sa.Column(
            "total_disbursement_amount",
            g2p_bridge.models.base.Amount(precision=22, scale=4),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("schedule_date", sa.Date(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("cancelled_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_mnemonic"],
            ["benefit_programs.mnemonic"],
            name=op.f("fk_disbursement_envelopes_program_mnemonic_benefit_programs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disbursement_envelopes")),
    )
    with op.batch_alter_table("disbursement_envelopes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_disbursement_envelopes_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "recon_errors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("statement_id", sa.String(length=36), nullable=False),
        sa.Column("statement_number", sa.String(length=16), nullable=True),
        sa.Column("statement_sequence", sa.String(length=16), nullable=True),
        sa.Column("entry_sequence", sa.Integer(), nullable=True),
        sa.Column("entry_date", sa.Date(), nullable=True),
        sa.Column("value_date", sa.Date(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("disbursement_id", sa.String(length=64), nullable=True),
        sa.Column("bank_reference", sa.String(length=64), nullable=True),
        sa.Column("amount", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=True),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["account_statements.id"],
            name=op.f("fk_recon_errors_statement_id_account_statements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_errors")),
    )
    with op.batch_alter_table("recon_errors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recon_errors_disbursement_id"), ["disbursement_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_recon_errors_statement_id"), ["statement_id"], unique=False
        )

    op.create_table(
        "statement_pages",
        sa.Column("statement_id", sa.String(length=36), nullable=False),
        sa.Column("page_index", sa.Integer(), nullable=False),
        sa.Column("account_number", sa.String(length=64), nullable=False),
        sa.Column("statement_number", sa.String(length=16), nullable=False),
        sa.Column("sequence_number", sa.String(length=16), nullable=True),
        sa.Column(
            "opening_balance", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=False
        ),
        sa.Column(
            "closing_balance", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=False
        ),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("balance_problem", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["account_statements.id"],
            name=op.f("fk_statement_pages_statement_id_account_statements"),
        ),
        sa.PrimaryKeyConstraint("statement_id", "page_index", name=op.f("pk_statement_pages")),
    )
    with op.batch_alter_table("statement_pages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_statement_pages_account", ["account_number", "statement_number"], unique=False
        )

    op.create_table(
        "bank_batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=True),
        sa.Column("disbursement_count", sa.Integer(), nullable=False),
        sa.Column(
            "total_amount", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=False
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("lease_until", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("bank_response", sa.Text(), nullable=True),
        sa.Column("sent_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_bank_batches_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bank_batches")),
    )
    with op.batch_alter_table("bank_batches", schema=None) as batch_op:
        batch_op.create_index("ix_bank_batches_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_bank_batches_envelope_id"), ["envelope_id"], unique=False
        )

    op.create_table(
        "envelope_status",
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("received_count", sa.Integer(), nullable=False),
        sa.Column(
            "received_amount", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=False
        ),
        sa.Column("cancelled_count", sa.Integer(), nullable=False),
        sa.Column("shipped_count", sa.Integer(), nullable=False),
        sa.Column("reconciled_count", sa.Integer(), nullable=False),
        sa.Column("reversed_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("funds_available_state", sa.String(length=24), nullable=False),
        sa.Column("funds_available_attempts", sa.Integer(), nullable=False),
        sa.Column("funds_available_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("funds_available_error", sa.Text(), nullable=True),
        sa.Column("funds_blocked_state", sa.String(length=24), nullable=False),
        sa.Column("funds_blocked_attempts", sa.Integer(), nullable=False),
        sa.Column("funds_blocked_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("funds_blocked_error", sa.Text(), nullable=True),
        sa.Column("funds_block_reference", sa.String(length=128), nullable=True),
        sa.Column("next_attempt_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("lease_until", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_envelope_status_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("envelope_id", name=op.f("pk_envelope_status")),
    )
    with op.batch_alter_table("envelope_status", schema=None) as batch_op:
        batch_op.create_index(
            "ix_envelope_status_funds_due", ["funds_blocked_state", "next_attempt_at"], unique=False
        )

    op.create_table(
        "mapper_batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("resolver", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("lease_until", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_mapper_batches_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mapper_batches")),
    )
    with op.batch_alter_table("mapper_batches", schema=None) as batch_op:
        batch_op.create_index("ix_mapper_batches_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_mapper_batches_envelope_id"), ["envelope_id"], unique=False
        )

    op.create_table(
        "disbursements",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("mis_reference_number", sa.String(length=128), nullable=True),
        sa.Column("beneficiary_id", sa.String(length=256), nullable=False),
        sa.Column("beneficiary_name", sa.String(length=256), nullable=False),
        sa.Column("amount", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=False),
        sa.Column("narrative", sa.String(length=512), nullable=False),
        sa.Column("financial_address", sa.String(length=256), nullable=True),
        sa.Column("receipt_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("cancelled_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("mapper_batch_id", sa.String(length=36), nullable=True),
        sa.Column("bank_batch_id", sa.String(length=36), nullable=True),
        sa.Column("shipped_at", g2p_bridge.models.base.UTCDateTime(), nullable=True),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bank_batch_id"],
            ["bank_batches.id"],
            name=op.f("fk_disbursements_bank_batch_id_bank_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_disbursements_envelope_id_disbursement_envelopes"),
        ),
        sa.ForeignKeyConstraint(
            ["mapper_batch_id"],
            ["mapper_batches.id"],
            name=op.f("fk_disbursements_mapper_batch_id_mapper_batches"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disbursements")),
    )
    with op.batch_alter_table("disbursements", schema=None) as batch_op:
        batch_op.create_index("ix_disbursements_bank_batch", ["bank_batch_id"], unique=False)
        batch_op.create_index(
            "ix_disbursements_envelope_state", ["envelope_id", "state"], unique=False
        )
        batch_op.create_index("ix_disbursements_mapper_batch", ["mapper_batch_id"], unique=False)

    op.create_table(
        "disbursement_recons",
        sa.Column("disbursement_id", sa.String(length=64), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("bank_batch_id", sa.String(length=36), nullable=True),
        sa.Column("beneficiary_name_from_bank", sa.String(length=256), nullable=True),
        sa.Column("remittance_reference_number", sa.String(length=64), nullable=True),
        sa.Column("remittance_statement_id", sa.String(length=36), nullable=True),
        sa.Column("remittance_statement_number", sa.String(length=16), nullable=True),
        sa.Column("remittance_statement_sequence", sa.String(length=16), nullable=True),
        sa.Column("remittance_entry_sequence", sa.Integer(), nullable=True),
        sa.Column("remittance_entry_date", sa.Date(), nullable=True),
        sa.Column("remittance_value_date", sa.Date(), nullable=True),
        sa.Column(
            "remittance_amount", g2p_bridge.models.base.Amount(precision=22, scale=4), nullable=True
        ),
        sa.Column("reversal_found", sa.Boolean(), nullable=False),
        sa.Column("reversal_statement_id", sa.String(length=36), nullable=True),
        sa.Column("reversal_statement_number", sa.String(length=16), nullable=True),
        sa.Column("reversal_statement_sequence", sa.String(length=16), nullable=True),
        sa.Column("reversal_entry_sequence", sa.Integer(), nullable=True),
        sa.Column("reversal_entry_date", sa.Date(), nullable=True),
        sa.Column("reversal_value_date", sa.Date(), nullable=True),
        sa.Column("reversal_reason", sa.Text(), nullable=True),
        sa.Column("created_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["disbursement_id"],
            ["disbursements.id"],
            name=op.f("fk_disbursement_recons_disbursement_id_disbursements"),
        ),
        sa.PrimaryKeyConstraint("disbursement_id", name=op.f("pk_disbursement_recons")),
    )
    op.create_table(
        "resolved_addresses",
        sa.Column("disbursement_id", sa.String(length=64), nullable=False),
        sa.Column("financial_address", sa.String(length=256), nullable=False),
        sa.Column("address_type", sa.String(length=16), nullable=False),
        sa.Column("bank_account_number", sa.String(length=64), nullable=True),
        sa.Column("bank_code", sa.String(length=32), nullable=True),
        sa.Column("branch_code", sa.String(length=32), nullable=True),
        sa.Column("mobile_number", sa.String(length=32), nullable=True),
        sa.Column("mobile_wallet_provider", sa.String(length=64), nullable=True),
        sa.Column("email_address", sa.String(length=256), nullable=True),
        sa.Column("email_wallet_provider", sa.String(length=64), nullable=True),
        sa.Column("resolved_at", g2p_bridge.models.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["disbursement_id"],
            ["disbursements.id"],
            name=op.f("fk_resolved_addresses_disbursement_id_disbursements"),
        ),
        sa.PrimaryKeyConstraint("disbursement_id", name=op.f("pk_resolved_addresses")),
    )


def downgrade() -> None:
    op.drop_table("resolved_addresses")
    op.drop_table("disbursement_recons")
    with op.batch_alter_table("disbursements", schema=None) as batch_op:
        batch_op.drop_index("ix_disbursements_mapper_batch")
        batch_op.drop_index("ix_disbursements_envelope_state")
        batch_op.drop_index("ix_disbursements_bank_batch")

    op.drop_table("disbursements")
    with op.batch_alter_table("mapper_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mapper_batches_envelope_id"))
        batch_op.drop_index("ix_mapper_batches_due")

    op.drop_table("mapper_batches")
    with op.batch_alter_table("envelope_status", schema=None) as batch_op:
        batch_op.drop_index("ix_envelope_status_funds_due")

    op.drop_table("envelope_status")
    with op.batch_alter_table("bank_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bank_batches_envelope_id"))
        batch_op.drop_index("ix_bank_batches_due")

    op.drop_table("bank_batches")
    with op.batch_alter_table("statement_pages", schema=None) as batch_op:
        batch_op.drop_index("ix_statement_pages_account")

    op.drop_table("statement_pages")
    with op.batch_alter_table("recon_errors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recon_errors_statement_id"))
        batch_op.drop_index(batch_op.f("ix_recon_errors_disbursement_id"))

    op.drop_table("recon_errors")
    with op.batch_alter_table("disbursement_envelopes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disbursement_envelopes_created_at"))

    op.drop_table("disbursement_envelopes")
    op.drop_table("processed_requests")
    op.drop_table("benefit_programs")
    op.drop_table("beneficiary_addresses")
    with op.batch_alter_table("account_statements", schema=None) as batch_op:
        batch_op.drop_index("ix_account_statements_due")
        batch_op.drop_index(batch_op.f("ix_account_statements_account_number"))

    op.drop_table("account_statements")
