"""A small, fast MT940 (customer statement) writer.

Layout produced (one statement page)::

    :20:EB000000000012
    :25:1234567890
    :28C:00012/001
    :60F:C261125USD1000000,00
    :61:2611251125D100,50NTRFdisb-0001//EB000000000001D
    :86:Cash transfer Nov
    PROG-1
    2026-11
    ben-0001

    :62F:C261125USD999899,50
    -

The ``:86:`` above is OpenG2P's six-line layout (narrative, program, cycle, beneficiary id, an
empty line, the return reason), which OpenG2P's own bridge reads by line number; see
:func:`six_line_details`. :func:`structured_details` gives the ``/EREF/.../NAME/...`` subfield
layout instead, one logical line that :func:`wrap_86` cuts to width.

Inner pages of a statement split over several messages use ``:60M:``/``:62M:`` on the
page boundaries. Lines are produced by generators so a huge statement never needs to
exist as a list of Python objects; ``:86:`` is wrapped to physical lines of at most 65
characters (tag included) that concatenate back to the original text. The customer
reference of ``:61:`` is the full payment reference, even beyond SWIFT's 16 characters,
because the bridge reconciles on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

LINE_WIDTH = 65
# The :86: layouts the Example Bank writes (EXAMPLE_BANK_MT940_NARRATIVE_LAYOUT).
NarrativeLayout = Literal["openg2p", "subfields"]
_TAG86 = ":86:"


def format_amount(amount: Decimal) -> str:
    """``Decimal("-1234.5")`` -> ``"1234,50"`` (MT940 amounts are unsigned, comma decimal)."""
    return f"{abs(amount):.2f}".replace(".", ",")


def format_balance(amount: Decimal, on: date, currency: str) -> str:
    """Balance field body, e.g. ``C261125USD1000000,00`` (D when negative)."""
    mark = "D" if amount < 0 else "C"
    return f"{mark}{on:%y%m%d}{currency}{format_amount(amount)}"


# What a :61: reference may hold: a line break would start a forged field, "//" would move
# the bank reference, a blank or "/" is read differently by different parsers.
_REFERENCE_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def clean_reference(value: str) -> str:
    """A reference as it may stand in ``:61:``; any other character is written as ``?``, so
    the entry can never be read as something else (it then matches no payment, visibly)."""
    return _REFERENCE_UNSAFE.sub("?", value)


def clean_value(value: str) -> str:
    """Make free text safe inside a ``/CODE/value`` structured :86: field.

    A ``/`` would start a new code, so it becomes ``-``; runs of whitespace (line breaks
    included) collapse to one blank, which keeps wrapping lossless.
    """
    return " ".join(value.replace("/", "-").split())


def structured_details(pairs: Iterable[tuple[str, str | None]]) -> str:
    """``[("EREF", "x"), ("REMI", None)]`` -> ``"/EREF/x"`` (empty values skipped)."""
    parts: list[str] = []
    for code, value in pairs:
        if value is None:
            continue
        if code == "BENM":  # a marker whose sub-fields follow: /BENM//NAME/...
            parts.append("/BENM/")
            continue
        cleaned = clean_value(value)
        if cleaned:
            parts.append(f"/{code}/{cleaned}")
    return "".join(parts)


SIX_LINES = 6


def six_line_details(lines: Iterable[str | None]) -> str:
    """OpenG2P's ``:86:`` layout: exactly six lines, ``None`` written as an empty line.

    A reader finds each value by its line number, so nothing is ever wrapped onto another line:
    a value is cut to fit its line (the first shares its line with the ``:86:`` tag). Line
    breaks inside a value collapse to a blank, and a value that would start with ``:``, ``-`` or
    ``{`` (read as a new field, the end of the message or a SWIFT block) is moved right by one
    blank, so a narrative can never forge a field.
    """
    values = [" ".join((value or "").split()) for value in lines]
    if len(values) > SIX_LINES:
        raise ValueError(f"the six-line :86: layout has {SIX_LINES} lines, got {len(values)}")
    values += [""] * (SIX_LINES - len(values))
    out = []
    for number, value in enumerate(values):
        if value[:1] in _UNSAFE_START:
            value = " " + value
        out.append(value[: LINE_WIDTH - (len(_TAG86) if number == 0 else 0)].rstrip())
    return "\n".join(out)


def wrap_86(details: str, width: int = LINE_WIDTH) -> Iterator[str]:
    """Yield the physical lines of a ``:86:`` field, each at most ``width`` characters.

    Joining the lines (after dropping the ``:86:`` tag) gives ``details`` back. Breaks are
    placed so that a reader that re-joins wrapped narratives (the bridge's parser puts a
    blank back after a line shorter than 65 characters unless the next line starts with
    ``/``) rebuilds the exact text:

    * the first line, which the tag makes shorter, breaks right before a ``/``;
    * a continuation line is cut at full width, unless the next line would then start
      with ``:``, ``-`` or ``{`` (a reader could take it for a new tag, the end of the
      message or a SWIFT block), in which case it also breaks before a ``/``.
    """
    text = _TAG86 + details
    length = len(text)
    start = 0
    while length - start > width:
        end = start + width
        first = start == 0
        floor = start + (len(_TAG86) + 1 if first else 1)  # never emit an empty line
        if first or text[end] in _UNSAFE_START:
            slash = text.rfind("/", floor, end + 1)
            if slash >= floor:
                end = slash
            else:  # no '/' to break at (one very long value): just avoid a bad start
                while end > floor and text[end] in _UNSAFE_START:
                    end -= 1
        yield text[start:end]
        start = end
    yield text[start:]


_UNSAFE_START = frozenset(":-{")


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One :61:/:86: pair. ``amount`` is signed (negative for D and RC)."""

    value_date: date
    entry_date: date
    mark: str
    amount: Decimal
    customer_reference: str
    bank_reference: str
    details: str


@dataclass(frozen=True, slots=True)
class StatementPage:
    """Header data of one MT940 message (one page of a statement)."""

    transaction_reference: str
    account_number: str
    statement_number: int
    sequence_number: int
    currency: str
    opening_balance: Decimal
    closing_balance: Decimal
    opening_date: date
    closing_date: date
    first_page: bool = True
    last_page: bool = True


def entry_lines(
    entry: StatementEntry, _dates: dict[tuple[date, date], str] | None = None
) -> Iterator[str]:
    """Lines of one statement entry (``_dates`` caches the formatted date pair)."""
    key = (entry.value_date, entry.entry_date)
    dates = _dates.get(key) if _dates is not None else None
    if dates is None:
        # strftime is the slowest part of an entry; statements repeat a few dates.
        dates = f"{entry.value_date:%y%m%d}{entry.entry_date:%m%d}"
        if _dates is not None:
            _dates[key] = dates
    yield (
        f":61:{dates}{entry.mark}{format_amount(entry.amount)}"
        f"NTRF{clean_reference(entry.customer_reference) or 'NONREF'}"
        f"//{clean_reference(entry.bank_reference)}"
    )
    if "\n" in entry.details:  # the six-line layout: already one value per physical line
        first, *rest = entry.details.split("\n")
        yield _TAG86 + first
        yield from rest
    elif entry.details:
        yield from wrap_86(entry.details)


def iter_statement_lines(page: StatementPage, entries: Iterable[StatementEntry]) -> Iterator[str]:
    """Yield every line of one MT940 message, ending with the ``-`` trailer."""
    yield f":20:{clean_reference(page.transaction_reference)}"
    yield f":25:{clean_reference(page.account_number)}"
    yield f":28C:{page.statement_number:05d}/{page.sequence_number:03d}"
    opening_tag = "60F" if page.first_page else "60M"
    yield f":{opening_tag}:" + format_balance(
        page.opening_balance, page.opening_date, page.currency
    )
    dates: dict[tuple[date, date], str] = {}
    for entry in entries:
        yield from entry_lines(entry, dates)
    closing_tag = "62F" if page.last_page else "62M"
    yield f":{closing_tag}:" + format_balance(
        page.closing_balance, page.closing_date, page.currency
    )
    yield "-"


def render_statement(page: StatementPage, entries: Iterable[StatementEntry]) -> str:
    """The whole message as text (``\\n`` line ends, trailing newline)."""
    return "\n".join(iter_statement_lines(page, entries)) + "\n"
