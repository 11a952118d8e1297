"""Benefit program configuration: which sponsor bank account pays a program."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, String, false
from sqlalchemy.orm import Mapped, mapped_column

from g2p_bridge.models.base import Amount, Base, UTCDateTime, utcnow


class BenefitProgram(Base):
    __tablename__ = "benefit_programs"

    mnemonic: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Descriptive, as OpenG2P 1.1.0's program configuration carries them.
    benefit_program_name: Mapped[str | None] = mapped_column(String(256))
    funding_org_code: Mapped[str | None] = mapped_column(String(64))
    funding_org_name: Mapped[str | None] = mapped_column(String(256))
    sponsor_bank_code: Mapped[str] = mapped_column(String(32))
    # Statements are attributed to a program by this account, so it is unique.
    sponsor_bank_account_number: Mapped[str] = mapped_column(String(64), unique=True)
    sponsor_bank_branch_code: Mapped[str | None] = mapped_column(String(32))
    sponsor_bank_account_currency: Mapped[str] = mapped_column(String(3))
    id_mapper_resolution_required: Mapped[bool] = mapped_column(Boolean, default=True)
    # Resolver plug-in name; None picks g2p-connect when resolution is required, else inline.
    resolver: Mapped[str | None] = mapped_column(String(64))
    # Four-eyes: envelopes declaring at least the threshold (0: every one) wait for a second
    # person's approval before their funds are blocked (core/approvals.py).
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    approval_threshold: Mapped[Decimal] = mapped_column(
        Amount, default=Decimal(0), server_default="0"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def resolver_name(self) -> str:
        if self.resolver:
            return self.resolver
        return "g2p-connect" if self.id_mapper_resolution_required else "inline"
