"""A statement file's format, sniffed once from its bytes, and its pages in one neutral shape.

Upload authorization and processing both read a file through :func:`read_pages` with the
format stored at upload, so what was authorized is what is applied, whatever the format:
MT940 through ``formats.mt940`` (its header reading at upload, its full reading later: the same
parse), camt.053/camt.054 through ``formats.iso20022`` and its reconciliation adapter. The
reconciliation rules themselves know no format (core/reconciliation.py).
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from g2p_bridge.formats.iso20022 import (
    ISO20022Error,
    ReconEntry,
    iter_camt,
    to_recon_statement,
)
from g2p_bridge.formats.iso20022.camt import CamtStatement
from g2p_bridge.formats.mt940 import (
    Entry,
    MT940Error,
    Statement,
    iter_statement_headers,
    iter_statements,
)

__all__ = [
    "CAMT",
    "MT940",
    "UNREADABLE",
    "FileEntry",
    "Page",
    "describe",
    "read_pages",
    "sniff_format",
]

MT940 = "mt940"
CAMT = "camt"
# What a reader raises for a file it cannot trust: such a file is refused, never retried.
UNREADABLE = (MT940Error, ISO20022Error)

FileEntry = Entry | ReconEntry


@dataclass(frozen=True, slots=True)
class Page:
    """One MT940 :20: block or one camt Stmt/Ntfctn. Balances are signed and None where the
    page states none (a camt.054); ``currency`` is the one its balances (else its account) are
    in, None when it names none; ``currencies`` all of those."""

    format: str
    reference: str
    account: str
    statement_number: str
    sequence_number: str | None
    opening: Decimal | None
    closing: Decimal | None
    currency: str | None
    currencies: frozenset[str]
    balance_problem: str | None
    entries: tuple[FileEntry, ...]


def sniff_format(content: bytes) -> str:
    """CAMT for an XML document (its first character, after a BOM and blanks, is "<"), else
    MT940. Never "<" at the start of an MT940 file; a non-camt XML document goes to the camt
    reader all the same, which refuses it by its namespace."""
    head = content[:1024].removeprefix(codecs.BOM_UTF8).lstrip()
    return CAMT if head.startswith(b"<") else MT940


def describe(fmt: str) -> str:
    return "camt.053/camt.054" if fmt == CAMT else "MT940"


def read_pages(content: bytes, fmt: str, with_entries: bool = True) -> Iterator[Page]:
    """The pages of a stored file, read by its format's reader. Without entries: what an
    upload needs to authorize the file, from the same reading (every entry is still read and
    checked). Raises one of :data:`UNREADABLE` for a file the reader refuses."""
    if fmt == CAMT:
        for statement in iter_camt(io.BytesIO(content)):
            yield _camt_page(statement, with_entries)
        return
    reader = iter_statements if with_entries else iter_statement_headers
    for page in reader(content):
        yield _mt940_page(page)


def _mt940_page(page: Statement) -> Page:
    opening, closing = page.opening_balance, page.closing_balance
    return Page(
        format=MT940,
        reference=page.transaction_reference,
        account=page.account,
        statement_number=page.statement_number,
        sequence_number=page.sequence_number,
        opening=opening.signed_amount,
        closing=closing.signed_amount,
        currency=opening.currency,
        currencies=frozenset({opening.currency, closing.currency}),
        balance_problem=page.balance_problem(),
        entries=page.entries,
    )


def _camt_page(statement: CamtStatement, with_entries: bool) -> Page:
    # The adapter also refuses a batch entry whose transactions cannot be told apart: at upload
    # as at processing.
    recon = to_recon_statement(statement)
    balances = [b for b in (statement.opening_balance, statement.closing_balance) if b]
    currencies = {b.currency for b in balances}
    if statement.account_currency:
        currencies.add(statement.account_currency)
    sequence = statement.electronic_sequence_number
    return Page(
        format=CAMT,
        reference=statement.statement_id,
        account=statement.account,
        # ElctrncSeqNb is the number the bank keeps consecutive per account, as MT940's :28C:;
        # a notification without one has no number (LglSeqNb is another series, Id no number).
        statement_number="" if sequence is None else str(sequence),
        sequence_number=None,
        opening=recon.opening_balance.signed_amount if recon.opening_balance else None,
        closing=recon.closing_balance.signed_amount if recon.closing_balance else None,
        currency=balances[0].currency if balances else statement.account_currency,
        currencies=frozenset(currencies),
        balance_problem=recon.balance_problem(),
        entries=recon.entries if with_entries else (),
    )
