"""Per-batch status of an envelope: every mapper and bank batch once, mapper batches first, with
stage, attempts, last error and timestamps, paged by keyset; refused to clients of other
programs. On PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

from typing import Any

from bridge_support import (
    FakeBank,
    disbursement_items,
    disbursements_request,
    envelope_request,
    fake_context,
    program_request,
)
from conftest import Client
from g2p_bridge.auth import issue_token
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import BeneficiaryAddress
from g2p_bridge.settings import Settings


def _envelope(client: Client, session_factory: Any, count: int = 5) -> tuple[str, FakeBank]:
    # A mapping-table program: an inline one resolves at ingest and makes no mapper batches.
    request = program_request(resolver="table")
    assert client.post("/create_benefit_program_configuration", request).status_code
    with transaction(session_factory) as session:
        session.add_all(
            BeneficiaryAddress(
                beneficiary_id=f"ben-{i}",
                financial_address=f"account:ACC{i:08d}@OTHERBANK.BR{i % 3}",
            )
            for i in range(count)
        )
    body = envelope_request(count=count, total=f"{100 * count}.00")
    envelope_id = client.post("/create_disbursement_envelope", body).json()["message"]["id"]
    items = disbursement_items(envelope_id, count)
    assert client.post("/create_disbursements", disbursements_request(items)).status_code == 200
    bank = FakeBank()
    context = fake_context(session_factory, bank, mapper_batch_size=2, dispatch_batch_size=2)
    runner = EmbeddedRunner(context)
    # The first payment batch meets a bank that is down once: it is sent again.
    original = bank.initiate_payment
    calls = {"n": 0}

    def flaky(payments: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            bank.fail_next = 1
        return original(payments)

    bank.initiate_payment = flaky  # type: ignore[method-assign]
    assert runner.run_until_idle(timeout=60)
    return envelope_id, bank


def _pages(client: Client, envelope_id: str, limit: int, **query: str) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(50):  # bounded: a cursor that never ends fails here
        params: dict[str, Any] = {"limit": limit, **query}
        if after:
            params["after"] = after
        response = client.get(f"/envelopes/{envelope_id}/batches", params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        after = pages[-1]["next_cursor"]
        if after is None:
            return pages
    raise AssertionError("the pages never ended")


def test_every_batch_once_mapper_batches_first_with_stage_and_attempts(
    client: Client, session_factory: Any
) -> None:
    envelope_id, bank = _envelope(client, session_factory)
    pages = _pages(client, envelope_id, limit=2)
    items = [item for page in pages for item in page["items"]]
    kinds = [i["kind"] for i in items]
    assert kinds == ["mapper"] * 3 + ["bank"] * 3
    assert len({(i["kind"], i["batch_id"]) for i in items}) == 6
    assert [len(p["items"]) for p in pages] == [2, 2, 2]
    assert pages[0]["counts"] == {"mapper": {"DONE": 3}, "bank": {"DONE": 3}}
    for item in items:
        assert item["state"] == "DONE" and item["stage"] == "DONE"
        assert item["created_at"] and item["updated_at"]
    mapper = [i for i in items if i["kind"] == "mapper"]
    assert sorted(i["disbursement_count"] for i in mapper) == [1, 2, 2]
    assert all(i["resolver"] == "table" and i["total_amount"] is None for i in mapper)
    shipped = [i for i in items if i["kind"] == "bank"]
    assert sorted(i["total_amount"] for i in shipped) == ["100.00", "200.00", "200.00"]
    assert all(i["sent_at"] for i in shipped)
    retried = [i for i in shipped if i["attempts"] == 2]
    assert len(retried) == 1 and "connection refused" in retried[0]["last_error"]
    assert sorted(i["attempts"] for i in shipped) == [1, 1, 2]
    assert len(bank.payments) == 5


def test_one_kind_and_one_page(client: Client, session_factory: Any) -> None:
    envelope_id, _ = _envelope(client, session_factory)
    (page,) = _pages(client, envelope_id, limit=10, kind="bank")
    assert [i["kind"] for i in page["items"]] == ["bank"] * 3
    assert page["counts"] == {"bank": {"DONE": 3}} and page["next_cursor"] is None
    ids = [i["batch_id"] for i in page["items"]]
    assert ids == sorted(ids)


def test_bad_cursors_and_unknown_envelopes_are_refused(
    client: Client, session_factory: Any
) -> None:
    envelope_id, _ = _envelope(client, session_factory, count=2)
    url = f"/envelopes/{envelope_id}/batches"
    for after in ("nonsense", "bank:", "bank:a/b", "disbursement:x", "x" * 81):
        response = client.get(url, params={"after": after})
        assert 400 <= response.status_code < 500, (after, response.text)
        assert response.json()["header"]["status"] == "rjct"
    response = client.get(url, params={"after": "mapper:x", "kind": "bank"})
    assert response.status_code == 422, response.text
    for limit in (0, 1001, "x"):
        assert client.get(url, params={"limit": limit}).status_code in (400, 422)
    response = client.get("/envelopes/no-such-envelope/batches")
    assert response.status_code == 404
    assert response.json()["header"]["meta"]["error_code"] == "DISBURSEMENT_ENVELOPE_NOT_FOUND"
    assert client.get("/envelopes/bad%20id/batches").status_code in (400, 422)


def test_only_clients_granted_the_program_see_its_batches(
    client: Client, session_factory: Any, settings: Settings
) -> None:
    envelope_id, _ = _envelope(client, session_factory, count=2)
    url = f"/envelopes/{envelope_id}/batches"

    def as_(role: str, programs: list[str]) -> int:
        token = issue_token(settings, "c-1", role, programs=programs, bank_codes=["EXAMPLE"])
        response = client.get(url, headers={"authorization": f"Bearer {token}"})
        return int(response.status_code)

    assert as_("pbms", ["PROG1"]) == 200
    assert as_("pbms", ["PROG2"]) == 403
    assert as_("bank", ["PROG1"]) == 403
    client.http.headers.pop("authorization")
    assert client.get(url).status_code == 401
