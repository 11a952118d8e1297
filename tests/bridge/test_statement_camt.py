"""camt.053 and camt.054 statements (issue 14): sniffed at upload, authorized by the camt
reader's own reading of their accounts, and reconciled through the same core as MT940, on
PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from test_pipeline import ACCOUNT, setup_envelope, statement_row, upload
from test_statement_trust import ACCOUNT_1, ACCOUNT_2, post, scene  # noqa: F401 (fixture)

from bridge_support import FakeBank, counters_match_rows, fake_context, mt940, states
from camt_support import Ntry, Stmt, Tx, camt, debit, returned
from g2p_bridge.api import views
from g2p_bridge.auth import Principal
from g2p_bridge.core.errors import BridgeError
from g2p_bridge.core.statement_files import CAMT, MT940, sniff_format
from g2p_bridge.core.statements import store_statement
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import AccountStatement, BenefitProgram, ReconError, StatementPage

TEN = Decimal("10.00")


def upload_bytes(context: Any, content: bytes) -> str:
    return upload(context, content.decode())


def test_camt_statements_reconcile_like_mt940(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 7)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=60)
    assert states(session_factory, "env-1") == {"SHIPPED": 7}

    # A day's statement: a batch-booked debit of three payments, a single one, and the return
    # of one of the batch's with its ISO reason.
    day = camt(
        "camt.053.001.08",
        Stmt(
            ACCOUNT,
            (
                debit(*(Tx(i, TEN, f"Person {i}") for i in ids[:3])),
                debit(Tx(ids[3], TEN)),
                returned(Tx(ids[1], TEN), "AC04", "Account closed"),
            ),
            sequence=1,
        ),
    )
    first = upload_bytes(context, day)
    assert runner.run_until_idle(timeout=60)
    row = statement_row(context, first)
    assert row.state == "PROCESSED", row.error_reason
    assert row.format == CAMT
    assert (row.entries_total, row.entries_matched, row.entries_reversed) == (5, 4, 1)
    assert (row.entries_unmatched, row.balance_problems, row.sequence_gaps) == (0, None, None)
    with transaction(session_factory) as session:
        (paid, back) = views.disbursement_statuses(session, [ids[0], ids[1]])
    assert paid.state == "RECONCILED" and back.state == "REVERSED"
    assert back.state_reason == "reversed by the bank: AC04 Account closed"
    recon = back.disbursement_recon_records.disbursement_recon_payloads[0]  # type: ignore[union-attr]
    assert recon.reversal_found and recon.reversal_reason == "AC04 Account closed"
    assert recon.beneficiary_name_from_bank == f"Person {ids[1]}"
    assert recon.remittance_reference_number == f"REF-{ids[1]}-2"

    # A debit notification: no balances, no ElctrncSeqNb.
    note = camt("camt.054.001.08", Stmt(ACCOUNT, (debit(Tx(ids[4], TEN)),), sequence=None))
    second = upload_bytes(context, note)
    # A camt.053.001.02 numbered 3: number 2 never came.
    late = camt(
        "camt.053.001.02",
        Stmt(ACCOUNT, (debit(Tx(ids[5], TEN)), debit(Tx("no-such-id", TEN))), sequence=3),
    )
    third = upload_bytes(context, late)
    assert runner.run_until_idle(timeout=60)
    row = statement_row(context, second)
    assert row.state == "PROCESSED", row.error_reason
    assert (row.entries_matched, row.balance_problems, row.sequence_gaps) == (1, None, None)
    with transaction(session_factory) as session:
        page = session.scalars(
            select(StatementPage).where(StatementPage.statement_id == second)
        ).one()
        assert (page.opening_balance, page.closing_balance, page.statement_number) == (
            None,
            None,
            "",
        )
        codes = list(
            session.scalars(select(ReconError.error_code).where(ReconError.statement_id == third))
        )
    row = statement_row(context, third)
    assert row.state == "PROCESSED", row.error_reason
    assert (row.entries_matched, row.entries_unmatched) == (1, 1)
    assert codes == ["INVALID_DISBURSEMENT_ID"]
    assert f"account {ACCOUNT}: statement numbers missing: 2" in (row.sequence_gaps or "")
    assert states(session_factory, "env-1") == {"RECONCILED": 5, "REVERSED": 1, "SHIPPED": 1}
    counters_match_rows(session_factory)

    # The same rules as MT940: an MT940 debit of the disbursement the camt paid is a duplicate.
    again = upload(context, mt940(ACCOUNT, [("D", ids[0], TEN, "again")], number=4))
    assert runner.run_until_idle(timeout=60)
    assert statement_row(context, again).format == MT940
    with transaction(session_factory) as session:
        codes = list(
            session.scalars(select(ReconError.error_code).where(ReconError.statement_id == again))
        )
    assert codes == ["DUPLICATE_DISBURSEMENT"]
    counters_match_rows(session_factory)


def test_camt_balances_and_currencies_are_checked(session_factory) -> None:
    context = fake_context(session_factory, FakeBank())
    ids = setup_envelope(context, 2)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=60)
    off = camt(
        "camt.053.001.08",
        Stmt(ACCOUNT, (debit(Tx(ids[0], TEN)),), closing_offset=Decimal("0.01")),
    )
    euro = camt(
        "camt.054.001.08",
        Stmt(ACCOUNT, (Ntry("DBIT", (Tx(ids[1], TEN),), currency="EUR"),), sequence=None),
    )
    unbalanced, foreign = upload_bytes(context, off), upload_bytes(context, euro)
    assert runner.run_until_idle(timeout=60)
    row = statement_row(context, unbalanced)
    assert row.entries_matched == 1 and "difference" in (row.balance_problems or "")
    row = statement_row(context, foreign)
    assert (row.entries_matched, row.entries_unmatched) == (0, 1)
    # The notification's account is in USD (Acct/Ccy) but its entry is in EUR.
    assert "program account is in" not in (row.balance_problems or "")
    with transaction(session_factory) as session:
        (error,) = session.scalars(select(ReconError).where(ReconError.statement_id == foreign))
    assert error.error_code == "CURRENCY_MISMATCH" and "EUR" in (error.detail or "")
    assert states(session_factory, "env-1") == {"RECONCILED": 1, "SHIPPED": 1}
    counters_match_rows(session_factory)


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>'
    b"<GrpHdr><MsgId>&c;</MsgId></GrpHdr></BkToCstmrStmt></Document>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>'
    b"<GrpHdr><MsgId>&x;</MsgId></GrpHdr></BkToCstmrStmt></Document>"
)


def _statement(account: str, disbursement_id: str = "d-x") -> bytes:
    return camt("camt.053.001.08", Stmt(account, (debit(Tx(disbursement_id, TEN)),), sequence=2))


@pytest.mark.parametrize(
    ("content", "status", "code", "message"),
    [
        (lambda: _statement(ACCOUNT_2), 403, "ACCESS_DENIED", ACCOUNT_2),
        (lambda: _statement("9999999999"), 422, "INVALID_ACCOUNT_NUMBER", "9999999999"),
        (lambda: BILLION_LAUGHS, 422, "STATEMENT_UNPARSEABLE", "DOCTYPE"),
        (lambda: XXE, 422, "STATEMENT_UNPARSEABLE", "DOCTYPE"),
        (lambda: _statement(ACCOUNT_1)[:-40], 422, "STATEMENT_UNPARSEABLE", "well-formed"),
        (
            lambda: _statement(ACCOUNT_1).replace(b"camt.053.001.08", b"camt.053.001.04"),
            422,
            "STATEMENT_UNPARSEABLE",
            "does not support",
        ),
        (
            lambda: camt("camt.053.001.08", validate=False),
            422,
            "STATEMENT_UNPARSEABLE",
            "no camt.053/camt.054 statement",
        ),
    ],
    ids=["other-bank", "unknown-account", "billion-laughs", "xxe", "truncated", "version", "empty"],
)
def test_camt_uploads_are_refused_before_anything_is_stored(
    scene,  # noqa: F811
    client,
    token,
    content,
    status,
    code,
    message,
) -> None:
    bank = token("bank-example", "bank", bank_codes=["EXAMPLE"])
    response = post(client, bank, content())
    assert response.status_code == status, response.text
    meta = response.json()["header"]["meta"]
    assert meta["error_code"] == code and message in meta["error_message"], meta
    assert "root:" not in meta["error_message"]  # /etc/passwd was never read
    with transaction(scene.context.session_factory) as session:
        assert len(list(session.scalars(select(AccountStatement.id)))) == 2  # the scene's


def test_a_camt_reversal_uploaded_over_http_applies(scene, client, token) -> None:  # noqa: F811
    bank = token("bank-example", "bank", bank_codes=["EXAMPLE"])
    content = camt(
        "camt.053.001.08",
        Stmt(ACCOUNT_1, (returned(Tx(scene.d1, TEN), "AC04"),), sequence=2, opening=TEN),
    )
    response = post(client, bank, content)
    assert response.status_code == 200, response.text
    statement_id = response.json()["statement_id"]
    assert scene.runner.run_until_idle(timeout=30)
    row = statement_row(scene.context, statement_id)
    assert (row.state, row.format, row.entries_reversed) == ("PROCESSED", CAMT, 1)
    assert row.account_number == ACCOUNT_1


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"<?xml version='1.0'?><Document/>", CAMT),
        (b"\xef\xbb\xbf \r\n<Document/>", CAMT),
        (b":20:X\n:25:1\n", MT940),
        (b"{1:F01BANK}{4:\n:20:X", MT940),
        (b"hello <Document/>", MT940),
    ],
)
def test_the_format_is_sniffed_from_the_bytes(content: bytes, fmt: str) -> None:
    assert sniff_format(content) == fmt


def test_the_cli_shows_what_it_reads_from_a_camt_file(tmp_path: Path) -> None:
    from g2p_bridge import cli

    path = tmp_path / "day.xml"
    path.write_bytes(
        camt(
            "camt.053.001.08",
            Stmt(
                "1000000001",
                (debit(Tx("d-1", TEN, "Amina")), returned(Tx("d-1", TEN), "AC04", "closed")),
                sequence=42,
            ),
        )
    )
    runner = CliRunner()
    shown = runner.invoke(cli.main, ["statements", "parse", str(path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert (
        lines[0]
        == "camt statement S1  account 1000000001  number 42/-  USD 1000000.00 -> 1000000.00"
    )
    assert "2 entries, debits 10.00, 1 reversals" in lines[1]
    assert "opening + entries = closing" in lines[2]
    assert "d-1" in lines[3] and "Amina" in lines[3]
    assert "reason: AC04 closed" in lines[4]
    as_json = runner.invoke(cli.main, ["statements", "parse", "--json", str(path)])
    (page,) = json.loads(as_json.output)
    assert (page["format"], page["statement_number"], page["currency"]) == (CAMT, "42", "USD")
    assert [(e["mark"], e["disbursement_id"]) for e in page["entries"]] == [
        ("D", "d-1"),
        ("RD", "d-1"),
    ]
    path.write_bytes(BILLION_LAUGHS)
    refused = runner.invoke(cli.main, ["statements", "parse", str(path)])
    assert refused.exit_code == 1 and "DOCTYPE" in refused.output


def test_an_mt940_upload_is_stored_as_mt940(session_factory) -> None:
    context = fake_context(session_factory, FakeBank())
    setup_envelope(context, 1)
    statement_id = upload(context, mt940(ACCOUNT, []))
    assert statement_row(context, statement_id).format == MT940
    with pytest.raises(BridgeError) as refused:
        upload(context, "  <not camt")
    assert refused.value.code == "STATEMENT_UNPARSEABLE"
    assert "camt.053/camt.054" in refused.value.message


def test_a_camt_statement_is_checked_again_before_it_is_applied(scene) -> None:  # noqa: F811
    other = Principal("bank-other", "bank", bank_codes=frozenset({"OTHERBANK"}))
    content = camt(
        "camt.053.001.08",
        Stmt(ACCOUNT_2, (returned(Tx(scene.d2, TEN), "AC04"),), sequence=2, opening=TEN),
    )
    with transaction(scene.context.session_factory) as session:
        statement_id = store_statement(session, content, "day.xml", other, 10**7).id
        session.execute(  # the program moved to another bank since the upload
            update(BenefitProgram)
            .where(BenefitProgram.mnemonic == "PROG2")
            .values(sponsor_bank_code="EXAMPLE")
        )
    assert scene.runner.run_until_idle(timeout=30)
    row = statement_row(scene.context, statement_id)
    assert row.state == "ERROR" and "does not hold bank code 'EXAMPLE'" in (row.error_reason or "")
    with transaction(scene.context.session_factory) as session:
        (status,) = views.disbursement_statuses(session, [scene.d2])
    assert status.state == "RECONCILED"
