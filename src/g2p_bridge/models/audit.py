"""The append-only audit trail: who changed what, when, under which request, with what outcome."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    """Rows are only ever inserted: no code path updates or deletes them, and on PostgreSQL a
    trigger refuses UPDATE and DELETE."""

    __tablename__ = "audit_events"

    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(128))
    # The envelope an event belongs to, so an envelope's whole trail is one indexed look-up.
    envelope_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    # JSON: counts, id ranges, before/after states, the reason of a refusal.
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_envelope_id", "envelope_id", "at"),
        Index("ix_audit_events_entity", "entity_type", "entity_id"),
    )
