"""amend_disbursement_envelope (OpenG2P 1.x): the declared figures and the schedule date may
change until the funds check starts, never below what was received, under the envelope's lock."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from bridge_support import (
    FakeBank,
    disbursement_items,
    disbursements_request,
    envelope_request,
    fake_context,
    header,
)
from g2p_bridge.core import funds
from g2p_bridge.models import AuditEvent, DisbursementEnvelope, EnvelopeStatus
from g2p_bridge.models.base import utcnow


class RecordingBank(FakeBank):
    """Records the amount of each block; can hold a funds check until told to go on."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[Decimal] = []
        self.checking = threading.Event()
        self.proceed = threading.Event()
        self.proceed.set()

    def check_funds(self, account_number: str, currency: str, amount: Decimal) -> Any:
        self.checking.set()
        assert self.proceed.wait(30), "the test never let the funds check go on"
        return super().check_funds(account_number, currency, amount)

    def block_funds(
        self, account_number: str, currency: str, amount: Decimal, idempotency_key: str
    ) -> Any:
        self.blocked.append(amount)
        return super().block_funds(account_number, currency, amount, idempotency_key)


def _amend(client: Any, envelope_id: str, **fields: Any) -> Any:
    message = {"disbursement_envelope_id": envelope_id, **fields}
    return client.post(
        "/amend_disbursement_envelope",
        {"header": header("amend_disbursement_envelope"), "message": message},
    )


def _full_envelope(client: Any, envelope_id: str, count: int = 2, **kwargs: Any) -> None:
    created = client.post(
        "/create_disbursement_envelope",
        envelope_request(envelope_id, count=count, total=f"{100 * count}.00", **kwargs),
    )
    assert created.status_code == 200, created.text
    items = disbursement_items(envelope_id, count, prefix=f"d-{envelope_id}")
    sent = client.post("/create_disbursements", disbursements_request(items))
    assert sent.status_code == 200, sent.text


def _due(session_factory: Any, context: Any) -> list[str]:
    with session_factory() as session, session.begin():
        return funds.due_envelopes(session, context.settings, utcnow(), utcnow().date())


def test_a_future_envelope_amended_to_today_becomes_due(
    client: Any, program: Any, session_factory: Any
) -> None:
    today = utcnow().date()
    _full_envelope(client, "env-f", schedule=today + timedelta(days=3))
    context = fake_context(session_factory, RecordingBank())
    assert _due(session_factory, context) == []

    response = _amend(client, "env-f", disbursement_schedule_date=today.isoformat())
    assert response.status_code == 200, response.text
    assert response.json()["message"]["disbursement_schedule_date"] == today.isoformat()
    assert response.json()["header"]["status"] == "succ"
    assert _due(session_factory, context) == ["env-f"]
    with session_factory() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "envelope.amend")
        ).one()
    detail = json.loads(event.detail) if isinstance(event.detail, str) else event.detail
    assert detail["before"]["disbursement_schedule_date"] == (today + timedelta(days=3)).isoformat()
    assert detail["after"]["disbursement_schedule_date"] == today.isoformat()


def test_figures_can_grow_and_never_go_below_what_was_received(
    client: Any, program: Any, session_factory: Any
) -> None:
    _full_envelope(client, "env-g", count=2)
    below = _amend(client, "env-g", number_of_disbursements=1)
    assert below.status_code == 422
    assert below.json()["header"]["meta"]["error_code"] == "INVALID_NO_OF_DISBURSEMENTS"
    less = _amend(client, "env-g", total_disbursement_amount="199.99")
    assert less.json()["header"]["meta"]["error_code"] == "INVALID_TOTAL_DISBURSEMENT_AMOUNT"
    decimals = _amend(client, "env-g", total_disbursement_amount="300.001")
    assert decimals.json()["header"]["meta"]["error_code"] == "INVALID_TOTAL_DISBURSEMENT_AMOUNT"
    grown = _amend(
        client,
        "env-g",
        number_of_beneficiaries=3,
        number_of_disbursements=3,
        total_disbursement_amount="300.00",
    )
    assert grown.status_code == 200, grown.text
    with session_factory() as session:
        envelope = session.get(DisbursementEnvelope, "env-g")
        assert envelope is not None
        assert (envelope.number_of_disbursements, envelope.total_disbursement_amount) == (
            3,
            Decimal("300.00"),
        )


@pytest.mark.parametrize(
    ("fields", "code", "status"),
    [
        ({"disbursement_envelope_id": "env-none"}, "DISBURSEMENT_ENVELOPE_NOT_FOUND", 404),
        ({"disbursement_schedule_date": "2020-01-01"}, "INVALID_DISBURSEMENT_SCHEDULE_DATE", 422),
        ({"number_of_beneficiaries": 0}, "INVALID_NO_OF_BENEFICIARIES", 422),
        ({"number_of_disbursements": "many"}, "INVALID_NO_OF_DISBURSEMENTS", 422),
        ({"disbursement_envelope_id": "env 1"}, "INVALID_DISBURSEMENT_ENVELOPE_ID", 422),
    ],
)
def test_refusals_use_the_references_codes(
    client: Any, program: Any, fields: dict[str, Any], code: str, status: int
) -> None:
    _full_envelope(client, "env-r")
    response = client.post(
        "/amend_disbursement_envelope",
        {
            "header": header("amend_disbursement_envelope"),
            "message": {"disbursement_envelope_id": "env-r", **fields},
        },
    )
    assert response.status_code == status, response.text
    assert response.json()["header"]["meta"]["error_code"] == code


def test_a_cancelled_envelope_cannot_be_amended(client: Any, program: Any) -> None:
    _full_envelope(client, "env-c")
    cancel = envelope_request("env-c")
    cancel["header"] = header("cancel_disbursement_envelope")
    assert client.post("/cancel_disbursement_envelope", cancel).status_code == 200
    response = _amend(client, "env-c", number_of_beneficiaries=5)
    assert response.status_code == 409
    assert response.json()["header"]["meta"]["error_code"] == (
        "DISBURSEMENT_ENVELOPE_ALREADY_CANCELED"
    )


def test_an_envelope_whose_funds_check_started_is_refused(
    client: Any, program: Any, session_factory: Any
) -> None:
    _full_envelope(client, "env-s")
    bank = RecordingBank()
    bank.proceed.clear()
    context = fake_context(session_factory, bank)
    worker = threading.Thread(target=funds.secure_funds, args=(context, "env-s"))
    worker.start()
    try:
        assert bank.checking.wait(30), "the funds check never reached the bank"
        response = _amend(client, "env-s", total_disbursement_amount="900.00")
        assert response.status_code == 409, response.text
        assert response.json()["header"]["meta"]["error_code"] == "ENVELOPE_FUNDS_CHECK_STARTED"
    finally:
        bank.proceed.set()
        worker.join(30)
    assert bank.blocked == [Decimal("200.00")]


def test_an_amendment_that_leaves_the_envelope_incomplete_blocks_nothing(
    client: Any, program: Any, session_factory: Any
) -> None:
    """The sweep found it complete; the amendment commits before the funds step claims it."""
    _full_envelope(client, "env-i")
    response = _amend(
        client, "env-i", number_of_disbursements=3, total_disbursement_amount="300.00"
    )
    assert response.status_code == 200, response.text
    bank = RecordingBank()
    assert funds.secure_funds(fake_context(session_factory, bank), "env-i") is False
    assert bank.blocked == []
    with session_factory() as session:
        status = session.get(EnvelopeStatus, "env-i")
        assert status is not None and status.lease_until is None


@pytest.mark.parametrize("round_", range(4))
def test_amend_racing_the_funds_check_blocks_the_figures_that_won(
    client: Any, program: Any, session_factory: Any, round_: int
) -> None:
    envelope_id = f"env-race-{round_}"
    _full_envelope(client, envelope_id)
    bank = RecordingBank()
    context = fake_context(session_factory, bank)
    barrier = threading.Barrier(2)
    outcome: dict[str, Any] = {}

    def amend() -> None:
        barrier.wait()
        outcome["amend"] = _amend(client, envelope_id, total_disbursement_amount="250.00")

    def secure() -> None:
        barrier.wait()
        outcome["funds"] = funds.secure_funds(context, envelope_id)

    threads = [threading.Thread(target=amend), threading.Thread(target=secure)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if outcome["amend"].status_code == 200:
        # 250.00 declared, 200.00 received: incomplete, so nothing may be blocked.
        assert bank.blocked == []
    else:
        assert outcome["amend"].json()["header"]["meta"]["error_code"] == (
            "ENVELOPE_FUNDS_CHECK_STARTED"
        )
        assert bank.blocked == [Decimal("200.00")]
