"""Streaming, tolerant parser for SWIFT MT940 bank statements.

The reconciliation reads every bank's end-of-day statement through this module, so it has to
cope with what banks really send rather than with the standard alone. Accepted:

* Framing: SWIFT FIN blocks (``{1:}{2:}{3:}`` headers and ``{4:`` on their own lines or on the
  ``:20:`` line; ``-}`` then ``{5:{CHK:...}}``/``{S:...}`` trailers on the same or later lines;
  several messages on one line after ``-}``); a bank's header lines before the first ``:20:``
  (ABN AMRO's ``ABNANL2A``/``940``/``ABNANL2A``, Rabobank's ``:940:``, ``0000 ...`` lines, a
  file name or date) and page footers between messages; SOH/ETX/SUB framing characters.
* Many messages per file, ended by ``-``, ``-}``, ``$``, the next ``:20:`` or the end of the
  file (a final message needs no terminator); blank lines anywhere (inside a ``:86:`` they
  keep their place, for layouts read by line number).
* Lines: LF, CRLF, CR or a mix; trailing blanks; UTF-8 with or without BOM, Windows-1252,
  Latin-1, UTF-16 with BOM (see :func:`decode_statement_bytes`).
* Fields: ``:28:`` or ``:28C:``, with or without a sequence number (``1``, ``00042/``,
  ``19321/1``); balances with blanks between their parts; ``:60M:``/``:62M:`` pages; ``:64:``
  and ``:65:``; ``:25P:``; ``: 86:`` with a stray blank.
* ``:61:``: with or without entry date (also after a blank), marks ``C``/``D``/``RC``/``RD``
  and ``EC``/``ED``, a funds code, amounts ``100,``/``,50``/``100,00``, any type code
  (``NTRF``, ``NMSC``, ``N051``, ``FMSC``, ``S202``), ``NONREF``, no customer or no bank
  reference, supplementary details on one or more following lines.
* ``:86:`` of any length and layout (German ``?20``, Polish ``~20``/``^20``, ``+20``, SWIFT
  ``/EREF/``): kept verbatim; :func:`parse_subfields` reads the structure.
* ``:NS:`` (with its numbered sub-lines) and unknown tags: kept verbatim as ``:TAG:value`` in
  :attr:`Entry.non_standard` (after a ``:61:``) or :attr:`Statement.non_standard`, never mixed
  into a narrative; MT942 fields (``:13:``/``:13D:``, ``:34F:``, ``:90C:``/``:90D:``) go to
  the statement's.

Refused, always with :class:`MT940Error` (a ``ValueError``) naming the line and the reason, and
no other exception type for bad input:

* a statement without account, statement number, opening or closing balance (a truncated
  statement), a second one of those, or a ``:61:`` after the closing balance;
* a field that cannot be read (a ``:61:``, balance, statement number, date or amount), and a
  ``:25:`` account that goes on to a second line (``:25P:`` may: its second line is a BIC);
* a field outside a message (anything but ``:20:`` after a terminator: its ``:20:`` is lost);
* text that is not a field inside a message: in a SWIFT envelope before ``:20:``, after
  ``-}`` on the same line, or in a statement where there is no field for it to continue;
* an input that ends inside a SWIFT envelope, or holds no ``:20:`` at all.

Text is ignored only where it is clearly outside every message: before the first message and
between a terminator and the next ``{1:``/``{4:``/``:20:``. Inside a message a line is a field
or continues one; nothing there is skipped silently.

Security: the bridge authorizes an upload by the accounts this parser reads, so
:func:`iter_statement_headers` is this same parse (every entry read and checked, then dropped),
not a second, lighter reading of the file that could disagree with the one that applies it.

Design rules:

* Streaming: input is consumed line by line and each ``:20:`` block (a statement or one page of
  a paged statement) is yielded as soon as it is complete, so memory is bounded by the largest
  single page, not by the file.
* One page is one :class:`Statement`. Pages and statements are never merged: each carries its
  own balances and must balance by itself (:meth:`Statement.balance_problem`).
* Money is :class:`~decimal.Decimal` end to end; a float never appears.

Rules for the ambiguous cases (see also the docstrings below):

* A line starts a new field only if it matches ``^:\\d\\d[A-Z]?:`` (or ``:NS:``, or a known tag
  with one stray space such as ``: 86:``). Inside a ``:86:`` narrative a tag-like line whose tag
  is not one MT940 uses (``:12:30 ...``) is kept as narrative text.
* A line that is exactly ``-`` (or ``$``) ends the message, except inside ``:86:`` or ``:NS:``
  text before the closing balance (where ending the message would only refuse it), where it
  is narrative text. ``-}`` always ends the message, and so does any SWIFT block line (a
  header starts the next message, a trailer follows this one).
* ``:61:`` mark: a mark that begins with ``C`` or ``D`` is a plain credit/debit, ``R`` a
  reversal (``RC``/``RD``), ``E`` an expected item (``EC``/``ED``, as in MT942); a single
  letter right after the mark is the funds code. Blanks between mark, funds code and amount
  are ignored. So ``DR100,00`` is a debit with funds code ``R``, ``RD100,00`` is a reversed
  debit, and ``CR 30,00`` and ``C R30,00`` are both a credit of 30.00 with funds code ``R``.
* ``EC``/``ED`` are parsed but not booked: :attr:`Entry.is_expected` is true, the balance
  check leaves them out (``:62F:`` is the booked balance) and the reconciliation, which acts on
  ``D`` and ``RD`` only, does not match them to payments.
* Two-digit years: 00-79 are 20xx, 80-99 are 19xx. The entry date (MMDD) takes the year that
  puts it closest to the value date, so it may fall in the previous or next year.
* A day that does not exist in its month (30 February) is clamped to the month's last day; on an
  entry the clamping is reported in :attr:`Entry.raw_date_warning`. Month 00/13 or day 00/32 is
  malformed and raises.
* A second ``:86:`` after an entry's first one is appended to that entry's details. A ``:86:``
  with no entry to attach to (before the first ``:61:`` or after the closing balance) is
  statement information.
"""

from __future__ import annotations

import calendar
import codecs
import dataclasses
import io
import itertools
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from typing import BinaryIO, NamedTuple, TextIO

__all__ = [
    "Balance",
    "Entry",
    "MT940Error",
    "SixLineNarrative",
    "Statement",
    "decode_statement_bytes",
    "iter_statement_headers",
    "iter_statements",
    "parse_statements",
    "parse_subfields",
    "six_line_narrative",
]


class MT940Error(ValueError):
    """The input is not an MT940 statement this parser can trust; the message names the line."""

    def __init__(self, message: str, line_no: int | None = None) -> None:
        self.reason = message
        self.line_no = line_no
        super().__init__(f"MT940 line {line_no}: {message}" if line_no is not None else message)


@dataclass(frozen=True, slots=True)
class Balance:
    """An opening (:60:), closing (:62:), available (:64:) or forward (:65:) balance."""

    mark: str  # "C" or "D"
    date: date
    currency: str
    amount: Decimal
    # False on the intermediate balances (:60M:/:62M:) of an inner page of a paged statement.
    is_final: bool = True

    @property
    def signed_amount(self) -> Decimal:
        # copy_negate is exact; unary minus would round to the context precision.
        return self.amount.copy_negate() if self.mark == "D" else self.amount


@dataclass(frozen=True, slots=True)
class Entry:
    """One :61: statement line with its :86: narrative."""

    sequence: int  # 1-based position within the statement page
    value_date: date
    entry_date: date | None
    mark: str  # "C", "D", "RC", "RD", or "EC"/"ED" (expected, not booked)
    funds_code: str | None
    amount: Decimal
    transaction_type: str  # e.g. "NTRF": a letter and three characters
    customer_reference: str
    bank_reference: str | None = None
    supplementary_details: str | None = None
    details: str = ""  # the :86: text, lines joined with "\n", never truncated
    raw_date_warning: str | None = None
    # Non-standard fields (:NS:, bank-specific tags) after this entry's :61:, each kept
    # verbatim as ":TAG:value" and joined with "\n"; never mixed into ``details``, whose
    # subfields the reconciliation reads.
    non_standard: str = ""

    @property
    def signed_amount(self) -> Decimal:
        """Negative when money leaves the account: D, RC (a credit taken back) and ED."""
        return self.amount.copy_negate() if self.mark in _OUTGOING else self.amount

    @property
    def is_reversal(self) -> bool:
        return self.mark in _REVERSALS

    @property
    def is_expected(self) -> bool:
        """EC/ED: an item the bank expects to book, not a movement of the booked balance."""
        return self.mark in _EXPECTED

    def subfields(self) -> dict[str, str]:
        """Structured :86: subfields, or {} when the narrative is free text.

        German/Polish layouts (``?20``, ``+20``, ``~20``, ``^20``) give two-digit keys ("00",
        "20"..."29", "32", "33", "60"...) plus "GVC" for a leading three-digit transaction code;
        SWIFT-style ``/CODE/value`` narratives give the code ("EREF", "NAME", "REMI", "RTRN").
        """
        return parse_subfields(self.details)


@dataclass(frozen=True, slots=True)
class Statement:
    """One :20: block: a whole statement, or one page of a paged statement."""

    transaction_reference: str
    related_reference: str | None
    account: str
    statement_number: str
    sequence_number: str | None
    opening_balance: Balance
    closing_balance: Balance
    available_balance: Balance | None = None
    forward_balances: tuple[Balance, ...] = ()
    entries: tuple[Entry, ...] = ()
    information: str | None = None
    # MT942-like fields (:13D:, :34F:, :90C:/:90D:) and non-standard fields (:NS:, unknown
    # tags) that belong to no entry, each kept verbatim as ":TAG:value", joined with "\n".
    non_standard: str | None = None

    def balance_problem(self) -> str | None:
        """None when opening + booked entries == closing in one currency, else what is wrong.

        Expected entries (EC/ED) are left out: :62F:/:62M: is the booked balance, and an item
        the bank has not booked yet is not in it.
        """
        try:
            opening, closing = self.opening_balance, self.closing_balance
            label = f"statement {self.transaction_reference} ({self._number_label()})"
            if opening.currency != closing.currency:
                return (
                    f"{label}: opening balance is in {opening.currency} "
                    f"but closing balance is in {closing.currency}"
                )
            # Wide precision so that the sum stays exact however many entries there are.
            with localcontext() as ctx:
                ctx.prec = 200
                movement = sum(
                    (e.signed_amount for e in self.entries if e.mark not in _EXPECTED), Decimal(0)
                )
                expected = opening.signed_amount + movement
                difference = closing.signed_amount - expected
            if difference == 0:
                return None
            currency = opening.currency
            return (
                f"{label}: opening {opening.signed_amount} {currency} + {len(self.entries)} "
                f"entries totalling {movement} {currency} = {expected} {currency}, but closing "
                f"balance is {closing.signed_amount} {currency} (difference {difference})"
            )
        except (ArithmeticError, AttributeError, TypeError, ValueError) as exc:
            # Hand-built statements may hold anything; the check reports rather than raises.
            return f"statement balance cannot be checked: {exc}"

    def _number_label(self) -> str:
        if self.sequence_number is None:
            return f"number {self.statement_number}"
        return f"number {self.statement_number}/{self.sequence_number}"


_OUTGOING = frozenset({"D", "RC", "ED"})
_REVERSALS = frozenset({"RC", "RD"})
_EXPECTED = frozenset({"EC", "ED"})
# Interning the few mark and type strings keeps 100,000 entries from holding 100,000 copies.
_MARKS = {mark: mark for mark in ("C", "D", "RC", "RD", "EC", "ED")}

# Tags MT940 (and the MT942-like variants some banks export) use; see _TAG for how they matter.
_KNOWN_TAGS = frozenset(
    {
        "20", "21", "25", "25P", "28", "28C", "60", "60F", "60M", "61", "62", "62F", "62M",
        "64", "65", "86", "NS", "13", "13D", "34F", "90C", "90D",
    }
)  # fmt: skip
# MT942 fields some banks put in MT940 exports: they describe the statement, not an entry.
_MT942_TAGS = frozenset({"13", "13D", "34F", "90C", "90D"})
_KEPT_TAGS = _MT942_TAGS | {"NS"}
# Free-text fields, in which a line that is only "-" is text before the closing balance.
_NARRATIVE_TAGS = frozenset({"86", "NS"})
_SINGLE_FIELDS = {"21": "related reference", "25": "account", "28C": "statement number"}
_TAG = re.compile(r":( ?)(\d\d[A-Z]?|NS):")
# Blocks 1-5 of a SWIFT FIN message and the S (system) trailer block; 1-3 are headers.
_WRAPPER = re.compile(r"\{[1-5S]:")
_HEADER_BLOCK = re.compile(r"\{[123]:")
# Framing characters (SOH, ETX, SUB) that some transports leave around each message.
_FRAMING = "\x00\x01\x03\x1a"
# Far more than any bank puts on one line, far fewer than would exhaust the stack.
_MAX_MESSAGES_ON_A_LINE = 50
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BYTES_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_READ_CHUNK = 1 << 16

_AMOUNT = r"(\d+(?:,\d*)?|,\d+)"
_ENTRY = re.compile(
    r"(\d{6}) ?(\d{4})?\s*([RE]?[CD])\s*([A-Z])?\s*" + _AMOUNT + r"\s*([A-Z][A-Z0-9]{3})(.*)"
)
_BALANCE = re.compile(r"\s*([CD])\s*(\d{6})\s*([A-Za-z]{3})\s*" + _AMOUNT + r"\s*")
# A sequence number after the slash is optional; some banks write "00001/" for none.
_STATEMENT_NUMBER = re.compile(r"\s*(\d+)\s*(?:/\s*(\d*)\s*)?")
# Longer than any real amount (15 characters in the standard) but short enough to stay exact.
_MAX_AMOUNT_CHARS = 30


def decode_statement_bytes(data: bytes) -> str:
    """Decode a statement file: UTF-8, else Windows-1252, else Latin-1; a BOM is dropped.

    Banks that are not on UTF-8 mostly send Windows-1252 or Latin-1 for names with accents;
    Latin-1 maps every byte, so decoding never fails.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        # cp1252 leaves five bytes undefined; Latin-1 defines all 256.
        return data.decode("latin-1")


def parse_statements(text: str) -> list[Statement]:
    """Parse a whole text; for big files prefer :func:`iter_statements` on the open file."""
    return list(iter_statements(text))


def iter_statements(
    source: str | bytes | TextIO | BinaryIO | Iterable[str] | Iterable[bytes],
) -> Iterator[Statement]:
    """Yield each statement page of ``source`` as soon as it has been read.

    ``source`` is the whole text, the whole file content as bytes, an open text or binary file,
    or any iterable of lines (each item is one or more complete lines; line ends are optional).
    Items that are bytes are decoded line by line with :func:`decode_statement_bytes`, so a file
    opened in binary mode is the safest way to stream a file of unknown encoding.
    """
    state = _ParseState()
    line_no = 0
    try:
        for line_no, raw in enumerate(_iter_lines(source), 1):
            statement = state.feed(raw, line_no)
            if statement is not None:
                yield statement
        statement = state.end(line_no)
        if statement is not None:
            yield statement
    except (ArithmeticError, LookupError) as exc:
        # A parser bug must reject the file with a line number, not crash the worker.
        raise MT940Error(f"cannot parse ({type(exc).__name__}: {exc})", line_no) from exc


def iter_statement_headers(
    source: str | bytes | TextIO | BinaryIO | Iterable[str] | Iterable[bytes],
) -> Iterator[Statement]:
    """The pages :func:`iter_statements` yields, read by the same rules (every entry is parsed
    and checked), each without its entries: what an upload needs to authorize a file, from the
    very reading that will later apply it."""
    for page in iter_statements(source):
        yield dataclasses.replace(page, entries=())


def _iter_lines(
    source: str | bytes | TextIO | BinaryIO | Iterable[str] | Iterable[bytes],
) -> Iterator[str]:
    items: Iterable[str] | Iterable[bytes]
    if isinstance(source, str):
        items = io.StringIO(source, newline=None)
    elif isinstance(source, bytes | bytearray):
        items = io.StringIO(decode_statement_bytes(bytes(source)), newline=None)
    elif isinstance(source, io.BufferedIOBase | io.RawIOBase):
        # Iterating a binary file splits on LF only: a CR-only file would be one line of its
        # whole size. Reading it in chunks keeps memory flat whatever the line ends.
        items = _binary_lines(source)
    else:
        items = source
    count = 0
    try:
        for item in items:
            count += 1
            if isinstance(item, bytes | bytearray):
                text = decode_statement_bytes(bytes(item))
            elif isinstance(item, str):
                text = item
            else:
                raise MT940Error(f"expected lines of text, got {type(item).__name__}", count)
            if text.endswith("\n"):
                text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
            if "\n" in text or "\r" in text:
                yield from _LINE_BREAK.split(text)
            else:
                yield text
    except UnicodeDecodeError as exc:
        raise MT940Error(
            f"the file is not in the encoding it was opened with ({exc.reason}); "
            "open it in binary mode so that the encoding is detected",
            count + 1,
        ) from exc


def _binary_lines(handle: io.BufferedIOBase | io.RawIOBase) -> Iterator[bytes]:
    """The lines of a binary file, split on CRLF, CR or LF, without their line ends."""
    carry = b""
    while chunk := handle.read(_READ_CHUNK):
        data = carry + chunk
        # A CR at the end may be the first half of a CRLF: keep it for the next chunk, or an
        # empty line would appear and shift the line numbers of every error after it.
        cut = len(data) - 1 if data.endswith(b"\r") else len(data)
        lines = _BYTES_LINE_BREAK.split(data[:cut])
        carry = lines.pop() + data[cut:]
        yield from lines
    if carry:
        yield carry.removesuffix(b"\r")


class _PendingEntry(NamedTuple):
    value_date: date
    entry_date: date | None
    mark: str
    funds_code: str | None
    amount: Decimal
    transaction_type: str
    customer_reference: str
    bank_reference: str | None
    supplementary_details: str | None
    raw_date_warning: str | None


_EntryDateCache = dict[tuple[str, str | None], tuple[date, date | None, str | None]]


class _ParseState:
    """Splits lines into messages, messages into fields and fields into statement pages.

    Three places a line can be: inside a statement (``builder`` is set, from its ``:20:`` to
    its terminator), inside a SWIFT envelope before the ``:20:`` (``envelope``), or outside
    any message. Only outside may a line that is not a field be ignored.
    """

    __slots__ = (
        "builder",
        "cache",
        "depth",
        "entry_dates",
        "envelope",
        "envelope_line",
        "ignored",
        "seen",
    )

    def __init__(self) -> None:
        self.builder: _StatementBuilder | None = None
        # Parsed dates; statements repeat a handful of dates thousands of times.
        self.cache: dict[str, tuple[date, bool]] = {}
        self.entry_dates: _EntryDateCache = {}
        self.envelope = False
        self.envelope_line = 0
        # How many messages deep the current line is: "-}{1:...}{4:-}{1:..." nests a call
        # per message, and a line of thousands must be refused, not overflow the stack.
        self.depth = 0
        # The first ignored line outside a message, named if the file holds no statement.
        self.ignored: tuple[int, str] | None = None
        self.seen = False

    def feed(self, raw: str, line_no: int) -> Statement | None:
        line = raw.rstrip()
        if line and (line[0] in _FRAMING or line[-1] in _FRAMING or line[0] == "\ufeff"):
            line = line.strip(_FRAMING + "\ufeff").rstrip()
        builder = self.builder
        if not line:
            if builder is not None and builder.tag == "86":
                # Kept for now: inside a narrative a blank line holds a place (OpenG2P's
                # six-line layout has an empty fifth line); trailing ones are dropped at its end.
                builder.lines.append(line)
            return None
        first = line[0]
        if first == ":":
            match = _TAG.match(line)
            if match is not None:
                tag = match.group(2)
                in_narrative = builder is not None and builder.tag == "86"
                if tag in _KNOWN_TAGS or not (match.group(1) or in_narrative):
                    return self._start_field(tag, line[match.end() :], line_no)
        elif first == "{" and _WRAPPER.match(line):
            return self._block(line, line_no)
        elif (first == "-" and (line == "-" or line.startswith("-}"))) or line == "$":
            if builder is not None and len(line) == 1 and builder.in_narrative():
                # A narrative line that is only "-" (or "$"): the statement is still open.
                builder.lines.append(line)
                return None
            return self._terminate(line, line_no)
        if builder is not None:
            if builder.tag is None:
                raise MT940Error(
                    f"unexpected text inside a statement, not in a field: {line[:40]!r}", line_no
                )
            builder.lines.append(line)
            return None
        if self.envelope:
            raise MT940Error(
                f"unexpected text in the SWIFT message opened at line {self.envelope_line}, "
                f"before its :20: field: {line[:40]!r}",
                line_no,
            )
        # Outside any message: a bank's file header, a page footer, an export's "940" line.
        if self.ignored is None:
            self.ignored = (line_no, line[:40])
        return None

    def _block(self, line: str, line_no: int) -> Statement | None:
        """A line of SWIFT blocks: headers {1:}{2:}{3:}, the text block {4:, trailers {5:}{S:}.

        Any block line ends the message before it, even without its "-}": a header starts the
        next message and a trailer follows the end of this one.
        """
        builder, self.builder = self.builder, None
        done = builder.finish(line_no) if builder is not None else None
        position = line.find("{4:")
        if position < 0:
            # Headers open a message; trailers ({5:}, {S:}) close it.
            self.envelope = _HEADER_BLOCK.search(line) is not None
            if self.envelope:
                self.envelope_line = line_no
            return done
        if not self.envelope:
            self.envelope_line = line_no
        self.envelope = True
        rest = line[position + 3 :].strip()
        if not rest:
            return done
        # The first field on the same line as "{4:" (":20:..."), read as its own line.
        if self.depth >= _MAX_MESSAGES_ON_A_LINE:
            raise MT940Error(
                f"more than {_MAX_MESSAGES_ON_A_LINE} SWIFT messages on one line", line_no
            )
        self.depth += 1
        try:
            nested = self.feed(rest, line_no)
        finally:
            self.depth -= 1
        if nested is not None:
            # Unreachable: the message before was finished above, so ":20:" finishes nothing.
            raise MT940Error("two statements end on one line", line_no)
        return done

    def _terminate(self, line: str, line_no: int) -> Statement | None:
        """A message terminator: "-" or "$" alone, or "-}" (then maybe trailers and the next
        message's header blocks on the same line)."""
        builder, self.builder = self.builder, None
        self.envelope = False
        done = builder.finish(line_no) if builder is not None else None
        rest = line[2:].lstrip() if line.startswith("-}") else ""
        if rest:
            if not _WRAPPER.match(rest):
                raise MT940Error(f"unexpected text after the message end: {rest[:40]!r}", line_no)
            if self._block(rest, line_no) is not None:
                raise MT940Error("two statements end on one line", line_no)
        return done

    def _start_field(self, tag: str, value: str, line_no: int) -> Statement | None:
        done: Statement | None = None
        builder = self.builder
        if tag == "20":
            if builder is not None:
                done = builder.finish(line_no)
            if len(self.cache) + len(self.entry_dates) > 10_000:
                self.cache.clear()
                self.entry_dates.clear()
            builder = self.builder = _StatementBuilder(line_no, self.cache, self.entry_dates)
            self.seen = True
        elif builder is None:
            raise MT940Error(f"field :{tag}: outside a statement (no :20: before it)", line_no)
        builder.start_field(tag, value, line_no)
        return done

    def end(self, line_no: int) -> Statement | None:
        builder, self.builder = self.builder, None
        if builder is not None:
            return builder.finish(line_no)
        if self.envelope:
            raise MT940Error(
                f"the input ends inside the SWIFT message opened at line {self.envelope_line}, "
                "before its :20: field; it is truncated",
                line_no,
            )
        if not self.seen and self.ignored is not None:
            ignored_line, text = self.ignored
            raise MT940Error(
                f"no MT940 statement in the input (no :20: field); it starts with {text!r}",
                ignored_line,
            )
        return None


class _StatementBuilder:
    """Collects the fields of one :20: block; entries are built as soon as they are complete."""

    __slots__ = (
        "account",
        "available",
        "cache",
        "closing",
        "entries",
        "entry_dates",
        "field_line",
        "forward",
        "information",
        "lines",
        "non_standard",
        "number",
        "opening",
        "pending",
        "pending_details",
        "pending_non_standard",
        "reference",
        "related",
        "sequence",
        "start_line",
        "tag",
    )

    def __init__(
        self,
        line_no: int,
        cache: dict[str, tuple[date, bool]],
        entry_dates: _EntryDateCache,
    ) -> None:
        self.start_line = line_no
        self.cache = cache
        self.entry_dates = entry_dates
        self.reference = ""
        self.related: str | None = None
        self.account: str | None = None
        self.number: str | None = None
        self.sequence: str | None = None
        self.opening: Balance | None = None
        self.closing: Balance | None = None
        self.available: Balance | None = None
        self.forward: list[Balance] = []
        self.entries: list[Entry] = []
        self.information: list[str] = []
        # The :61: waiting for its :86: narrative, which may follow on the next field.
        self.pending: _PendingEntry | None = None
        self.pending_details: list[str] = []
        self.pending_non_standard: list[str] = []
        self.non_standard: list[str] = []
        self.tag: str | None = None
        self.lines: list[str] = []
        self.field_line = 0

    def in_narrative(self) -> bool:
        """In free text (:86:, :NS:) before the closing balance, where a "-" line is text.

        A message cannot end there (it would be refused as truncated), so reading the line
        as text loses nothing: a message really cut there is still refused when the next
        :20: or the end of the input finds it without a closing balance.
        """
        return self.closing is None and self.tag in _NARRATIVE_TAGS

    def start_field(self, tag: str, value: str, line_no: int) -> None:
        self.end_field()
        self.tag = tag
        self.lines = [value]
        self.field_line = line_no

    def end_field(self) -> None:
        tag, lines, line_no = self.tag, self.lines, self.field_line
        if tag is None:
            return
        self.tag = None
        self.lines = []
        if tag == "86":
            while len(lines) > 1 and not lines[-1]:
                lines.pop()
            if self.pending is not None and self.closing is None:
                self.pending_details.extend(lines)
            else:
                self.information.append("\n".join(lines))
            return
        if tag == "61":
            self._flush_entry()
            if self.closing is not None:
                raise MT940Error("statement line :61: after the closing balance", line_no)
            # In accounts-only mode the entry is not read, but it is pending all the same:
            # whether a "-" line is narrative or a terminator depends on it.
            self.pending = self._parse_entry(lines, line_no)
            return
        if tag in _KEPT_TAGS or tag not in _KNOWN_TAGS:
            # Kept verbatim, never parsed, and they do not end the entry before them: a
            # :86: after an :NS: still belongs to the :61: before both.
            text = f":{tag}:" + "\n".join(lines)
            if tag in _MT942_TAGS or self.pending is None or self.closing is not None:
                self.non_standard.append(text)
            else:
                self.pending_non_standard.append(text)
            return
        self._flush_entry()
        if tag == "20":
            self.reference = "".join(lines).strip()
        elif tag in ("60", "60F", "60M"):
            if self.opening is not None:
                raise MT940Error("second opening balance in one statement", line_no)
            self.opening = self._parse_balance(tag, lines, line_no)
        elif tag in ("62", "62F", "62M"):
            if self.closing is not None:
                raise MT940Error("second closing balance in one statement", line_no)
            self.closing = self._parse_balance(tag, lines, line_no)
        elif tag == "64":
            if self.available is not None:
                raise MT940Error("second available balance (:64:) in one statement", line_no)
            self.available = self._parse_balance(tag, lines, line_no)
        elif tag == "65":
            self.forward.append(self._parse_balance(tag, lines, line_no))
        elif tag in ("25", "25P"):
            # Uploads are authorized by this account: a :25: whose text goes on to a second
            # line has no single reading, so it is refused. :25P: has the BIC on line 2.
            if len(lines) > (2 if tag == "25P" else 1):
                raise MT940Error(
                    f"account :{tag}: continues on {len(lines) - 1} more line(s): "
                    f"{lines[1][:40]!r}",
                    line_no,
                )
            self._set_single("25", lines[0].strip(), line_no)
        elif tag == "21":
            self._set_single("21", "".join(lines).strip(), line_no)
        else:  # 28 / 28C
            match = _STATEMENT_NUMBER.fullmatch("".join(lines))
            if match is None:
                raise MT940Error(f"statement number {lines[0]!r} is not NNNNN[/NNN]", line_no)
            self._set_single("28C", match.group(1), line_no)
            self.sequence = match.group(2) or None

    def _set_single(self, key: str, value: str, line_no: int) -> None:
        current = {"21": self.related, "25": self.account, "28C": self.number}[key]
        if current is not None:
            raise MT940Error(f"second {_SINGLE_FIELDS[key]} in one statement", line_no)
        if key == "21":
            self.related = value
        elif key == "25":
            self.account = value
        else:
            self.number = value

    def _flush_entry(self) -> None:
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        details = self.pending_details
        self.pending_details = []
        while len(details) > 1 and not details[0]:
            # ":86:" alone on its line with the text below: the empty first line carries nothing.
            del details[0]
        non_standard = ""
        if self.pending_non_standard:
            non_standard = "\n".join(self.pending_non_standard)
            self.pending_non_standard = []
        self.entries.append(
            Entry(
                len(self.entries) + 1,
                pending.value_date,
                pending.entry_date,
                pending.mark,
                pending.funds_code,
                pending.amount,
                pending.transaction_type,
                pending.customer_reference,
                pending.bank_reference,
                pending.supplementary_details,
                "\n".join(details),
                pending.raw_date_warning,
                non_standard,
            )
        )

    def _parse_entry(self, lines: list[str], line_no: int) -> _PendingEntry:
        match = _ENTRY.fullmatch(lines[0])
        if match is None:
            raise MT940Error(
                "statement line :61: is not YYMMDD[MMDD]mark[funds]amount type reference: "
                f"{lines[0][:60]!r}",
                line_no,
            )
        raw_value, raw_entry, mark, funds, raw_amount, ttype, rest = match.groups()
        dates = self.entry_dates.get((raw_value, raw_entry))
        if dates is None:
            dates = self._entry_dates(raw_value, raw_entry, line_no)
            self.entry_dates[(raw_value, raw_entry)] = dates
        value_date, entry_date, warning = dates
        reference, separator, bank_reference = rest.partition("//")
        # Positional: this runs once per entry and keyword arguments cost measurably.
        return _PendingEntry(
            value_date,
            entry_date,
            _MARKS[mark],
            funds,
            _parse_amount(raw_amount, line_no),
            sys.intern(ttype),
            reference.strip(),
            (bank_reference.strip() or None) if separator else None,
            # The standard allows one line; extra lines some banks add are kept, not rejected.
            "\n".join(lines[1:]) if len(lines) > 1 else None,
            warning,
        )

    def _entry_dates(
        self, raw_value: str, raw_entry: str | None, line_no: int
    ) -> tuple[date, date | None, str | None]:
        value_date, clamped = _parse_yymmdd(raw_value, line_no, self.cache)
        warnings: list[str] = []
        if clamped:
            warnings.append(f"value date {raw_value} does not exist; read as {value_date}")
        entry_date = None
        if raw_entry is not None:
            entry_date, clamped = _infer_entry_date(raw_entry, value_date, line_no)
            if clamped:
                warnings.append(f"entry date {raw_entry} does not exist; read as {entry_date}")
        return value_date, entry_date, "; ".join(warnings) if warnings else None

    def _parse_balance(self, tag: str, lines: list[str], line_no: int) -> Balance:
        match = _BALANCE.fullmatch("".join(lines))
        if match is None:
            raise MT940Error(
                f"balance :{tag}: is not mark YYMMDD currency amount: {lines[0][:60]!r}", line_no
            )
        mark, raw_date, currency, raw_amount = match.groups()
        # A clamped balance date has nowhere to be reported; the date is informative only.
        balance_date, _ = _parse_yymmdd(raw_date, line_no, self.cache)
        return Balance(
            mark=mark,
            date=balance_date,
            currency=currency.upper(),
            amount=_parse_amount(raw_amount, line_no),
            is_final=not tag.endswith("M"),
        )

    def finish(self, line_no: int) -> Statement:
        self.end_field()
        self._flush_entry()
        where = f"statement {self.reference!r} starting at line {self.start_line}"
        missing = [
            name
            for name, value in (
                ("account (:25:)", self.account),
                ("statement number (:28C:)", self.number),
                ("opening balance (:60F:/:60M:)", self.opening),
                ("closing balance (:62F:/:62M:)", self.closing),
            )
            if value is None
        ]
        if missing:
            raise MT940Error(
                f"{where} ends without {', '.join(missing)}; the input is truncated or garbled",
                line_no,
            )
        # Never true after the check above; said again so that the types narrow for mypy.
        if (
            self.account is None
            or self.number is None
            or self.opening is None
            or self.closing is None
        ):
            raise MT940Error(f"{where} is incomplete", line_no)
        return Statement(
            transaction_reference=self.reference,
            related_reference=self.related,
            account=self.account,
            statement_number=self.number,
            sequence_number=self.sequence,
            opening_balance=self.opening,
            closing_balance=self.closing,
            available_balance=self.available,
            forward_balances=tuple(self.forward),
            entries=tuple(self.entries),
            information="\n".join(self.information) if self.information else None,
            non_standard="\n".join(self.non_standard) if self.non_standard else None,
        )


def _parse_amount(raw: str, line_no: int) -> Decimal:
    if len(raw) > _MAX_AMOUNT_CHARS:
        raise MT940Error(f"amount {raw[:40]!r}... is too long to be an amount", line_no)
    # "100," (no decimals) and ",50" are both valid SWIFT amounts.
    return Decimal(raw.replace(",", "."))


def _parse_yymmdd(raw: str, line_no: int, cache: dict[str, tuple[date, bool]]) -> tuple[date, bool]:
    """The date and whether its day had to be clamped into the month."""
    cached = cache.get(raw)
    if cached is not None:
        return cached
    year = int(raw[0:2])
    year += 2000 if year < 80 else 1900
    result = _clamped_date(year, int(raw[2:4]), int(raw[4:6]), raw, line_no)
    cache[raw] = result
    return result


def _clamped_date(year: int, month: int, day: int, raw: str, line_no: int) -> tuple[date, bool]:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise MT940Error(f"{raw!r} is not a date (month {month:02d}, day {day:02d})", line_no)
    last = calendar.monthrange(year, month)[1]
    if day > last:
        return date(year, month, last), True
    return date(year, month, day), False


def _infer_entry_date(raw: str, value_date: date, line_no: int) -> tuple[date, bool]:
    """Place an MMDD entry date in the year that puts it nearest to the value date."""
    month, day = int(raw[0:2]), int(raw[2:4])
    candidates = [
        _clamped_date(year, month, day, raw, line_no)
        for year in (value_date.year, value_date.year - 1, value_date.year + 1)
    ]
    # min() keeps the first of equals: the value date's own year, listed first, wins a tie.
    return min(candidates, key=lambda candidate: abs((candidate[0] - value_date).days))


# Codes of SWIFT-style structured narratives (/EREF/.../REMI/...) as used by Dutch, Belgian and
# other banks, and by the Example Bank (PROG, CYCL). Only these start a subfield, so a value may
# itself contain slashes (/CNTP/account/BIC/name/city/).
_SWIFT_CODES = (
    "ACCW", "ADDR", "BENM", "BIC", "BUSP", "CHGS", "CNTP", "COAM", "CREF", "CSID", "CYCL",
    "EREF", "EXCH", "IBAN", "ID", "INST", "IREF", "ISDT", "KREF", "MARF", "NAME", "OCMT",
    "ORDP", "PREF", "PROG", "PURP", "REMI", "RTRN", "SVCL", "TRTP", "ULTB", "ULTC", "ULTD",
)  # fmt: skip
_SWIFT_SPLIT = re.compile(
    "/(" + "|".join(sorted(_SWIFT_CODES, key=lambda code: (-len(code), code))) + ")/"
)
_SUBFIELD_START = re.compile(r"(\d{3})?([?+~^])\d\d")
_SUBFIELD_SPLIT = {sep: re.compile(re.escape(sep) + r"(\d\d)") for sep in "?+~^"}
# Narrative lines are at most 65 characters; a line that long was cut by width, not by meaning.
_FULL_LINE = 65


def parse_subfields(details: str) -> dict[str, str]:
    """Structured subfields of a :86: narrative; {} when it is free text.

    Exposed as a function as well as :meth:`Entry.subfields` so that statement information can
    be read the same way.
    """
    # Blank lines hold a place in a line-numbered layout; between subfields they carry nothing.
    lines = [line for line in details.split("\n") if line] or [""]
    lines[0] = lines[0].lstrip()
    head = lines[0]
    german = _SUBFIELD_START.match(head)
    if german is not None:
        separator = german.group(2)
        gvc = german.group(1)
        flat = _join_narrative(lines, separator, _SUBFIELD_END[separator])
        parts = _SUBFIELD_SPLIT[separator].split(flat[len(gvc) :] if gvc else flat)
        # '+', '~' and '^' also occur in free text; one subfield alone is not proof of structure.
        if separator == "?" or len(parts) >= 5:
            result: dict[str, str] = {"GVC": gvc} if gvc else {}
            for index in range(1, len(parts) - 1, 2):
                code, value = parts[index], parts[index + 1]
                # Values are kept verbatim: ?20...?29 are one text cut into 27-character pieces.
                result[code] = result.get(code, "") + value
            return result
    if _SWIFT_SPLIT.match(head):
        parts = _SWIFT_SPLIT.split(_join_narrative(lines, "/", _SWIFT_END))
        result = {}
        for index in range(1, len(parts) - 1, 2):
            code = parts[index]
            # ING and Rabobank close subfields with extra slashes ("/EREF/X//CNTP/..."): they
            # are separators, not part of the value.
            value = parts[index + 1].strip().rstrip("/").strip()
            result[code] = f"{result[code]} {value}" if code in result else value
        return result
    return {}


SIX_LINE_LAYOUT = 6


@dataclass(frozen=True, slots=True)
class SixLineNarrative:
    """OpenG2P's ``:86:`` layout, read by line number: narrative, program, cycle, beneficiary
    id, an empty line, and the return reason (empty on a payment)."""

    narrative: str
    program: str
    cycle: str
    beneficiary_id: str
    fifth: str
    reason: str


def six_line_narrative(details: str) -> SixLineNarrative | None:
    """A :86: narrative read as OpenG2P's six-line layout, each line stripped; None when it has
    more than six lines or structured subfields.

    Fewer lines are the layout with empty last lines: the parser drops a field's trailing blank
    lines (they cannot be told from blank lines between fields), so a payment's empty fifth and
    sixth lines, or a return without a reason, arrive shorter. Whether a bank writes this
    layout at all is for its connector to know: free text reads here as a narrative line.
    """
    lines = details.split("\n")
    if len(lines) > SIX_LINE_LAYOUT or parse_subfields(details):
        return None
    lines += [""] * (SIX_LINE_LAYOUT - len(lines))
    return SixLineNarrative(*(line.strip() for line in lines))


_SUBFIELD_END = {sep: re.compile(re.escape(sep) + r"\d\d$") for sep in "?+~^"}
_SWIFT_END = re.compile(r"/$")


def _join_narrative(lines: list[str], separator: str, ends_with_marker: re.Pattern[str]) -> str:
    """Undo the bank's line wrapping before looking for subfields.

    A full-width line was cut mid-text and joins without a blank, as does a break right before
    or right after a subfield marker; any other shorter line ended at a word, whose blank the
    parser stripped with the trailing whitespace, so a blank is put back.
    """
    if len(lines) == 1:
        return lines[0]
    pieces = [lines[0]]
    for previous, line in itertools.pairwise(lines):
        if not (
            len(previous) >= _FULL_LINE
            or line.startswith(separator)
            or ends_with_marker.search(previous)
        ):
            pieces.append(" ")
        pieces.append(line)
    return "".join(pieces)
