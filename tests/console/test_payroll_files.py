"""Payroll files (envelopes without a PBMS) over the API and in the console's upload form, on
PostgreSQL and SQLite: every line held to the API's rules, each fault reported with its line,
column and reason, nothing stored unless the file is clean, the SHA-256 recorded and the same
bytes answered with their envelope, and the envelope held for four-eyes approval whatever its
program's threshold."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from datetime import timedelta
from decimal import Decimal
from typing import Any

import openpyxl
import pytest
from console_support import csrf_of, make_program, make_user, sign_in
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bridge_support import dumps, header
from g2p_bridge.auth import issue_token
from g2p_bridge.core import approvals, funds, payroll_files
from g2p_bridge.core.errors import Forbidden
from g2p_bridge.db import transaction
from g2p_bridge.models import (
    AuditEvent,
    Disbursement,
    DisbursementEnvelope,
    EnvelopeStatus,
    PayrollFile,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.settings import Settings

HEADER = "beneficiary_id,beneficiary_name,amount,narrative,financial_address,disbursement_id\n"
CLEAN = (
    HEADER
    + "NID-1,Amina Mwangi,120.50,December transfer,account:1000001@EXAMPLE.BR01,pf-1\n"
    + "NID-2,Juma Otieno,80.25,December transfer,account:1000002@EXAMPLE.BR01,pf-2\n"
    + "NID-1,Amina Mwangi,10.00,December top-up,account:1000001@EXAMPLE.BR01,pf-3\n"
)


def _today() -> str:
    return utcnow().date().isoformat()


def _upload(
    client: TestClient, settings: Settings, body: bytes, client_id: str = "clerk-1",
    program: str = "FILES", role: str = "pbms", **params: str,
) -> Any:  # fmt: skip
    token = issue_token(settings, client_id, role, programs=[program])
    query = {"program": program, "cycle_code": "2026-12", "schedule_date": _today(), **params}
    return client.post(
        "/payroll_files",
        params=query,
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "text/csv"},
    )


def _counts(session_factory) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    with transaction(session_factory) as session:
        return (
            session.scalar(select(func.count()).select_from(DisbursementEnvelope)) or 0,
            session.scalar(select(func.count()).select_from(Disbursement)) or 0,
            session.scalar(select(func.count()).select_from(PayrollFile)) or 0,
        )


@pytest.fixture
def program(session_factory) -> str:  # type: ignore[no-untyped-def]
    # No approval rule of its own: a file's envelope needs approval all the same.
    make_program(session_factory, "FILES", "3000000001")
    return "FILES"


def test_a_clean_file_makes_an_envelope_that_waits_for_approval(
    app_client: TestClient,
    settings: Settings,
    session_factory,
    program: str,  # type: ignore[no-untyped-def]
) -> None:
    answer = _upload(app_client, settings, CLEAN.encode(), file_name="december.csv")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    envelope_id = body["disbursement_envelope_id"]
    assert body["number_of_disbursements"] == 3
    assert body["total_disbursement_amount"] == "210.75"
    assert body["currency"] == "USD"
    assert body["file_sha256"] == hashlib.sha256(CLEAN.encode()).hexdigest()
    assert body["resubmitted"] is False

    with transaction(session_factory) as session:
        envelope = session.get(DisbursementEnvelope, envelope_id)
        assert envelope is not None
        assert envelope.sender_id == "clerk-1"
        assert envelope.number_of_disbursements == 3
        assert envelope.number_of_beneficiaries == 2  # NID-1 is paid twice
        assert envelope.total_disbursement_amount == Decimal("210.75")
        status = session.get(EnvelopeStatus, envelope_id)
        assert status is not None and status.received_count == 3
        stored = session.get(Disbursement, "pf-2")
        assert stored is not None and stored.amount == Decimal("80.25")
        assert stored.financial_address == "account:1000002@EXAMPLE.BR01"
        recorded = session.get(PayrollFile, body["file_sha256"])
        assert recorded is not None and recorded.file_name == "december.csv"
        assert recorded.row_count == 3 and recorded.file_format == "csv"
        assert approvals.approval_state(session, envelope, status).value == "AWAITING_APPROVAL"
        assert not approvals.may_block_funds(session, envelope)
        due = funds.due_envelopes(session, settings, utcnow() + timedelta(hours=1), utcnow().date())
        assert envelope_id not in due
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "envelope.submit_file")
        ).one()
        assert event.actor == "clerk-1" and body["file_sha256"] in (event.detail or "")

    # The G2P Connect status says why it does not move, in a field OpenG2P clients ignore.
    token = issue_token(settings, "clerk-1", "pbms", programs=["FILES"])
    request = {"header": {**header("get_disbursement_envelope_status"), "sender_id": "clerk-1"},
               "message": envelope_id}  # fmt: skip
    status_answer = app_client.post(
        "/get_disbursement_envelope_status",
        content=dumps(request),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert status_answer.status_code == 200, status_answer.text
    message = status_answer.json()["message"]
    assert message["approval_status"] == "AWAITING_APPROVAL"
    assert message["funds_blocked_with_bank"] == "PENDING_CHECK"

    # The submitter cannot approve; a second person can, and then the sweep takes it.
    with transaction(session_factory) as session, pytest.raises(Forbidden):
        approvals.decide(session, envelope_id, "clerk-1", "approver", approve=True)
    with transaction(session_factory) as session:
        approvals.decide(session, envelope_id, "checker-1", "approver", approve=True)
    with transaction(session_factory) as session:
        due = funds.due_envelopes(session, settings, utcnow() + timedelta(hours=1), utcnow().date())
        assert envelope_id in due


def test_a_faulty_file_is_refused_line_by_line_and_nothing_is_stored(
    app_client: TestClient,
    settings: Settings,
    session_factory,
    program: str,  # type: ignore[no-untyped-def]
) -> None:
    faulty = (
        HEADER
        + "NID-1,Amina,120.50,Dec,,f-1\n"  # line 2: clean
        + "NID-2,Juma,1.234,Dec,,f-2\n"  # line 3: three decimals for USD
        + "NID-3,,5.00,Dec,,f-3\n"  # line 4: no name
        + "NID-4,Zawadi,1e3,Dec,,f-4\n"  # line 5: not plain decimal notation
        + "NID-5,Baraka,-2,Dec,,f-5\n"  # line 6: not more than 0
        + "NID-6,Neema\x00,2,Dec,,f-6\n"  # line 7: NUL
        + "NID-7,Imani,2,Dec,,bad/id\n"  # line 8: outside the safe id characters
    )
    answer = _upload(app_client, settings, faulty.encode())
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["header"]["status"] == "rjct"
    assert body["header"]["meta"]["error_code"] == "PAYROLL_FILE_INVALID"
    lines = {(e["line"], e["column"]) for e in body["message"]}
    assert lines == {
        (3, "amount"),
        (4, "beneficiary_name"),
        (5, "amount"),
        (6, "amount"),
        (7, "beneficiary_name"),
        (8, "disbursement_id"),
    }
    reasons = {e["line"]: e["reason"] for e in body["message"]}
    assert "INVALID_DISBURSEMENT_AMOUNT" in reasons[3]
    assert "plain decimal notation" in reasons[5]
    assert "U+0000" in reasons[7]
    assert _counts(session_factory) == (0, 0, 0)


def test_a_disbursement_id_used_twice_across_chunks_refuses_the_whole_file(
    app_client: TestClient,
    settings: Settings,
    session_factory,  # type: ignore[no-untyped-def]
    program: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunks of two: line 5 repeats line 2's id, which the first chunk already stored in this
    # transaction; the refusal rolls all of it back.
    monkeypatch.setattr(payroll_files, "CHUNK", 2)
    text = HEADER + "".join(f"NID-{n},Name {n},1.00,Dec,,dup-{n % 3}\n" for n in range(4))
    answer = _upload(app_client, settings, text.encode())
    assert answer.status_code == 422, answer.text
    faults = answer.json()["message"]
    assert {(e["line"], e["column"]) for e in faults} == {(5, "disbursement_id")}
    assert "DUPLICATE_DISBURSEMENT" in faults[0]["reason"]
    assert _counts(session_factory) == (0, 0, 0)


def test_the_same_bytes_again_are_answered_with_their_envelope(
    app_client: TestClient,
    settings: Settings,
    session_factory,
    program: str,  # type: ignore[no-untyped-def]
) -> None:
    first = _upload(app_client, settings, CLEAN.encode())
    assert first.status_code == 201
    # Next month's cycle code with last month's file: recognised, not paid twice.
    again = _upload(app_client, settings, CLEAN.encode(), cycle_code="2027-01")
    assert again.status_code == 200, again.text
    assert again.json()["resubmitted"] is True
    assert again.json()["disbursement_envelope_id"] == first.json()["disbursement_envelope_id"]
    assert _counts(session_factory) == (1, 3, 1)
    # One byte changed is another file (with other ids).
    changed = CLEAN.replace("pf-", "pg-").encode()
    assert _upload(app_client, settings, changed).status_code == 201
    assert _counts(session_factory) == (2, 6, 2)


def test_control_totals_catch_a_truncated_file(
    app_client: TestClient,
    settings: Settings,
    session_factory,
    program: str,  # type: ignore[no-untyped-def]
) -> None:
    answer = _upload(
        app_client, settings, CLEAN.encode(), expected_count="4", expected_total="300.00"
    )
    assert answer.status_code == 422
    reasons = [e["reason"] for e in answer.json()["message"]]
    assert reasons == [
        "the file holds 3 disbursements, not 4",
        "the file's amounts add up to 210.75, not 300.00",
    ]
    assert _counts(session_factory) == (0, 0, 0)
    ok = _upload(app_client, settings, CLEAN.encode(), expected_count="3", expected_total="210.75")
    assert ok.status_code == 201, ok.text


def test_an_xlsx_file_is_taken_like_a_csv(
    app_client: TestClient,
    settings: Settings,
    session_factory,
    program: str,  # type: ignore[no-untyped-def]
) -> None:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(["Beneficiary_ID", "Beneficiary_Name", "Amount", "Narrative"])
    sheet.append(["NID-1", "Amina", 120.5, "Dec"])
    sheet.append(["NID-2", "Juma", 80, "Dec"])
    buffer = io.BytesIO()
    book.save(buffer)
    answer = _upload(app_client, settings, buffer.getvalue(), file_name="december.xlsx")
    assert answer.status_code == 201, answer.text
    assert answer.json()["file_format"] == "xlsx"
    assert answer.json()["total_disbursement_amount"] == "200.50"


def test_who_may_submit_and_how_much(
    app_client: TestClient,
    settings: Settings,
    session_factory,
    program: str,  # type: ignore[no-untyped-def]
) -> None:
    other_program = _upload(app_client, settings, CLEAN.encode(), program="ELSE")
    assert other_program.status_code == 422  # no such program: but first the grant
    token = issue_token(settings, "clerk-2", "pbms", programs=["ELSE"])
    refused = app_client.post(
        "/payroll_files",
        params={"program": "FILES", "cycle_code": "c", "schedule_date": _today()},
        content=CLEAN.encode(),
        headers={"authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 403
    bank = _upload(app_client, settings, CLEAN.encode(), role="bank")
    assert bank.status_code == 403
    anonymous = app_client.post("/payroll_files", content=CLEAN.encode())
    assert anonymous.status_code == 401
    app_client.app.state.settings = settings.model_copy(update={"max_payroll_file_bytes": 100})  # type: ignore[attr-defined]
    try:
        too_big = _upload(app_client, settings, CLEAN.encode())
    finally:
        app_client.app.state.settings = settings  # type: ignore[attr-defined]
    assert too_big.status_code == 413
    assert too_big.json()["header"]["meta"]["error_code"] == "PAYROLL_FILE_TOO_LARGE"
    assert _counts(session_factory) == (0, 0, 0)


def _form(client: TestClient, body: bytes, csrf: str | None, **fields: str) -> Any:
    data = {"program": "FILES", "cycle_code": "2026-12", "schedule_date": _today(), **fields}
    if csrf is not None:
        data["csrf_token"] = csrf
    return client.post(
        "/console/payroll-files",
        data=data,
        files={"payroll_file": ("december.csv", body, "text/csv")},
        follow_redirects=False,
    )


def test_the_console_form_shows_each_faulty_line_then_takes_the_clean_file(
    app_client: TestClient,
    session_factory,
    program: str,  # type: ignore[no-untyped-def]
) -> None:
    make_user(session_factory, "olive", "operator", ["FILES"])
    make_user(session_factory, "victor", "viewer", ["FILES"])
    assert sign_in(app_client, "olive") == 303
    page = app_client.get("/console/payroll-files")
    assert page.status_code == 200 and 'name="payroll_file"' in page.text
    csrf = csrf_of(page.text)

    faulty = HEADER + "NID-1,<b>Amina</b>,12.345,Dec,,c-1\n"
    shown = _form(app_client, faulty.encode(), csrf)
    assert shown.status_code == 422
    assert 'data-testid="payroll-errors"' in shown.text
    assert "<td>2</td><td>amount</td>" in shown.text
    assert "<b>Amina</b>" not in shown.text  # nothing of the file is echoed unescaped
    assert _counts(session_factory) == (0, 0, 0)

    assert _form(app_client, CLEAN.encode(), None).status_code == 403  # no CSRF token
    assert _counts(session_factory) == (0, 0, 0)

    accepted = _form(app_client, CLEAN.encode(), csrf)
    assert accepted.status_code == 303, accepted.text
    location = accepted.headers["location"]
    assert location.startswith("/console/envelopes/") and location.endswith("?submitted=1")
    envelope = app_client.get(location)
    assert "AWAITING_APPROVAL" in envelope.text
    assert 'data-testid="maker-note"' in envelope.text  # olive made it: she cannot approve
    again = _form(app_client, CLEAN.encode(), csrf)
    assert again.status_code == 303 and again.headers["location"].endswith("?resubmitted=1")
    assert _counts(session_factory) == (1, 3, 1)

    viewer = TestClient(app_client.app, base_url="https://testserver")
    assert sign_in(viewer, "victor") == 303
    assert viewer.get("/console/payroll-files").status_code == 403


def test_memory_stays_flat_as_the_file_grows(
    session_factory,  # type: ignore[no-untyped-def]
    program: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunks of 200: a file five times longer must not take five times the memory (the file
    # itself is allocated before tracing starts, as a spooled upload sits on disk).
    monkeypatch.setattr(payroll_files, "CHUNK", 200)

    def peak(lines: int, tag: str) -> int:
        text = "beneficiary_id,beneficiary_name,amount,narrative\n" + "".join(
            f"NID-{tag}-{n},Name {n},{n % 90 + 1}.25,December transfer\n" for n in range(lines)
        )
        data = text.encode()
        source = io.BytesIO(data)
        fields = payroll_files.EnvelopeFields("FILES", f"c-{tag}", utcnow().date())
        tracemalloc.start()
        try:
            with transaction(session_factory) as session:
                submitted = payroll_files.submit(
                    session, source, hashlib.sha256(data).hexdigest(), len(data), None,
                    fields, "clerk-1", utcnow().date(), 10**6,
                )  # fmt: skip
            _, highest = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert submitted.row_count == lines
        return highest

    small, large = peak(600, "s"), peak(3000, "l")
    assert large < small * 1.5, (small, large)
