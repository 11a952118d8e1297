"""Paying batches: double entry, reversals, determinism, idempotency (SQLite and PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from example_bank.models import (
    PAID,
    PAYMENT_FAILED,
    PROCESSED,
    Account,
    FundBlock,
    LedgerEntry,
    Payment,
    PaymentBatch,
)
from example_bank.processing import (
    FAILURE_REASONS,
    claim_next_batch,
    mark_batch_error,
    process_batch,
    simulated_failure,
)
from example_bank.services import accept_payments


def _accept(bank: Any, instructions: list[dict[str, Any]]) -> int:
    """Store a batch the way the API does (amounts as Decimal)."""
    rows = [i | {"payment_amount": Decimal(str(i["payment_amount"]))} for i in instructions]
    with bank.sessions() as s, s.begin():
        result = accept_payments(s, rows)
    assert result.batch_id is not None
    return result.batch_id


def _states(sessions: sessionmaker[Session]) -> dict[str, tuple[str, str | None]]:
    with sessions() as s:
        rows = s.execute(
            select(Payment.payment_reference_number, Payment.state, Payment.failure_reason)
        )
        return {ref: (state, reason) for ref, state, reason in rows}


def test_mixed_batch_keeps_every_ledger_invariant(bank: Any, make_payment: Any) -> None:
    bank.account("PROG-1", "10000.00")
    bank.account("CUST-1", None)
    block = bank.block("PROG-1", "5000.00")
    payments = [make_payment(f"ext-{i}", block, f"{10 + i}.25") for i in range(40)]
    payments += [
        make_payment("own-1", block, "7.00", bank_code="EXAMPLE", beneficiary="CUST-1"),
        make_payment("ghost", block, "3.00", bank_code="EXAMPLE", beneficiary="NOPE"),
        make_payment("wallet", block, "2.00", bank_code=None, beneficiary=None,
                     beneficiary_mobile_wallet_provider="MPESA", beneficiary_phone_no="+2547"),
    ]  # fmt: skip
    batch_id = _accept(bank, payments)
    assert bank.process_all() == [batch_id]
    bank.assert_invariants()

    states = _states(bank.sessions)
    assert states["own-1"] == (PAID, None)
    assert states["ghost"] == (PAYMENT_FAILED, "ACCOUNT_NOT_FOUND")
    failed = {ref for ref, (state, _) in states.items() if state == PAYMENT_FAILED}
    assert 1 < len(failed) < 20  # 20 % of 41 external payments, give or take
    failed_total = sum(
        (Decimal(p["payment_amount"]) for p in payments if p["payment_reference_number"] in failed),
        Decimal(0),
    )
    paid_total = sum((Decimal(p["payment_amount"]) for p in payments), Decimal(0)) - failed_total

    book, blocked = bank.balances("PROG-1")
    assert book == Decimal("10000.00") - paid_total
    # The whole batch used the block; returned money is available again, not re-blocked.
    assert blocked == Decimal("5000.00") - paid_total - failed_total
    assert bank.balances("CUST-1") == (Decimal("7.00"), Decimal("0.00"))
    with bank.sessions() as s:
        clearing = s.get(Account, "CLEARING-OTHERBANK-USD")
        wallet = s.get(Account, "CLEARING-MPESA-USD")
        suspense = s.get(Account, "SUSPENSE-EXAMPLE-USD")
        assert clearing is not None and wallet is not None and suspense is not None
        assert suspense.book_balance == 0  # the ghost payment came back out
        block_row = s.get(FundBlock, block)
        assert block_row is not None
        assert block_row.remaining == blocked


@pytest.mark.parametrize("layout", ["openg2p", "subfields"])
def test_reversals_are_rd_entries_with_reason(bank: Any, make_payment: Any, layout: str) -> None:
    bank.settings.mt940_narrative_layout = layout
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "1000.00")
    _accept(bank, [make_payment(f"r-{i}", block, "10.00") for i in range(30)])
    bank.process_all()
    failed = {ref: reason for ref, (state, reason) in _states(bank.sessions).items() if reason}
    assert failed
    reversals = bank.entries(account_number="PROG-1", mark="RD")
    assert {e.payment_reference: e.return_reason for e in reversals} == failed
    for entry in reversals:
        assert entry.amount == Decimal("10.00")
        if layout == "subfields":
            assert f"/RTRN/{entry.return_reason}" in entry.details
        else:  # OpenG2P's six lines: narrative, program, cycle, beneficiary id, "", reason
            lines = entry.details.split("\n")
            assert lines[3:] == [f"BEN-{entry.payment_reference}", "", entry.return_reason]
        assert entry.return_reason in FAILURE_REASONS
    debits = bank.entries(account_number="PROG-1", mark="D")
    assert len(debits) == 30 and all(d.amount == Decimal("-10.00") for d in debits)
    book, blocked = bank.balances("PROG-1")
    assert book == Decimal("1000.00") - 10 * (30 - len(failed))
    # 700 of the 1000 block is still blocked; the returned money is available again.
    assert blocked == Decimal("700.00")
    assert book - blocked == 10 * len(failed)
    bank.assert_invariants()


def test_failure_simulation_is_deterministic() -> None:
    refs = [f"disb-{i:05d}" for i in range(5000)]
    first = [r for r in refs if simulated_failure(42, r, 0.05)]
    again = [r for r in refs if simulated_failure(42, r, 0.05)]
    other_seed = [r for r in refs if simulated_failure(43, r, 0.05)]
    assert first == again
    assert first != other_seed
    assert 150 < len(first) < 350  # about 5 %
    assert {simulated_failure(42, r, 0.05) for r in first} == set(FAILURE_REASONS)
    assert not any(simulated_failure(42, r, 0.0) for r in refs)
    assert all(simulated_failure(42, r, 1.0) for r in refs[:100])


def test_same_seed_fails_the_same_payments_end_to_end(bank: Any, make_payment: Any) -> None:
    bank.account("PROG-1", "1000.00")
    block = bank.block("PROG-1", "1000.00")
    payments = [make_payment(f"s-{i}", block, "1.00") for i in range(60)]
    _accept(bank, payments)
    bank.process_all()
    failed = {ref for ref, (state, _) in _states(bank.sessions).items() if state == PAYMENT_FAILED}
    expected = {
        p["payment_reference_number"]
        for p in payments
        if simulated_failure(bank.settings.seed, p["payment_reference_number"], 0.2)
    }
    assert failed == expected and failed


def test_own_bank_payments_never_fail_by_simulation(bank: Any, make_payment: Any) -> None:
    bank.settings.failure_rate = 1.0
    bank.account("PROG-1", "100.00")
    bank.account("CUST-1", None)
    block = bank.block("PROG-1", "100.00")
    _accept(
        bank,
        [
            make_payment("own", block, "5.00", bank_code="EXAMPLE", beneficiary="CUST-1"),
            make_payment("ext", block, "5.00"),
        ],
    )
    bank.process_all()
    assert _states(bank.sessions) == {
        "own": (PAID, None),
        "ext": (PAYMENT_FAILED, _states(bank.sessions)["ext"][1]),
    }
    assert bank.balances("CUST-1")[0] == Decimal("5.00")
    bank.assert_invariants()


def test_processing_a_batch_twice_changes_nothing(bank: Any, make_payment: Any) -> None:
    bank.account("PROG-1", "500.00")
    block = bank.block("PROG-1", "500.00")
    batch_id = _accept(bank, [make_payment(f"t-{i}", block, "3.00") for i in range(20)])
    with bank.sessions() as s, s.begin():
        first = process_batch(s, batch_id, bank.settings)
    assert first.processed and first.paid + first.failed == 20

    def snapshot() -> tuple[Any, ...]:
        with bank.sessions() as s:
            count = s.scalar(select(func.count()).select_from(LedgerEntry))
            remaining = s.scalar(select(FundBlock.remaining))
        return count, remaining, bank.balances("PROG-1")

    before = snapshot()
    with bank.sessions() as s, s.begin():
        second = process_batch(s, batch_id, bank.settings)  # a redelivered task
    assert not second.processed
    assert snapshot() == before
    assert bank.process_all() == []  # and nothing is claimable any more
    with bank.sessions() as s:
        batch = s.get(PaymentBatch, batch_id)
        assert batch is not None and batch.state == PROCESSED
    bank.assert_invariants()


def test_claim_and_lease(bank: Any, make_payment: Any) -> None:
    bank.account("PROG-1", "100.00")
    block = bank.block("PROG-1", "100.00")
    first = _accept(bank, [make_payment("c-1", block, "1.00")])
    second = _accept(bank, [make_payment("c-2", block, "1.00")])
    with bank.sessions() as s, s.begin():
        assert claim_next_batch(s, lease_seconds=3600) == first
    # Claimed (and committed) with a live lease: the next claim takes the other batch.
    with bank.sessions() as s, s.begin():
        assert claim_next_batch(s, lease_seconds=-1) == second
    # The second claim's lease is already expired: a dead worker's batch is claimable again.
    with bank.sessions() as s, s.begin():
        assert claim_next_batch(s) == second
        process_batch(s, second, bank.settings)
    with bank.sessions() as s, s.begin():
        assert claim_next_batch(s) is None


def test_failing_batch_is_parked_after_max_attempts(bank: Any, make_payment: Any) -> None:
    bank.account("PROG-1", "100.00")
    block = bank.block("PROG-1", "100.00")
    batch_id = _accept(bank, [make_payment("f-1", block, "1.00")])
    for _ in range(2):
        with bank.sessions() as s, s.begin():
            mark_batch_error(s, batch_id, "boom", max_attempts=2)
    with bank.sessions() as s:
        batch = s.get(PaymentBatch, batch_id)
        assert batch is not None
        assert (batch.state, batch.attempts, batch.last_error) == ("FAILED", 2, "boom")
    assert bank.process_all() == []
