"""The in-process processor: end to end from API to delivered statement."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from example_bank.api import create_app
from example_bank.embedded import InProcessProcessor
from example_bank.models import DELIVERED, PROCESSED, PaymentBatch, Statement


def test_api_to_delivered_statement_in_process(bank: Any, make_payment: Any) -> None:
    uploads: list[bytes] = []

    def bridge(request: httpx.Request) -> httpx.Response:
        uploads.append(request.read())
        return httpx.Response(200 if len(uploads) > 1 else 503)  # first upload fails

    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "500.00")
    client = httpx.Client(transport=httpx.MockTransport(bridge))
    processor = InProcessProcessor(bank.settings, bank.sessions, http_client=client)
    app = create_app(bank.settings, session_factory=bank.sessions, start_processor=False)
    app.state.processor = processor
    processor.start()
    try:
        with TestClient(app) as api:
            for n in range(3):
                batch = [make_payment(f"e{n}-{i}", block, "4.00") for i in range(10)]
                assert api.post("/initiate_payment", json=batch).json()["status"] == "success"
            assert processor.run_until_idle(timeout=60)
    finally:
        processor.stop()
        client.close()
    with bank.sessions() as s:
        assert {b.state for b in s.scalars(select(PaymentBatch))} == {PROCESSED}
        statements = list(s.scalars(select(Statement)))
    assert statements and all(st.delivery_state == DELIVERED for st in statements)
    assert any(st.attempts == 2 for st in statements)  # the retried one
    body = b"".join(uploads)
    assert all(f"NTRFe{n}-{i}//".encode() in body for n in range(3) for i in range(10))
    bank.assert_invariants()
    assert not processor.running


def test_run_until_idle_without_thread_runs_in_caller(bank: Any, make_payment: Any) -> None:
    bank.account("PROG-1", "100.00")
    block = bank.block("PROG-1", "100.00")
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=transport) as client:
        processor = InProcessProcessor(bank.settings, bank.sessions, http_client=client)
        app = create_app(bank.settings, session_factory=bank.sessions, start_processor=False)
        with TestClient(app) as api:
            api.post("/initiate_payment", json=[make_payment("solo", block, "1.00")])
        assert processor.run_once() > 0
        assert processor.run_until_idle(timeout=30)
        assert processor.run_once() == 0
    assert bank.entries(payment_reference="solo")
    bank.assert_invariants()
