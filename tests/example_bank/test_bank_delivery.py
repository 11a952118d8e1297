"""Statement delivery to the bridge: retry, backoff, give-up, ordering, auth."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select, update

from example_bank.models import DELIVERED, DELIVERY_FAILED, PENDING, Statement
from example_bank.processing import deliver_pending_statements, write_statements
from example_bank.services import deposit


class FakeBridge:
    """An httpx transport answering with a scripted list of status codes (then 200)."""

    def __init__(self, *script: int | type[Exception]) -> None:
        self.script = list(script)
        self.received: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, type):
            raise step("bridge unreachable", request=request)  # type: ignore[call-arg]
        return httpx.Response(step, json={"status": "ok" if step < 300 else "error"})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def _write(bank: Any, count: int = 1) -> list[int]:
    ids = []
    with bank.sessions() as s, s.begin():
        for _ in range(count):
            deposit(s, "PROG-1", Decimal("1.00"), bank_code="EXAMPLE")
            ids += write_statements(s, "PROG-1", bank.settings)
    return ids


def _rows(bank: Any) -> list[Statement]:
    with bank.sessions() as s:
        return list(s.scalars(select(Statement).order_by(Statement.id)))


def _make_due(bank: Any) -> None:
    with bank.sessions() as s, s.begin():
        s.execute(update(Statement).values(next_attempt_at=Statement.created_at))


def test_delivery_retries_then_succeeds(bank: Any) -> None:
    bank.settings.bridge_token = SecretStr("s3cret")
    bank.account("PROG-1", "5.00")
    _write(bank)
    bridge = FakeBridge(httpx.ConnectError, 503)
    with bridge.client() as client:
        first = deliver_pending_statements(bank.sessions, bank.settings, client)
        assert (first.delivered, first.retried) == (0, 1)
        (row,) = _rows(bank)
        assert row.delivery_state == PENDING and row.attempts == 1
        assert "ConnectError" in (row.last_error or "")
        second = deliver_pending_statements(bank.sessions, bank.settings, client)
        assert (second.delivered, second.retried) == (0, 1)
        assert "HTTP 503" in (_rows(bank)[0].last_error or "")
        third = deliver_pending_statements(bank.sessions, bank.settings, client)
        assert third.delivered == 1
    (row,) = _rows(bank)
    assert (row.delivery_state, row.attempts, row.last_error) == (DELIVERED, 3, None)
    assert row.delivered_at is not None
    request = bridge.received[-1]
    assert str(request.url) == "http://bridge.test/upload_mt940"
    assert request.headers["authorization"] == "Bearer s3cret"
    body = request.read()
    assert b'name="statement_file"; filename="PROG-1-00001-001.mt940"' in body
    assert b"Content-Type: text/plain" in body
    assert b":25:PROG-1" in body
    # Delivered statements are not sent again.
    with bridge.client() as client:
        again = deliver_pending_statements(bank.sessions, bank.settings, client)
    assert again.delivered == 0 and len(bridge.received) == 3


def test_backoff_waits_before_the_next_attempt(bank: Any) -> None:
    bank.settings.delivery_retry_seconds = 60
    bank.account("PROG-1", "5.00")
    _write(bank)
    bridge = FakeBridge(500)
    with bridge.client() as client:
        deliver_pending_statements(bank.sessions, bank.settings, client)
        assert deliver_pending_statements(bank.sessions, bank.settings, client).delivered == 0
        assert len(bridge.received) == 1  # not due yet
        _make_due(bank)
        assert deliver_pending_statements(bank.sessions, bank.settings, client).delivered == 1


def test_conflict_means_already_delivered(bank: Any) -> None:
    bank.account("PROG-1", "5.00")
    _write(bank)
    with FakeBridge(409).client() as client:
        report = deliver_pending_statements(bank.sessions, bank.settings, client)
    assert report.delivered == 1
    assert _rows(bank)[0].delivery_state == DELIVERED


def test_gives_up_after_max_attempts_but_keeps_the_statement(bank: Any) -> None:
    bank.account("PROG-1", "5.00")
    _write(bank)
    bridge = FakeBridge(500, 502, 400, 500)
    with bridge.client() as client:
        for _ in range(5):
            deliver_pending_statements(bank.sessions, bank.settings, client)
    (row,) = _rows(bank)
    assert row.delivery_state == DELIVERY_FAILED
    assert row.attempts == bank.settings.delivery_max_attempts == 3
    assert "HTTP 400" in (row.last_error or "")
    assert row.mt940.startswith(":20:")
    assert len(bridge.received) == 3


def test_later_statements_of_an_account_wait_for_earlier_ones(bank: Any) -> None:
    bank.settings.delivery_retry_seconds = 60
    bank.account("PROG-1", "5.00")
    bank.account("PROG-2", "5.00")
    _write(bank, count=2)
    with bank.sessions() as s, s.begin():
        write_statements(s, "PROG-2", bank.settings)
    bridge = FakeBridge(503)
    with bridge.client() as client:
        report = deliver_pending_statements(bank.sessions, bank.settings, client)
    # PROG-1 #1 failed, so PROG-1 #2 was held back; PROG-2 went out.
    assert (report.delivered, report.retried) == (1, 1)
    states = {(r.account_number, r.statement_number): r.delivery_state for r in _rows(bank)}
    assert states == {
        ("PROG-1", 1): PENDING,
        ("PROG-1", 2): PENDING,
        ("PROG-2", 1): DELIVERED,
    }
    sent = [r.url for r in bridge.received]
    assert len(sent) == 2


def test_a_statement_written_during_a_delivery_goes_out_with_it(bank: Any) -> None:
    """Another worker child that wrote a statement while this one was sending the account's
    earlier one leaves it (order per account); this delivery takes it, not the next sweep."""
    bank.account("PROG-1", "5.00")
    _write(bank)
    bridge = FakeBridge()
    written_meanwhile: list[int] = []

    def answer_and_write(request: httpx.Request) -> httpx.Response:
        if not written_meanwhile:
            written_meanwhile.extend(_write(bank))
        return bridge(request)

    with httpx.Client(transport=httpx.MockTransport(answer_and_write)) as client:
        report = deliver_pending_statements(bank.sessions, bank.settings, client)
    assert written_meanwhile and report.delivered == 2
    assert [row.delivery_state for row in _rows(bank)] == [DELIVERED, DELIVERED]
    assert len(bridge.received) == 2
