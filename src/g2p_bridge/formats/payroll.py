"""Payroll files: the rows of a CSV or XLSX file of disbursements, read one at a time.

The layout (docs/console/payroll-files.md): a header line naming the columns, in any order and
any case, then one disbursement per line.

    beneficiary_id, beneficiary_name, amount, narrative   required
    financial_address, disbursement_id, mis_reference     optional

The envelope's own fields (program, cycle, schedule date) are not in the file: they are given
beside it, in the console's form or as options of ``g2p-bridge envelopes submit``. This module
only reads; whether a row is a valid disbursement is the domain's question
(core/payroll_files.py), asked with the same rules as the API's.

Reading is streaming and bounded: a CSV is decoded incrementally, an XLSX is read with
openpyxl's read-only (streaming) worksheet after its zip directory has been checked against
decompression bombs, and its XML is parsed by defusedxml (entity expansion and external
entities refused)."""

from __future__ import annotations

import codecs
import csv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

# Each column of the file and the field of a G2P Connect disbursement it fills.
COLUMNS: dict[str, str] = {
    "beneficiary_id": "beneficiary_id",
    "beneficiary_name": "beneficiary_name",
    "amount": "disbursement_amount",
    "narrative": "narrative",
    "financial_address": "financial_address",
    "disbursement_id": "disbursement_id",
    "mis_reference": "mis_reference_number",
}
REQUIRED = ("beneficiary_id", "beneficiary_name", "amount", "narrative")
# A cell longer than any column it could fill is refused before it is kept.
MAX_CELL = 1024
# An XLSX is a zip: its members together may unpack to at most this, each at most this ratio.
MAX_XLSX_UNPACKED = 512 * 1024 * 1024
MAX_XLSX_RATIO = 200
MAX_XLSX_MEMBERS = 10_000
XLSX_MAGIC = b"PK\x03\x04"


class FileUnreadable(ValueError):
    """The file as a whole cannot be read (no header, not UTF-8, not a workbook...)."""

    def __init__(self, line: int, column: str, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.column = column
        self.reason = reason


@dataclass
class Row:
    """One data line: its number in the file (the header is line 1), its cells by column name,
    and what was already wrong with it as text (the column and the reason)."""

    line: int
    cells: dict[str, str]
    problems: list[tuple[str, str]] = field(default_factory=list)


def sniff_format(head: bytes, file_name: str | None) -> str:
    """``xlsx`` for a zip container, else ``csv``: by content, the name only confirms."""
    if head.startswith(XLSX_MAGIC):
        return "xlsx"
    if file_name and file_name.lower().endswith((".xlsx", ".xlsm")):
        raise FileUnreadable(1, "", "the file is named .xlsx but is not a workbook")
    return "csv"


def _header(cells: list[str]) -> list[str]:
    names = [c.strip().lower().lstrip("\ufeff") for c in cells]
    unknown = [n for n in names if n and n not in COLUMNS]
    if unknown:
        raise FileUnreadable(
            1,
            unknown[0],
            f"unknown column {unknown[0][:64]!r}; the columns are {', '.join(COLUMNS)}",
        )
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise FileUnreadable(1, missing[0], f"the header has no {', '.join(missing)} column")
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise FileUnreadable(1, repeated[0], f"column {repeated[0]} appears twice")
    return names


def _row(line: int, names: list[str], cells: list[str]) -> Row:
    row = Row(line, {})
    if len(cells) > len(names) and any(c.strip() for c in cells[len(names) :]):
        row.problems.append(("", f"{len(cells)} cells but the header names {len(names)}"))
    for name, value in zip(names, cells, strict=False):
        if not name:
            continue
        if len(value) > MAX_CELL:
            row.problems.append((name, f"longer than {MAX_CELL} characters"))
            continue
        # Characters are the domain's question (as for the API: core/payroll_files.py).
        row.cells[name] = value.strip()
    return row


def _blank(cells: list[str]) -> bool:
    return not any(c.strip() for c in cells)


def _text_lines(stream: IO[bytes], chunk: int = 64 * 1024) -> Iterator[str]:
    """UTF-8 (a BOM allowed) decoded as it is read; an undecodable byte stops the file."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    pending = ""
    lines = offset = 0
    while True:
        data = stream.read(chunk)
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = lines + pending.count("\n") + data[: max(exc.start, 0)].count(b"\n") + 1
            raise FileUnreadable(
                line, "", f"not UTF-8 text (byte {offset + max(exc.start, 0)})"
            ) from None
        offset += len(data)
        pending += text
        *complete, pending = pending.split("\n")
        for line_text in complete:
            lines += 1
            yield line_text + "\n"
        if not data:
            break
    if pending:
        yield pending


def read_csv(stream: IO[bytes]) -> Iterator[Row]:
    # The csv module counts the lines it reads, so a quoted cell over two lines still gets
    # the number the operator sees in an editor for the line it starts on.
    reader = csv.reader(_text_lines(stream), strict=True)
    try:
        first = next(reader, None)
        if first is None or _blank(first):
            raise FileUnreadable(1, "", "the file is empty; its first line names the columns")
        names = _header(first)
        start = reader.line_num + 1
        for cells in reader:
            if not _blank(cells):
                yield _row(start, names, cells)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise FileUnreadable(reader.line_num, "", f"not readable as CSV: {exc}") from None


def _check_zip(stream: IO[bytes]) -> None:
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile:
        raise FileUnreadable(1, "", "not a readable XLSX workbook (bad zip)") from None
    members = archive.infolist()
    if len(members) > MAX_XLSX_MEMBERS:
        raise FileUnreadable(1, "", "the workbook has too many parts")
    unpacked = 0
    for member in members:
        unpacked += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > MAX_XLSX_RATIO and member.file_size > 1024 * 1024:
            raise FileUnreadable(1, "", f"workbook part {member.filename[:64]!r} is a zip bomb")
    if unpacked > MAX_XLSX_UNPACKED:
        raise FileUnreadable(1, "", "the workbook unpacks to more than the limit")
    stream.seek(0)


def _xlsx_text(value: Any) -> str:
    """A cell as the text it shows. A number comes from openpyxl as int or float; its shortest
    repr is the text the sheet stores for any value of up to 15 significant digits, so the
    amount parsed from it is the one the person typed. It is never computed with: a value
    repr gives in exponent form is left so, and the amount rules refuse it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _sheet_rows(sheet: Any) -> Iterator[tuple[Any, ...]]:
    """The worksheet's rows as openpyxl streams them, its parse errors made ours."""
    rows = sheet.iter_rows(values_only=True)
    while True:
        try:
            values = next(rows)
        except StopIteration:
            return
        # defusedxml's refusals are ValueErrors, a malformed sheet a SyntaxError (ParseError).
        except (ValueError, SyntaxError, KeyError, zipfile.BadZipFile) as exc:
            raise FileUnreadable(
                0, "", f"not a readable XLSX worksheet ({type(exc).__name__})"
            ) from None
        yield values


def read_xlsx(stream: IO[bytes]) -> Iterator[Row]:
    """The first worksheet's rows. openpyxl parses with defusedxml when it is installed (it is
    a dependency), which refuses entity expansion and external entities."""
    _check_zip(stream)
    import openpyxl
    from openpyxl.xml import DEFUSEDXML

    if not DEFUSEDXML:
        raise FileUnreadable(1, "", "XLSX reading needs defusedxml, which is not installed")
    try:
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a malformed workbook
        raise FileUnreadable(
            1, "", f"not a readable XLSX workbook ({type(exc).__name__})"
        ) from None
    try:
        sheet = workbook.worksheets[0] if workbook.worksheets else None
        if sheet is None:
            raise FileUnreadable(1, "", "the workbook has no worksheet")
        names: list[str] | None = None
        for line, values in enumerate(_sheet_rows(sheet), start=1):
            cells = [_xlsx_text(v) for v in values]
            if names is None:
                if _blank(cells):
                    raise FileUnreadable(line, "", "the first row must name the columns")
                names = _header(cells)
                continue
            if not _blank(cells):
                yield _row(line, names, cells)
        if names is None:
            raise FileUnreadable(1, "", "the worksheet is empty; its first row names the columns")
    finally:
        workbook.close()


def read_rows(stream: IO[bytes], file_format: str) -> Iterator[Row]:
    return read_xlsx(stream) if file_format == "xlsx" else read_csv(stream)
