"""Celery worker of the Example Bank (used only when ``EXAMPLE_BANK_BROKER_URL`` is set).

Start with ``example-bank worker`` (= ``celery -A example_bank.worker:celery_app worker
-B -Q example_bank``). Tasks are thin wrappers: open a session, call a function from
:mod:`example_bank.processing`, commit. The API enqueues a batch only after committing
it; a beat entry sweeps every second for anything missed (lost messages, crashed workers)
and writes and delivers statements. (Not the task that paid a batch: writing a statement
takes the account row, which every payment of the account's next batch waits for. On a
payday of 10 envelopes that halved the bank's payment rate: 680.7 s against 389.3 s.)
"""

from __future__ import annotations

import logging
import time
from functools import cache

import httpx
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from example_bank.db import make_engine, make_session_factory
from example_bank.processing import (
    claim_next_batch,
    deliver_pending_statements,
    mark_batch_error,
    process_batch,
    write_due_statements,
)
from example_bank.settings import BankSettings

log = logging.getLogger(__name__)

QUEUE = "example_bank"
SWEEP_BUDGET_SECONDS = 5.0

celery_app = Celery("example_bank")
celery_app.conf.update(
    broker_url=BankSettings().broker_url or "memory://",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_routes={"example_bank.*": {"queue": QUEUE}},
    broker_connection_retry_on_startup=True,
    # In memory, not ./celerybeat-schedule: the sweep needs no state across restarts, and a
    # schedule file in a directory shared with the bridge's beat mixed the two up.
    beat_scheduler="celery.beat:Scheduler",
    beat_schedule={
        "example-bank-sweep": {
            "task": "example_bank.sweep",
            "schedule": 1.0,
            # A sweep that waited longer than the period is superseded by the next one.
            "options": {"queue": QUEUE, "expires": 1.0},
        }
    },
)


@cache
def _settings() -> BankSettings:
    return BankSettings()


@cache
def _sessions() -> sessionmaker[Session]:
    return make_session_factory(make_engine(_settings().database_url))


@cache
def _http() -> httpx.Client:
    return httpx.Client()


def enqueue_batch(batch_id: int) -> None:
    """Queue a committed batch for processing."""
    celery_app.send_task("example_bank.process_payment_batch", args=[batch_id], queue=QUEUE)


@celery_app.task(name="example_bank.process_payment_batch")
def process_payment_batch(batch_id: int) -> None:
    """Pay one batch (a no-op if it was already processed)."""
    settings = _settings()
    try:
        with _sessions()() as session, session.begin():
            process_batch(session, batch_id, settings)
    except Exception as exc:
        log.exception("batch %s failed", batch_id)
        with _sessions()() as session, session.begin():
            mark_batch_error(session, batch_id, repr(exc), settings.batch_max_attempts)


@celery_app.task(name="example_bank.deliver_statements")
def deliver_statements() -> None:
    """Write statements for program accounts with new entries and deliver pending ones."""
    settings = _settings()
    with _sessions()() as session, session.begin():
        write_due_statements(session, settings)
    if settings.statement_channel == "http":  # else the SFTP file channel delivers them
        deliver_pending_statements(_sessions(), settings, _http())


@celery_app.task(name="example_bank.sweep")
def sweep() -> None:
    """Safety net run by beat: process unclaimed batches, then statements and deliveries."""
    settings = _settings()
    deadline = time.monotonic() + SWEEP_BUDGET_SECONDS
    while time.monotonic() < deadline:
        with _sessions()() as session, session.begin():
            batch_id = claim_next_batch(session, settings.batch_lease_seconds)
            if batch_id is None:
                break
            process_batch(session, batch_id, settings)
    deliver_statements()
