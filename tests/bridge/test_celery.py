"""The pipeline under Celery with a real Redis broker and PostgreSQL: configured for money,
and a task delivered twice acts once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from bench.redis_db import RedisDatabaseClaim, claim_redis_db
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from sqlalchemy.exc import OperationalError
from test_pipeline import setup_envelope

from bridge_support import FakeBank, clear_tables, counters_match_rows, fake_context, states
from g2p_bridge.core.context import Context
from g2p_bridge.db import make_session_factory, transaction
from g2p_bridge.models import BankBatch
from g2p_bridge.workers.celery_app import make_celery

QUEUES = ("producers", "mapper", "funds", "dispatch", "statements")


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; at the deadline fail with ``what()``, the state then."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what()}")
        time.sleep(0.05)


def broker_idle(client: redis.Redis) -> bool:
    """No message waits in any queue and none is being worked on: kombu's Redis transport keeps
    a delivered, not yet acknowledged message (acks_late: until the task returned) in the
    ``unacked`` hash."""
    return all(client.llen(queue) == 0 for queue in QUEUES) and client.hlen("unacked") == 0


@pytest.fixture(scope="module")
def redis_db() -> Iterator[RedisDatabaseClaim]:
    """A Redis database of this run's own: a bench or another test run beside it on the shared
    server must not flush this worker's queues, nor this test theirs."""
    with claim_redis_db() as claim:
        yield claim


@pytest.fixture(scope="module")
def celery_setup(
    postgres_url, postgres_engine, redis_db: RedisDatabaseClaim
) -> tuple[Context, FakeBank, Celery]:
    # One app per process: Celery's task registry is process-wide.
    bank = FakeBank()
    context = fake_context(
        make_session_factory(postgres_engine),
        bank,
        database_url=postgres_url,
        broker_url=redis_db.url,
        beat_interval_seconds=0.2,
    )
    return context, bank, make_celery(context.settings, context)


@pytest.fixture
def postgres_context(celery_setup, postgres_engine) -> Iterator[tuple[Context, FakeBank, Celery]]:
    clear_tables(postgres_engine)
    yield celery_setup
    clear_tables(postgres_engine)


def test_celery_is_configured_for_money(postgres_context) -> None:
    context, _, app = postgres_context
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result
    assert {q.name for q in conf.task_queues} == {
        "producers",
        "mapper",
        "funds",
        "dispatch",
        "statements",
        "callbacks",
    }
    assert conf.task_routes["g2p.send_bank_batch"]["routing_key"] == "dispatch"
    # The release is a bank call on the envelope's funds: beside the block, on their queue.
    assert conf.task_routes["g2p.release_funds"]["routing_key"] == "funds"
    assert OperationalError in app.tasks["g2p.release_funds"].autoretry_for
    assert conf.task_routes["g2p.deliver_callbacks"]["routing_key"] == "callbacks"
    # A lost database connection is retried soon, not left to the sweep's lease.
    assert OperationalError in app.tasks["g2p.send_bank_batch"].autoretry_for
    # Each queue has its own exchange and key, so a task lands in one queue only.
    assert {(q.name, q.exchange.name, q.routing_key) for q in conf.task_queues} == {
        (name, name, name)
        for name in ("producers", "mapper", "funds", "dispatch", "statements", "callbacks")
    }
    assert conf.task_time_limit <= conf.broker_transport_options["visibility_timeout"]
    # The step time limit, not the claim's lease: the heartbeat keeps a long step's claim.
    assert conf.task_time_limit == context.settings.step_time_limit_seconds


def test_pipeline_runs_under_celery_with_redis(postgres_context, redis_db) -> None:
    context, bank, app = postgres_context
    client = redis.Redis.from_url(redis_db.url)
    client.flushdb()
    envelope_id = f"env-{uuid.uuid4().hex[:6]}"
    ids = setup_envelope(context, 120, envelope_id=envelope_id)
    with start_worker(
        app,
        pool="solo",
        perform_ping_check=False,
        queues=list(QUEUES),
        shutdown_timeout=30,
        loglevel="WARNING",
    ):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            app.send_task("g2p.produce")  # what beat does every tick
            time.sleep(0.3)
            if states(context.session_factory, envelope_id).get("SHIPPED") == 120:
                break
        assert states(context.session_factory, envelope_id) == {"SHIPPED": 120}
        # Redelivery: the same batch task sent again finds its batch done and does nothing.
        with transaction(context.session_factory) as session:
            batch_ids = list(
                session.scalars(BankBatch.__table__.select().with_only_columns(BankBatch.id))
            )
        assert batch_ids
        calls = bank.payment_calls
        # Count the re-sent tasks as the worker finishes them: without that, "the bank was not
        # called again" would also hold if the worker never ran them.
        resent: list[Any] = []

        def record(task: Any = None, args: Any = None, **_: Any) -> None:
            if task is not None and task.name == "g2p.send_bank_batch":
                resent.append(args[0])

        task_postrun.connect(record, weak=False)
        try:
            for batch_id in batch_ids:
                app.send_task("g2p.send_bank_batch", args=[batch_id])
                app.send_task("g2p.send_bank_batch", args=[batch_id])
            app.send_task("g2p.produce")
            wait_until(
                lambda: sorted(resent) == sorted(batch_ids * 2) and broker_idle(client),
                30,
                lambda: f"each re-sent batch task run twice, queues drained; ran {resent}",
            )
        finally:
            task_postrun.disconnect(record)
    assert bank.payment_calls == calls
    assert sorted(bank.payments) == sorted(ids)
    counters_match_rows(context.session_factory)
    client.flushdb()
