"""The bank's side of ISO 20022: pain.001 read, pain.002 and camt.053 written (schema-valid, read
back by the bridge's own readers), and refusals of broken or hostile files."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iso20022_schemas import assert_valid
from test_iso20022_pain001 import batch, mixed, write

from g2p_bridge.formats.iso20022 import (
    PAIN001_VERSIONS,
    CreditTransfer,
    GroupStatus,
    ISO20022Error,
    OtherAccount,
    Pain001GroupHeader,
    Pain001PaymentInformation,
    Pain001Refused,
    Pain001Transaction,
    PaymentInformationStatus,
    StatementHeader,
    StatementLine,
    StatusReason,
    StatusReportHeader,
    TransactionStatus,
    TransactionStatusLine,
    iter_camt,
    iter_pain001,
    iter_status_report,
    to_recon_statement,
    write_camt053,
    write_pain002,
)


def read(document: bytes) -> list[object]:
    return list(iter_pain001(io.BytesIO(document)))


# -- pain.001 in -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", PAIN001_VERSIONS)
def test_pain001_reads_back_what_the_bridge_wrote(version: str) -> None:
    header = batch(4, "200.01")
    items = read(write(header, mixed(), version))
    group, block, *transactions = items
    assert isinstance(group, Pain001GroupHeader)
    assert (group.message_name, group.message_id, group.number_of_transactions) == (
        version,
        "batch-env-2026-12-0001",
        4,
    )
    assert group.control_sum == Decimal("200.01")
    assert isinstance(block, Pain001PaymentInformation)
    assert block.debtor_account == OtherAccount("1000000001")
    assert block.debtor_account_currency == "KES"
    assert block.requested_execution_date == date(2026, 12, 1)
    assert all(isinstance(t, Pain001Transaction) for t in transactions)
    read_back = [t.transfer for t in transactions if isinstance(t, Pain001Transaction)]
    assert read_back == mixed()
    # .09 names the funds block once on PmtInf, .03 on every transaction: read the same.
    assert {t.funds_block_reference for t in transactions if isinstance(t, Pain001Transaction)} == {
        "block-env-2026-12"
    }


_names = (
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)  # the readers strip surrounding blanks, as banks do


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    amounts=st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=12),
    names=st.lists(_names, min_size=12, max_size=12),
    version=st.sampled_from(PAIN001_VERSIONS),
)
def test_pain001_round_trip(amounts: list[int], names: list[str], version: str) -> None:
    transfers = [
        CreditTransfer(
            f"d-{i}",
            Decimal(minor).scaleb(-2),
            "KES",
            names[i],
            OtherAccount(f"{1000 + i}"),
            mixed()[0].creditor_agent,
            names[-1 - i][:140],
        )
        for i, minor in enumerate(amounts)
    ]
    total = sum((t.amount for t in transfers), Decimal(0))
    items = read(write(batch(len(transfers), str(total)), transfers, version))
    assert [i.transfer for i in items if isinstance(i, Pain001Transaction)] == transfers


def _tamper(document: bytes, old: bytes, new: bytes, count: int = 1) -> bytes:
    assert document.count(old) >= count
    return document.replace(old, new, count)


@pytest.mark.parametrize(
    ("old", "new", "code", "message"),
    [
        (b"<NbOfTxs>4</NbOfTxs>", b"<NbOfTxs>5</NbOfTxs>", "AM18", "declares 5 transactions"),
        (b"<CtrlSum>200.01</CtrlSum>", b"<CtrlSum>200.02</CtrlSum>", "AM10", "control sum"),
        (b"<EndToEndId>d-2<", b"<EndToEndId>d-1<", "AM05", "appears twice"),
        (b">100.25</InstdAmt>", b">1e2</InstdAmt>", "FF01", "not an amount"),
        (b"<EndToEndId>d-2</EndToEndId>", b"", "FF01", "no PmtId/EndToEndId"),
    ],
)
def test_a_file_whose_totals_or_ids_are_wrong_is_refused_whole(
    old: bytes, new: bytes, code: str, message: str
) -> None:
    document = _tamper(write(batch(4, "200.01"), mixed()), old, new)
    with pytest.raises(Pain001Refused) as info:
        read(document)
    assert info.value.code == code
    assert message in info.value.reason


def test_totals_are_refused_only_after_every_transaction_was_read() -> None:
    document = _tamper(write(batch(4, "200.01"), mixed()), b"<NbOfTxs>4<", b"<NbOfTxs>9<")
    seen = []
    with pytest.raises(Pain001Refused):
        for item in iter_pain001(io.BytesIO(document)):
            seen.append(item)
    # The caller got every transaction first, so it must hold them until the generator ends.
    assert sum(isinstance(i, Pain001Transaction) for i in seen) == 4


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not xml", "well-formed"),
        (b"", "well-formed"),
        (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>',
            "DOCTYPE",
        ),
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.11"/>',
            "does not support",
        ),
        (b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"/>', "not one of"),
    ],
)
def test_broken_or_hostile_pain001_is_a_clear_refusal(document: bytes, message: str) -> None:
    with pytest.raises(Pain001Refused, match=message) as info:
        read(document)
    assert info.value.code == "FF01"


def test_a_truncated_upload_is_refused() -> None:
    document = write(batch(4, "200.01"), mixed())
    with pytest.raises(Pain001Refused, match="well-formed"):
        read(document[: len(document) // 2])


# -- pain.002 out ------------------------------------------------------------------------------

CREATED = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def status_report(lines: list[TransactionStatusLine], group: str = "PART") -> bytes:
    out = io.BytesIO()
    write_pain002(
        out,
        StatusReportHeader(
            report_id="EB-STS-1",
            created_at=CREATED,
            original_message_id="batch-1",
            original_message_name="pain.001.001.09",
            group_status=group,
            original_number_of_transactions=len(lines),
            original_control_sum=Decimal("300.50"),
            original_payment_information_id="batch-1",
            payment_information_status=group,
        ),
        lines,
    )
    return out.getvalue()


def test_pain002_is_schema_valid_and_the_bridge_reads_it_back() -> None:
    long_text = "no account " + "x" * 50 + " with that number at this bank, " * 5
    lines = [
        TransactionStatusLine("d-1", "ACCP"),
        TransactionStatusLine("d-2", "RJCT", (StatusReason("AC01", long_text.strip()),)),
        TransactionStatusLine("d-3", "RJCT", (StatusReason("AM04", "insufficient funds"),)),
    ]
    document = status_report(lines)
    assert_valid("pain.002.001.03", document)
    items = list(iter_status_report(io.BytesIO(document)))
    group, block, *transactions = items
    assert isinstance(group, GroupStatus) and group.status == "PART"
    assert group.original_message_id == "batch-1"
    assert group.original_control_sum == Decimal("300.50")
    assert isinstance(block, PaymentInformationStatus) and block.status == "PART"
    statuses = [t for t in transactions if isinstance(t, TransactionStatus)]
    assert [(t.original_end_to_end_id, t.status) for t in statuses] == [
        ("d-1", "ACCP"),
        ("d-2", "RJCT"),
        ("d-3", "RJCT"),
    ]
    assert statuses[1].reasons[0].code == "AC01"
    # Over 105 characters: split over AddtlInf lines, joined back word for word.
    assert statuses[1].reasons[0].additional_info == " ".join(long_text.split())
    assert statuses[2].reasons == (StatusReason("AM04", "insufficient funds"),)


def test_a_refused_file_is_answered_at_group_level_only() -> None:
    out = io.BytesIO()
    write_pain002(
        out,
        StatusReportHeader(
            report_id="EB-STS-2",
            created_at=CREATED,
            original_message_id="batch-2",
            original_message_name="pain.001",
            group_status="RJCT",
            group_reasons=(StatusReason("AM10", "control sum 10 but the transactions total 9"),),
        ),
    )
    assert_valid("pain.002.001.03", out.getvalue())
    (group,) = iter_status_report(io.BytesIO(out.getvalue()))
    assert isinstance(group, GroupStatus) and group.is_rejected
    assert group.reasons[0].code == "AM10"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (TransactionStatusLine("d-1", "PART"), "not a pain.002 status"),
        (TransactionStatusLine("d" * 36, "ACCP"), "36 characters"),
        (TransactionStatusLine("d-1", "RJCT", (StatusReason("AC001", None),)), "not an ISO"),
    ],
)
def test_pain002_refuses_what_the_schema_would(line: TransactionStatusLine, message: str) -> None:
    with pytest.raises(ISO20022Error, match=message):
        status_report([line])


# -- camt.053 out ------------------------------------------------------------------------------


def statement(lines: list[StatementLine], closing: str, sequence: int = 7) -> bytes:
    out = io.BytesIO()
    write_camt053(
        out,
        StatementHeader(
            message_id=f"EB-STMT-{sequence}",
            created_at=CREATED,
            statement_id=f"PROG-1-{sequence}",
            electronic_sequence_number=sequence,
            legal_sequence_number=3,
            account=OtherAccount("PROG-1"),
            currency="KES",
            opening_balance=Decimal("1000.00"),
            closing_balance=Decimal(closing),
            opening_date=date(2026, 12, 1),
            closing_date=date(2026, 12, 1),
            account_owner="Ministry",
        ),
        lines,
    )
    return out.getvalue()


DAY = date(2026, 12, 1)
PAID = StatementLine(
    Decimal("100.25"), "DBIT", DAY, DAY, "EB000000000001D", "d-1",
    creditor_name="Amina & <Co>", remittance="December",
)  # fmt: skip
RETURNED = StatementLine(
    Decimal("100.25"), "CRDT", DAY, DAY, "EB000000000001RD", "d-1",
    bank_transaction_code=("PMNT", "ICDT", "RRTN"), return_reason_code="AC04",
    return_reason_text="ACCOUNT_CLOSED",
)  # fmt: skip
DEPOSIT = StatementLine(
    Decimal("50"), "CRDT", DAY, DAY, "DEP1C", bank_transaction_code=("PMNT", "RCDT", "DMCT")
)


def test_camt053_is_schema_valid_and_reconciles_through_the_bridge_reader() -> None:
    document = statement([PAID, RETURNED, DEPOSIT], "1050.00")
    assert_valid("camt.053.001.08", document)
    (read_back,) = iter_camt(io.BytesIO(document))
    assert read_back.electronic_sequence_number == 7
    assert read_back.legal_sequence_number == 3
    assert read_back.account == "PROG-1"
    assert read_back.balance_problem() is None
    recon = to_recon_statement(read_back)
    assert recon.balance_problem() is None
    assert recon.statement_number == "7"
    assert [(e.mark, e.customer_reference, e.amount) for e in recon.entries] == [
        ("D", "d-1", Decimal("100.25")),
        ("RD", "d-1", Decimal("100.25")),
        ("C", "", Decimal("50")),
    ]
    assert recon.entries[0].beneficiary_name == "Amina & <Co>"
    assert recon.entries[1].reversal_reason == "AC04 ACCOUNT_CLOSED"


def test_an_empty_statement_is_valid() -> None:
    assert_valid("camt.053.001.08", statement([], "1000.00"))


def test_camt053_refuses_entries_that_do_not_reach_the_closing_balance() -> None:
    with pytest.raises(ISO20022Error, match=r"closing balance is 999\.00"):
        statement([PAID], "999.00")
    with pytest.raises(ISO20022Error, match="entry 1: CdtDbtInd"):
        statement([StatementLine(Decimal(1), "X", DAY, DAY, "R")], "1001.00")
