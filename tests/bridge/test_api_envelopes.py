"""Envelope and program endpoints: the reference's wire format and every validation rule."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from bridge_support import TODAY, envelope_request, header, program_request


def test_program_is_created_read_listed_and_updated(client, program) -> None:
    assert program["program_mnemonic"] == "PROG1"
    assert client.get("/programs/PROG1").json()["sponsor_bank_account_number"] == "1000000001"
    assert [p["program_mnemonic"] for p in client.get("/programs").json()] == ["PROG1"]
    updated = client.http.put("/programs/PROG1", json={"sponsor_bank_branch_code": "BR9"})
    assert updated.status_code == 200, updated.text
    assert client.get("/programs/PROG1").json()["sponsor_bank_branch_code"] == "BR9"


def test_openg2p_1_1_program_configuration_is_accepted_as_sent(client) -> None:
    """OpenG2P 1.1.0's own payload: benefit_program_* and funding_org_* fields, no resolver."""
    body = {
        "header": header("create_benefit_program_configuration"),
        "message": {
            "benefit_program_mnemonic": "OG2P-CT",
            "benefit_program_name": "Cash Transfer for Elderly",
            "funding_org_code": "MOF",
            "funding_org_name": "Ministry of Finance",
            "sponsor_bank_code": "EXAMPLE",
            "sponsor_bank_account_number": "4000000001",
            "sponsor_bank_branch_code": "BR01",
            "sponsor_bank_account_currency": "USD",
        },
    }
    created = client.post("/create_benefit_program_configuration", body)
    assert created.status_code == 200, created.text
    message = created.json()["message"]
    assert message["benefit_program_mnemonic"] == message["program_mnemonic"] == "OG2P-CT"
    assert message["benefit_program_name"] == "Cash Transfer for Elderly"
    assert message["funding_org_name"] == "Ministry of Finance"
    # 1.1.0's default: beneficiary ids are resolved through the ID mapper.
    assert message["id_mapper_resolution_required"] is True
    assert message["resolver"] == "g2p-connect"
    stored = client.get("/programs/OG2P-CT").json()
    assert stored["funding_org_code"] == "MOF"
    # The same message again is a replay: the first answer. A new message id is a second
    # configuration of the same program, which is refused.
    replay = client.post("/create_benefit_program_configuration", body)
    assert replay.status_code == 200 and replay.json()["message"] == message
    body["header"] = header("create_benefit_program_configuration")
    second = client.post("/create_benefit_program_configuration", body)
    assert second.status_code == 409
    assert second.json()["header"]["meta"]["error_code"] == (
        "BENEFIT_PROGRAM_CONFIGURATION_ALREADY_EXISTS"
    )


def test_program_rules(client, program) -> None:
    again = client.post("/create_benefit_program_configuration", program_request())
    assert again.status_code == 409
    assert (
        again.json()["header"]["status_reason_message"]
        == "BENEFIT_PROGRAM_CONFIGURATION_ALREADY_EXISTS"
    )
    same_account = client.post(
        "/create_benefit_program_configuration", program_request(mnemonic="PROG2")
    )
    assert same_account.status_code == 409
    bad_currency = client.post(
        "/create_benefit_program_configuration",
        program_request(mnemonic="PROG3", account="9", currency="XYZ"),
    )
    assert bad_currency.status_code == 422
    assert client.get("/programs/NOPE").status_code == 404


def test_envelope_is_created_with_the_pbms_id_and_reported(client, program) -> None:
    response = client.post("/create_disbursement_envelope", envelope_request("env-1"))
    body = response.json()
    assert response.status_code == 200, body
    assert body["header"]["status"] == "succ"
    assert body["message"]["disbursement_envelope_id"] == "env-1"
    assert Decimal(body["message"]["total_disbursement_amount"]) == Decimal("300.00")
    status = client.post(
        "/get_disbursement_envelope_status",
        {"header": header("get_disbursement_envelope_status"), "message": "env-1"},
    ).json()
    assert status["header"]["status"] == "succ"
    message = status["message"]
    assert message["number_of_disbursements_received"] == 0
    assert message["funds_available_with_bank"] == "PENDING_CHECK"
    assert message["number_of_disbursements_cancelled"] == 0


def test_envelope_without_id_gets_a_uuid(client, program) -> None:
    first = client.post("/create_disbursement_envelope", envelope_request()).json()
    second = client.post("/create_disbursement_envelope", envelope_request()).json()
    ids = {
        first["message"]["disbursement_envelope_id"],
        second["message"]["disbursement_envelope_id"],
    }
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"benefit_program_mnemonic": "NOPE"}, "INVALID_PROGRAM_MNEMONIC"),
        ({"disbursement_frequency": "Hourly"}, "INVALID_DISBURSEMENT_FREQUENCY"),
        ({"cycle_code_mnemonic": ""}, "INVALID_CYCLE_CODE_MNEMONIC"),
        ({"number_of_beneficiaries": 0}, "INVALID_NO_OF_BENEFICIARIES"),
        ({"number_of_disbursements": 0}, "INVALID_NO_OF_DISBURSEMENTS"),
        ({"total_disbursement_amount": Decimal("0")}, "INVALID_TOTAL_DISBURSEMENT_AMOUNT"),
        ({"total_disbursement_amount": Decimal("-5")}, "INVALID_TOTAL_DISBURSEMENT_AMOUNT"),
        ({"total_disbursement_amount": Decimal("1.001")}, "INVALID_TOTAL_DISBURSEMENT_AMOUNT"),
        ({"disbursement_currency_code": "EUR"}, "INVALID_DISBURSEMENT_CURRENCY_CODE"),
        (
            {"disbursement_schedule_date": (TODAY - timedelta(days=1)).isoformat()},
            "INVALID_DISBURSEMENT_SCHEDULE_DATE",
        ),
    ],
)
def test_envelope_rules(client, program, overrides, code) -> None:
    response = client.post("/create_disbursement_envelope", envelope_request("env-x", **overrides))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["header"]["status"] == "rjct"
    assert body["header"]["status_reason_message"] == code
    assert (
        code in body["header"]["meta"]["error_message"] or body["header"]["meta"]["error_message"]
    )
    missing = client.post(
        "/get_disbursement_envelope_status",
        {"header": header("get_disbursement_envelope_status"), "message": "env-x"},
    )
    assert missing.status_code == 404  # nothing was written


def test_duplicate_envelope_id_is_refused(client, program) -> None:
    assert (
        client.post("/create_disbursement_envelope", envelope_request("env-1")).status_code == 200
    )
    again = client.post("/create_disbursement_envelope", envelope_request("env-1"))
    assert again.status_code == 409
    assert again.json()["header"]["status_reason_message"] == "DUPLICATE_ENVELOPE"


def test_replayed_message_returns_the_first_answer(client, program) -> None:
    body = envelope_request()
    first = client.post("/create_disbursement_envelope", body)
    second = client.post("/create_disbursement_envelope", body)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    listing = client.get("/envelopes").json()
    assert listing["total"] == 1


def test_envelope_listing_is_paginated(client, program) -> None:
    for i in range(5):
        client.post("/create_disbursement_envelope", envelope_request(f"env-{i}"))
    page = client.get("/envelopes", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 5 and len(page["items"]) == 2
    assert client.get("/envelopes", params={"program": "NOPE"}).json()["total"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'{"header": 5, "message": {}}',
        b"\xff\xfe",
        b'{"header": {}}',
        b'{"header": {"message_id": "m", "message_ts": "t", "action": "a", "sender_id": "s",'
        b' "total_count": "many"}, "message": {}}',
        b'{"header": {"message_id": "m", "message_ts": "t", "action": "a", "sender_id": "s",'
        b' "total_count": 1}, "message": {"disbursement_frequency": ["x"]}}',
    ],
)
def test_malformed_requests_are_rejected_not_500(client, program, raw) -> None:
    response = client.http.post(
        "/create_disbursement_envelope", content=raw, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["header"]["status"] == "rjct"


def test_oversize_body_is_refused(client, program, settings) -> None:
    settings.max_request_bytes = 1000
    response = client.http.post(
        "/create_disbursement_envelope",
        content=b" " * 5000,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["header"]["status_reason_message"] == "REQUEST_TOO_LARGE"


def test_unknown_route_and_method_are_g2p_refusals(client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/create_disbursements").json()["header"]["status"] == "rjct"


def test_openapi_document_has_the_reference_paths(client) -> None:
    document = client.get("/openapi.json").json()
    for path in [
        "/create_disbursement_envelope",
        "/cancel_disbursement_envelope",
        "/create_disbursements",
        "/cancel_disbursements",
        "/get_disbursement_envelope_status",
        "/get_disbursement_status",
        "/upload_mt940",
        "/create_benefit_program_configuration",
        "/ping",
    ]:
        assert path in document["paths"], path
    schemas = document["components"]["schemas"]
    assert "DisbursementRequest" in schemas and "RequestHeader" in schemas


def test_health(client) -> None:
    assert client.get("/ping").json() == {"message": "pong"}
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").json()["database"] == "ok"
