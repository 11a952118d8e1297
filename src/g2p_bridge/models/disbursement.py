"""Disbursements and the batches that carry them: ID-mapper resolution and bank payment batches."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    case,
    exists,
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column

from g2p_bridge.models.base import Amount, Base, UTCDateTime, new_id, utcnow
from g2p_bridge.models.enums import DisbursementState, WorkState


class BankBatch(Base):
    """A payment batch sent to the sponsor bank. Created PENDING; RUNNING is the recorded intent
    (the bank may have it); DONE once the bank accepted it."""

    __tablename__ = "bank_batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    envelope_id: Mapped[str] = mapped_column(ForeignKey("disbursement_envelopes.id"), index=True)
    destination: Mapped[str | None] = mapped_column(String(64))
    disbursement_count: Mapped[int] = mapped_column(Integer)
    total_amount: Mapped[Decimal] = mapped_column(Amount)
    state: Mapped[str] = mapped_column(String(16), default=WorkState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    bank_response: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_bank_batches_due", "state", "next_attempt_at"),
        Index("ix_bank_batches_envelope_page", "envelope_id", "id"),
        # When an envelope was last batched: the planner serves the least recently batched first.
        Index("ix_bank_batches_envelope_created", "envelope_id", "created_at"),
    )


# A literal, not a bound parameter, in the index and in the queries that use it, so that the
# planner can match a prepared statement's predicate to the partial index.
BATCHED_ROWS = f"state = '{DisbursementState.BATCHED.value}'"


class Disbursement(Base):
    """One payment to one beneficiary. Its batch columns are the reference's "batch control":
    kept on the row itself so that claiming work is one indexed UPDATE, not a join."""

    __tablename__ = "disbursements"

    # The PBMS's own id when it sends one, else a UUID; also the bank's payment reference.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    envelope_id: Mapped[str] = mapped_column(ForeignKey("disbursement_envelopes.id"))
    mis_reference_number: Mapped[str | None] = mapped_column(String(128))
    beneficiary_id: Mapped[str] = mapped_column(String(256))
    beneficiary_name: Mapped[str] = mapped_column(String(256))
    amount: Mapped[Decimal] = mapped_column(Amount)
    narrative: Mapped[str] = mapped_column(String(512))
    # A financial address given with the disbursement, for programs that resolve inline.
    financial_address: Mapped[str | None] = mapped_column(String(256))
    receipt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default=DisbursementState.RECEIVED)
    state_reason: Mapped[str | None] = mapped_column(Text)
    mapper_batch_id: Mapped[str | None] = mapped_column(ForeignKey("mapper_batches.id"))
    bank_batch_id: Mapped[str | None] = mapped_column(ForeignKey("bank_batches.id"))
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # The state as answered (core/states.py): DISPATCHING is not stored but read off the batch.
    reported_state: Mapped[str] = column_property(
        case(
            (state != DisbursementState.BATCHED, state),
            (
                exists().where(BankBatch.id == bank_batch_id, BankBatch.state != WorkState.PENDING),
                DisbursementState.DISPATCHING.value,
            ),
            else_=DisbursementState.BATCHED.value,
        )
    )

    __table_args__ = (
        # With id last, an envelope's RESOLVED rows come in id order straight from the index, so
        # the dispatch planner's SELECT ... ORDER BY id LIMIT n reads n entries, not all of them.
        Index("ix_disbursements_envelope_state_id", "envelope_id", "state", "id"),
        # Partial: every look-up is by a batch id, and a row without one (all of an inline
        # program's rows for the mapper, every row until it is batched for the bank) then
        # costs no entry in these indexes on each of its writes, none of which is HOT.
        Index(
            "ix_disbursements_mapper_batch",
            "mapper_batch_id",
            postgresql_where=text("mapper_batch_id IS NOT NULL"),
            sqlite_where=text("mapper_batch_id IS NOT NULL"),
        ),
        Index(
            "ix_disbursements_bank_batch",
            "bank_batch_id",
            postgresql_where=text("bank_batch_id IS NOT NULL"),
            sqlite_where=text("bank_batch_id IS NOT NULL"),
        ),
        # The whole table's DISPATCHING count (the /metrics gauge, core/states.py) reads the
        # BATCHED rows alone: a payday's batches in hand, not every row. Empty between paydays.
        Index(
            "ix_disbursements_batched",
            "bank_batch_id",
            postgresql_where=text(BATCHED_ROWS),
            sqlite_where=text(BATCHED_ROWS),
        ),
    )


class MapperBatch(Base):
    __tablename__ = "mapper_batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    envelope_id: Mapped[str] = mapped_column(ForeignKey("disbursement_envelopes.id"), index=True)
    resolver: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=WorkState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_mapper_batches_due", "state", "next_attempt_at"),
        # The per-batch status pages an envelope's batches by id (core/batches.py).
        Index("ix_mapper_batches_envelope_page", "envelope_id", "id"),
        # When an envelope was last planned: the mapper planner serves the least recent first.
        Index("ix_mapper_batches_envelope_created", "envelope_id", "created_at"),
    )


class ResolvedAddress(Base):
    """Where a beneficiary's money goes, as the resolver deconstructed the financial address.

    What the disbursement row already holds is not stored again: the resolver's answer only
    when it is not the disbursement's own (inline) ``financial_address``, the time only when it
    is not the disbursement's receipt (an inline address is resolved at ingest, in the same
    instant). ``financial_address`` and ``resolved_at`` read the one or the other."""

    __tablename__ = "resolved_addresses"

    disbursement_id: Mapped[str] = mapped_column(ForeignKey("disbursements.id"), primary_key=True)
    answered_address: Mapped[str | None] = mapped_column(String(256))
    address_type: Mapped[str] = mapped_column(String(16))
    bank_account_number: Mapped[str | None] = mapped_column(String(64))
    bank_code: Mapped[str | None] = mapped_column(String(32))
    branch_code: Mapped[str | None] = mapped_column(String(32))
    mobile_number: Mapped[str | None] = mapped_column(String(32))
    mobile_wallet_provider: Mapped[str | None] = mapped_column(String(64))
    email_address: Mapped[str | None] = mapped_column(String(256))
    email_wallet_provider: Mapped[str | None] = mapped_column(String(64))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    financial_address: Mapped[str] = column_property(
        func.coalesce(
            answered_address,
            select(Disbursement.financial_address)
            .where(Disbursement.id == disbursement_id)
            .correlate_except(Disbursement)
            .scalar_subquery(),
        )
    )
    resolved_at: Mapped[datetime] = column_property(
        func.coalesce(
            answered_at,
            select(Disbursement.receipt_at)
            .where(Disbursement.id == disbursement_id)
            .correlate_except(Disbursement)
            .scalar_subquery(),
        )
    )


class BeneficiaryAddress(Base):
    """A local ID-to-financial-address mapping, loaded from a CSV, for the "table" resolver."""

    __tablename__ = "beneficiary_addresses"

    beneficiary_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    financial_address: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
