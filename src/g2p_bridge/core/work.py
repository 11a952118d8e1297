"""Units of work kept as rows: how a worker claims one, gives it back for a retry, or parks it.

The database is the queue; a broker message only says "look at row X". A claim is a
compare-and-set, so a duplicated or redelivered message finds the row taken and does nothing,
and a lost one only waits for the next sweep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from g2p_bridge.db import is_postgres
from g2p_bridge.models.enums import StatementState, WorkState
from g2p_bridge.observability import TASK_RETRIES
from g2p_bridge.settings import Settings


@dataclass(frozen=True, slots=True)
class Work:
    """A wake-up for a worker: which step to run on which row."""

    task: str
    key: str


def _states(model: Any) -> tuple[str, str, str]:
    if model.__tablename__ == "account_statements":
        return StatementState.PENDING, StatementState.PROCESSING, StatementState.ERROR
    return WorkState.PENDING, WorkState.RUNNING, WorkState.FAILED


def claim(session: Session, model: Any, row_id: str, settings: Settings, now: datetime) -> bool:
    """Takes a pending row, or a running one whose holder's lease ran out (it crashed or is
    waiting out a retry backoff). True when this caller now holds it."""
    pending, running, _ = _states(model)
    result = session.execute(
        update(model)
        .where(
            model.id == row_id,
            or_(model.state == pending, and_(model.state == running, model.lease_until < now)),
        )
        .values(
            state=running,
            attempts=model.attempts + 1,
            lease_until=now + timedelta(seconds=settings.lease_seconds),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _retry_result(attempts: int, settings: Settings) -> str:
    return "parked" if attempts >= settings.max_attempts else "retried"


def retry_later(
    session: Session, model: Any, row_id: str, error: str, settings: Settings, now: datetime
) -> bool:
    """Keeps the row held (so nobody mistakes it for untouched) until its backoff ends; after
    the last attempt parks it as failed with the error. True when parked."""
    _, running, failed = _states(model)
    attempts = session.scalar(select(model.attempts).where(model.id == row_id)) or 0
    TASK_RETRIES.labels(model.__tablename__, _retry_result(attempts, settings)).inc()
    if attempts >= settings.max_attempts:
        session.execute(
            update(model)
            .where(model.id == row_id)
            .values(state=failed, last_error=_clip(error), lease_until=None)
            .execution_options(synchronize_session=False)
        )
        return True
    due = now + timedelta(seconds=settings.retry_backoff_seconds * 2 ** max(attempts - 1, 0))
    session.execute(
        update(model)
        .where(model.id == row_id)
        .values(state=running, last_error=_clip(error), lease_until=due, next_attempt_at=due)
        .execution_options(synchronize_session=False)
    )
    return False


def sweep(session: Session, model: Any, settings: Settings, now: datetime, limit: int) -> list[str]:
    """Rows that are due: pending, or held by a lease that expired. Each is marked as enqueued
    (next_attempt_at moves on by a lease) so the next tick does not send it again."""
    pending, running, _ = _states(model)
    query = (
        select(model.id)
        .where(
            model.next_attempt_at <= now,
            or_(model.state == pending, and_(model.state == running, model.lease_until < now)),
        )
        .order_by(model.next_attempt_at)
        .limit(limit)
    )
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(next_attempt_at=now + timedelta(seconds=settings.lease_seconds))
            .execution_options(synchronize_session=False)
        )
    return ids


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
