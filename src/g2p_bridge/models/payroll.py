"""Payroll files: an envelope submitted as a CSV or XLSX file (core/payroll_files.py) rather than
by a PBMS over G2P Connect. The file's SHA-256 is the key, so the same bytes submitted again are
recognised and answered with the envelope they made."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Base, UTCDateTime, utcnow


class PayrollFile(Base):
    """One accepted file and the envelope it made. Its envelope always needs four-eyes approval
    (core/approvals.py), whatever its program's threshold: a file typed by hand has had no
    PBMS check its figures."""

    __tablename__ = "payroll_files"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    envelope_id: Mapped[str] = mapped_column(
        ForeignKey("disbursement_envelopes.id"), unique=True, index=True
    )
    file_name: Mapped[str | None] = mapped_column(String(256))
    file_format: Mapped[str] = mapped_column(String(8))  # csv or xlsx
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    submitted_by: Mapped[str] = mapped_column(String(128))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
