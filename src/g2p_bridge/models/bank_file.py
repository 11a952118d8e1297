"""Files a sponsor bank's file channel sends back, and the poll that fetches them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Base, UTCDateTime, utcnow
from g2p_bridge.models.enums import WorkState


class BankOutboxPoll(Base):
    """One row per bank with an outbox: the unit of work a producer sweep wakes and one worker
    claims, so two workers never poll the same bank at once. It goes back to PENDING with the
    next poll's time after each poll."""

    __tablename__ = "bank_outbox_polls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the bank code
    state: Mapped[str] = mapped_column(String(16), default=WorkState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    files_taken: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_bank_outbox_polls_due", "state", "next_attempt_at"),)


class BankFile(Base):
    """An outbox file taken in: recorded in the transaction that applied it, so a file listed
    again (before its archive move, or by a second poller) is recognised by its name and content
    and applied once."""

    __tablename__ = "bank_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bank_code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    # pain.002, statement (camt.053/camt.054/MT940)
    kind: Mapped[str] = mapped_column(String(16))
    # applied, duplicate, refused
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    statement_id: Mapped[str | None] = mapped_column(String(36))
    bank_batch_id: Mapped[str | None] = mapped_column(String(36))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_as: Mapped[str | None] = mapped_column(String(512))
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("bank_code", "name", "content_sha256"),
        Index("ix_bank_files_batch", "bank_batch_id"),
    )
