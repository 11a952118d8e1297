"""pain.002 customer payment status reports, written as they stream: a bank's answer to a pain.001.

The Example Bank answers every payment file it picks up over SFTP with one of these; the bridge
reads them with :mod:`.pain002`. Version ``pain.002.001.03`` (CGI-MP), the one whose official
schema the tests validate against.

One report answers one pain.001: the group status (``ACCP`` every transaction accepted, ``PART``
some rejected, ``RJCT`` the file refused, or every transaction rejected) with its reason, then,
unless the whole file was refused, one ``OrgnlPmtInfAndSts`` holding a ``TxInfAndSts`` per
transaction with its own status and ISO reason code (``AC01``, ``AM04``, ...). Reasons are
:class:`~.pain002.StatusReason` values, the same type the reader yields, so what is written is
what is read back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO

from ._xml import NAMESPACE_PREFIX, ISO20022Error
from .pain001 import _esc, _Text
from .pain002 import StatusReason

__all__ = [
    "PAIN002_WRITE_VERSIONS",
    "StatusReportHeader",
    "TransactionStatusLine",
    "write_pain002",
]

PAIN002_WRITE_VERSIONS = ("pain.002.001.03",)

_TRANSACTION_STATUSES = frozenset({"ACTC", "RJCT", "PDNG", "ACCP", "ACSP", "ACSC", "ACWC"})
_GROUP_STATUSES = _TRANSACTION_STATUSES | {"RCVD", "PART"}
_ADDITIONAL_INFO_CHARS = 105  # Max105Text per AddtlInf line
_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class StatusReportHeader:
    report_id: str  # GrpHdr/MsgId of the report
    created_at: datetime  # timezone-aware
    original_message_id: str  # the pain.001's MsgId: our batch id
    original_message_name: str  # "pain.001.001.09"
    group_status: str | None  # None: the report speaks only of the transactions
    group_reasons: tuple[StatusReason, ...] = ()
    original_number_of_transactions: int | None = None
    original_control_sum: Decimal | None = None
    # The block the transactions belong to; None writes no OrgnlPmtInfAndSts (a refused file).
    original_payment_information_id: str | None = None
    payment_information_status: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionStatusLine:
    original_end_to_end_id: str
    status: str
    reasons: tuple[StatusReason, ...] = ()
    original_instruction_id: str | None = None


def write_pain002(
    out: IO[bytes],
    header: StatusReportHeader,
    transactions: Iterable[TransactionStatusLine] = (),
    version: str = "pain.002.001.03",
) -> int:
    """Write one pain.002 to the binary file ``out``; returns the number of transaction statuses.

    Raises :class:`ISO20022Error` on a value the schema would refuse (an unknown status, an id
    over 35 characters, a reason code over 4); ``out`` then holds a partial document, so write to
    a temporary name and rename on success.
    """
    if version not in PAIN002_WRITE_VERSIONS:
        raise ISO20022Error(
            f"pain.002 version {version!r} is not written here; "
            f"supported: {', '.join(PAIN002_WRITE_VERSIONS)}"
        )
    text = _Text(latin_only=False)
    if header.created_at.tzinfo is None or header.created_at.utcoffset() is None:
        raise ISO20022Error("creation time must be timezone-aware")
    if header.group_status is not None and header.group_status not in _GROUP_STATUSES:
        raise ISO20022Error(f"group status {header.group_status!r} is not a pain.002 status")
    created = header.created_at.replace(microsecond=0).isoformat()
    parts = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<Document xmlns="{NAMESPACE_PREFIX}{version}"><CstmrPmtStsRpt>',
        f"<GrpHdr><MsgId>{_esc(text(header.report_id, 35, 'report id'))}</MsgId>"
        f"<CreDtTm>{created}</CreDtTm></GrpHdr>",
        "<OrgnlGrpInfAndSts>",
        f"<OrgnlMsgId>{_esc(text(header.original_message_id, 35, 'original message id'))}"
        "</OrgnlMsgId>",
        f"<OrgnlMsgNmId>{_esc(text(header.original_message_name, 35, 'message name'))}"
        "</OrgnlMsgNmId>",
    ]
    if header.original_number_of_transactions is not None:
        if not 0 <= header.original_number_of_transactions < 10**15:
            raise ISO20022Error("original number of transactions is out of range")
        parts.append(f"<OrgnlNbOfTxs>{header.original_number_of_transactions}</OrgnlNbOfTxs>")
    if header.original_control_sum is not None:
        parts.append(f"<OrgnlCtrlSum>{_decimal(header.original_control_sum)}</OrgnlCtrlSum>")
    if header.group_status is not None:
        parts.append(f"<GrpSts>{header.group_status}</GrpSts>")
    parts.extend(_reason(reason, text) for reason in header.group_reasons)
    parts.append("</OrgnlGrpInfAndSts>")
    count = 0
    if header.original_payment_information_id is not None:
        block = _esc(text(header.original_payment_information_id, 35, "payment information id"))
        parts.append(f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>{block}</OrgnlPmtInfId>")
        if header.payment_information_status is not None:
            if header.payment_information_status not in _GROUP_STATUSES:
                raise ISO20022Error(
                    f"payment information status {header.payment_information_status!r} is not a "
                    "pain.002 status"
                )
            parts.append(f"<PmtInfSts>{header.payment_information_status}</PmtInfSts>")
        for line in transactions:
            parts.append(_transaction(line, text))
            count += 1
            if len(parts) >= _CHUNK:
                out.write("".join(parts).encode())
                parts.clear()
        parts.append("</OrgnlPmtInfAndSts>")
    parts.append("</CstmrPmtStsRpt></Document>\n")
    out.write("".join(parts).encode())
    return count


def _decimal(value: Decimal) -> str:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ISO20022Error(f"{value!r} is not a non-negative decimal amount")
    written = f"{value:f}"
    if len(written.replace(".", "")) > 18:
        raise ISO20022Error(f"{written} has more than 18 digits")
    return written


def _transaction(line: TransactionStatusLine, text: _Text) -> str:
    if line.status not in _TRANSACTION_STATUSES:
        raise ISO20022Error(f"transaction status {line.status!r} is not a pain.002 status")
    parts = ["<TxInfAndSts>"]
    if line.original_instruction_id is not None:
        instruction = _esc(text(line.original_instruction_id, 35, "original instruction id"))
        parts.append(f"<OrgnlInstrId>{instruction}</OrgnlInstrId>")
    end_to_end = _esc(text(line.original_end_to_end_id, 35, "original end-to-end id"))
    parts.append(f"<OrgnlEndToEndId>{end_to_end}</OrgnlEndToEndId><TxSts>{line.status}</TxSts>")
    parts.extend(_reason(reason, text) for reason in line.reasons)
    parts.append("</TxInfAndSts>")
    return "".join(parts)


def _reason(reason: StatusReason, text: _Text) -> str:
    parts = ["<StsRsnInf>"]
    if reason.code is not None:
        if reason.proprietary:
            parts.append(f"<Rsn><Prtry>{_esc(text(reason.code, 35, 'reason'))}</Prtry></Rsn>")
        else:
            code = reason.code
            if not (1 <= len(code) <= 4 and code.isascii() and code.isalnum()):
                raise ISO20022Error(f"status reason code {code!r} is not an ISO 20022 code")
            parts.append(f"<Rsn><Cd>{code}</Cd></Rsn>")
    if reason.additional_info:
        for line in _lines(reason.additional_info, _ADDITIONAL_INFO_CHARS):
            parts.append(f"<AddtlInf>{_esc(text(line, _ADDITIONAL_INFO_CHARS, 'reason text'))}"
                         "</AddtlInf>")  # fmt: skip
    parts.append("</StsRsnInf>")
    return "".join(parts)


def _lines(value: str, width: int) -> list[str]:
    """Split ``value`` at blanks into lines of at most ``width`` characters; joined with one
    blank (as the reader joins them) they give the text back, runs of blanks collapsed."""
    lines: list[str] = []
    current = ""
    for word in value.split():
        while len(word) > width:  # a single over-long word: cut it, nothing else can be done
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines
