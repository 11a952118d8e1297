"""pain.001 customer credit transfer initiation, read as it streams: what a bank does with ours.

The Example Bank takes its SFTP payment files in through this reader; nothing in the bridge needs
it. It reads both versions :mod:`.pain001` writes (``pain.001.001.09`` and ``.03``) into the same
dataclasses the writer takes (:class:`~.pain001.CreditTransfer` and its accounts and agents), so
a file written and read back compares equal, field by field.

:func:`iter_pain001` yields the group header, then for each ``PmtInf`` its head followed by its
transactions, one by one; memory stays bounded by one transaction's subtree (read elements are
freed) plus the set of end-to-end ids seen, kept to refuse a repeated one. The totals a file
declares can only be checked once every transaction has been read, so the generator raises
:class:`Pain001Refused` *after* the last transaction when the count or the control sum is wrong:
a caller must take nothing it was given as final until the generator has finished (the bank
stores the payments in one database transaction and rolls it back).

Everything refused is an :class:`~._xml.ISO20022Error`; :class:`Pain001Refused` adds the ISO
status reason code a pain.002 answers it with (``AM18`` wrong number of transactions, ``AM10``
wrong control sum, ``AM05`` a repeated end-to-end id, ``FF01`` anything else).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
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
from .pain001 import (
    CreditorAccount,
    CreditTransfer,
    FinancialInstitution,
    IbanAccount,
    MobileWallet,
    OtherAccount,
)

__all__ = [
    "PAIN001_READ_VERSIONS",
    "Pain001GroupHeader",
    "Pain001Item",
    "Pain001PaymentInformation",
    "Pain001Refused",
    "Pain001Transaction",
    "iter_pain001",
]

PAIN001_READ_VERSIONS: dict[str, frozenset[str]] = {
    "pain.001": frozenset({"pain.001.001.03", "pain.001.001.09"}),
}

# ExternalStatusReason1Code values a refusal of the whole file is answered with.
INVALID_FILE_FORMAT = "FF01"
WRONG_NUMBER_OF_TRANSACTIONS = "AM18"
WRONG_CONTROL_SUM = "AM10"
DUPLICATION = "AM05"


class Pain001Refused(ISO20022Error):
    """The whole file is refused; ``code`` is the ISO status reason to answer it with."""

    def __init__(self, reason: str, code: str = INVALID_FILE_FORMAT) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class Pain001GroupHeader:
    message_name: str  # "pain.001.001.09"
    message_id: str  # GrpHdr/MsgId: the bridge's batch id
    created_at: datetime
    number_of_transactions: int
    control_sum: Decimal | None
    initiating_party: str | None


@dataclass(frozen=True, slots=True)
class Pain001PaymentInformation:
    """A ``PmtInf`` block without its transactions (they follow it as separate items)."""

    message_id: str
    payment_information_id: str
    number_of_transactions: int | None
    control_sum: Decimal | None
    requested_execution_date: date | None
    debtor_name: str | None
    debtor_account: IbanAccount | OtherAccount
    debtor_account_currency: str | None
    debtor_agent: FinancialInstitution | None
    funds_block_reference: str | None  # PmtInf/InstrForDbtrAgt (.09)
    batch_booking: bool | None
    charge_bearer: str | None


@dataclass(frozen=True, slots=True)
class Pain001Transaction:
    message_id: str
    payment_information_id: str
    position: int  # 1-based in the file
    transfer: CreditTransfer
    # CdtTrfTxInf/InstrForDbtrAgt (.03), else the block's PmtInf/InstrForDbtrAgt (.09).
    funds_block_reference: str | None


Pain001Item = Pain001GroupHeader | Pain001PaymentInformation | Pain001Transaction

_BOOLEAN = {"true": True, "1": True, "false": False, "0": False}
_TRANSACTION = "CdtTrfTxInf"


def iter_pain001(source: IO[bytes], limits: Limits = DEFAULT_LIMITS) -> Iterator[Pain001Item]:
    """Yield the header, each payment information block and its transactions from ``source``
    (a file opened binary); raises :class:`ISO20022Error` (often a :class:`Pain001Refused`)."""
    paths: Paths | None = None
    header: Pain001GroupHeader | None = None
    block: _Block | None = None
    totals = _Totals()
    seen: set[str] = set()
    position = 0
    try:
        for event, element, depth, message in secure_events(source, PAIN001_READ_VERSIONS, limits):
            if paths is None:
                paths = Paths(message.namespace)
            p = paths
            local = p.local(element)
            if depth == 2:
                if event == "start" and local != "CstmrCdtTrfInitn":
                    raise Pain001Refused(
                        f"{message} document holds {etree.QName(element).localname}, "
                        "not CstmrCdtTrfInitn"
                    )
                continue
            if depth == 3:
                if event == "start":
                    if local == "PmtInf":
                        if header is None:
                            raise Pain001Refused(f"{message}: PmtInf before the group header")
                        block = _Block(p, header.message_id)
                    continue
                if local == "GrpHdr":
                    header = _header(p, element, str(message))
                    yield header
                elif local == "PmtInf" and block is not None:
                    if not block.emitted:
                        yield block.head()
                    block.check()
                    block = None
                _free(element)
                continue
            if depth != 4 or event != "end" or block is None:
                continue
            if local == _TRANSACTION:
                if not block.emitted:
                    yield block.head()
                position += 1
                transaction = _transaction(p, p.index(element), block, position)
                end_to_end = transaction.transfer.end_to_end_id
                if end_to_end in seen:
                    raise Pain001Refused(
                        f"transaction {position}: end-to-end id {end_to_end!r} appears twice "
                        "in the file",
                        DUPLICATION,
                    )
                seen.add(end_to_end)
                block.add(transaction.transfer.amount)
                totals.add(transaction.transfer.amount)
                yield transaction
            else:
                block.field(local, element)
            _free(element)
    except Pain001Refused:
        raise
    except ISO20022Error as exc:
        raise Pain001Refused(exc.reason) from exc
    if header is None:
        raise Pain001Refused("pain.001: the file has no group header")
    if position == 0:
        raise Pain001Refused("pain.001: the file has no transactions", WRONG_NUMBER_OF_TRANSACTIONS)
    totals.check(header.number_of_transactions, header.control_sum, "the group header")


class _Totals:
    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = Decimal(0)

    def add(self, amount: Decimal) -> None:
        self.count += 1
        self.total += amount  # exact: at most 18 digits each, summed far below the context

    def check(self, count: int | None, total: Decimal | None, where: str) -> None:
        if count is not None and count != self.count:
            raise Pain001Refused(
                f"{where} declares {count} transactions, the file holds {self.count}",
                WRONG_NUMBER_OF_TRANSACTIONS,
            )
        if total is not None and total != self.total:
            raise Pain001Refused(
                f"{where} declares a control sum of {total}, the transactions total {self.total}",
                WRONG_CONTROL_SUM,
            )


class _Block:
    """The ``PmtInf`` being read: its fields come before its transactions."""

    def __init__(self, paths: Paths, message_id: str) -> None:
        self.p = paths
        self.message_id = message_id
        self.emitted = False
        self.fields: dict[str, etree._Element] = {}
        self.totals = _Totals()
        self._head: Pain001PaymentInformation | None = None

    def field(self, local: str, element: etree._Element) -> None:
        if self.emitted:
            raise Pain001Refused(f"PmtInf: {local} after the first transaction")
        # Kept as a detached copy: the original is freed as soon as it has been read.
        self.fields[local] = copy.deepcopy(element)

    def add(self, amount: Decimal) -> None:
        self.totals.add(amount)

    def head(self) -> Pain001PaymentInformation:
        if self._head is not None:
            return self._head
        p = self.p
        f = self.fields

        def text(name: str, path: str | None = None) -> str | None:
            element = f.get(name)
            if element is None:
                return None
            if path is None:
                return (element.text or "").strip() or None
            return p.text(element, path)

        block_id = text("PmtInfId")
        if block_id is None:
            raise Pain001Refused("PmtInf has no PmtInfId")
        where = f"PmtInf {block_id}"
        count = text("NbOfTxs")
        total = text("CtrlSum")
        # .09 wraps the date in Dt (or DtTm); .03 writes it directly.
        execution = text("ReqdExctnDt", "Dt") or text("ReqdExctnDt")
        moment = text("ReqdExctnDt", "DtTm")
        account = f.get("DbtrAcct")
        if account is None:
            raise Pain001Refused(f"{where} has no DbtrAcct")
        found = p.index(account)
        debtor_account = _account(found, where + " DbtrAcct")
        if isinstance(debtor_account, MobileWallet):
            raise Pain001Refused(f"{where}: the debtor account cannot be a mobile wallet")
        agent = f.get("DbtrAgt")
        booking = text("BtchBookg")
        if booking is not None and booking not in _BOOLEAN:
            raise Pain001Refused(f"{where}: BtchBookg {booking!r} is not true or false")
        self._head = Pain001PaymentInformation(
            message_id=self.message_id,
            payment_information_id=block_id,
            number_of_transactions=parse_number(count, f"{where} NbOfTxs") if count else None,
            control_sum=parse_amount(total, f"{where} CtrlSum") if total else None,
            requested_execution_date=(
                parse_date(execution, f"{where} ReqdExctnDt")
                if execution
                else (parse_datetime(moment, f"{where} ReqdExctnDt").date() if moment else None)
            ),
            debtor_name=text("Dbtr", "Nm"),
            debtor_account=debtor_account,
            debtor_account_currency=found.text("Ccy"),
            debtor_agent=_agent(p.index(agent)) if agent is not None else None,
            funds_block_reference=text("InstrForDbtrAgt"),
            batch_booking=_BOOLEAN[booking] if booking is not None else None,
            charge_bearer=text("ChrgBr"),
        )
        self.emitted = True
        return self._head

    def check(self) -> None:
        head = self.head()
        if self.totals.count == 0:
            raise Pain001Refused(
                f"PmtInf {head.payment_information_id} has no transactions",
                WRONG_NUMBER_OF_TRANSACTIONS,
            )
        self.totals.check(
            head.number_of_transactions,
            head.control_sum,
            f"PmtInf {head.payment_information_id}",
        )


def _free(element: etree._Element) -> None:
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _header(p: Paths, element: etree._Element, message: str) -> Pain001GroupHeader:
    message_id = p.text(element, "MsgId")
    if message_id is None:
        raise Pain001Refused(f"{message}: the group header has no MsgId")
    created = p.text(element, "CreDtTm")
    count = p.text(element, "NbOfTxs")
    total = p.text(element, "CtrlSum")
    if created is None or count is None:
        raise Pain001Refused(f"{message}: the group header lacks CreDtTm or NbOfTxs")
    return Pain001GroupHeader(
        message_name=message,
        message_id=message_id,
        created_at=parse_datetime(created, f"{message} CreDtTm"),
        number_of_transactions=parse_number(count, f"{message} GrpHdr/NbOfTxs"),
        control_sum=parse_amount(total, f"{message} GrpHdr/CtrlSum") if total else None,
        initiating_party=p.text(element, "InitgPty/Nm"),
    )


def _account(found: Index, where: str) -> CreditorAccount:
    iban = found.text("Id/IBAN")
    if iban is not None:
        return IbanAccount(iban)
    number = found.text("Id/Othr/Id")
    if number is None:
        raise Pain001Refused(f"{where}: no Id/IBAN or Id/Othr/Id")
    proprietary = found.text("Id/Othr/SchmeNm/Prtry")
    if proprietary == "MSISDN":
        return MobileWallet(number, found.text("Prxy/Tp/Cd") or "TELE")
    return OtherAccount(
        number,
        scheme_code=found.text("Id/Othr/SchmeNm/Cd"),
        scheme_proprietary=proprietary,
        issuer=found.text("Id/Othr/Issr"),
    )


def _agent(found: Index) -> FinancialInstitution:
    return FinancialInstitution(
        bic=found.text("FinInstnId/BICFI") or found.text("FinInstnId/BIC"),
        member_id=found.text("FinInstnId/ClrSysMmbId/MmbId"),
        clearing_system=found.text("FinInstnId/ClrSysMmbId/ClrSysId/Cd"),
        other_id=found.text("FinInstnId/Othr/Id"),
        name=found.text("FinInstnId/Nm"),
        branch_id=found.text("BrnchId/Id"),
    )


def _transaction(p: Paths, found: Index, block: _Block, position: int) -> Pain001Transaction:
    head = block.head()
    where = f"transaction {position}"
    end_to_end = found.text("PmtId/EndToEndId")
    if end_to_end is None:
        raise Pain001Refused(f"{where}: no PmtId/EndToEndId")
    where = f"transaction {position} ({end_to_end[:40]!r})"
    amount_element = found.element("Amt/InstdAmt")
    if amount_element is None:
        raise Pain001Refused(f"{where}: no Amt/InstdAmt")
    currency = (amount_element.get("Ccy") or "").strip()
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise Pain001Refused(f"{where}: InstdAmt has no valid Ccy attribute ({currency[:8]!r})")
    amount = parse_amount(amount_element.text, f"{where} InstdAmt")
    if amount <= 0:
        raise Pain001Refused(f"{where}: the amount {amount} is not positive")
    if found.element("CdtrAcct") is None:
        raise Pain001Refused(f"{where}: no CdtrAcct")
    account = _account(found.below("CdtrAcct"), f"{where} CdtrAcct")
    agent = _agent(found.below("CdtrAgt")) if found.element("CdtrAgt") is not None else None
    remittance = " ".join(found.texts("RmtInf/Ustrd")) or None
    transfer = CreditTransfer(
        end_to_end_id=end_to_end,
        amount=amount,
        currency=currency,
        creditor_name=found.text("Cdtr/Nm") or "",
        creditor_account=account,
        creditor_agent=agent,
        remittance=remittance,
        instruction_id=found.text("PmtId/InstrId"),
    )
    return Pain001Transaction(
        message_id=head.message_id,
        payment_information_id=head.payment_information_id,
        position=position,
        transfer=transfer,
        funds_block_reference=found.text("InstrForDbtrAgt") or head.funds_block_reference,
    )
