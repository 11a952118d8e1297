"""What the operators' console keeps: its local users and sessions, the approval decision of an
envelope (four-eyes) and the acknowledgement of a reconciliation error; and the indexes its
searches and dashboard read through, declared here so the pipeline's own models stay as they are.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, literal_column
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Amount, Base, UTCDateTime, utcnow
from g2p_bridge.models.disbursement import Disbursement
from g2p_bridge.models.enums import FAILED_STATES
from g2p_bridge.models.statement import DisbursementRecon

CONSOLE_ROLES = ("viewer", "operator", "approver", "admin")


class ConsoleUser(Base):
    """A person signing in to the console with a password (the embedded default; production
    may sign people in through the identity provider instead)."""

    __tablename__ = "console_users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    # argon2id, with its parameters and salt in the encoded string.
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    # Space-separated program mnemonics, or "*" for every program.
    programs: Mapped[str] = mapped_column(Text, default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Consecutive failed sign-ins and the lock they earned: guessing is slowed per account.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsoleSession(Base):
    """A signed-in browser. Only the token's SHA-256 is stored: a copy of the table signs no one
    in. Kept in the database so every API process (``--workers N``) knows every session."""

    __tablename__ = "console_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("console_users.username"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EnvelopeApproval(Base):
    """The second person's decision on an envelope that needs one. Deleted when the envelope is
    amended (the figures approved are no longer the envelope's); the audit trail keeps every
    decision and the voiding."""

    __tablename__ = "envelope_approvals"

    envelope_id: Mapped[str] = mapped_column(
        ForeignKey("disbursement_envelopes.id"), primary_key=True
    )
    decision: Mapped[str] = mapped_column(String(16))  # APPROVED or REJECTED
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The figures the approver saw.
    total_amount: Mapped[Decimal] = mapped_column(Amount)
    disbursement_count: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(1024))


class ReconErrorAck(Base):
    """An operator saying "seen, and this is why" about a reconciliation error."""

    __tablename__ = "recon_error_acks"

    recon_error_id: Mapped[int] = mapped_column(ForeignKey("recon_errors.id"), primary_key=True)
    acknowledged_by: Mapped[str] = mapped_column(String(128))
    acknowledged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str] = mapped_column(String(1024))


# Searches by beneficiary and by the bank's reference and the failures list across envelopes
# (keyset on id) must not scan a million rows. Today's paid/returned sums are kept apart, in
# recon_day_totals (models/statement.py).
Index("ix_disbursements_beneficiary", Disbursement.beneficiary_id)
# The failures list reads only failed and unresolved rows, by id: only they are indexed. The
# states are literals, in the index and in the query, so the planner matches the two.
FAILED_ROWS = Disbursement.state.in_([literal_column(f"'{s.value}'") for s in FAILED_STATES])
Index(
    "ix_disbursements_failed_id",
    Disbursement.id,
    postgresql_where=FAILED_ROWS,
    sqlite_where=FAILED_ROWS,
)
Index("ix_disbursement_recons_reference", DisbursementRecon.remittance_reference_number)
