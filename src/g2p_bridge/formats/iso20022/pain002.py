"""pain.002 customer payment status reports, streamed.

Supported: ``pain.002.001.03`` (CGI-MP) and ``pain.002.001.10`` (SEPA 2019). A report answers one
pain.001 and may say something about the whole file (``OrgnlGrpInfAndSts``), about a payment
information block (``OrgnlPmtInfAndSts``) and about single transactions (``TxInfAndSts``), in
that order. :func:`iter_status_report` yields one item per level as it is read, transactions one
by one, so a report on 100,000 transactions never sits in memory.

What the statuses mean for us (the caller decides; docs/banks.md has the table): ``RJCT`` on
the group or on a payment information block refuses the batch (retry or park it with the
reason); ``RJCT`` on a transaction fails that disbursement with the ISO reason code (AC01, AC04,
AM04, ...) and the bank's text; ``ACCP``/``ACSP``/``ACSC``/``ACTC``/``ACWC`` are acceptances,
``PDNG``/``RCVD`` say nothing final, and ``PART`` on a group means: look at the transactions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO

from lxml import etree

from ._xml import (
    DEFAULT_LIMITS,
    ISO20022Error,
    Limits,
    Paths,
    parse_amount,
    parse_number,
    secure_events,
)

__all__ = [
    "PAIN002_VERSIONS",
    "GroupStatus",
    "PaymentInformationStatus",
    "StatusReason",
    "StatusReportItem",
    "TransactionStatus",
    "iter_status_report",
]

PAIN002_VERSIONS: dict[str, frozenset[str]] = {
    "pain.002": frozenset({"pain.002.001.03", "pain.002.001.10"}),
}


@dataclass(frozen=True, slots=True)
class StatusReason:
    code: str | None  # Rsn/Cd (ExternalStatusReason1Code: AC01, AC04, AM04, ...) or Rsn/Prtry
    additional_info: str | None  # AddtlInf lines joined with a blank
    proprietary: bool = False  # the code came from Rsn/Prtry

    def __str__(self) -> str:
        return " ".join(part for part in (self.code, self.additional_info) if part) or "no reason"


@dataclass(frozen=True, slots=True)
class GroupStatus:
    report_id: str  # GrpHdr/MsgId of the report
    original_message_id: str  # our batch id
    original_message_name: str | None  # "pain.001.001.09"
    original_number_of_transactions: int | None
    original_control_sum: Decimal | None
    status: str | None  # GrpSts; None when the bank reports only lower levels
    reasons: tuple[StatusReason, ...] = ()

    @property
    def is_rejected(self) -> bool:
        return self.status == "RJCT"


@dataclass(frozen=True, slots=True)
class PaymentInformationStatus:
    report_id: str
    original_message_id: str
    original_payment_information_id: str
    status: str | None  # PmtInfSts
    reasons: tuple[StatusReason, ...] = ()

    @property
    def is_rejected(self) -> bool:
        return self.status == "RJCT"


@dataclass(frozen=True, slots=True)
class TransactionStatus:
    report_id: str
    original_message_id: str
    original_payment_information_id: str | None
    original_end_to_end_id: str | None  # our disbursement id
    original_instruction_id: str | None
    status: str | None  # TxSts
    reasons: tuple[StatusReason, ...] = ()
    account_servicer_reference: str | None = None

    @property
    def is_rejected(self) -> bool:
        return self.status == "RJCT"


StatusReportItem = GroupStatus | PaymentInformationStatus | TransactionStatus


def iter_status_report(
    source: IO[bytes], limits: Limits = DEFAULT_LIMITS
) -> Iterator[StatusReportItem]:
    """Yield the group status, then each payment information status, each followed by its
    transactions' statuses, from the pain.002 file ``source`` (opened binary)."""
    paths: Paths | None = None
    report_id: str | None = None
    original_message_id: str | None = None
    block: _Block | None = None
    for event, element, depth, message in secure_events(source, PAIN002_VERSIONS, limits):
        if paths is None:
            paths = Paths(message.namespace)
        p = paths
        if depth == 2:
            if event == "start" and p.local(element) != "CstmrPmtStsRpt":
                raise ISO20022Error(
                    f"{message} document holds {etree.QName(element).localname}, not CstmrPmtStsRpt"
                )
            continue
        if event != "end":
            if depth == 3 and p.local(element) == "OrgnlPmtInfAndSts":
                if report_id is None or original_message_id is None:
                    raise ISO20022Error(
                        f"{message}: payment information status before the group header and "
                        "the original group information"
                    )
                block = _Block()
            continue
        local = p.local(element)
        if depth == 3:
            if local == "GrpHdr":
                report_id = p.text(element, "MsgId")
                if report_id is None:
                    raise ISO20022Error(f"{message}: the group header has no MsgId")
            elif local == "OrgnlGrpInfAndSts":
                if report_id is None:
                    raise ISO20022Error(f"{message}: OrgnlGrpInfAndSts before the group header")
                group = _group(p, element, report_id, str(message))
                original_message_id = group.original_message_id
                yield group
            elif local == "OrgnlPmtInfAndSts" and block is not None:
                if report_id is None or original_message_id is None:
                    raise ISO20022Error("a payment status came before the group header")
                if not block.emitted:
                    yield block.status(report_id, original_message_id, str(message))
                block = None
            _free(element)
        elif depth == 4 and block is not None:
            if report_id is None or original_message_id is None:
                raise ISO20022Error("a transaction status came before the group header")
            if local == "TxInfAndSts":
                if not block.emitted:
                    yield block.status(report_id, original_message_id, str(message))
                yield _transaction(p, element, report_id, original_message_id, block.id)
            elif local == "OrgnlPmtInfId":
                block.id = (element.text or "").strip() or None
            elif local == "PmtInfSts":
                block.state = (element.text or "").strip() or None
            elif local == "StsRsnInf":
                block.reasons.append(_reason(p, element))
            _free(element)
    if report_id is None:
        raise ISO20022Error("pain.002: the report has no group header")
    if original_message_id is None:
        raise ISO20022Error("pain.002: the report has no original group information")


class _Block:
    """The payment information block being read: its fields come before its transactions."""

    __slots__ = ("emitted", "id", "reasons", "state")

    def __init__(self) -> None:
        self.id: str | None = None
        self.state: str | None = None
        self.reasons: list[StatusReason] = []
        self.emitted = False

    def status(
        self, report_id: str, original_message_id: str, message: str
    ) -> PaymentInformationStatus:
        if self.id is None:
            raise ISO20022Error(f"{message}: a payment information status has no OrgnlPmtInfId")
        self.emitted = True
        return PaymentInformationStatus(
            report_id=report_id,
            original_message_id=original_message_id,
            original_payment_information_id=self.id,
            status=self.state,
            reasons=tuple(self.reasons),
        )


def _free(element: etree._Element) -> None:
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _reason(p: Paths, element: etree._Element) -> StatusReason:
    code = p.text(element, "Rsn/Cd")
    proprietary = p.text(element, "Rsn/Prtry")
    return StatusReason(
        code=code or proprietary,
        additional_info=" ".join(p.texts(element, "AddtlInf")) or None,
        proprietary=code is None and proprietary is not None,
    )


def _group(p: Paths, element: etree._Element, report_id: str, message: str) -> GroupStatus:
    original = p.text(element, "OrgnlMsgId")
    if original is None:
        raise ISO20022Error(f"{message}: OrgnlGrpInfAndSts has no OrgnlMsgId")
    count = p.text(element, "OrgnlNbOfTxs")
    total = p.text(element, "OrgnlCtrlSum")
    return GroupStatus(
        report_id=report_id,
        original_message_id=original,
        original_message_name=p.text(element, "OrgnlMsgNmId"),
        original_number_of_transactions=(
            parse_number(count, f"{message}: OrgnlNbOfTxs") if count is not None else None
        ),
        original_control_sum=(
            parse_amount(total, f"{message}: OrgnlCtrlSum") if total is not None else None
        ),
        status=p.text(element, "GrpSts"),
        reasons=tuple(_reason(p, r) for r in element.iterfind(p("StsRsnInf"))),
    )


def _transaction(
    p: Paths,
    element: etree._Element,
    report_id: str,
    original_message_id: str,
    payment_information_id: str | None,
) -> TransactionStatus:
    return TransactionStatus(
        report_id=report_id,
        original_message_id=original_message_id,
        original_payment_information_id=payment_information_id,
        original_end_to_end_id=p.text(element, "OrgnlEndToEndId"),
        original_instruction_id=p.text(element, "OrgnlInstrId"),
        status=p.text(element, "TxSts"),
        reasons=tuple(_reason(p, r) for r in element.iterfind(p("StsRsnInf"))),
        account_servicer_reference=p.text(element, "AcctSvcrRef"),
    )
