"""Statement writing: numbering, paging, balances, and the MT940 text itself."""

from __future__ import annotations

import itertools
import re
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from example_bank.models import LedgerEntry, Statement
from example_bank.processing import statement_accounts_due, write_due_statements, write_statements
from example_bank.services import accept_payments, deposit

_BALANCE = re.compile(r":6[02][FM]:([CD])\d{6}[A-Z]{3}([\d,]+)")
_ENTRY = re.compile(r":61:\d{10}(RD|RC|D|C)([\d,]+)NTRF")


def _parse(text: str) -> tuple[Decimal, list[Decimal], Decimal]:
    """Opening, signed entry amounts and closing read back from our own MT940 text."""

    def signed(mark: str, raw: str) -> Decimal:
        value = Decimal(raw.replace(",", "."))
        return -value if mark in ("D", "RC") else value

    balances = [signed(m, a) for m, a in _BALANCE.findall(text)]
    entries = [signed(m, a) for m, a in _ENTRY.findall(text)]
    assert len(balances) == 2
    return balances[0], entries, balances[1]


def _pay(bank: Any, make_payment: Any, prefix: str, count: int, block: str) -> None:
    rows = [make_payment(f"{prefix}-{i}", block, "2.50") for i in range(count)]
    rows = [r | {"payment_amount": Decimal(r["payment_amount"])} for r in rows]
    with bank.sessions() as s, s.begin():
        accept_payments(s, rows)
    bank.process_all()


def _return_reasons(bank: Any) -> dict[str, str]:
    """The bank's own record: payment reference -> reason of its RD (returned) entry."""
    with bank.sessions() as s:
        rows = s.execute(
            select(LedgerEntry.payment_reference, LedgerEntry.return_reason).where(
                LedgerEntry.mark == "RD"
            )
        )
        return {ref: reason for ref, reason in rows}


def _statements(bank: Any) -> list[Statement]:
    with bank.sessions() as s:
        return list(s.scalars(select(Statement).order_by(Statement.id)))


def test_statements_are_numbered_in_sequence_and_balance(bank: Any, make_payment: Any) -> None:
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "1000.00")
    _pay(bank, make_payment, "a", 10, block)
    with bank.sessions() as s, s.begin():
        assert statement_accounts_due(s) == ["PROG-1"]
        first = write_due_statements(s, bank.settings)
        assert statement_accounts_due(s) == []
        assert write_due_statements(s, bank.settings) == []  # nothing new to report
    _pay(bank, make_payment, "b", 5, block)
    with bank.sessions() as s, s.begin():
        second = write_due_statements(s, bank.settings)
    assert len(first) == 1 and len(second) == 1
    one, two = _statements(bank)
    assert (one.statement_number, one.sequence_number) == (1, 1)
    assert (two.statement_number, two.sequence_number) == (2, 1)
    assert one.opening_balance == 0
    assert two.opening_balance == one.closing_balance
    assert two.closing_balance == bank.balances("PROG-1")[0]
    for statement in (one, two):
        opening, amounts, closing = _parse(statement.mt940)
        assert opening == statement.opening_balance and closing == statement.closing_balance
        assert opening + sum(amounts, Decimal(0)) == closing
        assert len(amounts) == statement.entry_count
        assert f":28C:{statement.statement_number:05d}/001" in statement.mt940
        assert statement.mt940.rstrip().endswith("\n-")
        assert ":60F:" in statement.mt940 and ":62F:" in statement.mt940
    returns = len(re.findall(r":61:\d{10}RD", one.mt940))
    assert returns > 0
    assert one.entry_count == 1 + 10 + returns  # deposit + debits + returns
    with bank.sessions() as s:
        unreported = s.scalar(
            select(func.count()).where(
                LedgerEntry.account_number == "PROG-1", LedgerEntry.statement_id.is_(None)
            )
        )
    assert unreported == 0
    bank.assert_invariants()


def test_long_statement_is_split_into_pages(bank: Any, make_payment: Any) -> None:
    bank.settings.statement_max_entries = 4
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "1000.00")
    _pay(bank, make_payment, "p", 9, block)
    with bank.sessions() as s, s.begin():
        entry_count = s.scalar(select(func.count()).where(LedgerEntry.account_number == "PROG-1"))
        ids = write_statements(s, "PROG-1", bank.settings)
    pages = _statements(bank)
    assert [p.id for p in pages] == ids
    assert len(pages) == -(-entry_count // 4)
    assert {p.statement_number for p in pages} == {1}
    assert [p.sequence_number for p in pages] == list(range(1, len(pages) + 1))
    assert sum(p.entry_count for p in pages) == entry_count
    assert all(p.entry_count == 4 for p in pages[:-1])
    for previous, page in itertools.pairwise(pages):
        assert page.opening_balance == previous.closing_balance
    for index, page in enumerate(pages):
        text = page.mt940
        assert (":60F:" if index == 0 else ":60M:") in text
        assert (":62F:" if index == len(pages) - 1 else ":62M:") in text
        opening, amounts, closing = _parse(text)
        assert opening + sum(amounts, Decimal(0)) == closing
    assert pages[-1].closing_balance == bank.balances("PROG-1")[0]
    assert len({re.search(r":20:(\S+)", p.mt940).group(1) for p in pages}) == len(pages)  # type: ignore[union-attr]
    bank.assert_invariants()


def test_explicit_statement_without_new_entries_is_empty(bank: Any) -> None:
    bank.account("PROG-1", "10.00")
    with bank.sessions() as s, s.begin():
        write_statements(s, "PROG-1", bank.settings)
        (empty,) = write_statements(s, "PROG-1", bank.settings, allow_empty=True)
        deposit(s, "PROG-1", Decimal("1.00"), bank_code="EXAMPLE")
        write_statements(s, "PROG-1", bank.settings)
    _first, second, third = _statements(bank)
    assert second.id == empty and second.entry_count == 0
    assert second.opening_balance == second.closing_balance == Decimal("10.00")
    assert (third.statement_number, third.opening_balance, third.closing_balance) == (
        3,
        Decimal("10.00"),
        Decimal("11.00"),
    )


def test_statement_round_trips_through_the_bridge_parser(bank: Any, make_payment: Any) -> None:
    """The subfield layout (EXAMPLE_BANK_MT940_NARRATIVE_LAYOUT=subfields)."""
    import pytest

    mt940 = pytest.importorskip("g2p_bridge.formats.mt940")
    bank.settings.mt940_narrative_layout = "subfields"
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "1000.00")
    _pay(bank, make_payment, "rt", 12, block)
    with bank.sessions() as s, s.begin():
        write_due_statements(s, bank.settings)
    (statement,) = _statements(bank)
    (parsed,) = list(mt940.iter_statements(statement.mt940))
    assert parsed.balance_problem() is None
    assert parsed.account == "PROG-1"
    debits = [e for e in parsed.entries if e.mark == "D"]
    returns = [e for e in parsed.entries if e.mark == "RD"]
    assert sorted(e.customer_reference for e in debits) == sorted(f"rt-{i}" for i in range(12))
    assert all(e.subfields()["EREF"] == e.customer_reference for e in debits)
    assert all(e.subfields()["NAME"] == f"Beneficiary {e.customer_reference}" for e in debits)
    assert all(e.subfields()["ULTB"] == f"BEN-{e.customer_reference}" for e in debits)
    reasons = _return_reasons(bank)
    assert {e.customer_reference: e.subfields()["RTRN"] for e in returns} == reasons


def test_the_default_statement_is_openg2ps_six_line_layout(bank: Any, make_payment: Any) -> None:
    """What OpenG2P's bridge reads by line number: every entry's :86: is six lines (narrative,
    program, cycle, beneficiary id, empty, reason), written on six physical lines."""
    import pytest

    mt940 = pytest.importorskip("g2p_bridge.formats.mt940")
    assert bank.settings.mt940_narrative_layout == "openg2p"
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "1000.00")
    _pay(bank, make_payment, "six", 12, block)
    with bank.sessions() as s, s.begin():
        write_due_statements(s, bank.settings)
    (statement,) = _statements(bank)
    physical = statement.mt940.split("\n")
    first = next(i for i, line in enumerate(physical) if line.startswith(":86:Cash transfer"))
    assert physical[first + 1 : first + 6] == ["PROG1", "C1", physical[first + 3], "", ""]
    assert physical[first + 6].startswith(":6")  # the next field: nothing wrapped or added
    (parsed,) = list(mt940.iter_statements(statement.mt940))
    assert parsed.balance_problem() is None
    debits = [e for e in parsed.entries if e.mark == "D"]
    returns = [e for e in parsed.entries if e.mark == "RD"]
    assert len(debits) == 12 and returns
    for entry in debits:
        assert entry.subfields() == {}
        # A payment's empty fifth and sixth lines end the field: the parser drops trailing blanks.
        assert mt940.six_line_narrative(entry.details) == mt940.SixLineNarrative(
            "Cash transfer Nov", "PROG1", "C1", f"BEN-{entry.customer_reference}", "", ""
        )
    reasons = _return_reasons(bank)
    read = {e.customer_reference: mt940.six_line_narrative(e.details) for e in returns}
    assert {ref: n.reason for ref, n in read.items() if n is not None} == reasons
    assert all(n is not None and n.fifth == "" for n in read.values())


def test_a_six_line_narrative_cannot_forge_a_field_or_move_a_line() -> None:
    """Narratives come from the payer: a value that starts like a field, ends the message or
    opens a SWIFT block is moved right; a long or multi-line one is cut to its own line."""
    from example_bank.mt940_writer import (
        StatementEntry,
        StatementPage,
        render_statement,
        six_line_details,
    )
    from g2p_bridge.formats import mt940

    hostile = (":62F:C261125USD9999999,00", "-", "{5:{CHK:1}}", "x" * 300, "a\nb\r\nc", "R")
    details = six_line_details(hostile)
    lines = details.split("\n")
    assert len(lines) == 6
    assert lines[0].startswith(" :62F:") and len(":86:" + lines[0]) <= 65
    assert lines[1:3] == [" -", " {5:{CHK:1}}"]
    assert lines[3] == "x" * 65 and lines[4] == "a b c" and lines[5] == "R"
    today = date(2026, 11, 25)
    entry = StatementEntry(today, today, "RD", Decimal("1.00"), "d-1", "EB1RD", details)
    page = StatementPage("EB1", "PROG-1", 1, 1, "USD", Decimal(0), Decimal("1.00"), today, today)
    (parsed,) = mt940.parse_statements(render_statement(page, [entry]))
    assert parsed.closing_balance.amount == Decimal("1.00") and parsed.balance_problem() is None
    assert len(parsed.entries) == 1 and not parsed.non_standard
    (read,) = parsed.entries
    narrative = mt940.six_line_narrative(read.details)
    assert narrative is not None and narrative.reason == "R"
    assert narrative.beneficiary_id == "x" * 65
