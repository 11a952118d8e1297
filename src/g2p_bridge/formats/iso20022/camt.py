"""camt.053 bank-to-customer statements and camt.054 debit/credit notifications, streamed.

Supported: ``camt.053.001.02`` (what many banks still send), ``camt.053.001.08`` (the CBPR+
version) and ``camt.054.001.08``. The file is read with :func:`._xml.secure_events`; each
statement (``Stmt``) or notification (``Ntfctn``) is yielded once it ends, and each entry's
elements are freed as soon as the entry has been read, so memory is bounded by the largest
statement's entries as small dataclasses, never by the XML tree (as with MT940, where one page is
the unit).

What is read is exactly what the bank sent: pending entries are kept (with their status) and so
are entries without details; :meth:`CamtStatement.balance_problem` and the reconciliation adapter
(:mod:`.reconciliation`) decide what counts. Anything malformed in the fields read here (an amount
that is not a number, a CdtDbtInd that is neither CRDT nor DBIT, a missing account) is refused
with :class:`ISO20022Error` naming the statement and entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import IO

from lxml import etree

from ._xml import (
    DEFAULT_LIMITS,
    Index,
    ISO20022Error,
    Limits,
    Paths,
    parse_amount,
    parse_date,
    parse_datetime,
    parse_number,
    secure_events,
)

__all__ = [
    "CAMT_VERSIONS",
    "CamtBalance",
    "CamtEntry",
    "CamtStatement",
    "CamtTransaction",
    "iter_camt",
]

CAMT_VERSIONS: dict[str, frozenset[str]] = {
    "camt.053": frozenset({"camt.053.001.02", "camt.053.001.08"}),
    "camt.054": frozenset({"camt.054.001.08"}),
}
_CONTAINER = {"camt.053": "BkToCstmrStmt", "camt.054": "BkToCstmrDbtCdtNtfctn"}
_REPORT = {"camt.053": "Stmt", "camt.054": "Ntfctn"}
_MARKS = frozenset({"CRDT", "DBIT"})
_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}
_DETAILS = frozenset({"NtryDtls"})


@dataclass(frozen=True, slots=True)
class CamtBalance:
    type_code: str  # OPBD, CLBD, PRCD, ITBD, CLAV, ...
    amount: Decimal
    currency: str
    credit_debit: str  # "CRDT" or "DBIT"
    date: date | None

    @property
    def signed_amount(self) -> Decimal:
        # copy_negate is exact; unary minus would round to the context precision.
        return self.amount.copy_negate() if self.credit_debit == "DBIT" else self.amount


@dataclass(frozen=True, slots=True)
class CamtTransaction:
    """One ``TxDtls``: in a batch-booked entry, one of many payments."""

    end_to_end_id: str | None  # None also when the bank wrote NOTPROVIDED
    amount: Decimal | None  # in the account's currency; None when the bank gave none
    currency: str | None
    account_servicer_reference: str | None = None
    instruction_id: str | None = None
    payment_information_id: str | None = None
    return_reason_code: str | None = None  # RtrInf/Rsn/Cd (or Prtry)
    return_reason_text: str | None = None  # RtrInf/AddtlInf lines joined with a blank
    creditor_name: str | None = None
    debtor_name: str | None = None
    remittance: str | None = None  # RmtInf/Ustrd lines joined with a blank


@dataclass(frozen=True, slots=True)
class CamtEntry:
    """One ``Ntry``."""

    sequence: int  # 1-based position in its statement
    amount: Decimal
    currency: str
    credit_debit: str  # "CRDT" or "DBIT": the direction money actually moved
    reversal: bool  # RvslInd: this entry undoes an earlier one of the other direction
    status: str  # BOOK, PDNG, INFO (.08 may carry a proprietary status)
    booking_date: date | None
    value_date: date | None
    bank_reference: str | None  # AcctSvcrRef
    entry_reference: str | None = None  # NtryRef
    bank_transaction_code: str | None = None  # "PMNT/ICDT/DMCT" or the proprietary code
    additional_info: str | None = None  # AddtlNtryInf
    transactions: tuple[CamtTransaction, ...] = ()

    @property
    def is_booked(self) -> bool:
        return self.status == "BOOK"

    @property
    def signed_amount(self) -> Decimal:
        return self.amount.copy_negate() if self.credit_debit == "DBIT" else self.amount


@dataclass(frozen=True, slots=True)
class CamtStatement:
    """One ``Stmt`` of a camt.053 or ``Ntfctn`` of a camt.054."""

    message_name: str  # "camt.053.001.08"
    message_id: str  # GrpHdr/MsgId
    statement_id: str  # Stmt/Id
    electronic_sequence_number: int | None
    legal_sequence_number: int | None
    created_at: datetime | None
    account_iban: str | None
    account_other_id: str | None
    account_currency: str | None
    balances: tuple[CamtBalance, ...]
    entries: tuple[CamtEntry, ...]

    @property
    def account(self) -> str:
        return self.account_iban or self.account_other_id or ""

    @property
    def opening_balance(self) -> CamtBalance | None:
        """OPBD; PRCD (the previous closing) where a bank sends that instead."""
        return _balance(self.balances, "OPBD") or _balance(self.balances, "PRCD")

    @property
    def closing_balance(self) -> CamtBalance | None:
        return _balance(self.balances, "CLBD")

    def balance_problem(self) -> str | None:
        """None when opening + booked entries == closing (or when there are no balances, as in
        a camt.054), else what is wrong. Pending and information-only entries do not count."""
        opening, closing = self.opening_balance, self.closing_balance
        if opening is None and closing is None:
            return None
        label = f"statement {self.statement_id}"
        if opening is None or closing is None:
            missing = "opening (OPBD/PRCD)" if opening is None else "closing (CLBD)"
            return f"{label}: has no {missing} balance"
        if opening.currency != closing.currency:
            return (
                f"{label}: opening balance is in {opening.currency} "
                f"but closing balance is in {closing.currency}"
            )
        booked = [e for e in self.entries if e.is_booked]
        for entry in booked:
            if entry.currency != opening.currency:
                return (
                    f"{label}: entry {entry.sequence} is in {entry.currency}, "
                    f"the balances in {opening.currency}"
                )
        with localcontext() as ctx:
            ctx.prec = 200  # exact however many entries there are
            movement = sum((e.signed_amount for e in booked), Decimal(0))
            expected = opening.signed_amount + movement
            difference = closing.signed_amount - expected
        if difference == 0:
            return None
        return (
            f"{label}: opening {opening.signed_amount} {opening.currency} + {len(booked)} "
            f"booked entries totalling {movement} = {expected}, but closing balance is "
            f"{closing.signed_amount} (difference {difference})"
        )


def _balance(balances: tuple[CamtBalance, ...], code: str) -> CamtBalance | None:
    return next((b for b in balances if b.type_code == code), None)


def iter_camt(source: IO[bytes], limits: Limits = DEFAULT_LIMITS) -> Iterator[CamtStatement]:
    """Yield each statement or notification of the camt.053/054 file ``source`` (opened binary).

    Raises :class:`ISO20022Error` for anything this reader does not accept, including a file
    that is not one of :data:`CAMT_VERSIONS`.
    """
    paths: Paths | None = None
    message_id: str | None = None
    builder: _StatementBuilder | None = None
    for event, element, depth, message in secure_events(source, CAMT_VERSIONS, limits):
        if paths is None:
            paths = Paths(message.namespace)
        if depth == 2:
            if event == "start" and paths.local(element) != _CONTAINER[message.message]:
                raise ISO20022Error(
                    f"{message} document holds {etree.QName(element).localname}, "
                    f"not {_CONTAINER[message.message]}"
                )
        elif depth == 3:
            local = paths.local(element)
            if event == "start":
                if local == _REPORT[message.message]:
                    if message_id is None:
                        raise ISO20022Error(f"{message}: {local} before the group header MsgId")
                    builder = _StatementBuilder(paths, message.name, message_id)
                continue
            if local == "GrpHdr":
                message_id = paths.text(element, "MsgId")
                if message_id is None:
                    raise ISO20022Error(f"{message}: the group header has no MsgId")
            elif local == _REPORT[message.message] and builder is not None:
                yield builder.finish()
                builder = None
            _free(element)
        elif depth == 4 and event == "end" and builder is not None:
            builder.add(paths.local(element), element)
            _free(element)


def _free(element: etree._Element) -> None:
    """Drop a read element and its already-read siblings so the tree does not grow."""
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


class _StatementBuilder:
    def __init__(self, paths: Paths, message_name: str, message_id: str) -> None:
        self.p = paths
        self.message_name = message_name
        self.message_id = message_id
        self.statement_id: str | None = None
        self.electronic: int | None = None
        self.legal: int | None = None
        self.created_at: datetime | None = None
        self.iban: str | None = None
        self.other_id: str | None = None
        self.currency: str | None = None
        self.has_account = False
        self.balances: list[CamtBalance] = []
        self.entries: list[CamtEntry] = []

    def where(self) -> str:
        return f"{self.message_name} statement {self.statement_id or '(no Id yet)'}"

    def add(self, local: str, element: etree._Element) -> None:
        p = self.p
        if local == "Id":
            self.statement_id = (element.text or "").strip() or None
        elif local == "ElctrncSeqNb":
            self.electronic = parse_number(element.text, f"{self.where()}: ElctrncSeqNb")
        elif local == "LglSeqNb":
            self.legal = parse_number(element.text, f"{self.where()}: LglSeqNb")
        elif local == "CreDtTm":
            self.created_at = parse_datetime(element.text, f"{self.where()}: CreDtTm")
        elif local == "Acct":
            self.has_account = True
            found = p.index(element)
            self.iban = found.text("Id/IBAN")
            self.other_id = found.text("Id/Othr/Id")
            self.currency = found.text("Ccy")
        elif local == "Bal":
            self.balances.append(self._balance(element))
        elif local == "Ntry":
            self.entries.append(self._entry(element, len(self.entries) + 1))

    def finish(self) -> CamtStatement:
        where = self.where()
        if self.statement_id is None:
            raise ISO20022Error(f"{where}: the statement has no Id")
        if not self.has_account or not (self.iban or self.other_id):
            raise ISO20022Error(f"{where}: no account (Acct/Id/IBAN or Acct/Id/Othr/Id)")
        for code in ("OPBD", "PRCD", "CLBD"):
            if sum(1 for b in self.balances if b.type_code == code) > 1:
                raise ISO20022Error(f"{where}: more than one {code} balance")
        return CamtStatement(
            message_name=self.message_name,
            message_id=self.message_id,
            statement_id=self.statement_id,
            electronic_sequence_number=self.electronic,
            legal_sequence_number=self.legal,
            created_at=self.created_at,
            account_iban=self.iban,
            account_other_id=self.other_id,
            account_currency=self.currency,
            balances=tuple(self.balances),
            entries=tuple(self.entries),
        )

    def _amount(self, found: Index, path: str, where: str) -> tuple[Decimal, str]:
        element = found.element(path)
        if element is None:
            raise ISO20022Error(f"{where}: no {path}")
        currency = (element.get("Ccy") or "").strip()
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise ISO20022Error(f"{where}: {path} has no valid Ccy attribute ({currency!r})")
        return parse_amount(element.text, f"{where}: {path}"), currency

    def _mark(self, found: Index, where: str) -> str:
        mark = found.text("CdtDbtInd")
        if mark not in _MARKS:
            raise ISO20022Error(f"{where}: CdtDbtInd {mark!r} is neither CRDT nor DBIT")
        return mark

    def _date(self, found: Index, path: str, where: str) -> date | None:
        day = found.text(f"{path}/Dt")
        if day is not None:
            return parse_date(day, f"{where}: {path}/Dt")
        moment = found.text(f"{path}/DtTm")
        if moment is not None:
            return parse_datetime(moment, f"{where}: {path}/DtTm").date()
        return None

    def _balance(self, element: etree._Element) -> CamtBalance:
        where = f"{self.where()} balance {len(self.balances) + 1}"
        found = self.p.index(element)
        code = found.text("Tp/CdOrPrtry/Cd") or found.text("Tp/CdOrPrtry/Prtry")
        if code is None:
            raise ISO20022Error(f"{where}: no balance type (Tp/CdOrPrtry)")
        amount, currency = self._amount(found, "Amt", where)
        return CamtBalance(
            type_code=code,
            amount=amount,
            currency=currency,
            credit_debit=self._mark(found, where),
            date=self._date(found, "Dt", where),
        )

    def _entry(self, element: etree._Element, sequence: int) -> CamtEntry:
        where = f"{self.where()} entry {sequence}"
        # The details are indexed per transaction below, not as part of the entry.
        found = self.p.index(element, skip=_DETAILS)
        amount, currency = self._amount(found, "Amt", where)
        raw_reversal = found.text("RvslInd")
        reversal = False
        if raw_reversal is not None:
            if raw_reversal not in _BOOLEAN:
                raise ISO20022Error(f"{where}: RvslInd {raw_reversal!r} is not true or false")
            reversal = _BOOLEAN[raw_reversal]
        # .02 writes the status code as the element's text, .08 inside Cd (or Prtry).
        status = found.text("Sts") or found.text("Sts/Cd") or found.text("Sts/Prtry")
        if status is None:
            raise ISO20022Error(f"{where}: no status (Sts)")
        domain = found.text("BkTxCd/Domn/Cd")
        if domain is not None:
            family = found.text("BkTxCd/Domn/Fmly/Cd") or ""
            sub_family = found.text("BkTxCd/Domn/Fmly/SubFmlyCd") or ""
            code: str | None = "/".join((domain, family, sub_family))
        else:
            code = found.text("BkTxCd/Prtry/Cd")
        transactions = tuple(
            self._transaction(self.p.index(tx), f"{where} transaction {index}", currency)
            for index, tx in enumerate(element.iterfind(self.p("NtryDtls/TxDtls")), 1)
        )
        return CamtEntry(
            sequence=sequence,
            amount=amount,
            currency=currency,
            credit_debit=self._mark(found, where),
            reversal=reversal,
            status=status,
            booking_date=self._date(found, "BookgDt", where),
            value_date=self._date(found, "ValDt", where),
            bank_reference=found.text("AcctSvcrRef"),
            entry_reference=found.text("NtryRef"),
            bank_transaction_code=code,
            additional_info=found.text("AddtlNtryInf"),
            transactions=transactions,
        )

    def _transaction(self, found: Index, where: str, entry_currency: str) -> CamtTransaction:
        amount: Decimal | None = None
        currency: str | None = None
        # The amount in the account's currency first; the instructed amount only when it is in
        # that currency too (a foreign-currency instructed amount is not what was booked).
        for path in ("Amt", "AmtDtls/TxAmt/Amt", "AmtDtls/InstdAmt/Amt"):
            if found.element(path) is not None:
                found_amount, found_currency = self._amount(found, path, where)
                if path != "AmtDtls/InstdAmt/Amt" or found_currency == entry_currency:
                    amount, currency = found_amount, found_currency
                    break
        end_to_end = found.text("Refs/EndToEndId")
        if end_to_end == "NOTPROVIDED":
            end_to_end = None
        return CamtTransaction(
            end_to_end_id=end_to_end,
            amount=amount,
            currency=currency,
            account_servicer_reference=found.text("Refs/AcctSvcrRef"),
            instruction_id=found.text("Refs/InstrId"),
            payment_information_id=found.text("Refs/PmtInfId"),
            return_reason_code=found.text("RtrInf/Rsn/Cd") or found.text("RtrInf/Rsn/Prtry"),
            return_reason_text=" ".join(found.texts("RtrInf/AddtlInf")) or None,
            # .08 wraps the party in Pty (Party40Choice); .02 names it directly.
            creditor_name=found.text("RltdPties/Cdtr/Pty/Nm") or found.text("RltdPties/Cdtr/Nm"),
            debtor_name=found.text("RltdPties/Dbtr/Pty/Nm") or found.text("RltdPties/Dbtr/Nm"),
            remittance=" ".join(found.texts("RmtInf/Ustrd")) or None,
        )
