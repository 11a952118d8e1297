"""Results pushed to a program's PBMS: where to send them, and the outbox they leave from.

An outbox row is written in the transaction of the state change it reports, so no result can
be lost between a commit and its callback; one row per envelope (the stream) keeps the order
and is the unit of work a sender claims."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Base, UTCDateTime, utcnow
from g2p_bridge.models.enums import WorkState


class CallbackSubscription(Base):
    """A program's callback URL: every result of its envelopes is POSTed there."""

    __tablename__ = "callback_subscriptions"

    program_mnemonic: Mapped[str] = mapped_column(
        ForeignKey("benefit_programs.mnemonic"), primary_key=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CallbackStream(Base):
    """An envelope's callbacks in order: the sequence numbers handed out, the last one the PBMS
    acknowledged, and the claim of the worker sending (core/work.py's columns)."""

    __tablename__ = "callback_streams"

    # Named ``id`` for core/work.py's claim, sweep and Lease; the column is the envelope's id.
    id: Mapped[str] = mapped_column(
        "envelope_id", ForeignKey("disbursement_envelopes.id"), primary_key=True
    )
    last_sequence: Mapped[int] = mapped_column(Integer, default=0)
    delivered_sequence: Mapped[int] = mapped_column(Integer, default=0)
    summary_written: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default=WorkState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_callback_streams_due", "state", "next_attempt_at"),)


class CallbackEvent(Base):
    """One callback: its body's message as it was when the state changed, and its delivery."""

    __tablename__ = "callback_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the event id on the wire
    envelope_id: Mapped[str] = mapped_column(ForeignKey("disbursement_envelopes.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(48))
    result_count: Mapped[int] = mapped_column(Integer)
    # The JSON message (without header and sequence), serialised once at the state change.
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # When the PBMS acknowledged it (2xx): what the bench reads for callbacks_after_s.
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("envelope_id", "sequence"),
        Index("ix_callback_events_delivered_at", "delivered_at"),
    )
