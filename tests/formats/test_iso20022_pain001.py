"""pain.001 writer: schema-valid in both versions, refuses what it cannot write faithfully."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iso20022_schemas import assert_valid
from lxml import etree

from g2p_bridge.formats.iso20022 import (
    PAIN001_VERSIONS,
    CreditTransfer,
    FinancialInstitution,
    IbanAccount,
    ISO20022Error,
    MobileWallet,
    OtherAccount,
    Pain001Profile,
    PaymentBatch,
    write_pain001,
    write_pain001_file,
)

BANK = FinancialInstitution(bic="NRTHKENA")
BRANCH = FinancialInstitution(member_id="01", clearing_system="KEBA", branch_id="BR01")
MPESA = FinancialInstitution(other_id="MPESA", name="Safaricom M-PESA")


def batch(count: int, total: str, currency: str = "KES", **changes: object) -> PaymentBatch:
    fields: dict[str, object] = {
        "message_id": "batch-env-2026-12-0001",
        "created_at": datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC),
        "initiating_party": "Ministry of Social Protection",
        "debtor_name": "Ministry of Social Protection - Inua Jamii",
        "debtor_account": OtherAccount("1000000001"),
        "debtor_agent": BANK,
        "requested_execution_date": date(2026, 12, 1),
        "currency": currency,
        "number_of_transactions": count,
        "control_sum": Decimal(total),
        "funds_block_reference": "block-env-2026-12",
    }
    fields.update(changes)
    return PaymentBatch(**fields)  # type: ignore[arg-type]


def mixed() -> list[CreditTransfer]:
    return [
        CreditTransfer(
            "d-1", Decimal("100.25"), "KES", "Amina Hassan", OtherAccount("123456"), BRANCH,
            "December transfer",
        ),
        CreditTransfer(
            "d-2", Decimal("50.25"), "KES", "Амина Ҳасан", MobileWallet("+254711000000"), MPESA
        ),
        CreditTransfer(
            "d-3", Decimal("49.50"), "KES", "محمد علي & <Sons>",
            IbanAccount("DE89370400440532013000"), FinancialInstitution(bic="COBADEFFXXX"),
            "Ref: 2026/12 (cycle) + top-up",
        ),
        CreditTransfer(
            "d-4", Decimal("0.01"), "KES", "አበበ በቀለ", IbanAccount("GB82WEST12345698765432")
        ),
    ]  # fmt: skip


def write(
    header: PaymentBatch, transactions: list[CreditTransfer], version: str = "pain.001.001.09"
) -> bytes:
    out = io.BytesIO()
    write_pain001(out, header, transactions, Pain001Profile(version=version))  # type: ignore[arg-type]
    return out.getvalue()


def ns(version: str) -> dict[str, str]:
    return {"p": f"urn:iso:std:iso:20022:tech:xsd:{version}"}


@pytest.mark.parametrize("version", PAIN001_VERSIONS)
def test_every_account_kind_and_script_is_schema_valid(version: str) -> None:
    document = write(batch(4, "200.01"), mixed(), version)
    root = assert_valid(version, document)
    n = ns(version)
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=n) == (
        "batch-env-2026-12-0001"
    )
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", namespaces=n) == "4"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=n) == "200.01"
    txs = root.findall(".//p:CdtTrfTxInf", namespaces=n)
    assert [t.findtext("p:PmtId/p:EndToEndId", namespaces=n) for t in txs] == [
        "d-1", "d-2", "d-3", "d-4",
    ]  # fmt: skip
    assert txs[2].findtext("p:Cdtr/p:Nm", namespaces=n) == "محمد علي & <Sons>"
    assert txs[0].findtext("p:CdtrAgt/p:BrnchId/p:Id", namespaces=n) == "BR01"
    wallet = txs[1]
    assert wallet.findtext("p:CdtrAcct/p:Id/p:Othr/p:Id", namespaces=n) == "+254711000000"
    proxy = wallet.findtext("p:CdtrAcct/p:Prxy/p:Id", namespaces=n)
    assert proxy == ("+254711000000" if version.endswith("09") else None)
    # The funds block reference is the instruction to the debtor's bank.
    if version.endswith("09"):
        assert root.findtext(".//p:PmtInf/p:InstrForDbtrAgt", namespaces=n) == "block-env-2026-12"
    else:
        assert {t.findtext("p:InstrForDbtrAgt", namespaces=n) for t in txs} == {"block-env-2026-12"}
    # One namespace declaration for the whole file, not one per transaction.
    assert document.count(b"xmlns") == 1


@pytest.mark.parametrize("version", PAIN001_VERSIONS)
def test_iban_debtor_and_zero_decimal_currency(version: str) -> None:
    header = batch(
        2, "1500", "UGX", debtor_account=IbanAccount("DE89370400440532013000"),
        debtor_agent=FinancialInstitution(member_id="12345"), batch_booking=True,
        funds_block_reference=None, payment_information_id="pmt-1",
    )  # fmt: skip
    transactions = [
        CreditTransfer("u-1", Decimal(1000), "UGX", "Okello", MobileWallet("+256770000001"), MPESA),
        CreditTransfer("u-2", Decimal(500), "UGX", "Nakato", OtherAccount("77", scheme_code=None,
                       scheme_proprietary="MTN-MOMO", issuer="MTN"), MPESA),
    ]  # fmt: skip
    document = write(header, transactions, version)
    root = assert_valid(version, document)
    amounts = root.xpath("//p:InstdAmt/text()", namespaces=ns(version))
    assert amounts == ["1000", "500"]
    assert b"InstrForDbtrAgt" not in document


def test_amounts_are_plain_decimals_with_the_currency_minor_units() -> None:
    transactions = [
        CreditTransfer("a", Decimal("1E+2"), "KWD", "A", IbanAccount("GB82WEST12345698765432")),
        CreditTransfer("b", Decimal("0.125"), "KWD", "B", IbanAccount("GB82WEST12345698765432")),
    ]
    document = write(batch(2, "100.125", "KWD"), transactions)
    assert b">100.000<" in document and b">0.125<" in document and b"E+" not in document
    assert b"<CtrlSum>100.125</CtrlSum>" in document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"end_to_end_id": "d-" + "x" * 34}, "more than the 35"),
        ({"end_to_end_id": ""}, "end-to-end id (disbursement id) is empty"),
        ({"remittance": "r" * 141}, "remittance is 141 characters"),
        ({"creditor_name": "Bad\x00name"}, "control character"),
        ({"amount": 100.25}, "must be a Decimal, got float"),
        ({"amount": Decimal("100.255")}, "at most 2 decimals"),
        ({"amount": Decimal("-1.00")}, "not a positive"),
        ({"amount": Decimal("NaN")}, "not a positive"),
        ({"currency": "USD"}, "differs from the batch currency"),
        ({"creditor_account": IbanAccount("DE00370400440532013000")}, "check digits"),
        ({"creditor_account": OtherAccount("123"), "creditor_agent": None}, "needs a creditor"),
        ({"creditor_agent": FinancialInstitution()}, "has no BIC"),
        ({"creditor_agent": FinancialInstitution(bic="nope")}, "is not a BIC"),
    ],
)
def test_a_transaction_that_cannot_be_written_faithfully_is_refused(
    change: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {
        "end_to_end_id": "d-1",
        "amount": Decimal("100.25"),
        "currency": "KES",
        "creditor_name": "Amina",
        "creditor_account": OtherAccount("123456"),
        "creditor_agent": BRANCH,
        "remittance": "December",
    }
    fields.update(change)
    with pytest.raises(ISO20022Error, match="transaction 1 ") as info:
        write(batch(1, "100.25"), [CreditTransfer(**fields)])  # type: ignore[arg-type]
    assert message in str(info.value)


def test_the_stream_must_match_the_declared_count_and_sum() -> None:
    good = mixed()
    with pytest.raises(ISO20022Error, match=r"number 4 totalling 200\.01 KES, but the header"):
        write(batch(4, "200.02"), good)
    with pytest.raises(ISO20022Error, match="number 3 totalling"):
        write(batch(4, "200.01"), good[:3])
    with pytest.raises(ISO20022Error, match="more transactions than the 3 declared"):
        write(batch(3, "200.01"), good)
    with pytest.raises(ISO20022Error, match="appears twice"):
        write(batch(2, "200.50"), [good[0], good[0]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"message_id": "m" * 36}, "message id is 36 characters"),
        ({"created_at": datetime(2026, 12, 1)}, "timezone-aware"),
        ({"number_of_transactions": 0}, "positive integer"),
        ({"control_sum": Decimal("1.001")}, "control sum 1.001"),
        ({"currency": "XYZ"}, "not a known ISO 4217"),
        ({"control_sum": Decimal("1" * 19)}, "more than 18 digits"),
        ({"control_sum": Decimal("1E+40")}, "control sum 1E"),
    ],
)
def test_a_bad_header_is_refused_before_anything_is_written(
    change: dict[str, object], message: str
) -> None:
    out = io.BytesIO()
    with pytest.raises(ISO20022Error, match=message):
        write_pain001(out, batch(1, "1.00", **change), [])
    assert out.getvalue() == b""


def test_latin_only_profile_refuses_rather_than_transliterates() -> None:
    profile = Pain001Profile(version="pain.001.001.03", latin_only=True)
    latin = [mixed()[0]]
    out = io.BytesIO()
    write_pain001(out, batch(1, "100.25"), latin, profile)
    assert_valid("pain.001.001.03", out.getvalue())
    with pytest.raises(ISO20022Error, match="outside the Latin character set") as info:
        write_pain001(io.BytesIO(), batch(1, "50.25"), [mixed()[1]], profile)
    assert "'\u0410'" in str(info.value)  # the Cyrillic A that starts the name


def test_bic_follows_each_version_pattern() -> None:
    # .09 (BICFIDec2014) allows a digit in the location code's first place; .03 does not.
    agent = FinancialInstitution(bic="NRTHKE01")
    tx = CreditTransfer("d-1", Decimal("1.00"), "KES", "A", OtherAccount("1"), agent)
    assert_valid("pain.001.001.09", write(batch(1, "1.00"), [tx], "pain.001.001.09"))
    with pytest.raises(ISO20022Error, match="'NRTHKE01' is not a BIC"):
        write(batch(1, "1.00"), [tx], "pain.001.001.03")


def test_charge_bearer_is_one_of_the_iso_codes() -> None:
    out = io.BytesIO()
    write_pain001(out, batch(4, "200.01"), mixed(), Pain001Profile(charge_bearer="SLEV"))
    assert b"<ChrgBr>SLEV</ChrgBr>" in assert_valid_bytes(out.getvalue())
    with pytest.raises(ISO20022Error, match="charge bearer 'OURS'"):
        write_pain001(
            io.BytesIO(), batch(4, "200.01"), mixed(), Pain001Profile(charge_bearer="OURS")
        )


def assert_valid_bytes(document: bytes) -> bytes:
    assert_valid("pain.001.001.09", document)
    return document


def test_unsupported_version_is_refused() -> None:
    profile = Pain001Profile(version="pain.001.001.12")  # type: ignore[arg-type]
    with pytest.raises(ISO20022Error, match=r"pain\.001\.001\.12"):
        write_pain001(io.BytesIO(), batch(1, "1"), [], profile)


def test_file_writer_renames_only_a_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "batch.xml"
    with pytest.raises(ISO20022Error):
        write_pain001_file(target, batch(4, "999.99"), mixed())
    assert list(tmp_path.iterdir()) == []
    write_pain001_file(target, batch(4, "200.01"), mixed())
    assert [p.name for p in tmp_path.iterdir()] == ["batch.xml"]
    assert_valid("pain.001.001.09", target.read_bytes())


def test_transactions_are_consumed_lazily() -> None:
    seen: list[int] = []

    def transactions() -> Iterator[CreditTransfer]:
        for i in range(5000):
            seen.append(i)
            yield CreditTransfer(f"d-{i}", Decimal(1), "KES", "A", MobileWallet("+2547"), MPESA)

    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.writes: list[int] = []

        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            self.writes.append(len(seen))
            return len(data)

    sink = Sink()
    write_pain001(sink, batch(5000, "5000.00"), transactions())  # type: ignore[arg-type]
    # Written in several chunks while the iterator was still being consumed.
    assert len(sink.writes) > 1 and sink.writes[0] < 5000


# -- round trip --------------------------------------------------------------------------------

_names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Co", "Cn"), blacklist_characters="\ufffe\uffff"
    ),
    min_size=1,
    max_size=140,
).filter(lambda s: s.strip() != "")
_accounts = st.one_of(
    st.builds(IbanAccount, st.sampled_from(["DE89370400440532013000", "GB82WEST12345698765432"])),
    st.builds(OtherAccount, st.from_regex(r"[0-9]{1,34}", fullmatch=True)),
    st.builds(MobileWallet, st.from_regex(r"\+[0-9]{8,15}", fullmatch=True)),
)
_transactions = st.lists(
    st.tuples(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2),
        _names,
        _accounts,
        st.one_of(st.none(), _names),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_transactions, version=st.sampled_from(PAIN001_VERSIONS))
def test_round_trip(rows: list[tuple[Decimal, str, object, str | None]], version: str) -> None:
    transactions = [
        CreditTransfer(f"disb-{i}", amount, "KES", name, account, MPESA, remittance)  # type: ignore[arg-type]
        for i, (amount, name, account, remittance) in enumerate(rows)
    ]
    total = sum((t.amount for t in transactions), Decimal(0))
    document = write(batch(len(transactions), f"{total}"), transactions, version)
    root = assert_valid(version, document)
    n = ns(version)
    assert Decimal(root.findtext(".//p:GrpHdr/p:CtrlSum", namespaces=n)) == total
    read = [
        (
            e.findtext("p:PmtId/p:EndToEndId", namespaces=n),
            Decimal(e.findtext("p:Amt/p:InstdAmt", namespaces=n)),
            e.findtext("p:Cdtr/p:Nm", namespaces=n),
            e.findtext("p:RmtInf/p:Ustrd", namespaces=n),
        )
        for e in root.iterfind(".//p:CdtTrfTxInf", namespaces=n)
    ]
    assert read == [
        (t.end_to_end_id, t.amount, t.creditor_name, t.remittance) for t in transactions
    ]
    assert sum(a for _, a, _, _ in read) == total
    assert etree.QName(root).namespace == n["p"]
