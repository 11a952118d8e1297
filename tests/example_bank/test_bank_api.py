"""HTTP contract of the Example Bank (run on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from example_bank.api import create_app
from example_bank.models import Payment
from example_bank.settings import BankSettings


@pytest.fixture
def client(settings: BankSettings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings, session_factory=sessions, start_processor=False)
    with TestClient(app) as client:
        yield client


def _open(client: TestClient, number: str, deposit: Any = "1000.00", **extra: Any) -> None:
    body = {"account_number": number, "holder_name": f"Holder {number}", "currency": "USD"}
    body.update(extra)
    if deposit is not None:
        body["initial_deposit"] = deposit
    response = client.post("/accounts", json=body)
    assert response.status_code == 201, response.text


def _block(client: TestClient, number: str, amount: Any, key: str | None = None) -> str:
    response = client.post(
        "/block_funds",
        json={
            "account_number": number,
            "currency": "USD",
            "amount": amount,
            "idempotency_key": key,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return str(body["block_reference_no"])


def test_health(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").json() == {"status": "ok"}


def test_accounts_lifecycle(client: TestClient) -> None:
    _open(client, "ACC-1", deposit="250.10", phone="+254 700 000 001", email="a@example.org")
    account = client.get("/accounts/ACC-1").json()
    assert account["book_balance"] == "250.10"
    assert account["available_balance"] == "250.10"
    assert account["phone"] == "+254700000001"
    deposit = client.post("/accounts/ACC-1/deposit", json={"amount": 0.2})
    assert deposit.status_code == 200, deposit.text
    assert deposit.json()["account"]["book_balance"] == "250.30"
    listed = client.get("/accounts").json()
    assert [a["account_number"] for a in listed] == ["ACC-1"]  # internal accounts hidden
    everything = client.get("/accounts", params={"include_internal": True}).json()
    assert any(
        a["account_type"] == "CENTRAL" and a["book_balance"] == "-250.30" for a in everything
    )


def test_account_errors_are_clear_4xx(client: TestClient) -> None:
    _open(client, "ACC-1")
    assert client.get("/accounts/NOPE").status_code == 404
    assert client.post("/accounts/NOPE/deposit", json={"amount": "1"}).status_code == 404
    duplicate = client.post(
        "/accounts", json={"account_number": "ACC-1", "holder_name": "x", "currency": "USD"}
    )
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]
    for bad in ("-1", "0", "1.001", "abc", "NaN", True, None):
        response = client.post("/accounts/ACC-1/deposit", json={"amount": bad})
        assert response.status_code == 422, (bad, response.text)
    assert client.post("/accounts/ACC-1/deposit", content=b"{not json").status_code == 422
    bad_currency = client.post(
        "/accounts", json={"account_number": "X", "holder_name": "x", "currency": "DOLLARS"}
    )
    assert bad_currency.status_code == 422


def test_numbers_are_parsed_exactly(client: TestClient) -> None:
    _open(client, "ACC-1", deposit=None)
    # 16 significant digits: a float would turn this into ...456.8 or similar.
    response = client.post(
        "/accounts/ACC-1/deposit",
        content=b'{"amount": 12345678901234.57}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["account"]["book_balance"] == "12345678901234.57"


def test_check_funds(client: TestClient) -> None:
    _open(client, "PROG-1", deposit="100.00")
    _block(client, "PROG-1", "30.00")

    def check(**body: Any) -> Any:
        payload = {"account_number": "PROG-1", "account_currency": "USD"} | body
        return client.post("/check_funds", json=payload)

    ok = check(total_funds_needed="70.00")
    assert ok.status_code == 200
    assert ok.json() == {
        "status": "success",
        "account_number": "PROG-1",
        "has_sufficient_funds": True,
        "error_message": None,
    }
    short = check(total_funds_needed=70.01)  # available = 100 - 30 blocked
    assert short.json()["status"] == "success"
    assert short.json()["has_sufficient_funds"] is False
    unknown = check(account_number="NOPE", total_funds_needed="1")
    assert unknown.status_code == 404
    assert unknown.json()["status"] == "failure" and "not found" in unknown.json()["error_message"]
    mismatch = check(account_currency="EUR", total_funds_needed="1")
    assert mismatch.status_code == 400
    assert "currency" in mismatch.json()["error_message"]
    assert check(total_funds_needed="-5").status_code == 422


def test_block_funds_reduces_available_not_book_and_is_idempotent(client: TestClient) -> None:
    _open(client, "PROG-1", deposit="100.00")
    first = _block(client, "PROG-1", "60.00", key="block-env-1")
    again = _block(client, "PROG-1", "60.00", key="block-env-1")
    assert first == again
    account = client.get("/accounts/PROG-1").json()
    assert (account["book_balance"], account["blocked_amount"], account["available_balance"]) == (
        "100.00",
        "60.00",
        "40.00",
    )
    refused = client.post(
        "/block_funds", json={"account_number": "PROG-1", "currency": "USD", "amount": "40.01"}
    )
    assert refused.status_code == 200
    assert refused.json()["status"] == "failure"
    assert "insufficient" in refused.json()["error_message"]
    reused = client.post(
        "/block_funds",
        json={"account_number": "PROG-1", "currency": "USD", "amount": "1.00",
              "idempotency_key": "block-env-1"},
    )  # fmt: skip
    assert reused.status_code == 409 and reused.json()["status"] == "failure"
    unknown = client.post(
        "/block_funds", json={"account_number": "NOPE", "currency": "USD", "amount": "1"}
    )
    assert unknown.status_code == 404
    wrong = client.post(
        "/block_funds", json={"account_number": "PROG-1", "currency": "EUR", "amount": "1"}
    )
    assert wrong.status_code == 400
    assert client.get("/accounts/PROG-1").json()["blocked_amount"] == "60.00"


def _payment_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Payment)) or 0)


def test_initiate_payment_accepts_and_skips_duplicates(
    client: TestClient, sessions: sessionmaker[Session], make_payment: Any
) -> None:
    _open(client, "PROG-1", deposit="1000.00")
    block = _block(client, "PROG-1", "100.00")
    batch = [make_payment(f"d-{i}", block, "10.00") for i in range(3)]
    first = client.post("/initiate_payment", json=batch)
    assert first.status_code == 200
    assert first.json()["status"] == "success"
    assert first.json()["accepted_count"] == 3
    assert first.json()["duplicate_payment_references"] == []
    replay = client.post("/initiate_payment", json=batch)
    assert replay.json()["status"] == "success"
    assert replay.json()["accepted_count"] == 0
    assert replay.json()["duplicate_payment_references"] == ["d-0", "d-1", "d-2"]
    mixed = client.post(
        "/initiate_payment", json=[*batch[:1], make_payment("d-9", block, 5)]
    ).json()
    assert (mixed["accepted_count"], mixed["duplicate_payment_references"]) == (1, ["d-0"])
    assert _payment_count(sessions) == 4


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"funds_blocked_reference_number": "BLKNOPE"}, "unknown funds block"),
        ({"remitting_account": "OTHER-1"}, "does not own block"),
        ({"remitting_account_currency": "EUR", "beneficiary_account_currency": "EUR"}, "currency"),
        ({"beneficiary_account_currency": "EUR"}, "cross-currency"),
        ({"payment_amount": "150.00"}, "insufficient funds in block"),
    ],
)
def test_initiate_payment_rejects_the_whole_request(
    client: TestClient,
    sessions: sessionmaker[Session],
    make_payment: Any,
    change: dict[str, Any],
    reason: str,
) -> None:
    _open(client, "PROG-1", deposit="1000.00")
    _open(client, "OTHER-1", deposit="1000.00")
    block = _block(client, "PROG-1", "100.00")
    good = make_payment("ok-1", block, "10.00")
    bad = make_payment("bad-1", block, "10.00") | change
    response = client.post("/initiate_payment", json=[good, bad])
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "failure"
    assert reason in body["error_message"]
    assert "bad-1" in body["error_message"]
    assert _payment_count(sessions) == 0  # nothing stored, not even the good one


def test_block_exhaustion_counts_accepted_but_unpaid_payments(
    client: TestClient, make_payment: Any
) -> None:
    _open(client, "PROG-1", deposit="1000.00")
    block = _block(client, "PROG-1", "25.00")
    accepted = client.post("/initiate_payment", json=[make_payment("a", block, "20.00")])
    assert accepted.json()["status"] == "success"
    exhausted = client.post("/initiate_payment", json=[make_payment("b", block, "5.01")])
    assert exhausted.status_code == 400
    assert "insufficient funds in block" in exhausted.json()["error_message"]
    exact = client.post("/initiate_payment", json=[make_payment("c", block, "5.00")])
    assert exact.json()["status"] == "success"


def test_initiate_payment_input_validation(client: TestClient, make_payment: Any) -> None:
    assert client.post("/initiate_payment", json={"not": "a list"}).status_code == 422
    missing = make_payment("x", "BLK")
    del missing["payment_amount"]
    assert client.post("/initiate_payment", json=[missing]).status_code == 422
    for hostile in ("x\n:61:2611251125RD1,00NTRFy//Z", "x//Z", "x y", ""):
        payment = make_payment(hostile, "BLK")
        assert client.post("/initiate_payment", json=[payment]).status_code == 422, hostile
    repeated = [make_payment("x", "BLK"), make_payment("x", "BLK")]
    response = client.post("/initiate_payment", json=repeated)
    assert response.status_code == 400
    assert "repeated" in response.json()["error_message"]


def test_generate_statement_endpoint(client: TestClient) -> None:
    _open(client, "PROG-1", deposit="10.00")
    response = client.post("/generate_account_statement", json={"program_account_number": "PROG-1"})
    assert response.status_code == 200
    assert response.json()["status"] == "success"
    assert response.json()["account_statement_id"]
    unknown = client.post("/generate_account_statement", json={"program_account_number": "NOPE"})
    assert unknown.status_code == 404 and unknown.json()["status"] == "failure"


def test_ussd_menu(client: TestClient) -> None:
    _open(client, "CUST-1", deposit="42.00", phone="+254700000099")
    form = {"sessionId": "s1", "serviceCode": "*384#", "phoneNumber": "+254700000099"}
    menu = client.post("/ussd", data=form | {"text": ""})
    assert menu.status_code == 200
    assert menu.text.startswith("CON ") and "1. Balance" in menu.text
    balance = client.post("/ussd", data=form | {"text": "1"}).text
    assert balance.startswith("END ") and "USD 42.00" in balance
    client.post("/accounts/CUST-1/deposit", json={"amount": "1.00"})
    history = client.post("/ussd", data=form | {"text": "2"}).text
    assert history.startswith("END ") and history.count("\n") == 2  # title + 2 entries
    stranger = client.post("/ussd", data=form | {"phoneNumber": "+1555", "text": ""}).text
    assert stranger.startswith("END ") and "No Example Bank account" in stranger
    assert client.post("/ussd", data=form | {"text": "9"}).text == "END Invalid choice."


def test_amounts_go_out_as_strings(client: TestClient) -> None:
    _open(client, "ACC-1", deposit=5)
    body = client.get("/accounts/ACC-1").json()
    assert body["book_balance"] == "5.00" and isinstance(body["blocked_amount"], str)
    assert Decimal(body["available_balance"]) == Decimal("5")


def test_a_float_amount_is_refused_not_rounded() -> None:
    from example_bank.api import parse_amount

    with pytest.raises(ValueError, match="never floats"):
        parse_amount(0.1)
    assert parse_amount("0.10") == Decimal("0.10")
