"""camt.053/054 reader and the reconciliation adapter; pain.002 reader."""

from __future__ import annotations

import io
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iso20022_schemas import SAMPLES, assert_valid

from g2p_bridge.formats.iso20022 import (
    GroupStatus,
    ISO20022Error,
    PaymentInformationStatus,
    TransactionStatus,
    iter_camt,
    iter_status_report,
    sequence_gaps,
    to_recon_statement,
)


def read(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.mark.parametrize(
    "name",
    ["camt.053.001.08", "camt.053.001.02", "camt.054.001.08", "pain.002.001.03"],
)
def test_samples_are_schema_valid(name: str) -> None:
    assert_valid(name, read(f"{name}.xml"))


def test_camt053_v08_sample() -> None:
    with (SAMPLES / "camt.053.001.08.xml").open("rb") as file:
        (statement,) = list(iter_camt(file))
    assert statement.message_id == "NRTH-STMT-20261201-0001"
    assert statement.account == "1000000001" and statement.account_currency == "KES"
    assert (statement.electronic_sequence_number, statement.legal_sequence_number) == (42, 335)
    assert statement.opening_balance is not None and statement.closing_balance is not None
    assert statement.opening_balance.signed_amount == Decimal("1000000.00")
    assert statement.closing_balance.signed_amount == Decimal("1004824.75")
    assert statement.balance_problem() is None
    assert [e.status for e in statement.entries] == ["BOOK"] * 4 + ["PDNG", "BOOK"]
    batch = statement.entries[0]
    assert batch.bank_transaction_code == "PMNT/ICDT/DMCT"
    assert [t.end_to_end_id for t in batch.transactions] == ["d-1", "d-2", "d-3"]
    # TxDtls/Amt and AmtDtls/TxAmt/Amt are both read.
    assert [t.amount for t in batch.transactions] == [Decimal("100.25"), Decimal("50.25")] * 1 + [
        Decimal("50.25")
    ]

    recon = to_recon_statement(statement)
    assert recon.balance_problem() is None
    assert recon.statement_number == "42"
    rows = [(e.mark, e.amount, e.customer_reference, e.reversal_reason) for e in recon.entries]
    assert rows == [
        ("D", Decimal("100.25"), "d-1", None),
        ("D", Decimal("50.25"), "d-2", None),
        ("D", Decimal("50.25"), "d-3", None),
        ("D", Decimal("75.00"), "d-4", None),  # no TxDtls amount: the entry's
        ("RD", Decimal("50.25"), "d-2", "AC04 Account closed"),  # RvslInd=true on CRDT
        ("RD", Decimal("50.25"), "d-3", "AC01 Incorrect account number"),  # return with RtrInf
        ("C", Decimal("5000.00"), "", None),  # funding; the pending debit of d-5 is dropped
    ]
    assert [e.sequence for e in recon.entries] == list(range(1, 8))
    assert recon.entries[3].beneficiary_name == "Ամինա Հակոբյան"
    # The vocabulary the bank connectors read from MT940 narratives.
    assert recon.entries[0].subfields() == {
        "EREF": "d-1", "NAME": "Amina Hassan", "REMI": "December transfer",
    }  # fmt: skip
    assert recon.entries[4].subfields()["RTRN"] == "AC04 Account closed"
    assert recon.entries[0].bank_reference == "NB2026120100001-1"
    assert recon.entries[3].bank_reference == "NB2026120100002"
    assert recon.opening_balance is not None and recon.opening_balance.mark == "C"


def test_camt053_v02_sample_prcd_and_sequence_gap() -> None:
    with (SAMPLES / "camt.053.001.02.xml").open("rb") as file:
        statements = list(iter_camt(file))
    assert [s.electronic_sequence_number for s in statements] == [7, 9]
    first, second = statements
    assert first.entries[0].status == "BOOK"  # .02 writes the code as text
    assert first.entries[1].booking_date is not None  # from DtTm
    assert second.opening_balance is not None and second.opening_balance.type_code == "PRCD"
    assert all(s.balance_problem() is None for s in statements)
    recon = to_recon_statement(first)
    assert [(e.mark, e.customer_reference) for e in recon.entries] == [
        ("D", "d-10"),
        ("RD", "d-10"),
    ]
    assert recon.entries[0].beneficiary_name == "Émilie Dubois"
    assert recon.entries[0].details == "Allocation familiale decembre"
    assert recon.entries[1].reversal_reason == "AM04 Insufficient funds at the intermediary"
    assert recon.entries[1].transaction_type == "RTRN"
    assert sequence_gaps(statements) == [
        "account DE89370400440532013000: electronic sequence numbers missing: 8"
    ]


def test_camt054_notification_has_no_balances_to_check() -> None:
    with (SAMPLES / "camt.054.001.08.xml").open("rb") as file:
        (notification,) = list(iter_camt(file))
    assert notification.message_name == "camt.054.001.08"
    assert notification.opening_balance is None and notification.balance_problem() is None
    recon = to_recon_statement(notification)
    assert [(e.mark, e.customer_reference) for e in recon.entries] == [
        ("D", "d-20"),
        ("RD", "d-20"),
    ]
    assert recon.entries[0].beneficiary_name == "محمد علي"
    assert recon.entries[1].reversal_reason == "BE01 Wallet holder name does not match"


# -- generated statements ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Tx:
    e2e: str
    amount: Decimal


@dataclass(frozen=True)
class _Ntry:
    mark: str
    reversal: bool
    status: str
    txs: tuple[_Tx, ...]
    return_code: str | None = None

    @property
    def amount(self) -> Decimal:
        return sum((t.amount for t in self.txs), Decimal(0))


def camt053(
    entries: list[_Ntry],
    opening: Decimal,
    closing: Decimal | None = None,
    version: str = "camt.053.001.08",
    seq: int = 1,
) -> bytes:
    """A small camt.053 writer for tests: only what the reader looks at, schema-valid."""
    v08 = version.endswith("08")
    if closing is None:
        closing = opening + sum(
            (e.amount if e.mark == "CRDT" else -e.amount for e in entries if e.status == "BOOK"),
            Decimal(0),
        )

    def balance(code: str, amount: Decimal) -> str:
        mark = "DBIT" if amount < 0 else "CRDT"
        return (
            f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
            f'<Amt Ccy="USD">{abs(amount):.2f}</Amt><CdtDbtInd>{mark}</CdtDbtInd>'
            "<Dt><Dt>2026-12-01</Dt></Dt></Bal>"
        )

    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:'
        f'{version}"><BkToCstmrStmt><GrpHdr><MsgId>M</MsgId><CreDtTm>2026-12-01T10:00:00Z'
        f"</CreDtTm></GrpHdr><Stmt><Id>S{seq}</Id><ElctrncSeqNb>{seq}</ElctrncSeqNb>"
        "<CreDtTm>2026-12-01T10:00:00Z</CreDtTm>"
        "<Acct><Id><Othr><Id>1000000001</Id></Othr></Id><Ccy>USD</Ccy></Acct>",
        balance("OPBD", opening),
        balance("CLBD", closing),
    ]
    for entry in entries:
        status = f"<Sts><Cd>{entry.status}</Cd></Sts>" if v08 else f"<Sts>{entry.status}</Sts>"
        parts.append(
            f'<Ntry><Amt Ccy="USD">{entry.amount:.2f}</Amt><CdtDbtInd>{entry.mark}</CdtDbtInd>'
            + ("<RvslInd>true</RvslInd>" if entry.reversal else "")
            + status
            + "<BookgDt><Dt>2026-12-01</Dt></BookgDt><ValDt><Dt>2026-12-01</Dt></ValDt>"
            "<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>ICDT</Cd><SubFmlyCd>DMCT</SubFmlyCd></Fmly>"
            "</Domn></BkTxCd><NtryDtls>"
        )
        for tx in entry.txs:
            amount = f'<Amt Ccy="USD">{tx.amount:.2f}</Amt>'
            parts.append(
                f"<TxDtls><Refs><EndToEndId>{escape(tx.e2e)}</EndToEndId></Refs>"
                + (amount if v08 else f"<AmtDtls><TxAmt>{amount}</TxAmt></AmtDtls>")
                + (
                    f"<RtrInf><Rsn><Cd>{entry.return_code}</Cd></Rsn></RtrInf>"
                    if entry.return_code
                    else ""
                )
                + "</TxDtls>"
            )
        parts.append("</NtryDtls></Ntry>")
    parts.append("</Stmt></BkToCstmrStmt></Document>")
    return "".join(parts).encode()


_amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2)
_txs = st.lists(
    st.builds(_Tx, st.from_regex(r"[A-Za-z0-9\-]{1,35}", fullmatch=True), _amounts),
    min_size=1,
    max_size=4,
)
_entries = st.lists(
    st.builds(
        _Ntry,
        st.sampled_from(["CRDT", "DBIT"]),
        st.booleans(),
        st.sampled_from(["BOOK", "BOOK", "BOOK", "PDNG"]),
        _txs,
        st.sampled_from([None, None, "AC04", "AM04"]),
    ),
    max_size=15,
)


def expected_mark(entry: _Ntry) -> str:
    if entry.mark == "DBIT":
        return "RC" if entry.reversal else "D"
    return "RD" if entry.reversal or entry.return_code else "C"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=_entries,
    opening=st.decimals(min_value=Decimal(-(10**9)), max_value=Decimal(10**9), places=2),
    version=st.sampled_from(["camt.053.001.08", "camt.053.001.02"]),
)
def test_generated_statements_round_trip(
    entries: list[_Ntry], opening: Decimal, version: str
) -> None:
    document = camt053(entries, opening, version=version)
    assert_valid(version, document)
    (statement,) = list(iter_camt(io.BytesIO(document)))
    assert statement.balance_problem() is None
    assert [(e.credit_debit, e.reversal, e.status, e.amount) for e in statement.entries] == [
        (e.mark, e.reversal, e.status, e.amount) for e in entries
    ]
    recon = to_recon_statement(statement)
    assert recon.balance_problem() is None
    booked = [e for e in entries if e.status == "BOOK"]
    assert [(r.mark, r.customer_reference, r.amount) for r in recon.entries] == [
        (expected_mark(e), t.e2e, t.amount) for e in booked for t in e.txs
    ]
    # An off-by-one-cent closing balance is always caught.
    wrong = camt053(entries, opening, closing=statement.closing_balance.signed_amount  # type: ignore[union-attr]
                    + Decimal("0.01"), version=version)  # fmt: skip
    (bad,) = list(iter_camt(io.BytesIO(wrong)))
    assert "difference" in (bad.balance_problem() or "")


def test_batch_entry_whose_transactions_do_not_add_up_is_reported() -> None:
    entry = _Ntry("DBIT", False, "BOOK", (_Tx("a", Decimal(1)), _Tx("b", Decimal(2))))
    document = camt053([entry], Decimal(100)).replace(
        b'<Amt Ccy="USD">2.00</Amt>', b'<Amt Ccy="USD">2.50</Amt>', 1
    )
    (statement,) = list(iter_camt(io.BytesIO(document)))
    problem = to_recon_statement(statement).balance_problem()
    assert problem is not None and "transaction(s) total 3.50, the entry 3.00" in problem


def test_single_transaction_amount_differing_from_its_entry_is_reported() -> None:
    entry = _Ntry("DBIT", False, "BOOK", (_Tx("a", Decimal(2)),))
    document = camt053([entry], Decimal(100)).replace(
        b'<Amt Ccy="USD">2.00</Amt></TxDtls>', b'<Amt Ccy="USD">1.90</Amt></TxDtls>', 1
    )
    (statement,) = list(iter_camt(io.BytesIO(document)))
    assert statement.balance_problem() is None  # the entry itself balances
    problem = to_recon_statement(statement).balance_problem()
    assert problem is not None and "1 transaction(s) total 1.90, the entry 2.00" in problem


def test_batch_entry_with_a_transaction_without_amount_is_refused() -> None:
    entry = _Ntry("DBIT", False, "BOOK", (_Tx("a", Decimal(1)), _Tx("b", Decimal(2))))
    document = camt053([entry], Decimal(100)).replace(b'<Amt Ccy="USD">2.00</Amt>', b"", 1)
    (statement,) = list(iter_camt(io.BytesIO(document)))
    with pytest.raises(ISO20022Error, match="transaction 2 has no amount"):
        to_recon_statement(statement)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b"<CdtDbtInd>DBIT</CdtDbtInd>", b"<CdtDbtInd>DR</CdtDbtInd>", "neither CRDT nor DBIT"),
        (b'<Amt Ccy="USD">3.00</Amt>', b'<Amt Ccy="USD">3e2</Amt>', "is not an amount"),
        (b'<Amt Ccy="USD">3.00</Amt>', b'<Amt Ccy="usd">3.00</Amt>', "no valid Ccy"),
        (b"<RvslInd>true</RvslInd>", b"<RvslInd>yes</RvslInd>", "RvslInd 'yes'"),
        (b"<Dt>2026-12-01</Dt></BookgDt>", b"<Dt>2026-02-30</Dt></BookgDt>", "is not a date"),
        (b"<ElctrncSeqNb>1</ElctrncSeqNb>", b"<ElctrncSeqNb>-1</ElctrncSeqNb>", "whole number"),
        (b"<Acct><Id><Othr><Id>1000000001</Id></Othr></Id>", b"<Acct><Id></Id>", "no account"),
    ],
)
def test_malformed_fields_are_refused_with_the_place(old: bytes, new: bytes, message: str) -> None:
    entry = _Ntry("DBIT", True, "BOOK", (_Tx("a", Decimal(1)), _Tx("b", Decimal(2))))
    document = camt053([entry], Decimal(100))
    assert old in document
    with pytest.raises(ISO20022Error, match=message) as info:
        list(iter_camt(io.BytesIO(document.replace(old, new, 1))))
    assert "statement S1" in str(info.value)


def test_large_statement_streams(tmp_path: Path) -> None:
    entries = [
        _Ntry("DBIT", False, "BOOK", (_Tx(f"d-{i}", Decimal("1.50")),)) for i in range(20000)
    ]
    path = tmp_path / "big.xml"
    path.write_bytes(camt053(entries, Decimal(100000)))
    with path.open("rb") as file:
        (statement,) = list(iter_camt(file))
    assert len(statement.entries) == 20000 and statement.balance_problem() is None


# -- pain.002 ------------------------------------------------------------------------------------


def test_pain002_v03_transaction_rejections() -> None:
    with (SAMPLES / "pain.002.001.03.xml").open("rb") as file:
        items = list(iter_status_report(file))
    group, block, *transactions = items
    assert isinstance(group, GroupStatus) and group.status == "PART"
    assert group.original_message_id == "batch-env-2026-12-0001"
    assert group.original_control_sum == Decimal("200.75")
    assert isinstance(block, PaymentInformationStatus) and not block.is_rejected
    assert all(isinstance(t, TransactionStatus) for t in transactions)
    rows = [
        (t.original_end_to_end_id, t.status, [str(r) for r in t.reasons])
        for t in transactions
        if isinstance(t, TransactionStatus)
    ]
    assert rows == [
        ("d-1", "ACCP", []),
        ("d-2", "RJCT", ["AC04 Account closed"]),
        ("d-3", "RJCT", ["AM04 Insufficient funds in the earmarked block"]),
    ]


def test_pain002_v10_group_rejection() -> None:
    with (SAMPLES / "pain.002.001.10.xml").open("rb") as file:
        group, block = list(iter_status_report(file))
    assert isinstance(group, GroupStatus) and group.is_rejected
    assert group.reasons[0].code == "DU01"
    assert group.reasons[0].additional_info == "Duplicate message identification"
    assert isinstance(block, PaymentInformationStatus) and block.is_rejected
    assert block.reasons[0].code == "DUPL" and block.reasons[0].proprietary


def test_pain002_many_transactions_stream() -> None:
    head = read("pain.002.001.03.xml")
    one = (
        b"<TxInfAndSts><OrgnlEndToEndId>d-%d</OrgnlEndToEndId><TxSts>RJCT</TxSts>"
        b"<StsRsnInf><Rsn><Cd>AC01</Cd></Rsn></StsRsnInf></TxInfAndSts>"
    )
    body = b"".join(one % i for i in range(30000))
    document = head.replace(b"</OrgnlPmtInfAndSts>", body + b"</OrgnlPmtInfAndSts>")
    assert_valid("pain.002.001.03", document)
    items = list(iter_status_report(io.BytesIO(document)))
    rejected = [i for i in items if isinstance(i, TransactionStatus) and i.is_rejected]
    assert len(rejected) == 30002


def test_pain002_without_original_group_is_refused() -> None:
    document = read("pain.002.001.03.xml")
    start = document.index(b"<OrgnlGrpInfAndSts>")
    end = document.index(b"</OrgnlGrpInfAndSts>") + len(b"</OrgnlGrpInfAndSts>")
    with pytest.raises(ISO20022Error, match="before the group header and the original"):
        list(iter_status_report(io.BytesIO(document[:start] + document[end:])))


def test_declared_encodings_and_a_bom_are_honoured() -> None:
    document = read("camt.054.001.08.xml")
    assert len(list(iter_camt(io.BytesIO(b"\xef\xbb\xbf" + document)))) == 1
    text = document.decode()
    utf16 = text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    (statement,) = list(iter_camt(io.BytesIO(utf16)))
    assert statement.entries[0].transactions[0].creditor_name == "محمد علي"
    latin = text.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace("محمد علي", "José")
    (statement,) = list(iter_camt(io.BytesIO(latin.encode("latin-1"))))
    assert statement.entries[0].transactions[0].creditor_name == "José"
