"""Disbursement endpoints: atomic creation, per-item errors, replays, cancellation, status."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from bridge_support import (
    counters_match_rows,
    disbursement_items,
    disbursements_request,
    envelope_request,
    header,
)
from g2p_bridge.core.errors import ErrorCode


@pytest.fixture
def envelope(client, program) -> str:
    response = client.post(
        "/create_disbursement_envelope", envelope_request("env-1", count=3, total="300.00")
    )
    assert response.status_code == 200, response.text
    return "env-1"


def _status(client, envelope_id: str = "env-1") -> dict:
    return client.post(
        "/get_disbursement_envelope_status",
        {"header": header("get_disbursement_envelope_status"), "message": envelope_id},
    ).json()["message"]


def test_disbursements_are_stored_and_counted(client, envelope, session_factory) -> None:
    response = client.post(
        "/create_disbursements", disbursements_request(disbursement_items(envelope, 3))
    )
    body = response.json()
    assert response.status_code == 200, body
    assert [d["disbursement_id"] for d in body["message"]] == [
        "d-env-1-000000",
        "d-env-1-000001",
        "d-env-1-000002",
    ]
    # The program resolves inline: its addresses are taken apart at ingest.
    assert all(d["state"] == "RESOLVED" for d in body["message"])
    status = _status(client)
    assert status["number_of_disbursements_received"] == 3
    assert Decimal(status["total_disbursement_amount_received"]) == Decimal("300.00")
    assert client.woken == [("disbursements_received",)]
    counters_match_rows(session_factory)


def test_amounts_carry_the_currency_minor_units(client, envelope, session_factory) -> None:
    """The database keeps four decimals; the wire says what a USD amount is: two (issue 13)."""
    client.post("/create_disbursements", disbursements_request(disbursement_items(envelope, 3)))
    status = _status(client)
    assert status["total_disbursement_amount_received"] == "300.00"
    assert status["total_disbursement_amount_declared"] == "300.00"
    listed = client.get(f"/envelopes/{envelope}/disbursements").json()["items"]
    assert {item["disbursement_amount"] for item in listed} == {"100.00"}
    statuses = client.post(
        "/get_disbursement_status",
        {"header": header("get_disbursement_status", 1), "message": [listed[0]["id"]]},
    ).json()["message"]
    assert statuses[0]["disbursement_amount"] == "100.00"
    (envelope_row,) = client.get("/envelopes").json()["items"]
    assert envelope_row["total_disbursement_amount"] == "300.00"


def test_answers_carry_stored_ids_outside_todays_safe_set(client, envelope, session_factory):
    """An id stored before the safe character set is answered as stored, never a 500."""
    from sqlalchemy import update

    from g2p_bridge.db import transaction
    from g2p_bridge.models import DisbursementEnvelope

    with transaction(session_factory) as session:
        session.execute(update(DisbursementEnvelope).values(cycle_code_mnemonic="2026/11 old"))
    page = client.get("/envelopes")
    assert page.status_code == 200, page.text
    assert page.json()["items"][0]["cycle_code_mnemonic"] == "2026/11 old"


def test_exact_decimal_amounts_survive_the_wire(client, program, session_factory) -> None:
    created = client.post(
        "/create_disbursement_envelope",
        envelope_request("env-big", count=1, total="98765432109876.54"),
    )
    assert created.status_code == 200, created.text
    too_big = client.post(
        "/create_disbursement_envelope",
        envelope_request("env-huge", count=1, total="100000000000000"),
    )
    assert too_big.json()["header"]["status_reason_message"] == "INVALID_TOTAL_DISBURSEMENT_AMOUNT"
    items = disbursement_items("env-big", 1, amount="98765432109876.54")
    assert client.post("/create_disbursements", disbursements_request(items)).status_code == 200
    status = _status(client, "env-big")
    assert Decimal(status["total_disbursement_amount_received"]) == Decimal("98765432109876.54")


def test_one_bad_item_rejects_the_whole_request(client, envelope, session_factory) -> None:
    items = disbursement_items(envelope, 3)
    items[1]["disbursement_amount"] = Decimal("-1")
    items[2]["beneficiary_name"] = ""
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 422
    body = response.json()
    assert body["header"]["status"] == "rjct"
    codes = [d.get("response_error_codes") for d in body["message"]]
    assert codes == [[], ["INVALID_DISBURSEMENT_AMOUNT"], ["INVALID_BENEFICIARY_NAME"]]
    assert _status(client)["number_of_disbursements_received"] == 0
    counters_match_rows(session_factory)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("disbursement_amount", Decimal("0"), "INVALID_DISBURSEMENT_AMOUNT"),
        ("disbursement_amount", Decimal("1.005"), "INVALID_DISBURSEMENT_AMOUNT"),
        ("disbursement_amount", None, "INVALID_DISBURSEMENT_AMOUNT"),
        ("beneficiary_id", "", "INVALID_BENEFICIARY_ID"),
        ("narrative", None, "INVALID_NARRATIVE"),
        ("disbursement_id", "x" * 65, "INVALID_DISBURSEMENT_ID"),
    ],
)
def test_item_rules(client, envelope, field, value, code) -> None:
    items = disbursement_items(envelope, 1)
    items[0][field] = value
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 422
    assert response.json()["message"][0]["response_error_codes"] == [code]


def test_request_level_rules(client, envelope, program) -> None:
    four = disbursement_items(envelope, 4)
    too_many = client.post("/create_disbursements", disbursements_request(four))
    assert (
        too_many.json()["header"]["status_reason_message"] == "NO_OF_DISBUESEMENTS_EXCEEDS_DECLARED"
    )
    rich = disbursement_items(envelope, 2, amount="200.00")
    over = client.post("/create_disbursements", disbursements_request(rich))
    assert (
        over.json()["header"]["status_reason_message"]
        == "TOTAL_DISBURSEMENT_AMOUNT_EXCEEDS_DECLARED"
    )
    client.post("/create_disbursement_envelope", envelope_request("env-2"))
    mixed = disbursement_items(envelope, 1) + disbursement_items("env-2", 1)
    assert (
        client.post("/create_disbursements", disbursements_request(mixed)).json()["header"][
            "status_reason_message"
        ]
        == "MULTIPLE_ENVELOPES_FOUND"
    )
    unknown = client.post(
        "/create_disbursements", disbursements_request(disbursement_items("env-404", 1))
    )
    assert unknown.status_code == 404
    assert unknown.json()["header"]["status_reason_message"] == "DISBURSEMENT_ENVELOPE_NOT_FOUND"
    empty = client.post("/create_disbursements", disbursements_request([]))
    assert empty.status_code == 422
    limit = client.post(
        "/create_disbursements", disbursements_request(disbursement_items(envelope, 101))
    )
    assert limit.json()["header"]["status_reason_message"] == "TOO_MANY_ITEMS"
    assert limit.json()["header"]["status_reason_code"] == "rjct.total_count.limit_exceeded"


def test_duplicate_ids_in_request_and_across_requests(client, envelope) -> None:
    items = disbursement_items(envelope, 2)
    items[1]["disbursement_id"] = items[0]["disbursement_id"]
    response = client.post("/create_disbursements", disbursements_request(items))
    assert [d["response_error_codes"] for d in response.json()["message"]] == [
        ["DUPLICATE_DISBURSEMENT"],
        ["DUPLICATE_DISBURSEMENT"],
    ]
    first = disbursement_items(envelope, 1)
    assert client.post("/create_disbursements", disbursements_request(first)).status_code == 200
    again = client.post("/create_disbursements", disbursements_request(first))
    assert again.json()["message"][0]["response_error_codes"] == ["DUPLICATE_DISBURSEMENT"]
    assert _status(client)["number_of_disbursements_received"] == 1


def test_replayed_request_stores_nothing_twice(client, envelope, session_factory) -> None:
    items = disbursement_items(envelope, 2)
    for item in items:
        item.pop("disbursement_id")  # bridge-assigned ids: the replay must not mint new ones
    body = disbursements_request(items, message_id="msg-1")
    first = client.post("/create_disbursements", body)
    second = client.post("/create_disbursements", body)
    assert first.json() == second.json()
    assert _status(client)["number_of_disbursements_received"] == 2
    counters_match_rows(session_factory)


def test_cancelled_envelope_takes_no_disbursements(client, envelope, session_factory) -> None:
    client.post("/create_disbursements", disbursements_request(disbursement_items(envelope, 2)))
    cancel = client.post(
        "/cancel_disbursement_envelope",
        {
            "header": header("cancel_disbursement_envelope"),
            "message": {"disbursement_envelope_id": envelope},
        },
    )
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["message"]["cancellation_status"] == "Cancelled"
    again = client.post(
        "/cancel_disbursement_envelope",
        {
            "header": header("cancel_disbursement_envelope"),
            "message": {"disbursement_envelope_id": envelope},
        },
    )
    assert (
        again.json()["header"]["status_reason_message"] == "DISBURSEMENT_ENVELOPE_ALREADY_CANCELED"
    )
    late = client.post(
        "/create_disbursements",
        disbursements_request(disbursement_items(envelope, 1, prefix="late")),
    )
    assert late.json()["header"]["status_reason_message"] == "ENVELOPE_ALREADY_CANCELLED"
    status = _status(client)
    assert status["cancelled"] is True
    assert status["number_of_disbursements_cancelled"] == 2
    assert status["number_of_disbursements_received"] == 0
    counters_match_rows(session_factory)


def test_cancelling_disbursements_frees_the_declared_room(
    client, envelope, session_factory
) -> None:
    items = disbursement_items(envelope, 3)
    client.post("/create_disbursements", disbursements_request(items))
    cancel = client.post(
        "/cancel_disbursements",
        disbursements_request(
            [{"disbursement_id": items[0]["disbursement_id"]}], action="cancel_disbursements"
        ),
    )
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["message"][0]["cancellation_status"] == "Cancelled"
    twice = client.post(
        "/cancel_disbursements",
        disbursements_request(
            [{"disbursement_id": items[0]["disbursement_id"]}], action="cancel_disbursements"
        ),
    )
    assert twice.json()["message"][0]["response_error_codes"] == ["DISBURSEMENT_ALREADY_CANCELED"]
    unknown = client.post(
        "/cancel_disbursements",
        disbursements_request(
            [{"disbursement_id": "nope"}, {"disbursement_id": items[1]["disbursement_id"]}],
            action="cancel_disbursements",
        ),
    )
    assert [d["response_error_codes"] for d in unknown.json()["message"]] == [
        ["INVALID_DISBURSEMENT_ID"],
        [],
    ]
    replacement = disbursement_items(envelope, 1, prefix="replacement")
    added = client.post("/create_disbursements", disbursements_request(replacement))
    assert added.status_code == 200, added.text
    status = _status(client)
    assert status["number_of_disbursements_received"] == 3
    assert status["number_of_disbursements_cancelled"] == 1
    counters_match_rows(session_factory)


def test_disbursement_status_tells_state_and_unknown_ids(client, envelope) -> None:
    items = disbursement_items(envelope, 2)
    client.post("/create_disbursements", disbursements_request(items))
    body = client.post(
        "/get_disbursement_status",
        {
            "header": header("get_disbursement_status", 2),
            "message": [items[0]["disbursement_id"], "unknown-id"],
        },
    ).json()
    first, second = body["message"]
    assert first["state"] == "RESOLVED"
    assert first["disbursement_envelope_id"] == envelope
    assert first["disbursement_recon_records"]["disbursement_recon_payloads"] == []
    assert second == {**second, "disbursement_id": "unknown-id", "state": "UNKNOWN"}


def test_disbursement_listing(client, envelope) -> None:
    client.post("/create_disbursements", disbursements_request(disbursement_items(envelope, 3)))
    page = client.get(f"/envelopes/{envelope}/disbursements", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert page["items"][0]["state"] == "RESOLVED"
    filtered = client.get(f"/envelopes/{envelope}/disbursements", params={"state": "SHIPPED"})
    assert filtered.json()["total"] == 0
    assert client.get("/envelopes/nope/disbursements").status_code == 404


def test_concurrent_requests_for_one_envelope(client, program, session_factory) -> None:
    """Requests of one envelope insert side by side; the declared count still caps them, and
    two requests sharing ids store them once and refuse the other, never a 500."""
    created = client.post(
        "/create_disbursement_envelope", envelope_request("env-c", count=400, total="4000.00")
    )
    assert created.status_code == 200, created.text
    items = disbursement_items("env-c", 500, amount="10.00")
    bodies = [disbursements_request(items[i : i + 100]) for i in range(0, 400, 100)]
    bodies.append(disbursements_request(items[150:250]))  # overlaps two of the others
    bodies.append(disbursements_request(items[400:500]))  # would exceed the declared 400
    barrier = threading.Barrier(len(bodies))
    answers: dict[int, dict] = {}

    def send(index: int) -> None:
        barrier.wait()
        response = client.post("/create_disbursements", bodies[index])
        answers[index] = {"status": response.status_code, **response.json()}

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a["status"] < 500 for a in answers.values()), answers
    accepted = [i for i, a in answers.items() if a["header"]["status"] == "succ"]
    refused = {
        i: a["header"]["status_reason_message"]
        for i, a in answers.items()
        if a["header"]["status"] == "rjct"
    }
    assert ErrorCode.DUPLICATE_DISBURSEMENT in refused.values(), refused
    assert set(refused.values()) <= {
        ErrorCode.DUPLICATE_DISBURSEMENT,
        ErrorCode.NO_OF_DISBURSEMENTS_EXCEEDS_DECLARED,
        ErrorCode.TOTAL_DISBURSEMENT_AMOUNT_EXCEEDS_DECLARED,
    }, refused
    accepted_ids = [d["disbursement_id"] for i in accepted for d in bodies[i]["message"]]
    assert len(accepted_ids) == len(set(accepted_ids))
    stored = len(accepted_ids)
    status = _status(client, "env-c")
    assert status["number_of_disbursements_received"] == stored <= 400
    assert Decimal(status["total_disbursement_amount_received"]) == Decimal(10) * stored
    counters_match_rows(session_factory)


def test_bulk_requests_take_turns_within_the_slot_limit(
    settings, session_factory, monkeypatch
) -> None:
    """Bulk bodies are held in memory while handled: a process works on at most
    ``max_concurrent_bulk_requests`` of them; the others wait, and all are answered."""
    import time

    from fastapi.testclient import TestClient

    from bridge_support import dumps, program_request
    from g2p_bridge.api.app import create_app
    from g2p_bridge.auth import issue_token
    from g2p_bridge.core import disbursements

    settings = settings.model_copy(update={"max_concurrent_bulk_requests": 1})
    running, peak = [0], [0]
    guard = threading.Lock()
    real = disbursements.create_disbursements

    def slow_create(*args, **kwargs):  # type: ignore[no-untyped-def]
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        try:
            return real(*args, **kwargs)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(disbursements, "create_disbursements", slow_create)
    app = create_app(settings, session_factory, wake=lambda *a: None)
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {issue_token(settings, 'pbms-1', 'admin')}",
    }
    with TestClient(app) as http:
        for body in (program_request(), envelope_request("env-s", count=30, total="300.00")):
            path = "/create_benefit_program_configuration" if "sponsor" in str(body) else None
            path = path or "/create_disbursement_envelope"
            assert http.post(path, content=dumps(body), headers=headers).status_code == 200
        items = disbursement_items("env-s", 30, amount="10.00")
        statuses: list[int] = []

        def send(start: int) -> None:
            body = disbursements_request(items[start : start + 10])
            response = http.post("/create_disbursements", content=dumps(body), headers=headers)
            statuses.append(response.status_code)
            assert response.json()["header"]["status"] == "succ", response.text

        threads = [threading.Thread(target=send, args=(s,)) for s in (0, 10, 20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200, 200, 200]
    assert peak[0] == 1
    counters_match_rows(session_factory)
