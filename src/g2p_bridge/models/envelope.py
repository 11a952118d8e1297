"""Disbursement envelopes (one program cycle) and their running batch status."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Amount, Base, UTCDateTime, utcnow
from g2p_bridge.models.enums import FundsAvailable, FundsBlocked


class DisbursementEnvelope(Base):
    __tablename__ = "disbursement_envelopes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(128))
    program_mnemonic: Mapped[str] = mapped_column(ForeignKey("benefit_programs.mnemonic"))
    disbursement_frequency: Mapped[str] = mapped_column(String(16))
    cycle_code_mnemonic: Mapped[str] = mapped_column(String(64))
    number_of_beneficiaries: Mapped[int] = mapped_column(Integer)
    number_of_disbursements: Mapped[int] = mapped_column(Integer)
    total_disbursement_amount: Mapped[Decimal] = mapped_column(Amount)
    currency: Mapped[str] = mapped_column(String(3))
    schedule_date: Mapped[date] = mapped_column(Date)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class EnvelopeStatus(Base):
    """Counters and the funds steps of an envelope. Counters move in the same transaction as the
    disbursement rows they count, so they always equal what the rows say."""

    __tablename__ = "envelope_status"

    envelope_id: Mapped[str] = mapped_column(
        ForeignKey("disbursement_envelopes.id"), primary_key=True
    )
    received_count: Mapped[int] = mapped_column(Integer, default=0)
    received_amount: Mapped[Decimal] = mapped_column(Amount, default=Decimal(0))
    cancelled_count: Mapped[int] = mapped_column(Integer, default=0)
    shipped_count: Mapped[int] = mapped_column(Integer, default=0)
    reconciled_count: Mapped[int] = mapped_column(Integer, default=0)
    reversed_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)

    funds_available_state: Mapped[str] = mapped_column(
        String(24), default=FundsAvailable.PENDING_CHECK
    )
    funds_available_attempts: Mapped[int] = mapped_column(Integer, default=0)
    funds_available_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    funds_available_error: Mapped[str | None] = mapped_column(Text)
    funds_blocked_state: Mapped[str] = mapped_column(String(24), default=FundsBlocked.PENDING_CHECK)
    funds_blocked_attempts: Mapped[int] = mapped_column(Integer, default=0)
    funds_blocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    funds_blocked_error: Mapped[str | None] = mapped_column(Text)
    funds_block_reference: Mapped[str | None] = mapped_column(String(128))

    # Work scheduling for the funds steps: when the next try is due, and who holds it until when.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_envelope_status_funds_due", "funds_blocked_state", "next_attempt_at"),
    )
