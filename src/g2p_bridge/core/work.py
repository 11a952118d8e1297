"""Units of work kept as rows: how a worker claims one, keeps it, gives it back for a retry, or
parks it.

The database is the queue; a broker message only says "look at row X". A claim is a
compare-and-set, so a duplicated or redelivered message finds the row taken and does nothing.

Two timers, for two different questions:

* "Was the wake-up lost?" A sweep marks each due row as woken by moving ``next_attempt_at`` on
  by ``wake_resend_seconds``; a row still unclaimed then is woken again (a broker restarted
  empty loses its messages, and duplicates cost one failed compare-and-set each).
* "Is the claimant still alive?" A claim writes ``lease_until`` a short ``lease_seconds`` ahead
  and a heartbeat (:class:`Lease`) renews it while the step works, so a SIGKILLed worker gives
  its rows up within one lease, however long steps take. The value the holder last wrote is its
  fencing token: renewals and the step's final write only apply while the row still carries it,
  so a holder that lost its lease (paused, cut off) never overwrites the next holder's work.

A step whose claim and outcome commit in one transaction (statements) needs no heartbeat: its
claim is never visible without its outcome, and a dead worker's transaction rolls back."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.db import is_database_outage, is_postgres, transaction
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import StatementState, WorkState
from g2p_bridge.observability import TASK_RETRIES
from g2p_bridge.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Work:
    """A wake-up for a worker: which step to run on which row."""

    task: str
    key: str


def _states(model: Any) -> tuple[str, str, str]:
    if model.__tablename__ == "account_statements":
        return StatementState.PENDING, StatementState.PROCESSING, StatementState.ERROR
    return WorkState.PENDING, WorkState.RUNNING, WorkState.FAILED


def claim(
    session: Session, model: Any, row_id: str, settings: Settings, now: datetime
) -> datetime | None:
    """Takes a pending row, or a running one whose holder's lease ran out (it died or is waiting
    out a retry backoff). Returns the lease written, the holder's token for :class:`Lease`, when
    this caller now holds the row; None when it does not."""
    pending, running, _ = _states(model)
    lease_until = now + timedelta(seconds=settings.lease_seconds)
    result = session.execute(
        update(model)
        .where(
            model.id == row_id,
            or_(model.state == pending, and_(model.state == running, model.lease_until < now)),
        )
        .values(
            state=running,
            attempts=model.attempts + 1,
            lease_until=lease_until,
        )
        .execution_options(synchronize_session=False)
    )
    return lease_until if result.rowcount else None  # type: ignore[attr-defined]


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
    """Rows that are due: pending, or held by a lease that expired. Each is marked as woken
    (next_attempt_at moves on by ``wake_resend_seconds``): the next ticks do not wake it again
    unless it is still unclaimed by then, its message lost."""
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
            .values(next_attempt_at=woken_until(settings, now))
            .execution_options(synchronize_session=False)
        )
    return ids


def woken_until(settings: Settings, now: datetime) -> datetime:
    """Until when a row just woken is left to its message before it is woken again."""
    return now + timedelta(seconds=settings.wake_resend_seconds)


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Lease:
    """A claim this process holds, renewed by a background heartbeat while its step works.

    Use it as a context manager around the step's work after the claim has committed, and call
    :meth:`stop` before the transaction that writes the step's outcome, in which :meth:`holds`
    says whether the claim is still this one's. The heartbeat stops when the step ends, fails,
    or its process dies; then nothing renews the row and another worker may take it once the
    lease runs out. A step that fails because the database is away gives the row back instead,
    as soon as the database answers again, so recovery does not wait out the lease."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        key: Any,
        row_id: str,
        token: datetime,
    ) -> None:
        self._session_factory = session_factory
        self._seconds = settings.lease_seconds
        self._key = key  # the row's key column: model.id, or EnvelopeStatus.envelope_id
        self._model = key.class_
        self._row_id = row_id
        # The values the row may carry while this holder has it: the one last written and, after
        # a renewal whose commit went unanswered, the one it tried to write as well.
        self._tokens = {token}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost = False
        self._renew_until = time.monotonic() + settings.step_time_limit_seconds
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{self._row_id[:8]}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None and is_database_outage(exc):
            threading.Thread(target=self._give_back, name="lease-give-back", daemon=True).start()

    @property
    def lost(self) -> bool:
        """True once a renewal found the row no longer carrying this holder's token."""
        return self._lost

    def stop(self) -> None:
        """Stops renewing; any renewal in flight is finished (or failed) when this returns."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def held(self) -> ColumnElement[bool]:
        """The condition "this holder still has the row", for a guarded UPDATE."""
        with self._lock:
            return and_(self._key == self._row_id, self._model.lease_until.in_(list(self._tokens)))

    def holds(self, session: Session) -> bool:
        """Locks the row for the caller's transaction and says whether it is still this
        holder's: a holder whose lease ran out while it waited on a bank or a mapper must not
        write an outcome over the worker that claimed the row after it."""
        query = select(self._model.lease_until).where(self._key == self._row_id)
        current = session.execute(query.with_for_update()).scalar_one_or_none()
        with self._lock:
            return current is not None and current in self._tokens

    def _beat(self) -> None:
        interval = self._seconds / 3
        while not self._stop.wait(interval):
            if time.monotonic() >= self._renew_until:
                log.warning(
                    "%s %s: step time limit reached, lease left to run out",
                    self._model.__tablename__,
                    self._row_id,
                )
                return
            if not self._renew():
                return

    def _renew(self) -> bool:
        """One heartbeat. False when the row is no longer this holder's."""
        new = utcnow() + timedelta(seconds=self._seconds)
        with self._lock:
            # Counted as this holder's before the write: the step's own transaction may read the
            # row between this renewal's commit and the line after it.
            self._tokens.add(new)
        try:
            with transaction(self._session_factory) as session:
                renewed = session.execute(
                    update(self._model)
                    .where(self.held())
                    .values(lease_until=new)
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]
        except Exception as exc:
            # The database is away or the commit's answer was lost: the row carries either
            # value now. Keep beating; the lease itself covers a short outage.
            name = self._model.__tablename__
            log.warning("lease renewal of %s %s failed: %s", name, self._row_id, exc)
            return True
        with self._lock:
            if renewed:
                self._tokens = {new}
                return True
            self._lost = True
        if not self._stop.is_set():  # else the step itself just finished with the row
            log.warning("%s %s: lease lost", self._model.__tablename__, self._row_id)
        return False

    def _give_back(self) -> None:
        """After a database outage: expires the claim and makes the row due now, retrying until
        the database answers or the lease has run out by itself anyway."""
        with self._lock:
            deadline = max(self._tokens)
        while utcnow() < deadline:
            now = utcnow()
            try:
                with transaction(self._session_factory) as session:
                    session.execute(
                        update(self._model)
                        .where(self.held())
                        .values(lease_until=now, next_attempt_at=now)
                        .execution_options(synchronize_session=False)
                    )
                return
            except Exception:
                time.sleep(1.0)  # pacing the retries while the database is away
