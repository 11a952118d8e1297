"""Releasing part of a funds block: idempotent on its key, never more than the block still holds
(payments accepted and not yet paid count against it), account and block moving together. On
SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from example_bank.api import create_app
from example_bank.models import FundBlock, FundRelease
from example_bank.settings import BankSettings


@pytest.fixture
def client(settings: BankSettings, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings, session_factory=sessions, start_processor=False)
    with TestClient(app) as client:
        yield client


def release(
    client: TestClient, block: str, amount: Any, key: str = "release-e1", **extra: Any
) -> tuple[int, dict[str, Any]]:
    body = {
        "account_number": "PROG-1",
        "block_reference_no": block,
        "currency": "USD",
        "amount": amount,
        "idempotency_key": key,
    }
    body.update(extra)
    response = client.post("/release_funds", json=body)
    return response.status_code, response.json()


def remaining(sessions: sessionmaker[Session], block: str) -> Decimal:
    with sessions() as s:
        row = s.get(FundBlock, block)
        assert row is not None
        return row.remaining


def test_a_release_gives_the_rest_back_once_per_key(
    bank: Any, client: TestClient, sessions: sessionmaker[Session]
) -> None:
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "300.00")
    status, body = release(client, block, "120.50")
    assert status == 200 and body["status"] == "success", body
    assert (body["released_amount"], body["remaining_amount"]) == ("120.50", "179.50")
    first = body["release_reference_no"]
    # The same key again (a retry after a lost answer): the same release, nothing moves.
    status, again = release(client, block, "120.50")
    assert (status, again["status"], again["release_reference_no"]) == (200, "success", first)
    assert bank.balances("PROG-1") == (Decimal("1000.00"), Decimal("179.50"))
    assert remaining(sessions, block) == Decimal("179.50")
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(FundRelease)) == 1
    account = client.get("/accounts/PROG-1").json()
    assert account["available_balance"] == "820.50"
    bank.assert_invariants()


def test_more_than_remains_is_refused_and_nothing_changes(
    bank: Any, client: TestClient, sessions: sessionmaker[Session]
) -> None:
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "100.00")
    status, body = release(client, block, "100.01")
    assert (status, body["status"]) == (200, "failure")
    assert "100.00 remains" in body["error_message"]
    assert bank.balances("PROG-1") == (Decimal("1000.00"), Decimal("100.00"))
    # The whole block may go; after it, nothing more.
    assert release(client, block, "100.00")[1]["status"] == "success"
    status, body = release(client, block, "0.01", key="release-e2")
    assert (status, body["status"]) == (200, "failure")
    assert bank.balances("PROG-1") == (Decimal("1000.00"), Decimal("0.00"))
    bank.assert_invariants()


def test_payments_accepted_and_not_yet_paid_still_need_the_block(
    bank: Any, client: TestClient, make_payment: Any
) -> None:
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "100.00")
    response = client.post(
        "/initiate_payment",
        json=[make_payment("p-1", block, "60.00")],
    )
    assert response.json()["status"] == "success", response.text
    assert release(client, block, "40.01")[1]["status"] == "failure"
    assert release(client, block, "40.00")[1]["status"] == "success"
    bank.process_all()  # the payment is paid out of what it was promised
    assert bank.balances("PROG-1")[1] == Decimal("0.00")
    bank.assert_invariants()


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"amount": "10.00"}, 409),  # the key was used for another amount
        ({"block_reference_no": "BLKNOSUCH"}, 409),  # or another block
    ],
)
def test_a_key_reused_for_another_release_is_a_conflict(
    bank: Any, client: TestClient, change: dict[str, str], status: int
) -> None:
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "100.00")
    assert release(client, block, "20.00")[1]["status"] == "success"
    fields = {"amount": "20.00", **change}
    answer_status, body = release(client, fields.pop("block_reference_no", block), **fields)
    assert (answer_status, body["status"]) == (status, "failure")
    assert bank.balances("PROG-1")[1] == Decimal("80.00")


def test_hostile_requests_are_refused(bank: Any, client: TestClient) -> None:
    bank.account("PROG-1", "1000.00")
    bank.account("OTHER-1", "1000.00")
    block = bank.block("PROG-1", "100.00")
    assert release(client, "BLKNOSUCH", "1.00")[0] == 404
    assert release(client, block, "1.00", account_number="OTHER-1")[0] == 400
    assert release(client, block, "1.00", currency="EUR")[0] == 400
    for amount in ("0", "-1.00", "1.001", "abc"):
        assert release(client, block, amount)[0] == 422, amount
    assert release(client, block, "1.00", idempotency_key="")[0] == 422
    assert release(client, block, "1.00", idempotency_key="k" * 201)[0] == 422
    assert bank.balances("PROG-1")[1] == Decimal("100.00")


def test_racing_releases_of_one_block_never_release_more_than_it_holds(
    bank: Any, settings: BankSettings, sessions: sessionmaker[Session]
) -> None:
    """Eight clients release 30.00 each, half with the same key: the block of 100.00 gives back
    at most three distinct releases, each key at most once."""
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "100.00")
    app = create_app(settings, session_factory=sessions, start_processor=False)
    answers: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def go(key: str) -> None:
        with TestClient(app) as client:
            body = release(client, block, "30.00", key=key)[1]
        with lock:
            answers.append((key, body))

    keys = ["same"] * 4 + ["k1", "k2", "k3", "k4"]
    threads = [threading.Thread(target=go, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 8
    with sessions() as s:
        released = s.scalar(select(func.coalesce(func.sum(FundRelease.amount), 0)))
        count = s.scalar(select(func.count()).select_from(FundRelease))
    assert Decimal(released) == Decimal("90.00") and count == 3
    won = {(k, a["release_reference_no"]) for k, a in answers if a["status"] == "success"}
    assert len({ref for _, ref in won}) == 3
    assert len({k for k, _ in won}) == 3  # one release per key, however often it was sent
    assert remaining(sessions, block) == Decimal("10.00")
    bank.assert_invariants()
