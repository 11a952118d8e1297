"""The Example Bank HTTP connector's mapping of what the bank answers onto BankUnavailable (retry
later: the request may or may not have been acted on, and every call is idempotent) and
BankRejected (the bank refused; the same request will not succeed).

Answers come from ``httpx.MockTransport``; the timeout and the refused connection are real
sockets on 127.0.0.1, so the exceptions are the ones httpx raises in production.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from g2p_bridge.connectors.banks.base import (
    BankRejected,
    BankUnavailable,
    BlockResult,
    FundsCheck,
    PaymentBatchResult,
    PaymentInstruction,
    ReleaseResult,
)
from g2p_bridge.connectors.banks.example_bank import ExampleBankConnector
from g2p_bridge.settings import BankConnectorSettings

Handler = Callable[[httpx.Request], httpx.Response]

PAYMENT = PaymentInstruction(
    payment_reference="d-1",
    remitting_account="1000000001",
    remitting_currency="USD",
    amount=Decimal("100.25"),
    block_reference="blk-1",
    beneficiary_name="Amina",
    beneficiary_account="123456",
    beneficiary_account_type="BANK_ACCOUNT",
    beneficiary_bank_code="NORTHBANK",
    beneficiary_branch_code="BR01",
    beneficiary_mobile_wallet_provider=None,
    beneficiary_phone=None,
    beneficiary_email=None,
    beneficiary_email_wallet_provider=None,
    narratives=("November transfer",),
    payment_date=date(2026, 11, 25),
)

# Each connector call with the path it posts to.
CALLS: dict[str, Callable[[ExampleBankConnector], object]] = {
    "/check_funds": lambda c: c.check_funds("1000000001", "USD", Decimal("150.50")),
    "/block_funds": lambda c: c.block_funds("1000000001", "USD", Decimal("150.50"), "block-e1"),
    "/initiate_payment": lambda c: c.initiate_payment([PAYMENT]),
    "/release_funds": lambda c: c.release_funds(
        "1000000001", "USD", Decimal("20.25"), "blk-1", "release-e1"
    ),
}


def connector(handler: Handler, **settings: Any) -> ExampleBankConnector:
    return ExampleBankConnector(
        BankConnectorSettings(base_url="http://bank.test", **settings),
        transport=httpx.MockTransport(handler),
    )


def answer(status: int, body: object = None, text: str | None = None) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers={"content-type": "text/html"})
        return httpx.Response(status, json=body)

    return handle


def call(path: str, handler: Handler) -> object:
    bank = connector(handler)
    try:
        return CALLS[path](bank)
    finally:
        bank.close()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path", sorted(CALLS))
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_unavailable(path: str, status: int) -> None:
    with pytest.raises(BankUnavailable, match=f"{path}: HTTP {status}"):
        call(path, answer(status, {"detail": "database down"}))


@pytest.mark.parametrize("path", sorted(CALLS))
def test_server_error_with_an_html_page_is_unavailable(path: str) -> None:
    with pytest.raises(BankUnavailable, match="HTTP 502"):
        call(path, answer(502, text="<html>Bad gateway</html>"))


@pytest.mark.parametrize("path", sorted(CALLS))
@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (400, {"detail": "amount must be positive"}, "amount must be positive"),
        (404, {"detail": "no such account"}, "no such account"),
        (409, {"error_message": "currency mismatch"}, "currency mismatch"),
        (422, [{"loc": ["body"], "msg": "field required"}], "field required"),
    ],
)
def test_client_errors_are_rejections_with_the_banks_reason(
    path: str, status: int, body: object, shown: str
) -> None:
    with pytest.raises(BankRejected, match=f"{path}: HTTP {status}: .*{shown}"):
        call(path, answer(status, body))


@pytest.mark.parametrize("path", sorted(CALLS))
@pytest.mark.parametrize("status", [408, 425, 429])
def test_client_errors_that_mean_not_now_are_unavailable(path: str, status: int) -> None:
    """Too many requests, a request timeout: the same request may succeed later, so the
    payments must not be failed for it."""
    with pytest.raises(BankUnavailable, match=f"HTTP {status}"):
        call(path, answer(status, {"detail": "slow down"}))


@pytest.mark.parametrize("path", sorted(CALLS))
@pytest.mark.parametrize("status", [200, 401, 404])
def test_an_answer_that_is_not_json_is_unavailable(path: str, status: int) -> None:
    """Not the bank's API talking (a proxy's page, a half-written answer): nothing says the bank
    refused, so the call is retried, which every call's idempotency key makes harmless."""
    with pytest.raises(BankUnavailable, match=f"not JSON \\(HTTP {status}\\)"):
        call(path, answer(status, text="<html>Sign in</html>"))


@pytest.mark.parametrize("path", sorted(CALLS))
def test_a_json_answer_that_is_not_an_object_is_unavailable(path: str) -> None:
    with pytest.raises(BankUnavailable, match="unexpected answer"):
        call(path, answer(200, ["success"]))


@pytest.mark.parametrize("path", sorted(CALLS))
@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.ConnectError, httpx.RemoteProtocolError],
)
def test_transport_errors_are_unavailable(path: str, error: type[httpx.TransportError]) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    with pytest.raises(BankUnavailable, match=f"{path}: {error.__name__}"):
        call(path, fail)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_bank_that_does_not_answer_in_time_is_unavailable(silent_server: int) -> None:
    bank = ExampleBankConnector(
        BankConnectorSettings(base_url=f"http://127.0.0.1:{silent_server}", timeout_seconds=0.3)
    )
    try:
        with pytest.raises(BankUnavailable, match="/check_funds: ReadTimeout"):
            bank.check_funds("1000000001", "USD", Decimal("1.00"))
    finally:
        bank.close()


def test_a_refused_connection_is_unavailable() -> None:
    # A port that was just free: nothing listens there.
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    bank = ExampleBankConnector(
        BankConnectorSettings(base_url=f"http://127.0.0.1:{port}", timeout_seconds=2)
    )
    try:
        with pytest.raises(BankUnavailable, match="/block_funds: ConnectError"):
            bank.block_funds("1000000001", "USD", Decimal("1.00"), "block-e1")
    finally:
        bank.close()


# --------------------------------------------------------------------------- answers


def test_requests_carry_the_key_and_exact_amounts() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "has_sufficient_funds": True})

    bank = connector(handle, api_key=SecretStr("k-123"))
    assert bank.check_funds("1000000001", "USD", Decimal("150.50")) == FundsCheck(sufficient=True)
    (request,) = seen
    assert request.headers["authorization"] == "Bearer k-123"
    assert json.loads(request.content)["total_funds_needed"] == "150.50"


def test_funds_check_answers() -> None:
    insufficient = {"status": "success", "has_sufficient_funds": False, "error_message": "low"}
    assert call("/check_funds", answer(200, insufficient)) == FundsCheck(False, "low")
    with pytest.raises(BankRejected, match="unknown account"):
        call("/check_funds", answer(200, {"status": "failure", "error_message": "unknown account"}))


def test_block_answers() -> None:
    blocked = {"status": "success", "block_reference_no": 42}
    assert call("/block_funds", answer(200, blocked)) == BlockResult(True, "42")
    refused = {"status": "failure", "error_message": "insufficient funds"}
    assert call("/block_funds", answer(200, refused)) == BlockResult(
        False, None, "insufficient funds"
    )
    # "success" without a reference is not a block the bridge could later point to.
    assert call("/block_funds", answer(200, {"status": "success"})) == BlockResult(
        False, None, "block refused"
    )


def test_release_answers_and_request() -> None:
    seen: list[dict[str, object]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"status": "success", "release_reference_no": "REL1"})

    assert call("/release_funds", handle) == ReleaseResult(True, "REL1")
    assert seen == [
        {
            "account_number": "1000000001",
            "block_reference_no": "blk-1",
            "currency": "USD",
            "amount": "20.25",
            "idempotency_key": "release-e1",
        }
    ]
    refused = {"status": "failure", "error_message": "cannot release 20.25: 3.00 remains"}
    assert call("/release_funds", answer(200, refused)) == ReleaseResult(
        False, None, "cannot release 20.25: 3.00 remains"
    )
    assert call("/release_funds", answer(200, {"status": "success"})) == ReleaseResult(
        False, None, "release refused"
    )


def test_payment_answers() -> None:
    replay = {"status": "success", "duplicate_payment_references": ["d-1"]}
    assert call("/initiate_payment", answer(200, replay)) == PaymentBatchResult(
        accepted=True, duplicates=("d-1",)
    )
    refused = {"status": "failure", "error_message": "account closed"}
    assert call("/initiate_payment", answer(200, refused)) == PaymentBatchResult(
        accepted=False, detail="account closed"
    )


def test_a_payment_to_an_account_sends_empty_strings_never_null() -> None:
    """OpenG2P's Example Bank 1.0.2 cannot store a null phone or email: an ``account:`` address
    goes out as the reference connector sends it, its own fields set and empty strings else."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success"})

    bank = connector(handle)
    assert bank.initiate_payment([PAYMENT]) == PaymentBatchResult(accepted=True)
    ((item,),) = [json.loads(request.content) for request in seen]
    assert None not in item.values(), {k: v for k, v in item.items() if v is None}
    assert item["beneficiary_phone_no"] == item["beneficiary_email"] == ""
    assert item["beneficiary_mobile_wallet_provider"] == ""
    assert item["beneficiary_email_wallet_provider"] == ""
    assert (item["beneficiary_account"], item["beneficiary_bank_code"]) == ("123456", "NORTHBANK")
    assert item["beneficiary_branch_code"] == "BR01"
    assert item["narrative_1"] == "November transfer"
    assert [item[f"narrative_{i}"] for i in range(2, 7)] == [""] * 5
    assert item["payment_amount"] == "100.25"
