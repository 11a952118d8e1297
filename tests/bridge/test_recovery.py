"""Recovery after a fault takes seconds, not a long fixed lease: a lost wake-up is sent again,
a dead claimant is told by its silent heartbeat, a live one keeps its row however long its step
takes, and a claimant that lost its row cannot record an outcome over the next one. On
PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from test_pipeline import WorkerKilled, _batches, _plan, setup_envelope

from bridge_support import FakeBank, counters_match_rows, fake_context, states
from g2p_bridge.core import funds
from g2p_bridge.core.context import Context
from g2p_bridge.core.dispatch import send_bank_batch
from g2p_bridge.core.mapper_resolution import plan_mapper_batches
from g2p_bridge.core.work import claim, sweep
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import BankBatch, EnvelopeStatus, MapperBatch
from g2p_bridge.models.base import utcnow
from g2p_bridge.producers import find_due_work
from g2p_bridge.settings import Settings

DEFAULTS = Settings()


def default_leases(session_factory: sessionmaker[Session], bank: FakeBank) -> Context:
    """A test context with the shipped lease and wake-up settings (the suite's default is long)."""
    return fake_context(
        session_factory,
        bank,
        lease_seconds=DEFAULTS.lease_seconds,
        wake_resend_seconds=DEFAULTS.wake_resend_seconds,
    )


def poll(
    condition: Callable[[], Any], seconds: float, step: Callable[[], None] | None = None
) -> Any:
    """Polls until ``condition`` is true (running ``step`` between looks); fails at the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        if step is not None:
            step()
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


def lease_of(context: Context, batch_id: str) -> datetime | None:
    with transaction(context.session_factory) as session:
        return session.scalar(select(BankBatch.lease_until).where(BankBatch.id == batch_id))


def due(context: Context, model: Any, at: datetime) -> list[str]:
    with transaction(context.session_factory) as session:
        return sweep(session, model, context.settings, at, 100)


def test_the_defaults_tell_a_dead_claimant_and_a_lost_wake_up_within_seconds() -> None:
    assert DEFAULTS.lease_seconds <= 30
    assert DEFAULTS.wake_resend_seconds <= 10
    # A step may still run long: its heartbeat renews the short lease up to this limit.
    assert DEFAULTS.step_time_limit_seconds >= 10 * DEFAULTS.lease_seconds


def test_a_batch_whose_claimant_died_is_due_again_after_one_short_lease(session_factory) -> None:
    context = default_leases(session_factory, FakeBank())
    setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    now = utcnow()
    with transaction(session_factory) as session:
        # Claimed, then the claimant is SIGKILLed: nothing ever renews its lease.
        assert claim(session, BankBatch, batch.id, context.settings, now)
    lease = timedelta(seconds=DEFAULTS.lease_seconds)
    assert due(context, BankBatch, now + lease - timedelta(seconds=1)) == []
    later = now + lease + timedelta(seconds=1)
    assert due(context, BankBatch, later) == [batch.id]
    with transaction(session_factory) as session:
        assert claim(session, BankBatch, batch.id, context.settings, later)


def test_a_mapper_batch_and_a_funds_step_of_a_dead_claimant_are_free_after_one_lease(
    session_factory,
) -> None:
    context = default_leases(session_factory, FakeBank())
    setup_envelope(context, 10)
    now = utcnow()
    lease = timedelta(seconds=DEFAULTS.lease_seconds) + timedelta(seconds=1)
    with transaction(session_factory) as session:
        (mapper_batch,) = plan_mapper_batches(session, context.settings, now)
        assert claim(session, MapperBatch, mapper_batch, context.settings, now)
        with session.begin_nested():
            session.execute(update(EnvelopeStatus).values(next_attempt_at=now))
        assert funds._claim(session, "env-1", context.settings, now)
    assert due(context, MapperBatch, now + lease) == [mapper_batch]
    with transaction(session_factory) as session:
        today = now.date()
        assert funds.due_envelopes(session, context.settings, now, today) == []
        assert funds.due_envelopes(session, context.settings, now + lease, today) == ["env-1"]


def test_an_unclaimed_batch_whose_wake_up_was_lost_is_woken_again(session_factory) -> None:
    context = default_leases(session_factory, FakeBank())
    setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    now = utcnow()
    with transaction(session_factory) as session:
        session.execute(update(BankBatch).values(next_attempt_at=now))
    assert due(context, BankBatch, now) == [batch.id]  # the message is lost with the broker
    resend = timedelta(seconds=DEFAULTS.wake_resend_seconds)
    assert due(context, BankBatch, now + resend / 2) == []  # not every tick: once per period
    assert due(context, BankBatch, now + resend + timedelta(seconds=0.5)) == [batch.id]


def test_a_lost_wake_up_is_sent_again_by_the_producer_tick_in_real_time(session_factory) -> None:
    # The long claim lease shows it is the wake-up period that brings the batch back.
    context = fake_context(session_factory, FakeBank(), lease_seconds=60, wake_resend_seconds=1)
    setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    started = time.monotonic()
    poll(lambda: any(w.key == batch.id for w in find_due_work(context)), 10)
    poll(lambda: any(w.key == batch.id for w in find_due_work(context)), 10)  # dropped again
    assert time.monotonic() - started < 5


def test_a_long_bank_call_keeps_its_claim_by_the_heartbeat_and_is_not_stolen(
    session_factory,
) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank, lease_seconds=2, wake_resend_seconds=0.5)
    ids = setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    entered, release = threading.Event(), threading.Event()
    real = bank.initiate_payment
    calls = []

    def slow(payments):  # type: ignore[no-untyped-def]
        calls.append(len(payments))
        if len(calls) == 1:  # only the first holder waits; a thief would pay at once
            entered.set()
            assert release.wait(30)
        return real(payments)

    bank.initiate_payment = slow  # type: ignore[method-assign]
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(send_bank_batch(context, batch.id)))
    worker.start()
    try:
        assert entered.wait(30)
        first = lease_of(context, batch.id)
        assert first is not None
        # Well past the lease it took: the heartbeat has moved it on each time.
        poll(lambda: utcnow() > first + timedelta(seconds=2), 30)
        renewed = lease_of(context, batch.id)
        assert renewed is not None and renewed > first + timedelta(seconds=1)
        assert send_bank_batch(context, batch.id) is False
        assert all(w.key != batch.id for w in find_due_work(context))
    finally:
        release.set()
        worker.join(30)
    assert results == [True]
    assert calls == [10] and bank.payment_calls == 1 and sorted(bank.payments) == sorted(ids)
    assert states(session_factory, "env-1") == {"SHIPPED": 10}
    assert lease_of(context, batch.id) is None
    counters_match_rows(session_factory)


def test_a_claimant_killed_mid_call_is_replaced_within_about_one_lease(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank, lease_seconds=2, wake_resend_seconds=0.5)
    ids = setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    real = bank.initiate_payment

    def pay_then_die(payments):  # type: ignore[no-untyped-def]
        real(payments)
        raise WorkerKilled  # SIGKILL: the heartbeat dies with the process

    bank.initiate_payment = pay_then_die  # type: ignore[method-assign]
    with pytest.raises(WorkerKilled):
        send_bank_batch(context, batch.id)
    killed = time.monotonic()
    bank.initiate_payment = real  # type: ignore[method-assign]
    assert send_bank_batch(context, batch.id) is False  # still leased right after
    runner = EmbeddedRunner(context)
    poll(lambda: states(session_factory, "env-1") == {"SHIPPED": 10}, 20, runner.run_once)
    assert time.monotonic() - killed < 2 + 0.5 + 3
    assert bank.payment_calls == 2 and sorted(bank.payments) == sorted(ids)
    counters_match_rows(session_factory)


def test_a_claimant_that_lost_its_lease_mid_call_records_nothing(session_factory) -> None:
    """Its heartbeat could not renew (a pause, a network cut); another worker claimed the batch
    and sent it again. The bank pays each reference once, and only the second answer counts."""
    bank = FakeBank()
    context = fake_context(session_factory, bank, lease_seconds=2, wake_resend_seconds=0.5)
    ids = setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    entered, release = threading.Event(), threading.Event()
    real = bank.initiate_payment
    calls = []

    def first_waits(payments):  # type: ignore[no-untyped-def]
        calls.append(len(payments))
        if len(calls) == 1:
            entered.set()
            assert release.wait(30)
        return real(payments)

    bank.initiate_payment = first_waits  # type: ignore[method-assign]
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(send_bank_batch(context, batch.id)))
    worker.start()
    try:
        assert entered.wait(30)
        with transaction(session_factory) as session:  # the lease runs out unrenewed
            session.execute(update(BankBatch).values(lease_until=utcnow() - timedelta(seconds=1)))
        assert send_bank_batch(context, batch.id) is True  # the second claimant sends and records
    finally:
        release.set()
        worker.join(30)
    assert results == [False]
    assert bank.payment_calls == 2 and sorted(bank.payments) == sorted(ids)
    (done,) = _batches(context)
    assert done.state == "DONE" and done.bank_response == "accepted" and done.attempts == 2
    assert states(session_factory, "env-1") == {"SHIPPED": 10}
    counters_match_rows(session_factory)


def test_a_step_cut_short_by_a_database_outage_gives_its_row_back_at_once(
    session_factory,
) -> None:
    bank = FakeBank()
    # A long lease: the batch must come back by being given back, not by waiting it out.
    context = fake_context(session_factory, bank, lease_seconds=60, wake_resend_seconds=0.5)
    ids = setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    real = bank.initiate_payment

    def pay_then_lose_the_database(payments):  # type: ignore[no-untyped-def]
        real(payments)
        raise OperationalError(
            "UPDATE bank_batches", None, Exception("server closed the connection")
        )

    bank.initiate_payment = pay_then_lose_the_database  # type: ignore[method-assign]
    with pytest.raises(OperationalError):
        send_bank_batch(context, batch.id)
    bank.initiate_payment = real  # type: ignore[method-assign]
    runner = EmbeddedRunner(context)
    poll(lambda: states(session_factory, "env-1") == {"SHIPPED": 10}, 10, runner.run_once)
    assert bank.payment_calls == 2 and sorted(bank.payments) == sorted(ids)
    counters_match_rows(session_factory)
