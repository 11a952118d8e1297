"""The test-only fault injection of the Example Bank, served by a real uvicorn on 127.0.0.1 (a
dropped connection only looks like one through a real socket)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from example_bank.api import create_app
from example_bank.db import make_engine, make_session_factory, migrate
from example_bank.models import Payment
from example_bank.settings import BankSettings


@contextmanager
def serve(settings: BankSettings) -> Iterator[str]:
    config = uvicorn.Config(
        create_app(settings, start_processor=False), host="127.0.0.1", port=0, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _settings(tmp_path: Path, **faults: Any) -> BankSettings:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    migrate(url)
    return BankSettings(database_url=url, broker_url=None, **faults)


def _payments(block: str, *refs: str) -> list[dict[str, Any]]:
    return [
        {
            "payment_reference_number": ref,
            "remitting_account": "PRG-1",
            "remitting_account_currency": "USD",
            "payment_amount": "10.00",
            "funds_blocked_reference_number": block,
            "beneficiary_account": "BEN-1",
            "beneficiary_bank_code": "EXAMPLE",
        }
        for ref in refs
    ]


def _prepare(client: httpx.Client) -> str:
    for number, deposit in (("PRG-1", "1000.00"), ("BEN-1", None)):
        body = {"account_number": number, "holder_name": number, "currency": "USD"}
        if deposit:
            body["initial_deposit"] = deposit
        assert client.post("/accounts", json=body).status_code == 201
    block = client.post(
        "/block_funds",
        json={"account_number": "PRG-1", "currency": "USD", "amount": "100.00"},
    ).json()
    return str(block["block_reference_no"])


def _stored(settings: BankSettings) -> int:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Payment)) or 0)
    finally:
        engine.dispose()


def test_off_by_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.fault_mode is None
    with serve(settings) as url, httpx.Client(base_url=url) as client:
        assert client.get("/faults").status_code == 404
        block = _prepare(client)
        assert client.post("/initiate_payment", json=_payments(block, "P1")).status_code == 200


def test_error_5xx_refuses_before_storing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path, fault_mode="error-5xx", fault_calls=2, fault_every=2)
    with serve(settings) as url, httpx.Client(base_url=url) as client:
        block = _prepare(client)
        codes = [
            client.post("/initiate_payment", json=_payments(block, f"P{i}")).status_code
            for i in range(5)
        ]
        # Calls 1 and 3 get the fault; then the plan's two faults are spent.
        assert codes == [503, 200, 503, 200, 200]
        report = client.get("/faults").json()
    assert report["calls"] == {"/initiate_payment": 5}
    assert report["injected"] == {"/initiate_payment": 2}
    assert _stored(settings) == 3
    assert "FAULT INJECTION IS ON" in caplog.text


def test_slow_stores_then_answers_late(tmp_path: Path) -> None:
    settings = _settings(tmp_path, fault_mode="slow", fault_calls=1, fault_delay_seconds=1.5)
    with serve(settings) as url, httpx.Client(base_url=url, timeout=0.5) as client:
        block = _prepare(client)
        with pytest.raises(httpx.ReadTimeout):
            client.post("/initiate_payment", json=_payments(block, "P1", "P2"))
        assert _stored(settings) == 2
        # The retry must not time out itself: the slow call may still hold the server.
        again = client.post(
            "/initiate_payment", json=_payments(block, "P1", "P2"), timeout=30
        ).json()
    assert again["status"] == "success"
    assert sorted(again["duplicate_payment_references"]) == ["P1", "P2"]


def test_close_after_processing_drops_the_connection_unanswered(tmp_path: Path) -> None:
    settings = _settings(tmp_path, fault_mode="close-after-processing", fault_calls=1)
    with serve(settings) as url, httpx.Client(base_url=url) as client:
        block = _prepare(client)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            client.post("/initiate_payment", json=_payments(block, "P1"))
        assert _stored(settings) == 1
        again = client.post("/initiate_payment", json=_payments(block, "P1")).json()
        report = client.get("/faults").json()
    assert again["duplicate_payment_references"] == ["P1"]
    assert report["injected"] == {"/initiate_payment": 1}
    assert _stored(settings) == 1
