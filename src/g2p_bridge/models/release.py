"""The release of what an envelope's funds block did not spend: one row per envelope, a unit of
work like a batch (claimed, leased, retried, parked)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Amount, Base, UTCDateTime, utcnow
from g2p_bridge.models.enums import WorkState


class FundsRelease(Base):
    """Written once every disbursement of a blocked envelope is final, with the amount to give
    back fixed then (intent before the bank call); DONE once the bank released it."""

    __tablename__ = "funds_releases"

    # The envelope's id: one release per envelope, and the bank's idempotency key derives from it.
    id: Mapped[str] = mapped_column(ForeignKey("disbursement_envelopes.id"), primary_key=True)
    block_reference: Mapped[str] = mapped_column(String(128))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Amount)
    state: Mapped[str] = mapped_column(String(16), default=WorkState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    release_reference: Mapped[str | None] = mapped_column(String(128))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_funds_releases_due", "state", "next_attempt_at"),)
