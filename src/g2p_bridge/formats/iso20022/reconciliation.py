"""camt statements in the shape the reconciliation core reads MT940 in, so its rules live once.

The core (``core/statements.py``) reads, per statement page: ``account``, ``statement_number``,
``sequence_number``, the balances and ``balance_problem()``; per entry: ``mark`` ("D", "RD",
anything else is skipped), ``amount``, ``sequence``, ``entry_date``, ``value_date``,
``bank_reference``, and, through the bank connector, ``customer_reference`` (the disbursement
id) and ``subfields()`` (``NAME`` for the beneficiary, ``RTRN`` for the reversal reason).
:class:`ReconStatement` and :class:`ReconEntry` carry exactly those names, so the same code
applies camt and MT940 alike; nothing here imports the core.

Mapping (docs/banks.md has the table):

* only booked entries (``Sts`` BOOK) are mapped; pending and information-only ones are dropped;
* ``DBIT`` without ``RvslInd`` is ``D`` (a payment left the account);
* ``CRDT`` with ``RvslInd=true`` (the bank undid a debit), or ``CRDT`` whose transaction has
  ``RtrInf`` (a return of a payment, booked as a new credit), is ``RD``; its reason is the ISO
  return reason code and the bank's text (``RtrInf/Rsn/Cd`` + ``AddtlInf``, e.g. "AC04 account
  closed"), in ``reversal_reason`` and in ``subfields()["RTRN"]``;
* ``DBIT`` with ``RvslInd=true`` is ``RC``; any other ``CRDT`` is ``C``;
* an entry with several ``TxDtls`` (batch booking) becomes one entry per transaction, each with
  its own amount and ``EndToEndId``; the transactions' amounts, where given, must add up to the
  entry's (for a single transaction too), else :meth:`ReconStatement.balance_problem` says so;
* ``customer_reference`` is ``EndToEndId`` ("" when absent or NOTPROVIDED);
* ``statement_number`` is ``ElctrncSeqNb``, else ``LglSeqNb``, else the statement ``Id`` (a
  camt.054 often has none of the numbers); gaps per account: :func:`sequence_gaps`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from itertools import pairwise

from ._xml import ISO20022Error
from .camt import CamtBalance, CamtEntry, CamtStatement, CamtTransaction

__all__ = [
    "ReconBalance",
    "ReconEntry",
    "ReconStatement",
    "sequence_gaps",
    "to_recon_statement",
]


@dataclass(frozen=True, slots=True)
class ReconBalance:
    """As ``mt940.Balance``: mark "C" or "D", with the same ``signed_amount``."""

    mark: str
    date: date | None
    currency: str
    amount: Decimal
    is_final: bool = True

    @property
    def signed_amount(self) -> Decimal:
        return self.amount.copy_negate() if self.mark == "D" else self.amount


@dataclass(frozen=True, slots=True)
class ReconEntry:
    """As ``mt940.Entry``, with the camt facts the MT940 narrative would otherwise carry."""

    sequence: int
    value_date: date | None
    entry_date: date | None  # the booking date
    mark: str  # "C", "D", "RC" or "RD"
    amount: Decimal
    currency: str
    customer_reference: str  # EndToEndId: the disbursement id
    bank_reference: str | None  # TxDtls/Refs/AcctSvcrRef, else Ntry/AcctSvcrRef
    transaction_type: str | None = None  # BkTxCd
    beneficiary_name: str | None = None  # RltdPties/Cdtr name
    reversal_reason: str | None = None  # "AC04 account closed"
    return_reason_code: str | None = None
    return_reason_text: str | None = None
    details: str = ""  # remittance, else AddtlNtryInf
    funds_code: str | None = None
    supplementary_details: str | None = None
    raw_date_warning: str | None = None

    @property
    def signed_amount(self) -> Decimal:
        return self.amount.copy_negate() if self.mark in ("D", "RC") else self.amount

    @property
    def is_reversal(self) -> bool:
        return self.mark in ("RC", "RD")

    def subfields(self) -> dict[str, str]:
        """The MT940 ``/CODE/value`` vocabulary the bank connectors already read."""
        fields = {"EREF": self.customer_reference}
        if self.beneficiary_name:
            fields["NAME"] = self.beneficiary_name
        if self.reversal_reason:
            fields["RTRN"] = self.reversal_reason
        if self.details:
            fields["REMI"] = self.details
        return {key: value for key, value in fields.items() if value}


@dataclass(frozen=True, slots=True)
class ReconStatement:
    transaction_reference: str  # Stmt/Id
    account: str
    statement_number: str
    opening_balance: ReconBalance | None
    closing_balance: ReconBalance | None
    entries: tuple[ReconEntry, ...]
    source: CamtStatement
    related_reference: str | None = None
    sequence_number: str | None = None
    information: str | None = None
    problems: tuple[str, ...] = ()  # batch entries whose transactions do not add up

    def balance_problem(self) -> str | None:
        """None when the statement balances and every batch entry adds up, else what is wrong.

        The balance is checked on the bank's own entries (the camt ``Ntry`` amounts), so a
        batch whose transactions are wrong is reported as such rather than as a balance error.
        """
        if self.problems:
            return "; ".join(self.problems)
        return self.source.balance_problem()


def _balance(balance: CamtBalance | None) -> ReconBalance | None:
    if balance is None:
        return None
    return ReconBalance(
        mark="D" if balance.credit_debit == "DBIT" else "C",
        date=balance.date,
        currency=balance.currency,
        amount=balance.amount,
    )


def _mark(entry: CamtEntry, transaction: CamtTransaction | None) -> str:
    if entry.credit_debit == "DBIT":
        return "RC" if entry.reversal else "D"
    if entry.reversal or (transaction is not None and transaction.return_reason_code):
        return "RD"
    return "C"


def to_recon_statement(statement: CamtStatement) -> ReconStatement:
    """Map one camt statement or notification; raises :class:`ISO20022Error` when a batch entry
    has a transaction without an amount (it cannot be matched to a disbursement)."""
    entries: list[ReconEntry] = []
    problems: list[str] = []
    label = f"statement {statement.statement_id}"
    for entry in statement.entries:
        if not entry.is_booked:
            continue
        transactions: tuple[CamtTransaction | None, ...] = entry.transactions or (None,)
        missing = [i for i, t in enumerate(transactions, 1) if t is None or t.amount is None]
        if missing and len(transactions) > 1:
            raise ISO20022Error(
                f"{label} entry {entry.sequence}: batch of {len(transactions)} transactions "
                f"where transaction {missing[0]} has no amount"
            )
        if not missing:
            # Also for a single transaction: an amount that differs from its entry's (charges
            # taken from the payment, say) must not reconcile silently.
            with localcontext() as ctx:
                ctx.prec = 200
                total = sum((t.amount for t in transactions if t and t.amount), Decimal(0))
            if total != entry.amount:
                problems.append(
                    f"{label} entry {entry.sequence}: its {len(transactions)} transaction(s) "
                    f"total {total}, the entry {entry.amount} {entry.currency}"
                )
        for transaction in transactions:
            entries.append(_entry(entry, transaction, len(entries) + 1))
    if statement.electronic_sequence_number is not None:
        number = str(statement.electronic_sequence_number)
    elif statement.legal_sequence_number is not None:
        number = str(statement.legal_sequence_number)
    else:
        number = statement.statement_id
    return ReconStatement(
        transaction_reference=statement.statement_id,
        account=statement.account,
        statement_number=number,
        opening_balance=_balance(statement.opening_balance),
        closing_balance=_balance(statement.closing_balance),
        entries=tuple(entries),
        source=statement,
        problems=tuple(problems),
    )


def _entry(entry: CamtEntry, tx: CamtTransaction | None, sequence: int) -> ReconEntry:
    mark = _mark(entry, tx)
    amount = entry.amount
    currency = entry.currency
    if tx is not None and tx.amount is not None and tx.currency is not None:
        amount, currency = tx.amount, tx.currency
    reason: str | None = None
    code = text = None
    if tx is not None:
        code, text = tx.return_reason_code, tx.return_reason_text
    if mark in ("RD", "RC"):
        # A reversal without RtrInf still has the bank's entry text to show.
        reason = " ".join(part for part in (code, text) if part) or entry.additional_info
    details = (tx.remittance if tx is not None else None) or entry.additional_info or ""
    return ReconEntry(
        sequence=sequence,
        value_date=entry.value_date,
        entry_date=entry.booking_date,
        mark=mark,
        amount=amount,
        currency=currency,
        customer_reference=(tx.end_to_end_id if tx is not None else None) or "",
        bank_reference=(tx.account_servicer_reference if tx is not None else None)
        or entry.bank_reference,
        transaction_type=entry.bank_transaction_code,
        beneficiary_name=tx.creditor_name if tx is not None else None,
        reversal_reason=reason,
        return_reason_code=code,
        return_reason_text=text,
        details=details,
    )


def sequence_gaps(statements: Iterable[CamtStatement]) -> list[str]:
    """One message per account whose ``ElctrncSeqNb`` values skip numbers, e.g.
    ``"account KE12...: electronic sequence numbers missing: 4, 5"``."""
    numbers: dict[str, set[int]] = defaultdict(set)
    for statement in statements:
        if statement.electronic_sequence_number is not None:
            numbers[statement.account].add(statement.electronic_sequence_number)
    problems = []
    for account in sorted(numbers):
        ordered = sorted(numbers[account])
        missing = [n for a, b in pairwise(ordered) for n in range(a + 1, min(b, a + 22))]
        if missing:
            shown = ", ".join(str(n) for n in missing[:20]) + (" ..." if len(missing) > 20 else "")
            problems.append(f"account {account}: electronic sequence numbers missing: {shown}")
    return problems
