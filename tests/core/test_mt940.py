"""Tests of the MT940 parser against several banks' layouts and against broken input."""

from __future__ import annotations

import ast
import io
import itertools
import os
import tracemalloc
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import g2p_bridge.formats
from g2p_bridge.formats.mt940 import (
    Balance,
    Entry,
    MT940Error,
    Statement,
    decode_statement_bytes,
    iter_statements,
    parse_statements,
)

# `make fuzz` runs the property tests a hundred times longer.
FUZZ_SCALE = int(os.environ.get("G2P_FUZZ_SCALE", "1"))

SAMPLES = Path(__file__).parent / "mt940_samples"


def sample(name: str) -> str:
    return decode_statement_bytes((SAMPLES / name).read_bytes())


def one(text: str) -> Statement:
    statements = parse_statements(text)
    assert len(statements) == 1
    return statements[0]


def statement_with(*lines: str, opening: str = "C261125EUR100,00", closing: str = "") -> str:
    """A minimal statement around the given :61:/:86: lines."""
    body = [":20:REF", ":25:ACC", ":28C:1/1", f":60F:{opening}", *lines]
    body.append(f":62F:{closing or opening}")
    return "\n".join(body) + "\n-\n"


# --- The Example Bank -------------------------------------------------------------------------


def test_example_bank_statement() -> None:
    statement = one(sample("example_bank.sta"))
    assert statement.transaction_reference == "EB2611250001"
    assert statement.related_reference is None
    assert statement.account == "1234567890"
    assert (statement.statement_number, statement.sequence_number) == ("1", "1")
    assert statement.opening_balance == Balance("C", date(2026, 11, 25), "USD", Decimal("1000000"))
    assert statement.closing_balance.is_final
    assert statement.balance_problem() is None
    assert statement.information is None

    paid, returned = statement.entries
    assert paid.sequence == 1 and returned.sequence == 2
    assert paid.value_date == paid.entry_date == date(2026, 11, 25)
    assert (paid.mark, paid.funds_code, paid.amount) == ("D", None, Decimal("100.50"))
    assert paid.signed_amount == Decimal("-100.50") and not paid.is_reversal
    assert paid.transaction_type == "NTRF"
    assert paid.customer_reference == "disb-0001"
    assert paid.bank_reference == "EB0000000001"
    assert paid.details == (
        "/EREF/disb-0001/BENM//NAME/Jane Doe/REMI/Cash transfer Nov/PROG/PROG1/CYCL/C1"
    )
    assert paid.subfields() == {
        "EREF": "disb-0001",
        "BENM": "",
        "NAME": "Jane Doe",
        "REMI": "Cash transfer Nov",
        "PROG": "PROG1",
        "CYCL": "C1",
    }

    assert returned.mark == "RD" and returned.is_reversal
    assert returned.signed_amount == Decimal("100.50")
    assert returned.customer_reference == "disb-0001"
    assert returned.subfields()["RTRN"] == "ACCOUNT_CLOSED"
    assert returned.subfields()["REMI"] == "Payment returned"


# --- Other banks' layouts -----------------------------------------------------------------------


def test_german_layout_with_question_mark_subfields() -> None:
    raw = (SAMPLES / "german_sparkasse.sta").read_bytes()
    assert b"\r\n" in raw and b"\xfc" in raw  # CRLF and a Windows-1252 "ü"
    first, second = parse_statements(decode_statement_bytes(raw))

    assert (first.statement_number, first.sequence_number) == ("00001", "001")
    assert first.account == "10020030/1234567890"
    assert first.balance_problem() is None
    assert second.statement_number == "00002"
    assert second.opening_balance.amount == Decimal("5245.44")
    assert second.balance_problem() is None

    credit, debit, fee = first.entries
    assert (credit.mark, credit.funds_code, credit.amount) == ("C", "R", Decimal("1500.00"))
    assert credit.customer_reference == "NONREF" and credit.bank_reference is None
    fields = credit.subfields()
    assert fields["GVC"] == "166"
    assert fields["00"] == "GUTSCHR. UEBERWEISUNG"
    assert fields["20"] == "EREF+PAY-2026-11-0001"
    assert fields["21"] == "SVWZ+Rueckzahlung Beitrag"  # joined across a 65-character wrap
    assert fields["31"] == "DE02120300000000202051"
    assert fields["32"] + fields["33"] == "Max Müller Vertriebs GmbH und Partner"

    # "DR" is a debit with funds code R; the stray ": 86:" still attaches the narrative.
    assert (debit.mark, debit.funds_code, debit.amount) == ("D", "R", Decimal("1234.56"))
    assert debit.transaction_type == "NDDT"
    assert debit.bank_reference == "BANKREF9876"
    assert debit.supplementary_details == "Lastschrift Einzug"
    assert debit.subfields() == {
        "GVC": "105",
        "00": "LASTSCHRIFT",
        "20": "Miete November 2026",
        "21": "Wohnung 3",
        "32": "Hausverwaltung Süd",
    }
    assert "Kontoinhaber" not in debit.details  # :NS: is skipped

    # Narrative lines that look like a tag or a terminator stay in the narrative.
    assert fee.amount == Decimal("20")
    assert fee.details == "Kontoführungsentgelt\n- Grundpreis 15,00\n:12:30 Uhr Abschluss\n-\nEnde"
    assert fee.subfields() == {}


def test_dutch_layout_with_swift_wrappers_and_two_messages() -> None:
    raw = (SAMPLES / "dutch_ing.sta").read_bytes()
    assert raw.count(b"\r\n") > 10
    first, second = parse_statements(decode_statement_bytes(raw))

    # Two messages in one file stay two statements, each with its own balances.
    assert first.transaction_reference == "P261125000000001"
    assert first.related_reference == "NONREF"
    assert (first.statement_number, first.sequence_number) == ("00000", None)
    assert first.closing_balance.amount == Decimal("1000.00")
    assert first.available_balance == Balance("C", date(2026, 11, 25), "EUR", Decimal("1000"))
    assert second.transaction_reference == "P261126000000001"
    assert second.opening_balance.amount == Decimal("1000.00")
    assert second.closing_balance.amount == Decimal("900.01")
    assert first.balance_problem() is None and second.balance_problem() is None

    credit, taken_back = first.entries
    assert credit.entry_date is None
    assert credit.supplementary_details == "/TRCD/00100/"
    assert credit.subfields() == {
        "EREF": "INV-2026-001",
        "CNTP": "NL12RABO0123456789/RABONL2U/J. de Vries/Utrecht",
        "REMI": "USTD//Factuur 2026-001",
    }
    assert taken_back.mark == "RC" and taken_back.signed_amount == Decimal("-250.00")
    assert taken_back.subfields()["RTRN"] == "AC04"
    assert second.entries[0].subfields()["NAME"] == "Energie BV"


def test_swiss_paged_statement_yields_each_page() -> None:
    page1, page2 = parse_statements(sample("swiss_paged.sta"))

    assert (page1.statement_number, page1.sequence_number) == ("105", "1")
    assert (page2.statement_number, page2.sequence_number) == ("105", "2")
    assert page1.opening_balance.is_final and not page1.closing_balance.is_final
    assert not page2.opening_balance.is_final and page2.closing_balance.is_final
    assert page1.closing_balance.amount == page2.opening_balance.amount == Decimal("15100.00")
    assert page1.balance_problem() is None and page2.balance_problem() is None
    assert [e.sequence for e in page2.entries] == [1]  # numbering restarts on each page

    rent, interest = page1.entries
    assert rent.value_date == date(2026, 12, 31) and rent.entry_date == date(2027, 1, 2)
    assert rent.amount == Decimal("5000") and rent.transaction_type == "NMSC"
    assert rent.customer_reference == "REF-WITH-MORE-THAN-16-CHARS"
    assert rent.supplementary_details == "Zahlung Miete Januar\nzweite Zusatzzeile"
    assert interest.entry_date == date(2026, 12, 31)
    assert page2.entries[0].value_date == date(2027, 1, 2)
    assert page2.entries[0].entry_date == date(2026, 12, 31)

    assert page2.available_balance is not None
    assert page2.available_balance.amount == Decimal("15000.05")
    assert [b.date for b in page2.forward_balances] == [date(2027, 1, 3), date(2027, 1, 4)]
    assert page2.information == "Kontoauszug Nr. 105 / Ende"
    assert page2.entries[0].details == "Zinsgutschrift"


def test_polish_layout_with_tilde_and_caret_subfields() -> None:
    statement = one(sample("polish.sta"))
    assert statement.account == "/PL61109010140000071219812874"
    assert statement.balance_problem() is None
    incoming, outgoing = statement.entries

    assert (incoming.mark, incoming.funds_code, incoming.amount) == ("C", "R", Decimal("30.00"))
    assert incoming.transaction_type == "S051"
    assert incoming.customer_reference == "12345678901234567"
    assert incoming.subfields() == {
        "GVC": "051",
        "00": "VZ01PRZELEW PRZYCHODZACY",
        "20": "Zwrot nadplaty",
        "21": "za listopad",
        "30": "10901014",
        "31": "0000071219812874",
        "32": "JAN KOWALSKI",
        "38": "PL61109010140000071219812874",
    }
    assert (outgoing.mark, outgoing.funds_code) == ("D", "N")
    assert outgoing.subfields() == {
        "GVC": "020",
        "00": "PRZELEW",
        "20": "Swiadczenie",
        "21": "listopad 2026",
        "32": "ANNA NOWAK",
    }


# --- :61: variants ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "mark", "funds", "amount", "signed"),
    [
        ("2611251125D100,00NTRFX", "D", None, "100.00", "-100.00"),
        ("2611251125DR100,00NTRFX", "D", "R", "100.00", "-100.00"),
        ("2611251125RD100,00NTRFX", "RD", None, "100.00", "100.00"),
        ("2611251125RDR100,00NTRFX", "RD", "R", "100.00", "100.00"),
        ("2611251125RC5,NTRFX", "RC", None, "5", "-5"),
        ("2611251125CR 30,00NTRFX", "C", "R", "30.00", "30.00"),
        ("2611251125C R30,00NTRFX", "C", "R", "30.00", "30.00"),
        ("2611251125C 30,00NTRFX", "C", None, "30.00", "30.00"),
        ("261125C,50NTRFX", "C", None, "0.50", "0.50"),
        ("261125D100NTRFX", "D", None, "100", "-100"),
    ],
)
def test_marks_funds_codes_and_amounts(
    line: str, mark: str, funds: str | None, amount: str, signed: str
) -> None:
    opening = "C261125EUR1000,00"
    statement = one(statement_with(f":61:{line}", opening=opening))
    (entry,) = statement.entries
    assert (entry.mark, entry.funds_code) == (mark, funds)
    assert entry.amount == Decimal(amount) and isinstance(entry.amount, Decimal)
    assert entry.signed_amount == Decimal(signed)
    assert entry.customer_reference == "X"


@pytest.mark.parametrize(
    ("value", "entry", "expected"),
    [
        ("261231", "0102", date(2027, 1, 2)),
        ("270102", "1231", date(2026, 12, 31)),
        ("261125", "1124", date(2026, 11, 24)),
        ("280301", "0229", date(2028, 2, 29)),
    ],
)
def test_entry_date_year_is_inferred_from_value_date(
    value: str, entry: str, expected: date
) -> None:
    statement = one(statement_with(f":61:{value}{entry}C1,00NTRFX"))
    assert statement.entries[0].entry_date == expected
    assert statement.entries[0].raw_date_warning is None


def test_impossible_dates_are_clamped_with_a_warning() -> None:
    statement = one(statement_with(":61:2602300230C1,00NTRFX", ":61:2602270231C1,00NTRFY"))
    clamped, entry_only = statement.entries
    assert clamped.value_date == date(2026, 2, 28)
    assert clamped.entry_date == date(2026, 2, 28)
    assert clamped.raw_date_warning is not None
    assert "260230" in clamped.raw_date_warning and "0230" in clamped.raw_date_warning
    assert entry_only.value_date == date(2026, 2, 27)
    assert entry_only.entry_date == date(2026, 2, 28)
    assert entry_only.raw_date_warning is not None and "0231" in entry_only.raw_date_warning
    balance = one(statement_with(opening="C260230EUR1,00")).opening_balance
    assert balance.date == date(2026, 2, 28)


@pytest.mark.parametrize("line", [":61:261332C1,00NTRFX", ":61:260010C1,00NTRFX"])
def test_malformed_date_raises_with_line_number(line: str) -> None:
    with pytest.raises(MT940Error, match="line 5") as caught:
        parse_statements(statement_with(line))
    assert caught.value.line_no == 5


def test_bank_reference_and_supplementary_lines() -> None:
    statement = one(
        statement_with(
            ":61:2611251125C1,00NTRFMYREF//BANKREF",
            "first extra line",
            "second extra line that the standard does not allow",
            ":61:2611251125C1,00NTRFONLYREF",
            ":61:2611251125C1,00NTRF//BANKONLY",
            ":61:2611251125C1,00NTRFREF//",
        )
    )
    a, b, c, d = statement.entries
    assert (a.customer_reference, a.bank_reference) == ("MYREF", "BANKREF")
    assert a.supplementary_details == (
        "first extra line\nsecond extra line that the standard does not allow"
    )
    assert (b.customer_reference, b.bank_reference, b.supplementary_details) == (
        "ONLYREF",
        None,
        None,
    )
    assert (c.customer_reference, c.bank_reference) == ("", "BANKONLY")
    assert (d.customer_reference, d.bank_reference) == ("REF", None)
    assert b.details == ""


# --- Fields and lines ---------------------------------------------------------------------------


def test_long_narrative_is_never_truncated() -> None:
    lines = [f"line {i} " + "x" * 90 for i in range(40)]
    statement = one(statement_with(":61:2611251125C1,00NTRFX", ":86:" + lines[0], *lines[1:]))
    assert statement.entries[0].details == "\n".join(lines)


def test_narrative_on_the_line_after_the_tag() -> None:
    statement = one(statement_with(":61:2611251125C1,00NTRFX", ":86:", "/EREF/A1/NAME/B C"))
    assert statement.entries[0].details == "/EREF/A1/NAME/B C"
    assert statement.entries[0].subfields() == {"EREF": "A1", "NAME": "B C"}


def test_line_endings_trailing_blanks_and_empty_lines_do_not_matter() -> None:
    text = sample("example_bank.sta")
    expected = parse_statements(text)
    crlf = text.replace("\n", "\r\n")
    old_mac = text.replace("\n", "\r")
    padded = "\n\n".join(line + " \t " for line in text.split("\n"))
    bom = "\ufeff" + text
    for variant in (crlf, old_mac, padded, bom):
        assert parse_statements(variant) == expected


def test_every_kind_of_source_gives_the_same_result() -> None:
    text = sample("german_sparkasse.sta")
    expected = parse_statements(text)
    raw = (SAMPLES / "german_sparkasse.sta").read_bytes()
    sources: list[object] = [
        io.StringIO(text),
        text.splitlines(),  # lines without line ends
        text.splitlines(keepends=True),
        [text],  # one item holding many lines
        raw,
        io.BytesIO(raw),  # a binary file: decoded line by line
        raw.splitlines(keepends=True),
    ]
    for source in sources:
        assert list(iter_statements(source)) == expected  # type: ignore[arg-type]


def test_text_file_opened_with_the_wrong_encoding_raises_mt940_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.sta"
    path.write_bytes((SAMPLES / "german_sparkasse.sta").read_bytes())
    with path.open(encoding="utf-8") as handle, pytest.raises(MT940Error, match="binary mode"):
        list(iter_statements(handle))


def test_unknown_and_bank_specific_tags_are_skipped() -> None:
    statement = one(
        statement_with(
            ":13D:2611251200+0100",
            ":34F:EURD0,",
            ":61:2611251125C1,00NTRFX",
            ":NS:01something",
            "more NS text",
            ":86:after NS",
            ":90C:1EUR1,00",
            ":99:whatever",
            opening="C261125EUR1,00",
            closing="C261125EUR2,00",
        )
    )
    assert len(statement.entries) == 1
    assert statement.entries[0].details == "after NS"
    assert statement.balance_problem() is None


def test_second_narrative_is_appended_and_information_is_kept() -> None:
    statement = one(
        statement_with(
            ":86:before any entry",
            ":61:2611251125C1,00NTRFX",
            ":86:first",
            ":86:second",
            closing="C261125EUR101,00",
        ).replace("\n-\n", "\n:86:after the closing balance\n-\n")
    )
    assert statement.entries[0].details == "first\nsecond"
    assert statement.information == "before any entry\nafter the closing balance"


def test_message_wrapped_on_one_line_with_block_4() -> None:
    text = "{1:F01AAAABBBBXXXX0000000000}{2:I940CCCCDDDDXXXXN}{4::20:R1\n" + "\n".join(
        sample("example_bank.sta").split("\n")[1:-2]
    )
    text += "\n-}{5:{CHK:ABCDEF}}\n"
    statement = one(text)
    assert statement.transaction_reference == "R1"
    assert len(statement.entries) == 2


# --- Balance checks -----------------------------------------------------------------------------


def test_balance_problem_describes_the_figures() -> None:
    statement = one(
        statement_with(
            ":61:2611251125D30,00NTRFX",
            opening="C261125EUR100,00",
            closing="C261125EUR75,00",
        )
    )
    problem = statement.balance_problem()
    assert problem is not None
    assert "100.00" in problem and "-30.00" in problem and "70.00" in problem
    assert "75.00" in problem and "5.00" in problem


def test_balance_problem_on_currency_change_and_debit_balances() -> None:
    changed = one(statement_with(opening="C261125EUR1,00", closing="C261125USD1,00"))
    problem = changed.balance_problem()
    assert problem is not None and "EUR" in problem and "USD" in problem

    overdrawn = one(
        statement_with(
            ":61:2611251125D50,NTRFX",
            ":61:2611251125RC10,NTRFX",
            ":61:2611251125RD5,NTRFX",
            opening="D261125EUR10,00",
            closing="D261125EUR65,00",
        )
    )
    assert overdrawn.opening_balance.signed_amount == Decimal("-10.00")
    assert overdrawn.balance_problem() is None


def test_balance_problem_never_raises_on_hand_built_statements() -> None:
    odd = Balance("C", date(2026, 1, 1), "EUR", "not a number")  # type: ignore[arg-type]
    good = Balance("C", date(2026, 1, 1), "EUR", Decimal(1))
    statement = Statement("R", None, "A", "1", None, odd, good)
    assert statement.balance_problem() is not None


# --- Broken input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello world\n", "outside a statement"),
        (":25:ACC\n", "no :20:"),
        (":20:R\n:25:A\n:28C:1\n:60F:C261125EUR1,00\n", "closing balance"),
        (":20:R\n:25:A\n:28C:1\n:60F:C261125EUR1,00\n-\n", "closing balance"),
        (statement_with(":61:2611251125X1,00NTRFX"), ":61:"),
        (statement_with(":61:2611251125C1.00NTRFX"), ":61:"),
        (statement_with(":61:2611251125C" + "9" * 40 + ",NTRFX"), "too long"),
        (statement_with(opening="C261125EUR1.00"), "balance"),
        (statement_with().replace(":28C:1/1", ":28C:abc"), "statement number"),
        (statement_with().replace(":60F:", ":60F:C261125EUR1,00\n:60M:"), "second opening"),
        (statement_with().replace("-\n", ":61:2611251125C1,00NTRFX\n-\n"), "after the closing"),
        (statement_with() + "stray text\n", "outside a statement"),
    ],
)
def test_garbage_and_truncated_input_raise_mt940_error(text: str, message: str) -> None:
    with pytest.raises(MT940Error, match=message) as caught:
        parse_statements(text)
    assert caught.value.line_no is not None
    assert f"line {caught.value.line_no}" in str(caught.value)


def test_every_truncation_parses_or_raises_mt940_error() -> None:
    text = sample("swiss_paged.sta") + sample("dutch_ing.sta")
    complete = 0
    for cut in range(len(text)):
        try:
            statements = parse_statements(text[:cut])
        except MT940Error:
            continue
        complete += 1
        for statement in statements:
            assert statement.closing_balance is not None
    assert complete > 0


def test_statements_before_a_broken_one_are_still_yielded() -> None:
    text = sample("example_bank.sta") + ":20:BROKEN\n:25:X\n"
    statements = iter_statements(text)
    assert next(statements).transaction_reference == "EB2611250001"
    with pytest.raises(MT940Error):
        next(statements)


_MUTATION_ALPHABET = ":-{}/?~^+,.0123456789CDRNFMS \t\r\n\x00ü"
_VALID_SAMPLES = [
    sample(name)
    for name in (
        "example_bank.sta",
        "german_sparkasse.sta",
        "dutch_ing.sta",
        "swiss_paged.sta",
        "polish.sta",
    )
]


def _exercise(statements: list[Statement]) -> None:
    for statement in statements:
        assert statement.balance_problem() is None or isinstance(statement.balance_problem(), str)
        for entry in statement.entries:
            assert isinstance(entry.amount, Decimal)
            entry.subfields()
            _ = entry.signed_amount


@settings(max_examples=300 * FUZZ_SCALE, deadline=None, database=None)
@given(st.binary(max_size=3000))
def test_random_bytes_parse_or_raise_mt940_error(data: bytes) -> None:
    try:
        statements = list(iter_statements(data))
    except MT940Error:
        return
    _exercise(statements)


@st.composite
def mutated_statement(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_VALID_SAMPLES))
    for _ in range(draw(st.integers(1, 8))):
        lines = text.split("\n")
        kind = draw(st.sampled_from(["insert", "delete", "replace", "drop", "dup", "swap", "cut"]))
        if kind in ("drop", "dup", "swap"):
            i = draw(st.integers(0, len(lines) - 1))
            j = min(i + 1, len(lines) - 1)
            if kind == "drop":
                del lines[i]
            elif kind == "dup":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
            continue
        position = draw(st.integers(0, max(len(text) - 1, 0)))
        if kind == "cut":
            text = text[:position]
        elif kind == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            char = draw(st.text(_MUTATION_ALPHABET, min_size=1, max_size=3))
            skip = 1 if kind == "replace" else 0
            text = text[:position] + char + text[position + skip :]
    return text


@settings(
    max_examples=500 * FUZZ_SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated_statement())
def test_mutated_statements_parse_or_raise_mt940_error(text: str) -> None:
    try:
        statements = parse_statements(text)
    except MT940Error:
        return
    _exercise(statements)


# --- Subfields ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ("Free text payment for invoice 12", {}),
        ("100+20 EUR fee", {}),  # one '+20' is not structure
        ("", {}),
        ("+00PRZELEW+20Tytul+32NAZWA", {"00": "PRZELEW", "20": "Tytul", "32": "NAZWA"}),
        ("?20only purpose", {"20": "only purpose"}),
        ("/REMI/part one\nand two/EREF/E1", {"REMI": "part one and two", "EREF": "E1"}),
        ("/REMI/" + "a" * 59 + "\nbc", {"REMI": "a" * 59 + "bc"}),  # full 65-character line
        ("/UNKNOWN/x", {}),
    ],
)
def test_subfield_parsing(details: str, expected: dict[str, str]) -> None:
    entry = Entry(1, date(2026, 1, 1), None, "C", None, Decimal(1), "NTRF", "X", details=details)
    assert entry.subfields() == expected


# --- Decoding -----------------------------------------------------------------------------------


def test_decode_statement_bytes() -> None:
    assert decode_statement_bytes("Müller".encode()) == "Müller"
    assert decode_statement_bytes(b"\xef\xbb\xbf:20:X") == ":20:X"
    assert decode_statement_bytes("Müller €".encode("cp1252")) == "Müller €"
    assert decode_statement_bytes(b"M\xfcller \x81") == "Müller \x81"  # not cp1252: Latin-1
    assert decode_statement_bytes(":20:X".encode("utf-16")) == ":20:X"


# --- Streaming and size -------------------------------------------------------------------------


def _statement_lines(index: int, entries: int) -> Iterator[str]:
    yield f":20:S{index}"
    yield ":25:1234567890"
    yield f":28C:{index}/1"
    yield ":60F:C261125USD1000,00"
    total = 0
    for i in range(entries):
        cents = 1 + (i * 7919) % 100_000
        credit = i % 3 == 0
        total += cents if credit else -cents
        mark = "C" if credit else "D"
        yield f":61:2611251125{mark}{cents // 100},{cents % 100:02d}NTRFd-{i}//B{i}"
        yield f":86:/EREF/d-{i}/BENM//NAME/Person {i}/REMI/Cash transfer"
    closing = 100_000 + total
    mark = "C" if closing >= 0 else "D"
    yield f":62F:{mark}261125USD{abs(closing) // 100},{abs(closing) % 100:02d}"
    yield "-"


def test_iter_statements_is_lazy() -> None:
    endless = itertools.chain.from_iterable(_statement_lines(i, 3) for i in itertools.count())
    first_three = list(itertools.islice(iter_statements(endless), 3))
    assert [s.transaction_reference for s in first_three] == ["S0", "S1", "S2"]


def test_memory_stays_flat_over_many_statements() -> None:
    lines = itertools.chain.from_iterable(_statement_lines(i, 20) for i in range(500))
    tracemalloc.start()
    try:
        count = 0
        for statement in iter_statements(lines):
            assert statement.balance_problem() is None
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 500
    # Holding all 10,000 entries peaks near 5 MB; one page at a time stays near 0.1 MB.
    assert peak < 1_000_000, peak


def test_two_hundred_thousand_entries() -> None:
    (statement,) = list(iter_statements(_statement_lines(0, 200_000)))
    assert len(statement.entries) == 200_000
    assert statement.entries[-1].sequence == 200_000
    assert statement.entries[-1].subfields()["NAME"] == "Person 199999"
    assert statement.balance_problem() is None


# --- Layering -----------------------------------------------------------------------------------


def test_formats_package_is_a_pure_layer() -> None:
    """formats/ sits below core/ and connectors/: it may import only itself and the stdlib."""
    root = Path(g2p_bridge.formats.__file__).parent
    modules = sorted(root.rglob("*.py"))
    assert modules
    for module in modules:
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("g2p_bridge", "example_bank"):
                    assert name.startswith("g2p_bridge.formats"), (module, name)
