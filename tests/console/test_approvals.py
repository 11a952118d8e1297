"""Four-eyes approval: the funds sweep holds an envelope that needs approval, a second person
approves (the pipeline goes on) or rejects (the envelope is cancelled), the makers cannot, and an
amendment voids an approval. Over the API and in the domain, on PostgreSQL and SQLite."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from console_support import make_program
from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge_support import (
    FakeBank,
    disbursement_items,
    disbursements_request,
    dumps,
    envelope_request,
    fake_context,
    header,
)
from g2p_bridge.auth import issue_token
from g2p_bridge.core import funds
from g2p_bridge.db import transaction
from g2p_bridge.models import AuditEvent, EnvelopeStatus
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import FundsBlocked
from g2p_bridge.settings import Settings


def _post(client: TestClient, path: str, body: object, token: str):  # type: ignore[no-untyped-def]
    return client.post(
        path,
        content=dumps(body),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )


def _submit(client: TestClient, settings: Settings, envelope_id: str, program: str,
            total: str = "300.00", sender: str = "maker-1") -> None:  # fmt: skip
    token = issue_token(settings, sender, "pbms", programs=[program])
    body = envelope_request(envelope_id, count=3, total=total, program=program)
    body["header"]["sender_id"] = sender
    assert _post(client, "/create_disbursement_envelope", body, token).status_code == 200
    items = disbursement_items(envelope_id, count=3, amount=str(Decimal(total) / 3))
    request = disbursements_request(items)
    request["header"]["sender_id"] = sender
    response = _post(client, "/create_disbursements", request, token)
    assert response.status_code == 200, response.text


def _due(session_factory, settings: Settings) -> list[str]:  # type: ignore[no-untyped-def]
    with transaction(session_factory) as session:
        return funds.due_envelopes(
            session, settings, utcnow() + timedelta(hours=1), utcnow().date()
        )


def test_the_funds_sweep_waits_for_a_second_person(
    app_client: TestClient,
    settings: Settings,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    make_program(session_factory, "FOUR", "2000000001", threshold="0")
    _submit(app_client, settings, "env-four", "FOUR")
    assert _due(session_factory, settings) == []

    # The submitter holds the approver role too: still refused, and the refusal is audited.
    own = issue_token(settings, "maker-1", "approver", programs=["FOUR"])
    refused = _post(app_client, "/envelopes/env-four/approve", {}, own)
    assert refused.status_code == 403
    assert refused.json()["header"]["status"] == "rjct"
    assert "second person" in refused.json()["header"]["meta"]["error_message"]
    # An approver of another program is refused too.
    other = issue_token(settings, "checker-x", "approver", programs=["ELSE"])
    assert _post(app_client, "/envelopes/env-four/approve", {}, other).status_code == 403
    # A PBMS may not approve at all.
    pbms = issue_token(settings, "checker-p", "pbms", programs=["FOUR"])
    assert _post(app_client, "/envelopes/env-four/approve", {}, pbms).status_code == 403
    assert _due(session_factory, settings) == []

    checker = issue_token(settings, "checker-1", "approver", programs=["FOUR"])
    approved = _post(
        app_client, "/envelopes/env-four/approve", {"note": "matches the MIS"}, checker
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["decision"] == "APPROVED" and body["decided_by"] == "checker-1"
    assert body["figures"]["total_disbursement_amount_declared"] == "300.0000"
    again = _post(app_client, "/envelopes/env-four/approve", {}, checker)
    assert again.status_code == 409
    assert again.json()["header"]["meta"]["error_code"] == "APPROVAL_ALREADY_DECIDED"

    # Now the sweep takes it and the funds are blocked.
    assert _due(session_factory, settings) == ["env-four"]
    context = fake_context(session_factory, FakeBank())
    assert funds.secure_funds(context, "env-four")
    with transaction(session_factory) as session:
        status = session.get(EnvelopeStatus, "env-four")
        assert status is not None and status.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.envelope_id == "env-four").order_by(AuditEvent.id)
        ).all()
        actions = [(e.action, e.outcome, e.actor) for e in events]
        assert ("envelope.approve", "ok", "checker-1") in actions
        # Refusals are audited in a transaction of their own, under the request's action.
        denied = session.scalars(
            select(AuditEvent.actor).where(
                AuditEvent.action == "envelope.approve", AuditEvent.outcome == "denied"
            )
        ).all()
        assert sorted(denied) == ["checker-p", "checker-x", "maker-1"]
        approval = next(e for e in events if e.action == "envelope.approve" and e.outcome == "ok")
        detail = json.loads(approval.detail or "{}")
        assert detail["figures"]["number_of_disbursements_received"] == 3
        assert detail["note"] == "matches the MIS"


def test_below_the_threshold_no_approval_is_needed(
    app_client: TestClient,
    settings: Settings,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    make_program(session_factory, "BIG", "2000000002", threshold="1000.00")
    _submit(app_client, settings, "env-small", "BIG", total="300.00")
    _submit(app_client, settings, "env-large", "BIG", total="1500.00")
    assert _due(session_factory, settings) == ["env-small"]
    checker = issue_token(settings, "checker-1", "approver", programs=["BIG"])
    response = _post(app_client, "/envelopes/env-small/approve", {}, checker)
    assert response.status_code == 409
    assert response.json()["header"]["meta"]["error_code"] == "APPROVAL_NOT_REQUIRED"


def test_an_incomplete_envelope_cannot_be_approved_yet(
    app_client: TestClient,
    settings: Settings,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    make_program(session_factory, "FOUR", "2000000001", threshold="0")
    token = issue_token(settings, "maker-1", "pbms", programs=["FOUR"])
    body = envelope_request("env-partial", count=3, program="FOUR")
    body["header"]["sender_id"] = "maker-1"
    assert _post(app_client, "/create_disbursement_envelope", body, token).status_code == 200
    checker = issue_token(settings, "checker-1", "approver", programs=["FOUR"])
    response = _post(app_client, "/envelopes/env-partial/approve", {}, checker)
    assert response.status_code == 409
    assert response.json()["header"]["meta"]["error_code"] == "APPROVAL_NOT_READY"


def test_rejection_cancels_the_envelope(
    app_client: TestClient,
    settings: Settings,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    make_program(session_factory, "FOUR", "2000000001", threshold="0")
    _submit(app_client, settings, "env-no", "FOUR")
    checker = issue_token(settings, "checker-1", "approver", programs=["FOUR"])
    response = _post(app_client, "/envelopes/env-no/reject", {"note": "wrong cycle"}, checker)
    assert response.status_code == 200, response.text
    assert response.json()["decision"] == "REJECTED"
    status = app_client.get(
        "/envelopes/env-no/status",
        headers={"authorization": f"Bearer {issue_token(settings, 'ops', 'admin')}"},
    ).json()
    assert status["cancelled"] is True
    assert status["number_of_disbursements_cancelled"] == 3
    assert _due(session_factory, settings) == []


def test_an_amendment_voids_the_approval_and_an_amender_may_not_approve(
    app_client: TestClient,
    settings: Settings,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    make_program(session_factory, "FOUR", "2000000001", threshold="0")
    _submit(app_client, settings, "env-amend", "FOUR")
    checker = issue_token(settings, "checker-1", "approver", programs=["FOUR"])
    assert _post(app_client, "/envelopes/env-amend/approve", {}, checker).status_code == 200
    assert _due(session_factory, settings) == ["env-amend"]
    # Put it back as not yet due (the sweep marked it enqueued), then amend as an admin.
    with transaction(session_factory) as session:
        status = session.get(EnvelopeStatus, "env-amend")
        assert status is not None
        status.next_attempt_at = utcnow()
    amender = issue_token(settings, "amender-1", "admin")
    amend = {
        "header": {**header("amend_disbursement_envelope"), "sender_id": "amender-1"},
        "message": {"disbursement_envelope_id": "env-amend", "number_of_beneficiaries": 2},
    }
    response = _post(app_client, "/amend_disbursement_envelope", amend, amender)
    assert response.status_code == 200, response.text
    assert _due(session_factory, settings) == []
    # The amender, even as an admin, may not approve what they changed; the first approver may.
    assert _post(app_client, "/envelopes/env-amend/approve", {}, amender).status_code == 403
    assert _post(app_client, "/envelopes/env-amend/approve", {}, checker).status_code == 200
    assert _due(session_factory, settings) == ["env-amend"]


@pytest.mark.parametrize("path", ["approve", "reject"])
def test_unknown_envelope_is_a_404_rjct(
    app_client: TestClient, settings: Settings, path: str
) -> None:
    token = issue_token(settings, "ops", "admin")
    response = _post(app_client, f"/envelopes/nope/{path}", {}, token)
    assert response.status_code == 404
    assert response.json()["header"]["meta"]["error_code"] == "DISBURSEMENT_ENVELOPE_NOT_FOUND"


def test_a_note_with_control_characters_is_refused(
    app_client: TestClient,
    settings: Settings,
    session_factory,  # type: ignore[no-untyped-def]
) -> None:
    make_program(session_factory, "FOUR", "2000000001", threshold="0")
    _submit(app_client, settings, "env-nul", "FOUR")
    checker = issue_token(settings, "checker-1", "approver", programs=["FOUR"])
    response = _post(app_client, "/envelopes/env-nul/approve", {"note": "ok\u0000"}, checker)
    assert response.status_code == 422
    assert response.json()["header"]["meta"]["error_code"] == "INVALID_CHARACTER"
    assert _due(session_factory, settings) == []
