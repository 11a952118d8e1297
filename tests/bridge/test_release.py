"""Releasing what an envelope's block did not spend: once every disbursement is final, exactly
the rest, exactly once, whatever crashes, lost answers, refusals or racing workers happen. On
PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update
from test_pipeline import ACCOUNT, WorkerKilled, _plan, _time_passes, setup_envelope, upload

from bridge_support import FakeBank, counters_match_rows, fake_context, mt940
from g2p_bridge.api import views
from g2p_bridge.connectors.banks.base import ReleaseResult
from g2p_bridge.core import audit, disbursements, envelopes, funds, overview, release
from g2p_bridge.core.context import Context
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import AuditEvent, EnvelopeStatus, FundsRelease
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import FundsBlocked, WorkState
from g2p_bridge.producers import find_due_work
from g2p_bridge.schemas import DisbursementPayload, EnvelopeStatusPayload


def figures(context: Context, envelope_id: str = "env-1") -> EnvelopeStatusPayload:
    with transaction(context.session_factory) as session:
        return views.envelope_status(session, envelope_id)


def release_row(context: Context, envelope_id: str = "env-1") -> FundsRelease | None:
    with transaction(context.session_factory) as session:
        return session.get(FundsRelease, envelope_id)


def settle(context: Context, ids: list[str], reversed_ids: list[str]) -> None:
    """The bank's statement: every id paid, some of them returned."""
    entries = [("D", i, Decimal("10.00"), f"/EREF/{i}/BENM//NAME/Person {i}") for i in ids]
    entries += [("RD", i, Decimal("10.00"), f"/EREF/{i}/RTRN/ACCOUNT_CLOSED") for i in reversed_ids]
    upload(context, mt940(ACCOUNT, entries))


def expire_release_lease(context: Context) -> None:
    """The holder's lease ran out (it died, or paused past it)."""
    with transaction(context.session_factory) as session:
        session.execute(update(FundsRelease).values(lease_until=utcnow(), next_attempt_at=utcnow()))


def cancel(context: Context, ids: list[str]) -> None:
    with transaction(context.session_factory) as session:
        items = [DisbursementPayload(disbursement_id=i) for i in ids]
        disbursements.cancel_disbursements(session, items, 100)


def test_after_settlement_exactly_the_unspent_rest_is_released_once(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 10)  # 10 x 10.00
    runner = EmbeddedRunner(context)
    _plan(context)
    cancel(context, ids[:2])  # 20.00 never leaves
    _time_passes(context)
    assert runner.run_until_idle(timeout=60)
    assert len(bank.payments) == 8
    # Shipped but not reconciled: not final, nothing released yet.
    assert release_row(context) is None and bank.release_calls == 0
    held = figures(context)
    assert (held.funds_blocked_amount, held.funds_held_amount) == (
        Decimal("100.00"),
        Decimal("100.00"),
    )

    settle(context, ids[2:], reversed_ids=ids[2:3])
    assert runner.run_until_idle(timeout=60)
    ((key, (block, amount, reference)),) = bank.releases.items()
    assert (key, block, amount) == ("release-env-1", "BLK-1", Decimal("20.00"))
    assert bank.release_calls == 1
    row = release_row(context)
    assert row is not None
    assert (row.state, row.amount, row.release_reference) == ("DONE", Decimal("20.00"), reference)

    status = figures(context)
    assert status.funds_blocked_amount == Decimal("100.00")
    assert status.funds_spent_amount == Decimal("70.00")
    assert status.funds_returned_amount == Decimal("10.00")
    assert status.funds_released_amount == Decimal("20.00")
    assert status.funds_held_amount == Decimal("0.00")
    assert (status.funds_release_state, status.funds_release_reference_number) == (
        "DONE",
        reference,
    )
    assert status.funds_released_timestamp is not None
    # Amounts on the wire carry the currency's two decimals.
    dumped = status.model_dump(mode="json")
    assert dumped["funds_released_amount"] == "20.00" and dumped["funds_held_amount"] == "0.00"
    # The console's envelope page: its "paid" includes the returned ones.
    with transaction(session_factory) as session:
        detail = overview.envelope_detail(session, "env-1")
        assert detail is not None
        shown = {k: detail.amounts[k] for k in ("blocked", "paid", "released", "held")}
    assert shown == {
        "blocked": Decimal("100.00"),
        "paid": Decimal("80.00"),
        "released": Decimal("20.00"),
        "held": Decimal("0.00"),
    }
    # More ticks, more producers: nothing is released again.
    assert runner.run_until_idle(timeout=30)
    assert bank.release_calls == 1
    counters_match_rows(session_factory)


def test_everything_paid_leaves_nothing_to_release_and_asks_the_bank_nothing(
    session_factory,
) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 5)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=60)
    settle(context, ids, reversed_ids=[])
    assert runner.run_until_idle(timeout=60)
    row = release_row(context)
    assert row is not None and (row.state, row.amount) == ("DONE", Decimal(0))
    assert bank.release_calls == 0
    status = figures(context)
    assert (status.funds_spent_amount, status.funds_released_amount) == (
        Decimal("50.00"),
        Decimal("0.00"),
    )
    assert status.funds_held_amount == Decimal("0.00")


def test_an_envelope_cancelled_after_its_block_releases_the_whole_block(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 10)
    _plan(context)  # funds blocked, batches planned, nothing sent
    assert bank.block_calls == 1
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert bank.payments == {}
    assert [(b, a) for b, a, _ in bank.releases.values()] == [("BLK-1", Decimal("100.00"))]
    status = figures(context)
    assert status.funds_released_amount == Decimal("100.00")
    assert status.funds_held_amount == Decimal("0.00")


def test_a_block_whose_answer_was_lost_is_completed_after_cancellation_then_released(
    session_factory,
) -> None:
    """The bank may hold a block the bridge never heard about: a cancellation must not leave it
    there. The block is asked for again with its key, then released whole."""
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 4)
    real_block = bank.block_funds

    def block_then_lose_the_answer(*args: object) -> object:
        real_block(*args)  # type: ignore[arg-type]
        raise release.BankUnavailable("simulated: read timeout after the bank blocked")

    bank.block_funds = block_then_lose_the_answer  # type: ignore[method-assign,assignment]
    (work,) = [w for w in find_due_work(context) if w.task == "secure_funds"]
    assert funds.secure_funds(context, work.key) is False
    bank.block_funds = real_block  # type: ignore[method-assign]
    with transaction(session_factory) as session:
        status = session.get(EnvelopeStatus, "env-1")
        assert status is not None and status.funds_blocked_state == FundsBlocked.BLOCKING
        envelopes.cancel_envelope(session, "env-1")
    with transaction(session_factory) as session:
        session.execute(update(EnvelopeStatus).values(next_attempt_at=utcnow()))
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert len(bank.blocks) == 1  # the same key: the one block, not a second
    assert [a for _, a, _ in bank.releases.values()] == [Decimal("40.00")]
    assert figures(context).funds_held_amount == Decimal("0.00")


def test_a_lost_answer_is_asked_again_with_the_same_key_and_released_once(
    session_factory,
) -> None:
    bank = FakeBank(release_timeout_after_processing=1)
    context = fake_context(session_factory, bank)
    setup_envelope(context, 3)
    _plan(context)
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert bank.release_calls == 2 and len(bank.releases) == 1
    row = release_row(context)
    assert row is not None and (row.state, row.attempts) == ("DONE", 2)
    assert figures(context).funds_released_amount == Decimal("30.00")


def test_a_worker_killed_between_the_bank_call_and_the_commit_releases_once(
    session_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 3)
    _plan(context)
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    with transaction(session_factory) as session:
        release.plan_releases(session, utcnow())
    real_record = audit.bank_call

    def killed(*args: object, **kwargs: object) -> None:
        raise WorkerKilled

    monkeypatch.setattr(audit, "bank_call", killed)
    with pytest.raises(WorkerKilled):
        release.release_funds(context, "env-1")
    monkeypatch.setattr(audit, "bank_call", real_record)
    assert bank.release_calls == 1
    row = release_row(context)
    assert row is not None and row.state == WorkState.RUNNING  # the outcome never committed
    assert figures(context).funds_released_amount == Decimal("0.00")
    # Nobody takes it while the dead holder's lease runs...
    assert release.release_funds(context, "env-1") is False
    expire_release_lease(context)
    assert release.release_funds(context, "env-1") is True
    assert bank.release_calls == 2 and len(bank.releases) == 1
    assert figures(context).funds_released_amount == Decimal("30.00")


def test_a_bank_that_refuses_is_asked_again_then_the_release_is_parked(session_factory) -> None:
    bank = FakeBank(refuse_releases=100)
    context = fake_context(session_factory, bank, max_attempts=3)
    setup_envelope(context, 3)
    _plan(context)
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert bank.release_calls == 3 and bank.releases == {}
    row = release_row(context)
    assert row is not None and (row.state, row.attempts) == ("FAILED", 3)
    status = figures(context)
    assert status.funds_release_state == "FAILED"
    assert "more than the block holds" in (status.funds_release_latest_error_code or "")
    assert (status.funds_released_amount, status.funds_held_amount) == (
        Decimal("0.00"),
        Decimal("30.00"),
    )
    with transaction(session_factory) as session:
        outcomes = list(
            session.scalars(
                select(AuditEvent.outcome)
                .where(AuditEvent.action == "funds.release")
                .order_by(AuditEvent.id)
            )
        )
    assert outcomes == ["retry", "retry", "failed"]
    # Parked means parked: later ticks leave it alone.
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    assert bank.release_calls == 3


class RacingBank(FakeBank):
    """While the first worker waits on the bank its lease runs out, and a second worker claims
    the release and completes it; then the bank answers the first."""

    context: Context | None = None
    second: list[bool] | None = None

    def release_funds(
        self,
        account_number: str,
        currency: str,
        amount: Decimal,
        block_reference: str,
        idempotency_key: str,
    ) -> ReleaseResult:
        if self.second is None and self.context is not None:
            self.second = []
            expire_release_lease(self.context)
            self.second.append(release.release_funds(self.context, "env-1"))
        return super().release_funds(
            account_number, currency, amount, block_reference, idempotency_key
        )


def test_two_workers_racing_never_count_the_release_twice(session_factory) -> None:
    bank = RacingBank()
    context = fake_context(session_factory, bank)
    bank.context = context
    ids = setup_envelope(context, 4)
    _plan(context)
    cancel(context, ids[:1])
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    with transaction(session_factory) as session:
        release.plan_releases(session, utcnow())
    first = release.release_funds(context, "env-1")
    assert (first, bank.second) == (False, [True])  # the first found its lease gone
    assert bank.release_calls == 2 and len(bank.releases) == 1
    with transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(FundsRelease)) == 1
        done = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "funds.release", AuditEvent.outcome == "ok")
        )
    assert done == 1
    status = figures(context)
    assert status.funds_released_amount == Decimal("40.00")
    assert status.funds_held_amount == Decimal("0.00")


def test_the_producer_plans_each_release_once_and_only_when_final(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 3)
    _plan(context)
    with transaction(session_factory) as session:
        assert release.plan_releases(session, utcnow()) == 0  # batched, not final
    cancel(context, ids)
    with transaction(session_factory) as session:
        assert release.plan_releases(session, utcnow()) == 1
        assert release.plan_releases(session, utcnow()) == 0
    work = [w for w in find_due_work(context) if w.task == "release_funds"]
    assert [w.key for w in work] == ["env-1"]
    # Woken: the next tick does not send it again while its message may still be on its way.
    assert [w for w in find_due_work(context) if w.task == "release_funds"] == []


def test_the_same_task_delivered_to_four_workers_at_once_calls_the_bank_once(
    session_factory,
) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 2)
    _plan(context)
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    with transaction(session_factory) as session:
        release.plan_releases(session, utcnow())
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def worker() -> None:
        barrier.wait()
        results.append(release.release_funds(context, "env-1"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [False, False, False, True]
    assert bank.release_calls == 1
    assert figures(context).funds_released_amount == Decimal("20.00")
