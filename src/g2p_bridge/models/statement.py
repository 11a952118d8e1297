"""Bank account statements and what reconciliation learnt from them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Integer, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, column_property, mapped_column

from g2p_bridge.models.base import Amount, Base, UTCDateTime, new_id, utcnow
from g2p_bridge.models.disbursement import Disbursement
from g2p_bridge.models.enums import StatementState


class AccountStatement(Base):
    """One uploaded statement file (it may hold several statements or pages)."""

    __tablename__ = "account_statements"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # The same file uploaded twice is recognised by its hash.
    content_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    filename: Mapped[str | None] = mapped_column(String(256))
    size_bytes: Mapped[int] = mapped_column(Integer)
    # "mt940" or "camt" (camt.053/camt.054), sniffed once from the bytes at upload: the reader
    # that authorized the upload is the one processing uses. Rows from before 0007 are MT940.
    format: Mapped[str] = mapped_column(String(16), default="mt940", server_default="mt940")
    uploaded_by: Mapped[str | None] = mapped_column(String(128))
    # The uploader's authority as its token stated it at upload: the accounts the file names are
    # checked against it again before anything is applied. NULL on rows uploaded before
    # migration 0003, which no longer apply until an administrator vouches for them.
    uploader_role: Mapped[str | None] = mapped_column(String(16))
    uploader_bank_codes: Mapped[str | None] = mapped_column(Text)  # space-separated
    account_number: Mapped[str | None] = mapped_column(String(64), index=True)
    program_mnemonic: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=StatementState.PENDING)
    error_reason: Mapped[str | None] = mapped_column(Text)
    entries_total: Mapped[int] = mapped_column(Integer, default=0)
    entries_matched: Mapped[int] = mapped_column(Integer, default=0)
    entries_reversed: Mapped[int] = mapped_column(Integer, default=0)
    entries_unmatched: Mapped[int] = mapped_column(Integer, default=0)
    # Alarms an operator must see; they never stop the rest of the statement being reconciled.
    balance_problems: Mapped[str | None] = mapped_column(Text)
    sequence_gaps: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_account_statements_due", "state", "next_attempt_at"),)


class StatementAccount(Base):
    """An account a statement file names, as the parser read it at upload. Upload order is kept
    per account: a statement waits only for the older statements of its own accounts."""

    __tablename__ = "statement_accounts"

    statement_id: Mapped[str] = mapped_column(ForeignKey("account_statements.id"), primary_key=True)
    account_number: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index("ix_statement_accounts_account", "account_number", "statement_id"),)


class StatementPage(Base):
    """One :20: block of an MT940 file, or one camt Stmt/Ntfctn: the unit that is numbered and
    must balance."""

    __tablename__ = "statement_pages"

    statement_id: Mapped[str] = mapped_column(ForeignKey("account_statements.id"), primary_key=True)
    page_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_number: Mapped[str] = mapped_column(String(64))
    statement_number: Mapped[str] = mapped_column(String(16))
    sequence_number: Mapped[str | None] = mapped_column(String(16))
    # NULL where the page states no balance (a camt.054 notification has none).
    opening_balance: Mapped[Decimal | None] = mapped_column(Amount)
    closing_balance: Mapped[Decimal | None] = mapped_column(Amount)
    entry_count: Mapped[int] = mapped_column(Integer)
    balance_problem: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_statement_pages_account", "account_number", "statement_number"),)


class DisbursementRecon(Base):
    """What the bank's statements say happened to one disbursement. A row is written with the
    disbursement's remittance, so what the disbursement row holds is read from there, not
    stored twice: its envelope, its bank batch, its amount (a remittance matches the amount
    exactly, or it is an AMOUNT_MISMATCH error and no row is written)."""

    __tablename__ = "disbursement_recons"

    disbursement_id: Mapped[str] = mapped_column(ForeignKey("disbursements.id"), primary_key=True)
    beneficiary_name_from_bank: Mapped[str | None] = mapped_column(String(256))
    remittance_reference_number: Mapped[str | None] = mapped_column(String(64))
    remittance_statement_id: Mapped[str | None] = mapped_column(String(36))
    remittance_statement_number: Mapped[str | None] = mapped_column(String(16))
    remittance_statement_sequence: Mapped[str | None] = mapped_column(String(16))
    remittance_entry_sequence: Mapped[int | None] = mapped_column(Integer)
    remittance_entry_date: Mapped[date | None] = mapped_column(Date)
    remittance_value_date: Mapped[date | None] = mapped_column(Date)
    reversal_statement_id: Mapped[str | None] = mapped_column(String(36))
    reversal_statement_number: Mapped[str | None] = mapped_column(String(16))
    reversal_statement_sequence: Mapped[str | None] = mapped_column(String(16))
    reversal_entry_sequence: Mapped[int | None] = mapped_column(Integer)
    reversal_entry_date: Mapped[date | None] = mapped_column(Date)
    reversal_value_date: Mapped[date | None] = mapped_column(Date)
    reversal_reason: Mapped[str | None] = mapped_column(Text)

    # Read with the row (the status API, the console), never stored on it.
    envelope_id: Mapped[str] = column_property(
        select(Disbursement.envelope_id)
        .where(Disbursement.id == disbursement_id)
        .correlate_except(Disbursement)
        .scalar_subquery()
    )
    bank_batch_id: Mapped[str | None] = column_property(
        select(Disbursement.bank_batch_id)
        .where(Disbursement.id == disbursement_id)
        .correlate_except(Disbursement)
        .scalar_subquery()
    )
    remittance_amount: Mapped[Decimal | None] = column_property(
        select(Disbursement.amount)
        .where(Disbursement.id == disbursement_id, remittance_statement_id.is_not(None))
        .correlate_except(Disbursement)
        .scalar_subquery()
    )
    # Set together with the reversal's statement id, which is never NULL once one is recorded.
    reversal_found: Mapped[bool] = column_property(reversal_statement_id.is_not(None))


class ReconDayTotal(Base):
    """The amounts remitted (``paid``) and reversed (``returned``) per envelope and bank entry
    date, kept by statement processing as it records each remittance and reversal: the
    console's "today" figures read a handful of these rows, not every reconciliation row of a
    payday. A reversal counts the disbursement's amount on the reversal's entry date."""

    __tablename__ = "recon_day_totals"

    entry_date: Mapped[date] = mapped_column(Date, primary_key=True)
    envelope_id: Mapped[str] = mapped_column(
        ForeignKey("disbursement_envelopes.id"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "paid" or "returned"
    amount: Mapped[Decimal] = mapped_column(Amount)


class ReconError(Base):
    """A statement entry that could not be applied, with the reason; the rest of the statement
    still is."""

    __tablename__ = "recon_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    statement_id: Mapped[str] = mapped_column(ForeignKey("account_statements.id"), index=True)
    statement_number: Mapped[str | None] = mapped_column(String(16))
    statement_sequence: Mapped[str | None] = mapped_column(String(16))
    entry_sequence: Mapped[int | None] = mapped_column(Integer)
    entry_date: Mapped[date | None] = mapped_column(Date)
    value_date: Mapped[date | None] = mapped_column(Date)
    error_code: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    disbursement_id: Mapped[str | None] = mapped_column(String(64), index=True)
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal | None] = mapped_column(Amount)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProcessedRequest(Base):
    """The first answer to each (sender, action, message_id), so a replayed request gets it
    again; the digest of the request tells a replay from another request under a reused id."""

    __tablename__ = "processed_requests"

    sender_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The route that answered, not the header's action (which the client writes).
    action: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
