"""camt.053 bank-to-customer statements, written as they stream: what a bank sends the bridge.

The Example Bank drops these in its SFTP outbox; the bridge reads them with :mod:`.camt`. Version
``camt.053.001.08`` (the CBPR+ one), one ``Stmt`` per file, validated against the official schema
in the tests.

What goes where (the inverse of the reader's mapping in docs/banks.md):

* ``ElctrncSeqNb`` is the statement's number in the account's electronic sequence (1, 2, 3, ...
  with no gap), ``LglSeqNb`` the bank's own statement number when it has one;
* balances: ``OPBD`` (opening booked) and ``CLBD`` (closing booked), signed by ``CdtDbtInd``;
* each :class:`StatementLine` is one booked ``Ntry`` with one ``TxDtls``: the end-to-end id (the
  disbursement id) in ``Refs/EndToEndId``, the bank's reference in ``AcctSvcrRef``, the creditor
  in ``RltdPties/Cdtr/Pty/Nm``, the narrative in ``RmtInf/Ustrd`` and, for a returned payment,
  ``RtrInf/Rsn/Cd`` with the ISO return reason (AC01, AC04, ...) and the bank's text.

The header declares the balances before the entries, so they are input and **verified while
streaming**: opening + entries must equal closing, else :class:`~._xml.ISO20022Error` after the
last entry (the caller writes to a temporary name and renames on success, as for pain.001).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import IO

from ._xml import NAMESPACE_PREFIX, ISO20022Error
from .pain001 import IbanAccount, OtherAccount, _check_iban, _esc, _Text

__all__ = [
    "CAMT053_WRITE_VERSIONS",
    "StatementHeader",
    "StatementLine",
    "write_camt053",
]

CAMT053_WRITE_VERSIONS = ("camt.053.001.08",)
_CHUNK = 2000
_MARKS = frozenset({"CRDT", "DBIT"})


@dataclass(frozen=True, slots=True)
class StatementHeader:
    message_id: str  # GrpHdr/MsgId
    created_at: datetime  # timezone-aware
    statement_id: str  # Stmt/Id
    electronic_sequence_number: int
    account: IbanAccount | OtherAccount
    currency: str
    opening_balance: Decimal  # signed: negative is a debit balance
    closing_balance: Decimal
    opening_date: date
    closing_date: date
    legal_sequence_number: int | None = None
    account_owner: str | None = None


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One booked entry with its one transaction. ``amount`` is positive; the direction is
    ``credit_debit`` (``DBIT`` money left the account, ``CRDT`` money came in)."""

    amount: Decimal
    credit_debit: str
    booking_date: date
    value_date: date
    account_servicer_reference: str
    end_to_end_id: str | None = None  # written as NOTPROVIDED when None
    reversal: bool = False  # RvslInd: this entry undoes an earlier one
    # BkTxCd/Domn: domain, family, sub-family (PMNT/ICDT/DMCT: an issued domestic transfer).
    bank_transaction_code: tuple[str, str, str] = ("PMNT", "ICDT", "DMCT")
    return_reason_code: str | None = None  # RtrInf/Rsn/Cd (ExternalReturnReason1Code)
    return_reason_text: str | None = None  # RtrInf/AddtlInf
    creditor_name: str | None = None
    remittance: str | None = None  # RmtInf/Ustrd, at most 140 characters
    additional_info: str | None = None  # AddtlNtryInf

    @property
    def signed_amount(self) -> Decimal:
        return self.amount.copy_negate() if self.credit_debit == "DBIT" else self.amount


def write_camt053(
    out: IO[bytes],
    header: StatementHeader,
    lines: Iterable[StatementLine],
    version: str = "camt.053.001.08",
) -> int:
    """Write one camt.053 holding one statement to the binary file ``out``; returns the number
    of entries. Raises :class:`ISO20022Error` on an invalid value or when the entries do not
    take the opening balance to the closing one (``out`` then holds a partial document)."""
    if version not in CAMT053_WRITE_VERSIONS:
        raise ISO20022Error(
            f"camt.053 version {version!r} is not written here; "
            f"supported: {', '.join(CAMT053_WRITE_VERSIONS)}"
        )
    text = _Text(latin_only=False)
    currency = header.currency
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha()) or (
        not currency.isupper()
    ):
        raise ISO20022Error(f"currency {currency!r} is not an ISO 4217 code")
    if header.created_at.tzinfo is None or header.created_at.utcoffset() is None:
        raise ISO20022Error("creation time must be timezone-aware")
    if header.electronic_sequence_number < 0 or header.electronic_sequence_number >= 10**18:
        raise ISO20022Error("electronic sequence number is out of range")
    created = header.created_at.replace(microsecond=0).isoformat()
    parts = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<Document xmlns="{NAMESPACE_PREFIX}{version}"><BkToCstmrStmt>',
        f"<GrpHdr><MsgId>{_esc(text(header.message_id, 35, 'message id'))}</MsgId>"
        f"<CreDtTm>{created}</CreDtTm></GrpHdr>",
        f"<Stmt><Id>{_esc(text(header.statement_id, 35, 'statement id'))}</Id>",
        f"<ElctrncSeqNb>{header.electronic_sequence_number}</ElctrncSeqNb>",
    ]
    if header.legal_sequence_number is not None:
        parts.append(f"<LglSeqNb>{header.legal_sequence_number}</LglSeqNb>")
    parts.append(f"<CreDtTm>{created}</CreDtTm>")
    parts.append(f"<Acct>{_account(header.account, text)}<Ccy>{currency}</Ccy>")
    if header.account_owner:
        parts.append(f"<Ownr><Nm>{_esc(text(header.account_owner, 140, 'owner'))}</Nm></Ownr>")
    parts.append("</Acct>")
    parts.append(_balance("OPBD", header.opening_balance, currency, header.opening_date))
    parts.append(_balance("CLBD", header.closing_balance, currency, header.closing_date))
    count = 0
    with localcontext() as ctx:
        ctx.prec = 200  # exact however many entries there are
        running = header.opening_balance
        for line in lines:
            count += 1
            try:
                parts.append(_entry(line, currency, text))
            except ISO20022Error as exc:
                raise ISO20022Error(f"entry {count}: {exc.reason}") from None
            running += line.signed_amount
            if len(parts) >= _CHUNK:
                out.write("".join(parts).encode())
                parts.clear()
        if running != header.closing_balance:
            raise ISO20022Error(
                f"statement {header.statement_id}: opening {header.opening_balance} + "
                f"{count} entries = {running}, but the closing balance is "
                f"{header.closing_balance}; the file is not valid"
            )
    parts.append("</Stmt></BkToCstmrStmt></Document>\n")
    out.write("".join(parts).encode())
    return count


def _amount(value: Decimal, currency: str) -> str:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ISO20022Error(f"{value!r} is not a non-negative decimal amount")
    written = f"{value:f}"
    whole, _, fraction = written.partition(".")
    if len(fraction) > 5 or len(whole) + len(fraction) > 18:
        raise ISO20022Error(f"amount {written} does not fit ISO 20022 (18 digits, 5 decimals)")
    return f'<Amt Ccy="{currency}">{written}</Amt>'


def _balance(code: str, signed: Decimal, currency: str, on: date) -> str:
    mark = "DBIT" if signed < 0 else "CRDT"
    return (
        f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>{_amount(abs(signed), currency)}"
        f"<CdtDbtInd>{mark}</CdtDbtInd><Dt><Dt>{on.isoformat()}</Dt></Dt></Bal>"
    )


def _account(account: IbanAccount | OtherAccount, text: _Text) -> str:
    if isinstance(account, IbanAccount):
        return f"<Id><IBAN>{_check_iban(account.iban, 'statement account')}</IBAN></Id>"
    if not isinstance(account, OtherAccount):
        raise ISO20022Error(f"statement account: {type(account).__name__} cannot be used here")
    return f"<Id><Othr><Id>{_esc(text(account.number, 34, 'account number'))}</Id></Othr></Id>"


def _code(value: str, what: str, max_len: int = 4) -> str:
    if not (isinstance(value, str) and 1 <= len(value) <= max_len and value.isascii()):
        raise ISO20022Error(f"{what} {value!r} is not an ISO 20022 code")
    if not value.isalnum() or value.upper() != value:
        raise ISO20022Error(f"{what} {value!r} is not an ISO 20022 code")
    return value


def _entry(line: StatementLine, currency: str, text: _Text) -> str:
    if line.credit_debit not in _MARKS:
        raise ISO20022Error(f"CdtDbtInd {line.credit_debit!r} is neither CRDT nor DBIT")
    amount = _amount(line.amount, currency)
    if line.amount == 0:
        raise ISO20022Error("an entry of zero")
    reference = _esc(text(line.account_servicer_reference, 35, "account servicer reference"))
    domain, family, sub_family = line.bank_transaction_code
    parts = [
        f"<Ntry>{amount}<CdtDbtInd>{line.credit_debit}</CdtDbtInd>",
        "<RvslInd>true</RvslInd>" if line.reversal else "",
        "<Sts><Cd>BOOK</Cd></Sts>",
        f"<BookgDt><Dt>{line.booking_date.isoformat()}</Dt></BookgDt>",
        f"<ValDt><Dt>{line.value_date.isoformat()}</Dt></ValDt>",
        f"<AcctSvcrRef>{reference}</AcctSvcrRef>",
        f"<BkTxCd><Domn><Cd>{_code(domain, 'domain')}</Cd><Fmly><Cd>{_code(family, 'family')}"
        f"</Cd><SubFmlyCd>{_code(sub_family, 'sub-family')}</SubFmlyCd></Fmly></Domn></BkTxCd>",
        "<NtryDtls><TxDtls><Refs>",
        f"<AcctSvcrRef>{reference}</AcctSvcrRef>",
    ]
    end_to_end = line.end_to_end_id
    parts.append(
        "<EndToEndId>"
        + (_esc(text(end_to_end, 35, "end-to-end id")) if end_to_end else "NOTPROVIDED")
        + "</EndToEndId></Refs>"
    )
    parts.append(f"{amount}<CdtDbtInd>{line.credit_debit}</CdtDbtInd>")
    if line.creditor_name:
        name = _esc(text(line.creditor_name, 140, "creditor name"))
        parts.append(f"<RltdPties><Cdtr><Pty><Nm>{name}</Nm></Pty></Cdtr></RltdPties>")
    if line.remittance:
        remittance = _esc(text(line.remittance, 140, "remittance"))
        parts.append(f"<RmtInf><Ustrd>{remittance}</Ustrd></RmtInf>")
    if line.return_reason_code is not None or line.return_reason_text:
        parts.append("<RtrInf>")
        if line.return_reason_code is not None:
            code = _code(line.return_reason_code, "return reason code")
            parts.append(f"<Rsn><Cd>{code}</Cd></Rsn>")
        if line.return_reason_text:
            reason = _esc(text(line.return_reason_text, 105, "return reason text"))
            parts.append(f"<AddtlInf>{reason}</AddtlInf>")
        parts.append("</RtrInf>")
    parts.append("</TxDtls></NtryDtls>")
    if line.additional_info:
        info = _esc(text(line.additional_info, 500, "additional entry information"))
        parts.append(f"<AddtlNtryInf>{info}</AddtlNtryInf>")
    parts.append("</Ntry>")
    return "".join(parts)
