"""Statements as files for the SFTP outbox: camt.053 (and MT940 where a bank profile wants it).

A statement page is written by :func:`example_bank.processing.write_statements` as for the HTTP
channel; this module only renders a stored page as a file, from the page's row and its ledger
entries, so the same page always gives the same bytes (a file written again after a crash is
the file the bridge may already have).

camt.053's ``ElctrncSeqNb`` is the page's position among its account's pages (1, 2, 3, ...), so
the bridge sees a gap-free electronic sequence per account however pages are split; the bank's
own statement number is ``LglSeqNb``. Returned payments carry the ISO return reason
(``RtrInf/Rsn/Cd``) for the bank's failure reason, with the bank's own code as text.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from example_bank.models import (
    CREDIT,
    DEBIT,
    REVERSAL_CREDIT,
    REVERSAL_DEBIT,
    Account,
    LedgerEntry,
    Payment,
    Statement,
)
from example_bank.processing import CURRENCY_MISMATCH
from example_bank.settings import StatementFormat
from g2p_bridge.formats.iso20022 import (
    OtherAccount,
    StatementHeader,
    StatementLine,
    write_camt053,
)

# The bank's failure reasons (processing.FAILURE_REASONS and the own-bank ones) as ISO 20022
# ExternalReturnReason1Code values.
ISO_RETURN_REASONS = {
    "ACCOUNT_CLOSED": "AC04",
    "ACCOUNT_NOT_FOUND": "AC01",
    "ACCOUNT_DORMANT": "AC06",  # blocked account
    "BENEFICIARY_DECEASED": "MD07",
    CURRENCY_MISMATCH: "AM03",
}
SUFFIXES: dict[StatementFormat, str] = {"camt053": ".camt053.xml", "mt940": ".sta"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_CHUNK = 2000


def electronic_sequence_number(session: Session, statement: Statement) -> int:
    """The page's place among its account's pages (pages are never deleted, ids only grow)."""
    return int(
        session.scalar(
            select(func.count()).where(
                Statement.account_number == statement.account_number,
                Statement.id <= statement.id,
            )
        )
        or 0
    )


def statement_file_name(account_number: str, sequence: int, file_format: StatementFormat) -> str:
    return f"{_UNSAFE.sub('_', account_number)}-{sequence:06d}{SUFFIXES[file_format]}"


def render_statement_file(
    session: Session, statement: Statement, file_format: StatementFormat, sequence: int
) -> bytes:
    if file_format == "mt940":
        return statement.mt940.encode()
    account = session.get(Account, statement.account_number)
    owner = account.holder_name if account is not None else None
    created = statement.created_at
    out = io.BytesIO()
    write_camt053(
        out,
        StatementHeader(
            message_id=f"EBSTMT{statement.id:012d}",
            created_at=created,
            statement_id=f"EB{statement.id:014d}",
            electronic_sequence_number=sequence,
            legal_sequence_number=statement.statement_number,
            account=OtherAccount(statement.account_number),
            currency=statement.currency,
            opening_balance=statement.opening_balance,
            closing_balance=statement.closing_balance,
            opening_date=created.date(),
            closing_date=created.date(),
            account_owner=owner[:140] if owner else None,
        ),
        _lines(session, statement.id),
    )
    return out.getvalue()


def _lines(session: Session, statement_id: int) -> Iterator[StatementLine]:
    """The page's entries in booking order, read in id-ordered chunks (memory stays flat)."""
    last_id = 0
    while True:
        rows = session.execute(
            select(
                LedgerEntry.id,
                LedgerEntry.amount,
                LedgerEntry.mark,
                LedgerEntry.payment_reference,
                LedgerEntry.bank_reference,
                LedgerEntry.return_reason,
                LedgerEntry.value_date,
                LedgerEntry.entry_date,
                Payment.beneficiary_name,
                Payment.narrative_1,
            )
            .outerjoin(Payment, Payment.payment_reference_number == LedgerEntry.payment_reference)
            .where(LedgerEntry.statement_id == statement_id, LedgerEntry.id > last_id)
            .order_by(LedgerEntry.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        for row in rows:
            yield _line(row)
        last_id = rows[-1].id


def _line(row: Row[Any, *tuple[Any, ...]]) -> StatementLine:
    mark: str = row.mark
    reason: str | None = row.return_reason
    common: dict[str, Any] = {
        "amount": abs(row.amount),
        "booking_date": row.entry_date,
        "value_date": row.value_date,
        "account_servicer_reference": row.bank_reference,
        "end_to_end_id": row.payment_reference or None,
    }
    name: str | None = row.beneficiary_name
    remittance: str | None = row.narrative_1
    if mark == DEBIT:
        return StatementLine(
            credit_debit="DBIT",
            creditor_name=name[:140] if name else None,
            remittance=remittance[:140] if remittance else None,
            **common,
        )
    if mark == REVERSAL_DEBIT:
        # A returned payment, booked as a new credit with the return reason.
        return StatementLine(
            credit_debit="CRDT",
            bank_transaction_code=("PMNT", "ICDT", "RRTN"),
            return_reason_code=ISO_RETURN_REASONS.get(reason or "", "NARR"),
            return_reason_text=reason[:105] if reason else None,
            creditor_name=name[:140] if name else None,
            **common,
        )
    if mark == REVERSAL_CREDIT:
        return StatementLine(
            credit_debit="DBIT",
            reversal=True,
            bank_transaction_code=("PMNT", "RCDT", "RRTN"),
            **common,
        )
    if mark != CREDIT:
        raise ValueError(f"ledger entry mark {mark!r} is not one this bank books")
    return StatementLine(
        credit_debit="CRDT",
        bank_transaction_code=("PMNT", "RCDT", "DMCT"),
        **common,
    )
