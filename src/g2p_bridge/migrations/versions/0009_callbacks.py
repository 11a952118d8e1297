"""callbacks: per-program callback URLs, and the outbox of results pushed to the PBMS

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 12:30:00

New tables only: an existing database carries forward untouched, and envelopes already in
flight simply have no callbacks until their program gets a URL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from g2p_bridge.models.base import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "callback_subscriptions",
        sa.Column("program_mnemonic", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_mnemonic"],
            ["benefit_programs.mnemonic"],
            name=op.f("fk_callback_subscriptions_program_mnemonic_benefit_programs"),
        ),
        sa.PrimaryKeyConstraint("program_mnemonic", name=op.f("pk_callback_subscriptions")),
    )
    op.create_table(
        "callback_streams",
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.Column("delivered_sequence", sa.Integer(), nullable=False),
        sa.Column("summary_written", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_callback_streams_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("envelope_id", name=op.f("pk_callback_streams")),
    )
    op.create_index(
        "ix_callback_streams_due", "callback_streams", ["state", "next_attempt_at"], unique=False
    )
    op.create_table(
        "callback_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("envelope_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=48), nullable=False),
        sa.Column("result_count", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["envelope_id"],
            ["disbursement_envelopes.id"],
            name=op.f("fk_callback_events_envelope_id_disbursement_envelopes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_events")),
        sa.UniqueConstraint(
            "envelope_id", "sequence", name=op.f("uq_callback_events_envelope_id_sequence")
        ),
    )
    op.create_index(
        "ix_callback_events_delivered_at", "callback_events", ["delivered_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_callback_events_delivered_at", table_name="callback_events")
    op.drop_table("callback_events")
    op.drop_index("ix_callback_streams_due", table_name="callback_streams")
    op.drop_table("callback_streams")
    op.drop_table("callback_subscriptions")
