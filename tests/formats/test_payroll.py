"""Payroll files as text: the header, the columns, quoting, encodings, and XLSX workbooks read
streaming with their zip and XML defended."""

from __future__ import annotations

import io
import zipfile

import openpyxl
import pytest

from g2p_bridge.formats import payroll

HEADER = "beneficiary_id,beneficiary_name,amount,narrative,financial_address\n"


def rows(text: str | bytes) -> list[payroll.Row]:
    data = text.encode() if isinstance(text, str) else text
    return list(payroll.read_csv(io.BytesIO(data)))


def test_columns_in_any_order_and_case_with_line_numbers() -> None:
    text = (
        "\ufeffAmount, Narrative ,BENEFICIARY_ID,beneficiary_name\n"
        "10.50,Dec,NID-1,Amina\n"
        "\n"
        '7,"two\nlines",NID-2,"Juma, Jr."\n'
        "3,Dec,NID-3,Zawadi\n"
    )
    got = rows(text)
    assert [r.line for r in got] == [2, 4, 6]
    assert got[0].cells == {
        "amount": "10.50",
        "narrative": "Dec",
        "beneficiary_id": "NID-1",
        "beneficiary_name": "Amina",
    }
    assert got[1].cells["beneficiary_name"] == "Juma, Jr."
    # Kept as read: whether a line break may be in a narrative is the domain's rule.
    assert got[1].cells["narrative"] == "two\nlines"


@pytest.mark.parametrize(
    ("header", "column", "reason"),
    [
        ("beneficiary_id,beneficiary_name,amount\n", "narrative", "no narrative column"),
        (HEADER.replace("narrative", "iban"), "iban", "unknown column"),
        ("amount,amount,beneficiary_id,beneficiary_name,narrative\n", "amount", "appears twice"),
        ("\n", "", "is empty"),
    ],
)
def test_a_header_that_cannot_work_stops_the_file(header: str, column: str, reason: str) -> None:
    with pytest.raises(payroll.FileUnreadable) as refused:
        rows(header + "1,2,3,4,5\n")
    assert refused.value.line == 1
    assert refused.value.column == column
    assert reason in refused.value.reason


def test_per_line_problems_are_kept_with_the_line() -> None:
    got = rows(HEADER + "NID-1,Amina,1,Dec,x,EXTRA\n" + "NID-2," + "n" * 2000 + ",1,Dec,\n")
    assert got[0].problems == [("", "6 cells but the header names 5")]
    assert got[1].problems == [("beneficiary_name", "longer than 1024 characters")]
    assert "beneficiary_name" not in got[1].cells


def test_not_utf8_says_where() -> None:
    with pytest.raises(payroll.FileUnreadable) as refused:
        rows(HEADER.encode() + b"NID-1,Am\xe9lie,1,Dec,\n")
    assert "not UTF-8" in refused.value.reason
    assert refused.value.line == 2


def test_a_csv_quote_left_open_is_refused() -> None:
    with pytest.raises(payroll.FileUnreadable) as refused:
        rows(HEADER + 'NID-1,"Amina,1,Dec,\n')
    assert "not readable as CSV" in refused.value.reason


def test_sniffing_goes_by_content() -> None:
    assert payroll.sniff_format(b"PK\x03\x04rest", "pay.csv") == "xlsx"
    assert payroll.sniff_format(b"benefici", "pay.csv") == "csv"
    with pytest.raises(payroll.FileUnreadable):
        payroll.sniff_format(b"benefici", "pay.xlsx")


def workbook(lines: list[list[object]]) -> bytes:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet()
    for line in lines:
        sheet.append(line)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_an_xlsx_reads_like_the_csv() -> None:
    data = workbook(
        [
            ["beneficiary_id", "beneficiary_name", "amount", "narrative"],
            ["NID-1", "Amina", 120.5, "Dec"],
            [None, None, None, None],
            ["NID-2", "Juma", 80, "Dec"],
            ["NID-3", "Zawadi", "0.10", "Dec"],
        ]
    )
    got = list(payroll.read_xlsx(io.BytesIO(data)))
    assert [r.line for r in got] == [2, 4, 5]
    # The number as the sheet stores it, never a float's arithmetic.
    assert [r.cells["amount"] for r in got] == ["120.5", "80", "0.10"]


def test_an_xlsx_zip_bomb_is_refused_before_unpacking() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (50 * 1024 * 1024))
    with pytest.raises(payroll.FileUnreadable) as refused:
        list(payroll.read_xlsx(io.BytesIO(buffer.getvalue())))
    assert "zip bomb" in refused.value.reason


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
)


def _with_bomb(part: str) -> bytes:
    data = workbook([["beneficiary_id", "beneficiary_name", "amount", "narrative"]])
    source = zipfile.ZipFile(io.BytesIO(data))
    assert part in source.namelist()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == part:
                if content.startswith(b"<?xml"):
                    content = content.split(b"?>", 1)[1]
                content = BOMB + content
            archive.writestr(info.filename, content)
    return buffer.getvalue()


def test_a_worksheet_with_entity_declarations_is_refused() -> None:
    # The rows are streamed with defusedxml's iterparse, which refuses any entity declared.
    with pytest.raises(payroll.FileUnreadable) as refused:
        list(payroll.read_xlsx(io.BytesIO(_with_bomb("xl/worksheets/sheet1.xml"))))
    assert "not a readable XLSX" in refused.value.reason


def test_a_workbook_part_with_entity_declarations_expands_nothing() -> None:
    # The small parts are parsed whole, by lxml without entity resolution (openpyxl's
    # safe parser): the declarations are inert, the file reads as the empty sheet it is.
    assert list(payroll.read_xlsx(io.BytesIO(_with_bomb("xl/workbook.xml")))) == []


def test_a_file_named_xlsx_that_is_no_zip() -> None:
    with pytest.raises(payroll.FileUnreadable):
        list(payroll.read_xlsx(io.BytesIO(b"not a zip at all")))
