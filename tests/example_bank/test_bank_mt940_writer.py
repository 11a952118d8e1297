"""The MT940 writer: layout, amounts, :86: wrapping, speed, and the bridge's parser."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from example_bank.mt940_writer import (
    StatementEntry,
    StatementPage,
    clean_value,
    format_amount,
    format_balance,
    iter_statement_lines,
    render_statement,
    structured_details,
    wrap_86,
)

DAY = date(2026, 11, 25)


def _page(**overrides: object) -> StatementPage:
    values: dict[str, object] = {
        "transaction_reference": "EB2611250001",
        "account_number": "1234567890",
        "statement_number": 12,
        "sequence_number": 1,
        "currency": "USD",
        "opening_balance": Decimal("1000000.00"),
        "closing_balance": Decimal("1000000.00"),
        "opening_date": DAY,
        "closing_date": DAY,
    }
    values.update(overrides)
    return StatementPage(**values)  # type: ignore[arg-type]


def _entries() -> list[StatementEntry]:
    debit = structured_details(
        [
            ("EREF", "disb-0001"),
            ("BENM", ""),
            ("NAME", "Jane Doe"),
            ("REMI", "Cash transfer Nov"),
            ("PROG", "PROG1"),
            ("CYCL", "C1"),
        ]
    )
    back = structured_details(
        [("EREF", "disb-0001"), ("RTRN", "ACCOUNT_CLOSED"), ("REMI", "Payment returned")]
    )
    return [
        StatementEntry(DAY, DAY, "D", Decimal("-100.50"), "disb-0001", "EB0000000001", debit),
        StatementEntry(DAY, DAY, "RD", Decimal("100.50"), "disb-0001", "EB0000000002", back),
    ]


def test_layout_matches_the_documented_example() -> None:
    text = render_statement(_page(), _entries())
    assert text.splitlines() == [
        ":20:EB2611250001",
        ":25:1234567890",
        ":28C:00012/001",
        ":60F:C261125USD1000000,00",
        ":61:2611251125D100,50NTRFdisb-0001//EB0000000001",
        ":86:/EREF/disb-0001/BENM//NAME/Jane Doe/REMI/Cash transfer Nov",
        "/PROG/PROG1/CYCL/C1",
        ":61:2611251125RD100,50NTRFdisb-0001//EB0000000002",
        ":86:/EREF/disb-0001/RTRN/ACCOUNT_CLOSED/REMI/Payment returned",
        ":62F:C261125USD1000000,00",
        "-",
    ]


def test_inner_pages_use_intermediate_balances() -> None:
    lines = list(iter_statement_lines(_page(first_page=False, last_page=False), []))
    assert lines[3].startswith(":60M:")
    assert lines[-2].startswith(":62M:")
    first_only = list(iter_statement_lines(_page(first_page=True, last_page=False), []))
    assert first_only[3].startswith(":60F:") and first_only[-2].startswith(":62M:")


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("0", "0,00"), ("100.5", "100,50"), ("-1234567.89", "1234567,89"), ("0.01", "0,01")],
)
def test_amounts_have_comma_and_two_decimals(amount: str, expected: str) -> None:
    assert format_amount(Decimal(amount)) == expected


def test_negative_balance_is_debit() -> None:
    assert format_balance(Decimal("-5.00"), DAY, "KES") == "D261125KES5,00"
    assert format_balance(Decimal("0.00"), DAY, "KES") == "C261125KES0,00"


def test_clean_value_removes_slashes_and_line_breaks() -> None:
    assert clean_value(" a/b\r\nc  d ") == "a-b c d"
    assert structured_details([("EREF", "x"), ("REMI", None), ("NAME", "  ")]) == "/EREF/x"


def test_long_narrative_is_wrapped_to_65_characters() -> None:
    details = structured_details(
        [
            ("EREF", "d" * 36),
            ("BENM", ""),
            ("NAME", "Ngozi Chukwuemeka-Okonkwo Adebayo Oluwaseun Babatunde"),
            ("REMI", "Monthly cash transfer for households with children, November 2026"),
            ("PROG", "NATIONAL-SAFETY-NET-PROGRAMME"),
            ("CYCL", "2026-11"),
        ]
    )
    lines = list(wrap_86(details))
    assert len(lines) > 2
    assert all(len(line) <= 65 for line in lines)
    assert lines[0].startswith(":86:")
    assert "".join(lines)[4:] == details
    assert all(not line.startswith((":", "-")) for line in lines[1:])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["EREF", "NAME", "REMI", "PROG", "CYCL", "ULTB"]),
            st.text(alphabet="ab :-/{}0123456789éZ", min_size=1, max_size=140),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_wrapping_is_lossless_and_never_starts_a_line_badly(pairs: list[tuple[str, str]]) -> None:
    details = structured_details(pairs)
    lines = list(wrap_86(details))
    assert "".join(lines)[4:] == details
    assert all(len(line) <= 65 for line in lines)
    assert all(lines[1:]), "no empty continuation line"
    assert "/" not in lines[0][5:] or lines[1:] == [] or lines[1].startswith("/")
    for previous, line in itertools.pairwise(lines):
        if line[0] in ":-{":
            # Only forced when the previous line had no '/' to break at.
            assert "/" not in previous[1:]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["EREF", "NAME", "REMI", "PROG", "CYCL", "ULTB"]),
        st.text(alphabet="ab :-{}0123456789éZ", min_size=1, max_size=60),
        min_size=1,
    )
)
def test_bridge_parser_reads_back_every_subfield(values: dict[str, str]) -> None:
    mt940 = pytest.importorskip("g2p_bridge.formats.mt940")
    details = structured_details(list(values.items()))
    expected = {code: clean_value(v) for code, v in values.items() if clean_value(v)}
    if not expected:
        return
    entry = StatementEntry(DAY, DAY, "C", Decimal("1.00"), "ref-1", "EB1", details)
    page = _page(closing_balance=Decimal("1000001.00"))
    (statement,) = list(mt940.iter_statements(render_statement(page, [entry])))
    assert statement.entries[0].subfields() == expected


def test_writer_streams_a_national_payroll() -> None:
    details = structured_details(
        [("EREF", "0f8fad5b-d9cb-469f-a165-70867728950e"), ("BENM", ""), ("NAME", "Jane Doe"),
         ("REMI", "Cash transfer Nov"), ("PROG", "PROG1"), ("CYCL", "C1")]
    )  # fmt: skip
    entry = StatementEntry(
        DAY, DAY, "D", Decimal("-100.50"), "0f8fad5b-d9cb-469f-a165-70867728950e", "EB1", details
    )
    count = 100_000
    # Its speed is measured by bench/ (docs/performance.md), not asserted here.
    lines = sum(1 for _ in iter_statement_lines(_page(), [entry] * count))
    assert lines == 3 * count + 6


def test_round_trip_through_the_bridge_parser() -> None:
    mt940 = pytest.importorskip("g2p_bridge.formats.mt940")
    long_name = "Ngozi Chukwuemeka-Okonkwo Adebayo Oluwaseun Babatunde Fashola"
    details = structured_details(
        [("EREF", "0f8fad5b-d9cb-469f-a165-70867728950e"), ("BENM", ""), ("NAME", long_name),
         ("REMI", "Monthly cash transfer for households with children, Nov 2026"),
         ("PROG", "PROG1"), ("CYCL", "C1"), ("ULTB", "BEN-42")]
    )  # fmt: skip
    entries = [
        *_entries(),
        StatementEntry(
            DAY, DAY, "D", Decimal("-7.25"), "0f8fad5b-d9cb-469f-a165-70867728950e", "EB3", details
        ),
    ]
    page = _page(closing_balance=Decimal("999992.75"))
    (statement,) = list(mt940.iter_statements(render_statement(page, entries)))
    assert statement.balance_problem() is None
    assert statement.account == "1234567890"
    assert int(statement.statement_number) == 12 and int(statement.sequence_number) == 1
    assert [e.mark for e in statement.entries] == ["D", "RD", "D"]
    assert [e.amount for e in statement.entries] == [
        Decimal("100.50"), Decimal("100.50"), Decimal("7.25")
    ]  # fmt: skip
    first, returned, long_entry = statement.entries
    assert first.customer_reference == "disb-0001"
    assert first.subfields()["NAME"] == "Jane Doe"
    assert first.subfields()["CYCL"] == "C1"
    assert returned.subfields()["RTRN"] == "ACCOUNT_CLOSED"
    fields = long_entry.subfields()
    assert long_entry.customer_reference == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert fields["EREF"] == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert fields["NAME"] == long_name
    assert fields["REMI"] == "Monthly cash transfer for households with children, Nov 2026"
    assert fields["ULTB"] == "BEN-42"


@pytest.mark.parametrize(
    "reference",
    [
        "disb-1\n:61:2611251125RD100,50NTRFdisb-0002//EB9",
        "disb-1\r:61:2611251125RD100,50NTRFdisb-0002//EB9",
        "disb-1\r\n-\n:20:X",
        "disb-1//EB9",
        "disb 1\u2028:61:x",
    ],
)
def test_a_hostile_reference_cannot_forge_an_entry(reference: str) -> None:
    """Whatever a payment reference holds, the statement reads back one entry per payment,
    with the same amount and mark, and no entry names a reference it was not given."""
    mt940 = pytest.importorskip("g2p_bridge.formats.mt940")
    entry = StatementEntry(DAY, DAY, "D", Decimal("-100.50"), reference, "EB1", "/EREF/x")
    page = _page(closing_balance=Decimal("999899.50"))
    (statement,) = list(mt940.iter_statements(render_statement(page, [entry])))
    assert [(e.mark, e.amount) for e in statement.entries] == [("D", Decimal("100.50"))]
    (read,) = statement.entries
    assert read.customer_reference not in ("disb-0002", "disb-1")
    assert read.bank_reference == "EB1"
