"""A small camt.053/camt.054 writer for the bridge tests: statements are described as data and
written as the bank would send them, each file checked against the official XSD."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from xml.sax.saxutils import escape

from formats.iso20022_schemas import assert_valid


@dataclass(frozen=True)
class Tx:
    """One payment (TxDtls): the disbursement id as EndToEndId, its amount, the payee."""

    end_to_end_id: str
    amount: Decimal
    creditor: str | None = None


@dataclass(frozen=True)
class Ntry:
    """One booked entry: DBIT for payments out, CRDT for money in. ``reversal`` sets RvslInd;
    ``return_code`` adds RtrInf (a returned payment booked as a credit)."""

    mark: str
    txs: tuple[Tx, ...]
    reversal: bool = False
    return_code: str | None = None
    return_text: str | None = None
    status: str = "BOOK"
    currency: str = "USD"

    @property
    def amount(self) -> Decimal:
        return sum((t.amount for t in self.txs), Decimal(0))


def debit(*txs: Tx) -> Ntry:
    return Ntry("DBIT", txs)


def returned(tx: Tx, code: str, text: str | None = None) -> Ntry:
    return Ntry("CRDT", (tx,), return_code=code, return_text=text)


@dataclass(frozen=True)
class Stmt:
    account: str
    entries: tuple[Ntry, ...]
    sequence: int | None = 1
    opening: Decimal | None = Decimal("1000000.00")  # None: no balances (camt.054)
    currency: str = "USD"
    statement_id: str | None = None
    closing_offset: Decimal = Decimal(0)  # added to the closing balance: an unbalanced page


def camt(version: str, *statements: Stmt, validate: bool = True) -> bytes:
    """The document: ``version`` is camt.053.001.08, camt.053.001.02 or camt.054.001.08."""
    notification = version.startswith("camt.054")
    v08 = version.endswith(".08")
    container, report = (
        ("BkToCstmrDbtCdtNtfctn", "Ntfctn") if notification else ("BkToCstmrStmt", "Stmt")
    )
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:{version}"><{container}>'
        "<GrpHdr><MsgId>MSG-1</MsgId><CreDtTm>2026-12-01T23:00:00Z</CreDtTm></GrpHdr>"
    ]
    for index, statement in enumerate(statements, 1):
        parts.append(f"<{report}><Id>{escape(statement.statement_id or f'S{index}')}</Id>")
        if statement.sequence is not None:
            parts.append(f"<ElctrncSeqNb>{statement.sequence}</ElctrncSeqNb>")
        parts.append(
            "<CreDtTm>2026-12-01T23:00:00Z</CreDtTm>"
            f"<Acct><Id><Othr><Id>{escape(statement.account)}</Id></Othr></Id>"
            f"<Ccy>{statement.currency}</Ccy></Acct>"
        )
        if statement.opening is not None and not notification:
            closing = statement.opening + statement.closing_offset
            for entry in statement.entries:
                if entry.status == "BOOK":
                    closing += entry.amount if entry.mark == "CRDT" else -entry.amount
            parts.append(_balance("OPBD", statement.opening, statement.currency))
            parts.append(_balance("CLBD", closing, statement.currency))
        parts.extend(_entry(entry, v08) for entry in statement.entries)
        parts.append(f"</{report}>")
    parts.append(f"</{container}></Document>")
    document = "".join(parts).encode()
    if validate:
        assert_valid(version, document)
    return document


def _balance(code: str, amount: Decimal, currency: str) -> str:
    mark = "DBIT" if amount < 0 else "CRDT"
    return (
        f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
        f'<Amt Ccy="{currency}">{abs(amount):.2f}</Amt><CdtDbtInd>{mark}</CdtDbtInd>'
        f"<Dt><Dt>{date(2026, 12, 1).isoformat()}</Dt></Dt></Bal>"
    )


def _entry(entry: Ntry, v08: bool) -> str:
    status = f"<Sts><Cd>{entry.status}</Cd></Sts>" if v08 else f"<Sts>{entry.status}</Sts>"
    parts = [
        f'<Ntry><Amt Ccy="{entry.currency}">{entry.amount:.2f}</Amt>'
        f"<CdtDbtInd>{entry.mark}</CdtDbtInd>"
        + ("<RvslInd>true</RvslInd>" if entry.reversal else "")
        + status
        + "<BookgDt><Dt>2026-12-01</Dt></BookgDt><ValDt><Dt>2026-12-01</Dt></ValDt>"
        "<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>ICDT</Cd><SubFmlyCd>DMCT</SubFmlyCd></Fmly>"
        "</Domn></BkTxCd><NtryDtls>"
    ]
    for number, tx in enumerate(entry.txs, 1):
        amount = f'<Amt Ccy="{entry.currency}">{tx.amount:.2f}</Amt>'
        parts.append(
            f"<TxDtls><Refs><AcctSvcrRef>REF-{escape(tx.end_to_end_id)}-{number}</AcctSvcrRef>"
            f"<EndToEndId>{escape(tx.end_to_end_id)}</EndToEndId></Refs>"
            + (amount if v08 else f"<AmtDtls><TxAmt>{amount}</TxAmt></AmtDtls>")
        )
        if tx.creditor is not None:
            name = f"<Nm>{escape(tx.creditor)}</Nm>"
            parts.append(
                f"<RltdPties><Cdtr>{f'<Pty>{name}</Pty>' if v08 else name}</Cdtr></RltdPties>"
            )
        if entry.return_code is not None:
            text = f"<AddtlInf>{escape(entry.return_text)}</AddtlInf>" if entry.return_text else ""
            parts.append(f"<RtrInf><Rsn><Cd>{entry.return_code}</Cd></Rsn>{text}</RtrInf>")
        parts.append("</TxDtls>")
    parts.append("</NtryDtls></Ntry>")
    return "".join(parts)
