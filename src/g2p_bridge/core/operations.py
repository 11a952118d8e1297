"""Operator actions of the console: each changes one row under a precondition and is audited
in the same transaction, with who did it."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from g2p_bridge.core import audit, envelopes
from g2p_bridge.core.errors import Conflict, ErrorCode, InvalidRequest, NotFound
from g2p_bridge.models import (
    BankBatch,
    DisbursementEnvelope,
    FundsRelease,
    ReconError,
    ReconErrorAck,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import WorkState

NOTE_LIMIT = 1024
# The notes people type: no control characters (NUL breaks PostgreSQL's text type; a line break
# or an escape would forge a line in a log or an export), no lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def clean_note(note: str | None, required: bool) -> str | None:
    note = (note or "").strip()
    if (required and not note) or len(note) > NOTE_LIMIT:
        raise InvalidRequest(
            ErrorCode.INVALID_REQUEST, f"a note of 1 to {NOTE_LIMIT} characters is required"
        )
    if _CONTROL.search(note):
        raise InvalidRequest(ErrorCode.INVALID_CHARACTER, "a note holds no control characters")
    return note or None


def _requeue_parked(
    session: Session,
    row: BankBatch | FundsRelease,
    action: str,
    target: str,
    not_parked: ErrorCode,
    envelope_id: str,
    actor: str,
    role: str,
    max_attempts: int,
) -> None:
    """Gives a parked row (FAILED after its last attempt) a fresh set of attempts, due now,
    audited with before and after. The caller holds the row's lock and checked its own
    preconditions; a row that is not parked is refused (a running one must not be raced)."""
    if row.state != WorkState.FAILED or row.attempts < max_attempts:
        raise Conflict(
            not_parked,
            f"{target} {row.id} is {row.state} after {row.attempts} attempt(s); only one "
            f"FAILED after its {max_attempts} attempts is re-queued",
        )
    before = {"state": row.state, "attempts": row.attempts, "last_error": row.last_error}
    row.state, row.attempts, row.lease_until = WorkState.PENDING, 0, None
    row.next_attempt_at = utcnow()
    audit.record(
        session,
        action,
        target,
        row.id,
        envelope_id=envelope_id,
        actor=actor,
        role=role,
        detail={"before": before, "after": {"state": WorkState.PENDING, "attempts": 0}},
    )
    session.flush()


def requeue_bank_batch(
    session: Session, batch_id: str, actor: str, role: str, max_attempts: int
) -> BankBatch:
    """Gives a parked payment batch (FAILED after its last attempt) a fresh set of attempts,
    once the operator fixed the cause (the bank back, a certificate renewed). Safe to send
    again: every payment's reference is its disbursement id, so the bank pays each once. A
    batch the bank refused, or one of a cancelled envelope, is not re-queued: its disbursements
    were failed or cancelled, and sending it would pay nothing or the wrong thing."""
    batch = session.get(BankBatch, batch_id)
    if batch is None:
        raise NotFound(ErrorCode.INVALID_REQUEST, f"no payment batch {batch_id!r}")
    # Ordered like dispatch and cancellation: the envelope's status row first.
    envelopes.lock_status(session, batch.envelope_id)
    session.refresh(batch)
    envelope = session.get(DisbursementEnvelope, batch.envelope_id)
    if envelope is None or envelope.cancelled:
        raise Conflict(ErrorCode.BATCH_NOT_PARKED, f"envelope of batch {batch_id} is cancelled")
    _requeue_parked(
        session,
        batch,
        "bank_batch.requeue",
        "bank_batch",
        ErrorCode.BATCH_NOT_PARKED,
        batch.envelope_id,
        actor,
        role,
        max_attempts,
    )
    return batch


def requeue_funds_release(
    session: Session, envelope_id: str, actor: str, role: str, max_attempts: int
) -> FundsRelease:
    """Gives a parked release of an envelope's unspent block a fresh set of attempts, once the
    operator fixed the cause. Safe to ask again: the bank answers the release's idempotency
    key (``release-<envelope id>``) with the same release, and the amount was fixed when the
    release was planned. A cancelled envelope's release is re-queued too: its block is what
    the release gives back."""
    release = session.scalar(
        select(FundsRelease)
        .where(FundsRelease.id == envelope_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if release is None:
        raise NotFound(
            ErrorCode.DISBURSEMENT_ENVELOPE_NOT_FOUND,
            f"envelope {envelope_id!r} has no funds release",
        )
    _requeue_parked(
        session,
        release,
        "funds_release.requeue",
        "funds_release",
        ErrorCode.RELEASE_NOT_PARKED,
        envelope_id,
        actor,
        role,
        max_attempts,
    )
    return release


def acknowledge_recon_error(
    session: Session, error_id: int, actor: str, role: str, note: str
) -> ReconErrorAck:
    note = clean_note(note, required=True) or ""
    error = session.get(ReconError, error_id)
    if error is None:
        raise NotFound(ErrorCode.RECON_ERROR_NOT_FOUND, f"no reconciliation error {error_id}")
    if session.get(ReconErrorAck, error_id) is not None:
        raise Conflict(ErrorCode.INVALID_REQUEST, f"error {error_id} is already acknowledged")
    ack = ReconErrorAck(
        recon_error_id=error_id, acknowledged_by=actor, acknowledged_at=utcnow(), note=note
    )
    session.add(ack)
    audit.record(
        session,
        "recon_error.acknowledge",
        "recon_error",
        str(error_id),
        actor=actor,
        role=role,
        detail={"statement_id": error.statement_id, "error_code": error.error_code, "note": note},
    )
    session.flush()
    return ack
