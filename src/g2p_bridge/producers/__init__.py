"""Beat producers: find the work that is due, claim it, and say which step should run on it.

They never do the work; that stays with the workers, so producers are cheap and a tick can run
every second. A second producer running at the same time finds nothing to do."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from g2p_bridge.core.bank_files import plan_outbox_polls
from g2p_bridge.core.context import Context
from g2p_bridge.core.dispatch import plan_bank_batches
from g2p_bridge.core.funds import due_envelopes
from g2p_bridge.core.mapper_resolution import plan_mapper_batches
from g2p_bridge.core.release import plan_releases
from g2p_bridge.core.work import Work, sweep
from g2p_bridge.db import is_postgres, transaction
from g2p_bridge.models import (
    AccountStatement,
    BankBatch,
    BankOutboxPoll,
    CallbackStream,
    FundsRelease,
    MapperBatch,
)
from g2p_bridge.models.base import utcnow

# Any constant will do; it names "the producer tick" among PostgreSQL advisory locks.
_PRODUCER_LOCK = 0x6232_7062
SWEEP_LIMIT = 2000


def _only_producer(session: Session) -> bool:
    if not is_postgres(session):
        return True  # SQLite's BEGIN IMMEDIATE already makes ticks take turns
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PRODUCER_LOCK}))


def find_due_work(context: Context) -> list[Work]:
    """One producer tick. The caller enqueues the returned work after this commits."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        if not _only_producer(session):
            return []
        now = utcnow()
        plan_mapper_batches(session, settings, now)
        work = [
            Work("resolve_mapper_batch", i)
            for i in sweep(session, MapperBatch, settings, now, SWEEP_LIMIT)
        ]
        work += [Work("secure_funds", i) for i in due_envelopes(session, settings, now, now.date())]
        plan_bank_batches(context, session, now)
        work += [
            Work("send_bank_batch", i)
            for i in sweep(session, BankBatch, settings, now, SWEEP_LIMIT)
        ]
        plan_releases(session, now)
        work += [
            Work("release_funds", i)
            for i in sweep(session, FundsRelease, settings, now, SWEEP_LIMIT)
        ]
        work += [
            Work("process_statement", i)
            for i in sweep(session, AccountStatement, settings, now, SWEEP_LIMIT)
        ]
        plan_outbox_polls(context, session, now)
        work += [
            Work("poll_bank_outbox", i)
            for i in sweep(session, BankOutboxPoll, settings, now, SWEEP_LIMIT)
        ]
        work += [
            Work("deliver_callbacks", i)
            for i in sweep(session, CallbackStream, settings, now, SWEEP_LIMIT)
        ]
    return work
