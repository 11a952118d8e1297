"""Several workers claiming batches at once on PostgreSQL: no batch is processed twice."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from example_bank.models import PROCESSED, LedgerEntry, Payment, PaymentBatch
from example_bank.processing import claim_next_batch, process_batch
from example_bank.services import accept_payments

pytestmark = pytest.mark.postgres
on_postgres = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _batches(bank: Any, make_payment: Any, batches: int, size: int) -> list[int]:
    bank.account("PROG-1", "100000.00")
    block = bank.block("PROG-1", "100000.00")
    ids = []
    for b in range(batches):
        rows = [make_payment(f"c{b}-{i}", block, "1.50") for i in range(size)]
        rows = [r | {"payment_amount": Decimal(r["payment_amount"])} for r in rows]
        with bank.sessions() as s, s.begin():
            result = accept_payments(s, rows)
        ids.append(result.batch_id)
    return ids


def _run_threads(count: int, target: Any) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def wrapped() -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


@on_postgres
def test_parallel_claimers_split_the_batches(bank: Any, make_payment: Any) -> None:
    batch_ids = _batches(bank, make_payment, batches=24, size=15)
    processed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with bank.sessions() as s, s.begin():
                batch_id = claim_next_batch(s)
                if batch_id is None:
                    return
                outcome = process_batch(s, batch_id, bank.settings)
                assert outcome.processed
            with lock:
                processed.append(batch_id)

    assert _run_threads(3, worker) == []
    assert Counter(processed).most_common(1)[0][1] == 1  # nobody processed a batch twice
    assert sorted(processed) == sorted(batch_ids)
    with bank.sessions() as s:
        failed = s.scalar(select(func.count()).where(Payment.state == "FAILED"))
        entries = s.scalar(select(func.count()).select_from(LedgerEntry))
        states = set(s.scalars(select(PaymentBatch.state)))
    assert entries == 1 * 2 + 24 * 15 * 2 + failed * 2  # deposit + payments + reversals
    assert states == {PROCESSED}
    bank.assert_invariants()


@on_postgres
def test_same_batch_redelivered_to_two_workers_is_paid_once(bank: Any, make_payment: Any) -> None:
    (batch_id,) = _batches(bank, make_payment, batches=1, size=40)
    outcomes: list[bool] = []

    def worker() -> None:
        with bank.sessions() as s, s.begin():
            outcomes.append(process_batch(s, batch_id, bank.settings).processed)

    assert _run_threads(2, worker) == []
    assert sorted(outcomes) == [False, True]
    assert len(bank.entries(account_number="PROG-1", mark="D")) == 40
    bank.assert_invariants()
