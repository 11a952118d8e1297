"""The console over HTTP (no browser): sign-in, sessions, CSRF, roles, program grants,
escaping, masking and the streamed exports; on PostgreSQL and SQLite."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from console_support import PASSWORD, csrf_of, make_program, make_user, sign_in
from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge_support import disbursement_items, disbursements_request, dumps, envelope_request
from g2p_bridge.auth import issue_token
from g2p_bridge.db import transaction
from g2p_bridge.models import AccountStatement, AuditEvent, Disbursement, ReconError
from g2p_bridge.models.enums import DisbursementState
from g2p_bridge.settings import Settings

HOSTILE_NAME = "<script>document.title='owned'</script>Amina"


def _submit(client: TestClient, settings: Settings, envelope_id: str, program: str) -> None:
    token = issue_token(settings, "pbms-1", "admin")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    body = envelope_request(envelope_id, count=2, total="200.00", program=program)
    assert (
        client.post(
            "/create_disbursement_envelope", content=dumps(body), headers=headers
        ).status_code
        == 200
    )
    items = disbursement_items(envelope_id, count=2, amount="100.00")
    items[0]["beneficiary_name"] = HOSTILE_NAME
    items[0]["narrative"] = '=HYPERLINK("http://evil")'
    response = client.post(
        "/create_disbursements", content=dumps(disbursements_request(items)), headers=headers
    )
    assert response.status_code == 200, response.text


def _recon_error(session_factory) -> int:  # type: ignore[no-untyped-def]
    with transaction(session_factory) as session:
        statement = AccountStatement(
            content_sha256="a" * 64,
            content=b"x",
            size_bytes=1,
            account_number="3000000001",
            program_mnemonic="OPS",
            state="PROCESSED",
        )
        session.add(statement)
        session.flush()
        error = ReconError(
            statement_id=statement.id,
            error_code="DISBURSEMENT_NOT_FOUND",
            detail="<img src=x onerror=alert(1)> unknown reference",
            bank_reference="B-1",
        )
        session.add(error)
        session.flush()
        return error.id


@pytest.fixture
def world(app_client: TestClient, settings: Settings, session_factory) -> None:  # type: ignore[no-untyped-def]
    make_program(session_factory, "OPS", "3000000001")
    make_program(session_factory, "OTHER", "3000000002")
    _submit(app_client, settings, "env-ops", "OPS")
    _submit(app_client, settings, "env-other", "OTHER")
    make_user(session_factory, "olive", "operator", ["OPS"])
    make_user(session_factory, "victor", "viewer", ["OPS"])
    make_user(session_factory, "ada", "admin", [])


def test_pages_need_a_session(app_client: TestClient, world: None) -> None:
    for path in ("/console", "/console/envelopes", "/console/envelopes/env-ops",
                 "/console/failures.csv", "/console/disbursements?q=x"):  # fmt: skip
        response = app_client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/console/login"


def test_sign_in_sets_a_strict_httponly_secure_cookie(
    app_client: TestClient, world: None, settings: Settings
) -> None:
    page = app_client.get("/console/login")
    nonce = page.text.split('name="nonce" value="')[1].split('"')[0]
    response = app_client.post(
        "/console/login",
        data={"username": "olive", "password": PASSWORD, "nonce": nonce},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("g2p_console=")
    )
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered
    # Secure outside the embedded SQLite default (which serves plain HTTP on loopback).
    assert ("secure" in lowered) is (not settings.is_sqlite)
    dashboard = app_client.get("/console")
    assert dashboard.status_code == 200
    assert "default-src 'self'" in dashboard.headers["content-security-policy"]
    assert "olive (operator)" in dashboard.text


def test_wrong_passwords_lock_the_account(
    app_client: TestClient, world: None, session_factory
) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        assert sign_in(app_client, "olive", "wrong password here") == 401
    # Locked now: even the right password is refused for a while.
    assert sign_in(app_client, "olive") == 401
    assert sign_in(app_client, "nobody-at-all") == 401
    with transaction(session_factory) as session:
        reasons = session.scalars(
            select(AuditEvent.detail).where(
                AuditEvent.action == "console.login", AuditEvent.outcome == "denied"
            )
        ).all()
    assert sum("wrong password" in (r or "") for r in reasons) == 5
    assert sum('"locked"' in (r or "") for r in reasons) == 1


def test_a_login_form_from_another_site_is_refused(app_client: TestClient, world: None) -> None:
    # No nonce cookie of ours: a cross-site login (login CSRF) goes nowhere.
    response = app_client.post(
        "/console/login",
        data={"username": "olive", "password": PASSWORD, "nonce": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and "error=expired" in response.headers["location"]


def test_posts_need_the_sessions_csrf_token_and_our_origin(
    app_client: TestClient,
    world: None,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    error_id = _recon_error(session_factory)
    assert sign_in(app_client, "olive") == 303
    page = app_client.get("/console/recon-errors")
    token = csrf_of(page.text)
    path = f"/console/recon-errors/{error_id}/acknowledge"
    missing = app_client.post(path, data={"note": "seen"})
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = app_client.post(path, data={"note": "seen", "csrf_token": "x" * 43})
    assert wrong.status_code == 403
    elsewhere = app_client.post(
        path, data={"note": "seen", "csrf_token": token}, headers={"origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    ok = app_client.post(path, data={"note": "bank fee, booked by finance", "csrf_token": token})
    assert ok.status_code == 200  # followed the redirect back to the list
    assert "olive: bank fee, booked by finance" in ok.text


def test_a_viewer_sees_but_cannot_act(
    app_client: TestClient,
    world: None,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    error_id = _recon_error(session_factory)
    assert sign_in(app_client, "victor") == 303
    page = app_client.get("/console/recon-errors")
    assert page.status_code == 200 and 'data-testid="acknowledge"' not in page.text
    token = csrf_of(page.text)
    refused = app_client.post(
        f"/console/recon-errors/{error_id}/acknowledge", data={"note": "x", "csrf_token": token}
    )
    assert refused.status_code == 403 and "may not do this" in refused.text
    approve = app_client.post("/console/envelopes/env-ops/approve", data={"csrf_token": token})
    assert approve.status_code == 403


def test_program_grants_hide_other_programs(app_client: TestClient, world: None) -> None:
    assert sign_in(app_client, "olive") == 303
    assert app_client.get("/console/envelopes/env-ops").status_code == 200
    assert app_client.get("/console/envelopes/env-other").status_code == 404
    listing = app_client.get("/console/envelopes").text
    assert "env-ops" in listing and "env-other" not in listing
    other_id = disbursement_items("env-other", count=1)[0]["disbursement_id"]
    assert app_client.get(f"/console/disbursements/{other_id}").status_code == 404
    assert "Nothing found." in app_client.get(f"/console/disbursements?q={other_id}").text


def test_hostile_text_is_escaped_and_personal_data_masked_for_viewers(
    app_client: TestClient,
    world: None,
    browser_factory,  # type: ignore[no-untyped-def]
) -> None:
    disbursement_id = disbursement_items("env-ops", count=1)[0]["disbursement_id"]
    assert sign_in(app_client, "olive") == 303
    page = app_client.get(f"/console/disbursements/{disbursement_id}").text
    assert "&lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt;Amina" in page
    assert "<script>document.title" not in page
    viewer = browser_factory()
    assert sign_in(viewer, "victor") == 303
    masked = viewer.get(f"/console/disbursements/{disbursement_id}").text
    assert "Amina" not in masked and "document.title" not in masked


def test_failures_export_streams_every_row_without_formulas(
    app_client: TestClient,
    world: None,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    with transaction(session_factory) as session:
        for row in session.scalars(
            select(Disbursement).where(Disbursement.envelope_id == "env-ops")
        ):
            row.state, row.state_reason = DisbursementState.FAILED, "=cmd|' /C calc'!A0"
    assert sign_in(app_client, "ada") == 303
    response = app_client.get("/console/failures.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 2
    assert {r["envelope_id"] for r in rows} == {"env-ops"}
    assert all(r["reason"].startswith("'=") for r in rows)
    assert {Decimal(r["amount"]) for r in rows} == {Decimal("100.00")}
    assert any(r["beneficiary_name"] == HOSTILE_NAME for r in rows)  # admin sees names


def test_large_envelopes_breakdown_is_kept_a_while_small_ones_are_exact(
    world: None,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    from g2p_bridge.core.overview import Breakdowns

    kept, exact = Breakdowns(seconds=60, exact_below=2), Breakdowns(seconds=60, exact_below=3)
    with transaction(session_factory) as session:
        assert kept.get(session, "env-ops", 2) == {"RESOLVED": (2, Decimal("200.00"))}
        assert exact.get(session, "env-ops", 2) == {"RESOLVED": (2, Decimal("200.00"))}
        for row in session.scalars(
            select(Disbursement).where(Disbursement.envelope_id == "env-ops")
        ):
            row.state = DisbursementState.FAILED
    with transaction(session_factory) as session:
        # The large one answers from what it kept; the small one reads the rows again.
        assert kept.get(session, "env-ops", 2) == {"RESOLVED": (2, Decimal("200.00"))}
        assert exact.get(session, "env-ops", 2) == {"FAILED": (2, Decimal("200.00"))}


def test_a_poll_after_the_session_ended_redirects_the_whole_page(
    app_client: TestClient, world: None
) -> None:
    response = app_client.get(
        "/console/envelopes/env-ops/progress",
        headers={"hx-request": "true"},
        follow_redirects=False,
    )
    assert response.status_code == 204
    assert response.headers["hx-redirect"] == "/console/login"
