"""Database schema of the Example Bank (SQLAlchemy 2 declarative, typed).

Money is ``NUMERIC(20, 2)`` mapped to :class:`~decimal.Decimal` everywhere. Every balance
change is a pair of ledger entries, so the sum of all entries is always zero and an
account's book balance equals the sum of its entries.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class Money(TypeDecorator[Decimal]):
    """Exact money: NUMERIC(20, 2) on PostgreSQL, integer minor units on SQLite.

    SQLite has no decimal type (NUMERIC values become floating point), so amounts are
    stored as integer cents there; sums and ``balance + delta`` stay exact integer
    arithmetic inside SQLite and come back as 2-decimal ``Decimal`` values.
    """

    impl = Numeric(20, 2, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, 2, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = Decimal(value).quantize(CENT)
        if dialect.name == "sqlite":
            return int(amount.scaleb(2))
        return amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-2)
        return Decimal(value).quantize(CENT)


CENT = Decimal("0.01")
MONEY = Money()
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BIGID = BigInteger().with_variant(Integer(), "sqlite")

# Account types.
CUSTOMER = "CUSTOMER"
CENTRAL = "CENTRAL"  # the bank's own funding account: the other side of every deposit
CLEARING = "CLEARING"  # one per destination bank code / wallet provider (and currency)
SUSPENSE = "SUSPENSE"  # payments to unknown accounts of this bank land here, then revert
INTERNAL_TYPES = (CENTRAL, CLEARING, SUSPENSE)

# Batch states.
RECEIVED = "RECEIVED"
PROCESSING = "PROCESSING"
PROCESSED = "PROCESSED"
BATCH_FAILED = "FAILED"

# Payment states.
PAID = "PAID"
PAYMENT_FAILED = "FAILED"

# Ledger marks as written in MT940 :61: (RD = reversal of a debit, i.e. money back).
DEBIT, CREDIT, REVERSAL_DEBIT, REVERSAL_CREDIT = "D", "C", "RD", "RC"

# Statement delivery states.
PENDING = "PENDING"
DELIVERED = "DELIVERED"
DELIVERY_FAILED = "FAILED"


def utcnow() -> datetime:
    """Timezone-aware current UTC time (callable default for timestamp columns)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    SQLite has no timezone type: values are stored as naive UTC and made aware again
    when read, so comparisons in SQL (lease expiry, retry due) stay correct.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names (stable migrations)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Account(Base):
    __tablename__ = "accounts"

    account_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder_name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    email: Mapped[str | None] = mapped_column(String(200))
    account_type: Mapped[str] = mapped_column(String(16), default=CUSTOMER)
    book_balance: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0.00"))
    blocked_amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0.00"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (CheckConstraint("blocked_amount >= 0", name="blocked_not_negative"),)


class FundBlock(Base):
    __tablename__ = "fund_blocks"

    block_reference: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_number: Mapped[str] = mapped_column(ForeignKey("accounts.account_number"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    remaining: Mapped[Decimal] = mapped_column(MONEY)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # Acceptance validates against the block, so this only fires on a bug.
    __table_args__ = (CheckConstraint("remaining >= 0", name="remaining_not_negative"),)


class FundRelease(Base):
    """Part of a block given back to the account's available balance. Not a ledger entry: no
    money moves, the book balance stays; the block's remaining and the account's blocked amount
    go down together. The idempotency key makes a repeated request the same release."""

    __tablename__ = "fund_releases"

    release_reference: Mapped[str] = mapped_column(String(40), primary_key=True)
    block_reference: Mapped[str] = mapped_column(
        ForeignKey("fund_blocks.block_reference"), index=True
    )
    amount: Mapped[Decimal] = mapped_column(MONEY)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PaymentBatch(Base):
    __tablename__ = "payment_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default=RECEIVED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    payment_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    # Claiming scans only unfinished batches.
    __table_args__ = (
        Index(
            "ix_payment_batches_open",
            "id",
            postgresql_where=text("state IN ('RECEIVED', 'PROCESSING')"),
            sqlite_where=text("state IN ('RECEIVED', 'PROCESSING')"),
        ),
    )


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BIGID, primary_key=True, autoincrement=True)
    # The bridge's disbursement id: the idempotency key of a payment.
    payment_reference_number: Mapped[str] = mapped_column(String(100), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("payment_batches.id"))
    state: Mapped[str] = mapped_column(String(16), default=RECEIVED)
    failure_reason: Mapped[str | None] = mapped_column(String(40))
    remitting_account: Mapped[str] = mapped_column(String(64))
    remitting_account_currency: Mapped[str] = mapped_column(String(3))
    payment_amount: Mapped[Decimal] = mapped_column(MONEY)
    funds_blocked_reference_number: Mapped[str] = mapped_column(String(40))
    beneficiary_name: Mapped[str | None] = mapped_column(String(200))
    beneficiary_account: Mapped[str | None] = mapped_column(String(64))
    beneficiary_account_currency: Mapped[str | None] = mapped_column(String(3))
    beneficiary_account_type: Mapped[str | None] = mapped_column(String(32))
    beneficiary_bank_code: Mapped[str | None] = mapped_column(String(64))
    beneficiary_branch_code: Mapped[str | None] = mapped_column(String(64))
    beneficiary_mobile_wallet_provider: Mapped[str | None] = mapped_column(String(64))
    beneficiary_phone_no: Mapped[str | None] = mapped_column(String(32))
    beneficiary_email: Mapped[str | None] = mapped_column(String(200))
    beneficiary_email_wallet_provider: Mapped[str | None] = mapped_column(String(64))
    narrative_1: Mapped[str | None] = mapped_column(String(200))
    narrative_2: Mapped[str | None] = mapped_column(String(200))
    narrative_3: Mapped[str | None] = mapped_column(String(200))
    narrative_4: Mapped[str | None] = mapped_column(String(200))
    narrative_5: Mapped[str | None] = mapped_column(String(200))
    narrative_6: Mapped[str | None] = mapped_column(String(200))
    payment_date: Mapped[str | None] = mapped_column(String(40))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # process_batch walks a batch in id order.
        Index("ix_payments_batch_id_id", "batch_id", "id"),
        # Acceptance sums what is still pending against a block.
        Index(
            "ix_payments_pending_block",
            "funds_blocked_reference_number",
            postgresql_where=text("state = 'RECEIVED'"),
            sqlite_where=text("state = 'RECEIVED'"),
        ),
    )


class Statement(Base):
    __tablename__ = "statements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_number: Mapped[str] = mapped_column(ForeignKey("accounts.account_number"))
    statement_number: Mapped[int] = mapped_column(Integer)
    sequence_number: Mapped[int] = mapped_column(Integer)
    is_last_page: Mapped[bool] = mapped_column(default=True)
    currency: Mapped[str] = mapped_column(String(3))
    opening_balance: Mapped[Decimal] = mapped_column(MONEY)
    closing_balance: Mapped[Decimal] = mapped_column(MONEY)
    entry_count: Mapped[int] = mapped_column(Integer)
    mt940: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivery_state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("account_number", "statement_number", "sequence_number"),
        # The delivery sweep only looks at undelivered statements.
        Index(
            "ix_statements_pending",
            "id",
            postgresql_where=text("delivery_state = 'PENDING'"),
            sqlite_where=text("delivery_state = 'PENDING'"),
        ),
    )


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BIGID, primary_key=True, autoincrement=True)
    account_number: Mapped[str] = mapped_column(String(64))
    # Signed: negative for D/RC, positive for C/RD.
    amount: Mapped[Decimal] = mapped_column(MONEY)
    mark: Mapped[str] = mapped_column(String(2))
    payment_reference: Mapped[str | None] = mapped_column(String(100))
    bank_reference: Mapped[str] = mapped_column(String(40), unique=True)
    return_reason: Mapped[str | None] = mapped_column(String(40))
    # The :86: information, composed once when the entry is booked.
    details: Mapped[str] = mapped_column(Text, default="")
    value_date: Mapped[date] = mapped_column(Date)
    entry_date: Mapped[date] = mapped_column(Date)
    statement_id: Mapped[int | None] = mapped_column(Integer)  # NULL = not yet reported
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        # Latest movements of an account (USSD mini statement).
        Index("ix_ledger_entries_account_id", "account_number", "id"),
        # Statement writing reads only the not-yet-reported entries of one account.
        Index(
            "ix_ledger_entries_unreported",
            "account_number",
            "id",
            postgresql_where=text("statement_id IS NULL"),
            sqlite_where=text("statement_id IS NULL"),
        ),
    )


class PaymentFile(Base):
    """A pain.001 payment file taken in over SFTP, and the pain.002 that answered it.

    The message id (the bridge's batch id, also the file's name) is the key: a file delivered
    again is answered with the stored report and never paid twice. Inserting the row is the
    claim, so two pollers that pick up one file cannot both accept it.
    """

    __tablename__ = "payment_files"

    message_id: Mapped[str] = mapped_column(String(35), primary_key=True)
    file_name: Mapped[str] = mapped_column(String(100))
    content_sha256: Mapped[str] = mapped_column(String(64))
    message_name: Mapped[str | None] = mapped_column(String(35))
    # ACCP, PART, RJCT (the file refused) as in the pain.002; TXRJ: every transaction rejected
    # on its own (the pain.002 then has no group status).
    group_status: Mapped[str] = mapped_column(String(4))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("payment_batches.id"))
    transaction_count: Mapped[int] = mapped_column(Integer, default=0)
    accepted_count: Mapped[int] = mapped_column(Integer, default=0)
    report_id: Mapped[str] = mapped_column(String(35))
    pain002: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# Typed handles on the tables for Core (bulk) statements.
accounts_table = cast(Table, Account.__table__)
fund_blocks_table = cast(Table, FundBlock.__table__)
payments_table = cast(Table, Payment.__table__)
ledger_table = cast(Table, LedgerEntry.__table__)
