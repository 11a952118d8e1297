"""the operators' console: local users and sessions, four-eyes approval of envelopes,
acknowledged reconciliation errors, and the indexes its searches read through

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 10:15:00

Programs gain ``approval_required`` and ``approval_threshold``: existing programs need no
approval, so nothing already flowing stops.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import g2p_bridge.models.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("disbursements", "ix_disbursements_beneficiary", ["beneficiary_id"]),
    ("disbursements", "ix_disbursements_state_id", ["state", "id"]),
    ("disbursement_recons", "ix_disbursement_recons_reference", ["remittance_reference_number"]),
    (
        "disbursement_recons",
        "ix_disbursement_recons_remitted",
        ["remittance_entry_date", "envelope_id", "remittance_amount"],
    ),
    (
        "disbursement_recons",
        "ix_disbursement_recons_reversed",
        ["reversal_entry_date", "envelope_id", "remittance_amount"],
    ),
)


def upgrade() -> None:
    amount = g2p_bridge.models.base.Amount()
    utc = g2p_bridge.models.base.UTCDateTime()
    with op.batch_alter_table("benefit_programs") as batch:
        batch.add_column(
            sa.Column("approval_required", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column("approval_threshold", amount, server_default="0", nullable=False)
        )
    op.create_table(
        "console_users",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("programs", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", utc, nullable=True),
        sa.Column("created_at", utc, nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_console_users")),
    )
    op.create_table(
        "console_sessions",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", utc, nullable=False),
        sa.Column("expires_at", utc, nullable=False),
        sa.ForeignKeyConstraint(
            ["username"],
            ["console_users.username"],
            name=op.f("fk_console_sessions_username_console_users"),
        ),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_console_sessions")),
    )
    op.create_index(
        op.f("ix_console_sessions_username"), "console_sessions", ["username"], unique=False
    )
    op.create_table(
        "envelope_approvals",
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=False),
        sa.Column("decided_at", utc, nullable=False),
        sa.Column("total_amount", amount, nullable=False),
        sa.Column("disbursement_count", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_envelope_approvals_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("envelope_id", name=op.f("pk_envelope_approvals")),
    )
    op.create_table(
        "recon_error_acks",
        sa.Column("recon_error_id", sa.Integer(), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=False),
        sa.Column("acknowledged_at", utc, nullable=False),
        sa.Column("note", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["recon_error_id"],
            ["recon_errors.id"],
            name=op.f("fk_recon_error_acks_recon_error_id_recon_errors"),
        ),
        sa.PrimaryKeyConstraint("recon_error_id", name=op.f("pk_recon_error_acks")),
    )
    for table, name, columns in _INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for table, name, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("recon_error_acks")
    op.drop_table("envelope_approvals")
    op.drop_index(op.f("ix_console_sessions_username"), table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("console_users")
    with op.batch_alter_table("benefit_programs") as batch:
        batch.drop_column("approval_threshold")
        batch.drop_column("approval_required")
