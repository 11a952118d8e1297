"""Hostile and careless G2P Connect input: every field is refused at the edge with a G2P Connect
``rjct`` and a clear code before the database sees it, nothing is half-written, never a 500
(PostgreSQL enforces lengths, integer ranges and NUL; SQLite does not, so both run)."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select

from bridge_support import (
    disbursement_items,
    disbursements_request,
    envelope_request,
    header,
)
from g2p_bridge.core import disbursements
from g2p_bridge.db import transaction
from g2p_bridge.models import (
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    ProcessedRequest,
    ResolvedAddress,
)
from g2p_bridge.models.base import new_id
from g2p_bridge.schemas import (
    DisbursementPayload,
    EnvelopePayload,
    ProgramPayload,
    RequestHeader,
    column_length,
)

INT32_MAX = 2**31 - 1


def _rows(session_factory: Any, model: Any) -> int:
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _code(response: Any) -> str:
    return str(response.json()["header"]["meta"]["error_code"])


@pytest.fixture
def envelope(client: Any, program: Any) -> str:
    response = client.post(
        "/create_disbursement_envelope", envelope_request("env-h", count=3, total="300.00")
    )
    assert response.status_code == 200, response.text
    return "env-h"


# --- identifiers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "d-1\n:61:2611251125RD100,00NTRFother//X",  # the MT940 injection of a forged reversal
        "d-1\r:61:x",
        "d 1",
        "d/1",
        "d-1//EB1",
        "<d-1>",
        "d-1\u2028x",
        "d-\u00e9",
    ],
)
def test_a_disbursement_id_outside_the_safe_set_is_refused(
    client: Any, envelope: str, session_factory: Any, value: str
) -> None:
    items = disbursement_items(envelope, 3)
    items[1]["disbursement_id"] = value
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 422, response.text
    assert _code(response) == "INVALID_DISBURSEMENT_ID"
    codes = [item["response_error_codes"] for item in response.json()["message"]]
    assert codes == [[], ["INVALID_DISBURSEMENT_ID"], []]
    assert _rows(session_factory, Disbursement) == 0


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("disbursement_envelope_id", "env\n:20:x", "INVALID_DISBURSEMENT_ENVELOPE_ID"),
        ("disbursement_envelope_id", "env 1", "INVALID_DISBURSEMENT_ENVELOPE_ID"),
        ("benefit_program_mnemonic", "PROG1\nFAKE LOG LINE", "INVALID_PROGRAM_MNEMONIC"),
        ("cycle_code_mnemonic", "2026-11\r\n:61:", "INVALID_CYCLE_CODE_MNEMONIC"),
        ("cycle_code_mnemonic", "c" * 65, "INVALID_CYCLE_CODE_MNEMONIC"),
        ("number_of_disbursements", INT32_MAX + 1, "INVALID_NO_OF_DISBURSEMENTS"),
        ("number_of_beneficiaries", 2**63, "INVALID_NO_OF_BENEFICIARIES"),
        ("number_of_disbursements", "3e0", "INVALID_NO_OF_DISBURSEMENTS"),
        ("number_of_disbursements", True, "INVALID_NO_OF_DISBURSEMENTS"),
    ],
)
def test_envelope_fields_are_refused_at_the_edge(
    client: Any, program: Any, session_factory: Any, field: str, value: Any, code: str
) -> None:
    response = client.post(
        "/create_disbursement_envelope", envelope_request("env-x", **{field: value})
    )
    assert response.status_code == 422, response.text
    assert _code(response) == code
    assert response.json()["header"]["status"] == "rjct"
    assert _rows(session_factory, DisbursementEnvelope) == 0


@pytest.mark.parametrize("message_id", ["m-1\nFAKE", "m 1", "m" * 129, "m-\x00", "", "m-1/../2"])
def test_a_message_id_outside_the_safe_set_is_refused(
    client: Any, program: Any, session_factory: Any, message_id: str
) -> None:
    body = envelope_request("env-m")
    body["header"]["message_id"] = message_id
    response = client.post("/create_disbursement_envelope", body)
    assert response.status_code == 422, response.text
    assert _code(response) in ("INVALID_MESSAGE_ID", "INVALID_CHARACTER")
    assert _rows(session_factory, DisbursementEnvelope) == 0
    assert _rows(session_factory, ProcessedRequest) == 1  # the program's, nothing more


# --- lengths, control characters and integer ranges, derived from the models -------------

# Every string field the wire carries into a column, with the column it lands in.
_CARRIED = [
    (EnvelopePayload, "disbursement_envelope_id", DisbursementEnvelope.id),
    (EnvelopePayload, "benefit_program_mnemonic", BenefitProgram.mnemonic),
    (EnvelopePayload, "cycle_code_mnemonic", DisbursementEnvelope.cycle_code_mnemonic),
    (EnvelopePayload, "disbursement_frequency", DisbursementEnvelope.disbursement_frequency),
    (EnvelopePayload, "disbursement_currency_code", DisbursementEnvelope.currency),
    (DisbursementPayload, "disbursement_id", Disbursement.id),
    (DisbursementPayload, "disbursement_envelope_id", Disbursement.envelope_id),
    (DisbursementPayload, "mis_reference_number", Disbursement.mis_reference_number),
    (DisbursementPayload, "beneficiary_id", Disbursement.beneficiary_id),
    (DisbursementPayload, "beneficiary_name", Disbursement.beneficiary_name),
    (DisbursementPayload, "narrative", Disbursement.narrative),
    (DisbursementPayload, "financial_address", Disbursement.financial_address),
    (RequestHeader, "message_id", ProcessedRequest.message_id),
    (RequestHeader, "sender_id", ProcessedRequest.sender_id),
    (ProgramPayload, "program_mnemonic", BenefitProgram.mnemonic),
    (ProgramPayload, "sponsor_bank_code", BenefitProgram.sponsor_bank_code),
    (ProgramPayload, "sponsor_bank_account_number", BenefitProgram.sponsor_bank_account_number),
    (ProgramPayload, "sponsor_bank_branch_code", BenefitProgram.sponsor_bank_branch_code),
    (ProgramPayload, "sponsor_bank_account_currency", BenefitProgram.sponsor_bank_account_currency),
    (ProgramPayload, "resolver", BenefitProgram.resolver),
]


def _max_length(model: type[BaseModel], field: str) -> int | None:
    """The maxLength the model's JSON schema (what clients see too) gives the field."""
    schema = model.model_json_schema()["properties"][field]
    lengths = [
        variant["maxLength"]
        for variant in [schema, *schema.get("anyOf", [])]
        if "maxLength" in variant
    ]
    return min(lengths) if lengths else None


def _foreign_length(column: Any) -> int:
    for key in column.foreign_keys:
        return column_length(key.column)
    return column_length(column)


@pytest.mark.parametrize(("model", "field", "column"), _CARRIED)
def test_every_wire_limit_is_its_columns(model: Any, field: str, column: Any) -> None:
    """The limits the edge enforces are read from the models, so they cannot drift."""
    assert _max_length(model, field) == _foreign_length(column), (model.__name__, field)


@pytest.mark.parametrize(
    ("field", "column"),
    [(field, column) for model, field, column in _CARRIED if model is DisbursementPayload],
)
def test_one_character_over_a_column_is_a_refusal_not_a_500(
    client: Any, envelope: str, session_factory: Any, field: str, column: Any
) -> None:
    items = disbursement_items(envelope, 1)
    items[0][field] = "a" * (_foreign_length(column) + 1)
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 422, response.text
    assert response.json()["header"]["status"] == "rjct"
    assert _rows(session_factory, Disbursement) == 0


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\x1b[31m", "\x85", "\u2029"])
@pytest.mark.parametrize("field", ["beneficiary_name", "narrative", "financial_address"])
def test_control_characters_and_lone_surrogates_are_refused(
    client: Any, envelope: str, session_factory: Any, field: str, bad: str
) -> None:
    items = disbursement_items(envelope, 1)
    items[0][field] = f"x{bad}y"
    # json.dumps writes the lone surrogate as the escape \ud800, as a hostile client would.
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 422, response.text
    assert "control character" in response.json()["header"]["meta"]["error_message"]
    assert _rows(session_factory, Disbursement) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/envelopes?program=PROG1%00",
        "/envelopes/env%00x/status",
        "/statements/abc%00",
        "/envelopes?offset=1%0Ax",
    ],
)
def test_control_characters_in_a_url_are_a_400(client: Any, program: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert response.json()["header"]["meta"]["error_code"] == "INVALID_CHARACTER"


@pytest.mark.parametrize(
    "path",
    [
        "/envelopes?offset=9223372036854775808",
        "/envelopes?offset=2147483648",
        "/statements?offset=9223372036854775808",
        "/envelopes/env-h/disbursements?offset=9223372036854775808",
    ],
)
def test_an_offset_beyond_the_database_integers_is_refused(
    client: Any, envelope: str, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["header"]["status"] == "rjct"


# --- money in plain decimal notation only --------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        *['"1_0.0_0"', '"\uff11\uff10"', '"\u0661\u0660"', '"1e1"', "1e1", "1.0E1"],
        *['"NaN"', "true", '" 10"', '"+10"', '"10."', '".5"', '"0x10"', "[10]"],
    ],
)
def test_amounts_must_be_plain_decimal_notation(
    client: Any, envelope: str, session_factory: Any, amount: str
) -> None:
    items = disbursement_items(envelope, 1, amount="100.00")
    body = disbursements_request(items)
    text = json.dumps(body, default=str).replace('"100.00"', amount)
    response = client.http.post(
        "/create_disbursements", content=text, headers={"content-type": "application/json"}
    )
    if amount == '" 10"':
        # Surrounding blanks are stripped as for every string; 10 is then plain notation.
        assert response.status_code in (200, 422), response.text
        return
    assert response.status_code == 422, (amount, response.text)
    assert _code(response) == "INVALID_DISBURSEMENT_AMOUNT", amount
    assert _rows(session_factory, Disbursement) == 0


@pytest.mark.parametrize("total", ['"3_00"', "3e2", '"\uff13\uff10\uff10"'])
def test_an_envelope_total_must_be_plain_decimal_notation(
    client: Any, program: Any, session_factory: Any, total: str
) -> None:
    text = json.dumps(envelope_request("env-t", total="300.00"), default=str)
    response = client.http.post(
        "/create_disbursement_envelope",
        content=text.replace('"300.00"', total),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert _code(response) == "INVALID_TOTAL_DISBURSEMENT_AMOUNT"
    assert _rows(session_factory, DisbursementEnvelope) == 0


def test_plain_numbers_and_strings_are_exact(client: Any, envelope: str) -> None:
    items = disbursement_items(envelope, 3, amount="100.00")
    text = json.dumps(disbursements_request(items), default=str)
    text = text.replace('"100.00"', "100.10", 1).replace('"100.00"', '"99.90"', 1)
    text = text.replace('"100.00"', "100", 1)
    response = client.http.post(
        "/create_disbursements", content=text, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    amounts = [Decimal(str(i["disbursement_amount"])) for i in response.json()["message"]]
    assert amounts == [Decimal("100.10"), Decimal("99.90"), Decimal("100")]


# --- the header's count --------------------------------------------------------------------


@pytest.mark.parametrize("declared", [0, 2, 4, 10_000])
def test_total_count_must_be_the_number_of_items(
    client: Any, envelope: str, session_factory: Any, declared: int
) -> None:
    body = disbursements_request(disbursement_items(envelope, 3))
    body["header"]["total_count"] = declared
    response = client.post("/create_disbursements", body)
    assert response.status_code == 422, response.text
    assert _code(response) == "INVALID_TOTAL_COUNT"
    assert response.json()["header"]["status_reason_code"] == "rjct.total_count.invalid"
    assert _rows(session_factory, Disbursement) == 0


def test_total_count_of_a_single_message(client: Any, program: Any) -> None:
    body = envelope_request("env-one")
    body["header"]["total_count"] = 7
    refused = client.post("/create_disbursement_envelope", body)
    assert refused.status_code == 422
    assert _code(refused) == "INVALID_TOTAL_COUNT"
    body["header"]["total_count"] = 1
    assert client.post("/create_disbursement_envelope", body).status_code == 200


# --- replays: keyed on sender, action and message id; a different body is refused ---------


def test_a_message_id_reused_for_another_action_does_that_action(
    client: Any, envelope: str
) -> None:
    created = envelope_request("env-r")
    first = client.post("/create_disbursement_envelope", created)
    assert first.status_code == 200, first.text
    cancel = envelope_request("env-r")
    cancel["header"] = header("cancel_disbursement_envelope", 1, created["header"]["message_id"])
    response = client.post("/cancel_disbursement_envelope", cancel)
    assert response.status_code == 200, response.text
    assert response.json()["header"]["action"] == "cancel_disbursement_envelope"
    assert response.json()["message"]["cancellation_status"] == "Cancelled"
    status = client.post(
        "/get_disbursement_envelope_status",
        {"header": header("status"), "message": "env-r"},
    )
    assert status.json()["message"]["cancelled"] is True


def test_a_message_id_reused_with_another_body_is_refused_and_stores_nothing(
    client: Any, program: Any, session_factory: Any
) -> None:
    message_id = new_id()
    body = envelope_request("env-a")
    body["header"]["message_id"] = message_id
    first = client.post("/create_disbursement_envelope", body)
    assert first.status_code == 200, first.text

    again = client.post(
        "/create_disbursement_envelope",
        body | {"header": header("create_disbursement_envelope", 1, message_id)},
    )
    assert again.status_code == 200
    assert again.json()["message"] == first.json()["message"]

    other = envelope_request("env-b")
    other["header"]["message_id"] = message_id
    refused = client.post("/create_disbursement_envelope", other)
    assert refused.status_code == 409, refused.text
    assert refused.json()["header"]["status"] == "rjct"
    assert refused.json()["header"]["status_reason_code"] == "rjct.message_id.duplicate"
    assert "already used" in refused.json()["header"]["meta"]["error_message"]
    with session_factory() as session:
        assert session.get(DisbursementEnvelope, "env-b") is None
    assert _rows(session_factory, DisbursementEnvelope) == 1


def test_identical_concurrent_requests_all_get_the_first_answer(
    client: Any, program: Any, session_factory: Any
) -> None:
    created = client.post(
        "/create_disbursement_envelope", envelope_request("env-cc", count=50, total="500.00")
    )
    assert created.status_code == 200, created.text
    body = disbursements_request(disbursement_items("env-cc", 50, amount="10.00"))
    copies = 10
    barrier = threading.Barrier(copies)
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait()
        response = client.post("/create_disbursements", body)
        with lock:
            answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=send) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [200] * copies, answers
    messages = {json.dumps(answer["message"], sort_keys=True) for _, answer in answers}
    assert len(messages) == 1
    assert _rows(session_factory, Disbursement) == 50


def test_an_amount_with_thousands_of_zero_decimals_is_refused_or_stored_at_its_minor_units(
    client: Any, envelope: str, session_factory: Any
) -> None:
    """Equal to 100.00, but PostgreSQL's binary NUMERIC takes at most 16,383 decimals. On the
    wire its length is refused; a caller of the core (a payroll file, a test) gets it stored at
    the currency's minor units: never a database error, the same on both databases."""
    items = disbursement_items(envelope, 1)
    items[0]["disbursement_amount"] = Decimal("100." + "0" * 20_000)
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 422 and _code(response) == "STRING_TOO_LONG"
    with transaction(session_factory) as session:
        # As built without the wire's checks (model_construct validates nothing).
        item = DisbursementPayload.model_construct(**items[0])
        disbursements.create_disbursements(session, [item], 10)
    with session_factory() as session:
        (amount,) = session.scalars(select(Disbursement.amount)).all()
    assert amount == Decimal("100") and amount.as_tuple().exponent >= -4


@pytest.mark.parametrize(
    "address",
    [
        "account:" + "1" * 100 + "@BANK.BR1",
        "account:123@BANK." + "B" * 40,
        "mobile:" + "9" * 40 + "@prov",
    ],
)
def test_an_address_part_longer_than_its_column_is_unresolved_not_a_500(
    client: Any, envelope: str, session_factory: Any, address: str
) -> None:
    items = disbursement_items(envelope, 1)
    items[0]["financial_address"] = address
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 200, response.text[:500]
    with session_factory() as session:
        state, reason = session.execute(select(Disbursement.state, Disbursement.state_reason)).one()
    assert _rows(session_factory, ResolvedAddress) == 0
    assert state == "UNRESOLVED" and "longer than" in (reason or "")
