"""The audit trail (one event per change, append-only), the metrics endpoint, and log masking."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from bridge_support import (
    FakeBank,
    disbursement_items,
    disbursements_request,
    envelope_request,
    fake_context,
    mt940,
    program_request,
)
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import AuditEvent
from g2p_bridge.observability import CorrelationFilter, JsonFormatter, MaskingFilter, mask_text


def _events(client) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with transaction(client.http.app.state.session_factory) as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_each_change_writes_one_audit_event(client, program) -> None:
    envelope = client.post("/create_disbursement_envelope", envelope_request(count=3))
    envelope_id = envelope.json()["message"]["disbursement_envelope_id"]
    items = disbursement_items(envelope_id, 3)
    assert client.post("/create_disbursements", disbursements_request(items)).status_code == 200
    cancel = disbursements_request([{"disbursement_id": items[0]["disbursement_id"]}])
    assert client.post("/cancel_disbursements", cancel).status_code == 200
    update_body = {"sponsor_bank_branch_code": "BR9"}
    assert client.http.put("/programs/PROG1", json=update_body).status_code == 200
    cancel_envelope = envelope_request(envelope_id)
    assert client.post("/cancel_disbursement_envelope", cancel_envelope).status_code == 200

    events = _events(client)
    assert [e.action for e in events] == [
        "program.create",
        "envelope.create",
        "disbursements.create",
        "disbursements.cancel",
        "program.update",
        "envelope.cancel",
    ]
    assert {e.actor for e in events} == {"pbms-1"}
    assert all(e.request_id and e.outcome == "ok" for e in events)
    bulk = json.loads(events[2].detail or "{}")
    assert bulk["count"] == 3 and bulk["total_amount"] == "300.00"
    assert bulk["first_id"] == items[0]["disbursement_id"]
    assert bulk["last_id"] == items[2]["disbursement_id"]
    change = json.loads(events[4].detail or "{}")
    assert change["before"]["sponsor_bank_branch_code"] == "BR1"
    assert change["after"]["sponsor_bank_branch_code"] == "BR9"

    by_envelope = client.get("/audit", params={"envelope_id": envelope_id}).json()
    assert [e["action"] for e in by_envelope] == [
        "envelope.create",
        "disbursements.create",
        "disbursements.cancel",
        "envelope.cancel",
    ]
    trail = client.get("/audit", params={"disbursement_id": items[1]["disbursement_id"]}).json()
    # Its creation and its envelope's cancellation; not the other disbursement's cancellation.
    assert [e["action"] for e in trail] == [
        "envelope.create",
        "disbursements.create",
        "envelope.cancel",
    ]
    later = client.get("/audit", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert later == []
    assert client.get("/audit", params={"since": "2020-01-01T00:00:00"}).status_code == 422


def test_a_refused_request_changes_nothing_and_writes_no_change_event(client, program) -> None:
    body = envelope_request(count=3, total="-1")
    assert client.post("/create_disbursement_envelope", body).status_code >= 400
    assert [e.action for e in _events(client)] == ["program.create"]


def test_pipeline_steps_write_bank_and_statement_events(session_factory) -> None:
    from test_pipeline import ACCOUNT, setup_envelope, upload

    from bridge_support import states  # noqa: F401 (the module's fixtures import it too)

    context = fake_context(session_factory, FakeBank())
    ids = setup_envelope(context, 60)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=60)
    entries = [("D", i, Decimal("10.00"), "/EREF/x") for i in ids]
    upload(context, mt940(ACCOUNT, entries))
    assert runner.run_until_idle(timeout=60)
    with transaction(session_factory) as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    actions = [e.action for e in events]
    assert actions.count("funds.check") == 1 and actions.count("funds.block") == 1
    assert actions.count("bank_batch.send") == 2  # batches of 50
    assert actions.count("statement.process") == 1
    assert all(e.actor == "system" and e.outcome == "ok" for e in events)
    assert all(e.request_id and ":" in e.request_id for e in events)  # the task's id
    processed = json.loads(next(e for e in events if e.action == "statement.process").detail or "")
    assert processed["matched"] == 60


@pytest.mark.postgres
def test_postgres_refuses_to_change_or_delete_audit_events(client, program, database_url) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the trigger is PostgreSQL's")
    factory = client.http.app.state.session_factory
    for statement in (
        update(AuditEvent).values(actor="someone else"),
        text("DELETE FROM audit_events"),
    ):
        with pytest.raises(DBAPIError, match="append-only"), transaction(factory) as session:
            session.execute(statement)
    assert [e.actor for e in _events(client)] == ["pbms-1"]


def test_metrics_expose_requests_states_and_refusals(client, program) -> None:
    envelope = client.post("/create_disbursement_envelope", envelope_request(count=2))
    envelope_id = envelope.json()["message"]["disbursement_envelope_id"]
    items = disbursement_items(envelope_id, 2)
    client.post("/create_disbursements", disbursements_request(items))
    client.http.get("/programs", headers={"authorization": "Bearer nope"})
    client.http.headers.pop("authorization")
    response = client.http.get("/metrics")
    assert response.status_code == 200
    body = response.text
    assert (
        'g2p_bridge_http_requests_total{method="POST",route="/create_disbursements",status="200"}'
        in body
    )
    assert 'g2p_bridge_disbursements{state="RESOLVED"} 2.0' in body  # inline: at ingest
    assert 'g2p_bridge_auth_refusals_total{status="401"}' in body
    for series in (
        "g2p_bridge_bank_call_duration_seconds",
        "g2p_bridge_task_duration_seconds",
        "g2p_bridge_statements_processed_total",
        "g2p_bridge_task_retries_total",
    ):
        assert f"# TYPE {series}" in body


def test_readiness_reports_an_unreachable_broker(client) -> None:
    settings = client.http.app.state.settings
    client.http.app.state.settings = settings.model_copy(
        update={"broker_url": "redis://127.0.0.1:1/0", "broker_check_timeout_seconds": 0.5}
    )
    try:
        response = client.http.get("/health/ready")
    finally:
        client.http.app.state.settings = settings
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "broker": "unreachable"}


@pytest.mark.parametrize(
    ("message", "hidden"),
    [
        ("paying beneficiary_name=Amina Juma now", "Amina"),
        ('{"beneficiary_name": "Amina Juma", "amount": 5}', "Amina"),
        ("address account:123456789@NORTHBANK.BR01 resolved", "123456789"),
        ("wallet mobile:0711000000@MPESA", "0711000000"),
        ("mail jane.doe@example.org bounced", "jane.doe"),
        ("phone +254 711 000 000 called", "711 000 000"),
        ("account_number=40000012 failed", "40000012"),
    ],
)
def test_personal_data_is_masked(message: str, hidden: str) -> None:
    masked = mask_text(message)
    assert hidden not in masked, masked


def test_json_logs_carry_correlation_ids_and_mask_arguments(caplog) -> None:
    from g2p_bridge.observability import request_id_var

    record = logging.LogRecord(
        "g2p", logging.INFO, __file__, 1, "paid %s to %s", ("100.00", "account:99887766@X"), None
    )
    token = request_id_var.set("req-1")
    try:
        CorrelationFilter().filter(record)
        MaskingFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "req-1"
    assert "99887766" not in line["message"] and "100.00" in line["message"]
    assert line["level"] == "INFO"


def test_program_creation_by_the_admin_is_audited_with_its_state(client) -> None:
    response = client.post("/create_benefit_program_configuration", program_request("P2", "77"))
    assert response.status_code == 200
    (event,) = _events(client)
    assert event.entity_id == "P2"
    assert json.loads(event.detail or "")["after"]["sponsor_bank_account_number"] == "77"
