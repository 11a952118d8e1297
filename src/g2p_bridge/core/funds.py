"""Funds for an envelope: check the program account holds the total, then block it.

The block is the step that moves money out of reach, so its intent (state BLOCKING) is recorded
before the bank is called, with an idempotency key derived from the envelope: a crash between
the bank's answer and our commit is recovered by asking again with the same key."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from g2p_bridge.connectors.banks.base import BankConnector, BankRejected, BankUnavailable
from g2p_bridge.core import approvals, audit, callbacks
from g2p_bridge.core.context import Context
from g2p_bridge.core.work import Lease, woken_until
from g2p_bridge.db import get_required, is_postgres, transaction
from g2p_bridge.models import BenefitProgram, DisbursementEnvelope, EnvelopeStatus
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import FundsAvailable, FundsBlocked
from g2p_bridge.settings import Settings

_OPEN_BLOCK_STATES = (
    FundsBlocked.PENDING_CHECK,
    FundsBlocked.BLOCKING,
    FundsBlocked.ERROR,
    FundsBlocked.FUNDS_BLOCK_FAILURE,
)


def block_key(envelope_id: str) -> str:
    return f"block-{envelope_id}"


def due_envelopes(session: Session, settings: Settings, now: datetime, today: date) -> list[str]:
    """Complete, uncancelled envelopes whose schedule date has come and whose funds are not yet
    blocked, and cancelled ones whose block is still unanswered; marks them woken so the next
    ticks do not wake them again unless still unclaimed."""
    may_start = [
        DisbursementEnvelope.cancelled.is_(False),
        EnvelopeStatus.received_count == DisbursementEnvelope.number_of_disbursements,
        EnvelopeStatus.received_amount == DisbursementEnvelope.total_disbursement_amount,
        approvals.funds_may_proceed(),  # four-eyes: held until a second person approved
    ]
    if not settings.allow_future_schedule_dates:
        may_start.append(DisbursementEnvelope.schedule_date <= today)
    conditions = [
        EnvelopeStatus.funds_blocked_state.in_(_OPEN_BLOCK_STATES),
        EnvelopeStatus.next_attempt_at <= now,
        or_(EnvelopeStatus.lease_until.is_(None), EnvelopeStatus.lease_until < now),
        EnvelopeStatus.funds_available_attempts < settings.max_attempts,
        EnvelopeStatus.funds_blocked_attempts < settings.max_attempts,
        # A block whose answer was lost is asked for again even after the envelope was
        # cancelled: the bank may hold it, and only a known block can be released.
        or_(and_(*may_start), _resuming_cancelled_block()),
    ]
    query = (
        select(EnvelopeStatus.envelope_id)
        .join(DisbursementEnvelope, DisbursementEnvelope.id == EnvelopeStatus.envelope_id)
        .where(and_(*conditions))
        .limit(100)
    )
    if is_postgres(session):
        query = query.with_for_update(of=EnvelopeStatus, skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(EnvelopeStatus)
            .where(EnvelopeStatus.envelope_id.in_(ids))
            .values(next_attempt_at=woken_until(settings, now))
            .execution_options(synchronize_session=False)
        )
    return ids


def _resuming_cancelled_block() -> ColumnElement[bool]:
    """A cancelled envelope whose block was asked for and not answered: the block step goes on
    (same key, so at most the one block) so that its release can follow."""
    return and_(
        DisbursementEnvelope.cancelled.is_(True),
        EnvelopeStatus.funds_blocked_state == FundsBlocked.BLOCKING,
    )


def _claim(
    session: Session, envelope_id: str, settings: Settings, now: datetime
) -> datetime | None:
    """The envelope's funds step for this caller; returns its lease (the holder's token)."""
    lease_until = now + timedelta(seconds=settings.lease_seconds)
    result = session.execute(
        update(EnvelopeStatus)
        .where(
            EnvelopeStatus.envelope_id == envelope_id,
            EnvelopeStatus.funds_blocked_state.in_(_OPEN_BLOCK_STATES),
            or_(EnvelopeStatus.lease_until.is_(None), EnvelopeStatus.lease_until < now),
        )
        .values(lease_until=lease_until)
        .execution_options(synchronize_session=False)
    )
    return lease_until if result.rowcount else None  # type: ignore[attr-defined]


def _ok(state: str) -> str:
    """An audit outcome from a funds state: ok, retry (the bank's answer is unknown), failed."""
    if state in (FundsAvailable.FUNDS_AVAILABLE, FundsBlocked.FUNDS_BLOCK_SUCCESS):
        return "ok"
    return "retry" if state in (FundsAvailable.ERROR, FundsBlocked.BLOCKING) else "failed"


def _backoff(settings: Settings, attempts: int) -> timedelta:
    return timedelta(seconds=settings.retry_backoff_seconds * 2 ** max(attempts - 1, 0))


def secure_funds(context: Context, envelope_id: str) -> bool:
    """Checks then blocks the envelope's funds. True when funds are blocked after this call."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        token = _claim(session, envelope_id, settings, utcnow())
        if token is None:
            return False
        envelope = get_required(session, DisbursementEnvelope, envelope_id)
        status = get_required(session, EnvelopeStatus, envelope_id)
        program = get_required(session, BenefitProgram, envelope.program_mnemonic)
        blocking = status.funds_blocked_state == FundsBlocked.BLOCKING
        if envelope.cancelled and not blocking:
            status.lease_until = None
            return False
        if not envelope.cancelled and (status.received_count, status.received_amount) != (
            envelope.number_of_disbursements,
            envelope.total_disbursement_amount,
        ):
            # An amendment raised the declared figures after the sweep found it complete.
            status.lease_until = None
            return False
        if not envelope.cancelled and not approvals.may_block_funds(session, envelope):
            # An amendment voided the approval after the sweep picked the envelope.
            status.lease_until = None
            return False
        account = program.sponsor_bank_account_number
        bank_code = program.sponsor_bank_code
        currency = envelope.currency
        total = envelope.total_disbursement_amount
    lease = Lease(context.session_factory, settings, EnvelopeStatus.envelope_id, envelope_id, token)
    with lease:
        return _check_and_block(
            context, lease, envelope_id, blocking, context.bank(bank_code), account, currency, total
        )


def _check_and_block(
    context: Context,
    lease: Lease,
    envelope_id: str,
    blocking: bool,
    bank: BankConnector,
    account: str,
    currency: str,
    total: Decimal,
) -> bool:
    settings = context.settings
    if not blocking:
        try:
            check = bank.check_funds(account, currency, total)
            available = (
                FundsAvailable.FUNDS_AVAILABLE
                if check.sufficient
                else (FundsAvailable.FUNDS_NOT_AVAILABLE)
            )
            error = None if check.sufficient else (check.detail or "insufficient funds")
        except (BankUnavailable, BankRejected) as exc:
            available, error = FundsAvailable.ERROR, str(exc)
        if available != FundsAvailable.FUNDS_AVAILABLE:
            lease.stop()  # this write ends the step
        with transaction(context.session_factory) as session:
            if not lease.holds(session):
                return False  # a worker that claimed it after this lease ran out asks again
            status = get_required(session, EnvelopeStatus, envelope_id)
            now = utcnow()
            status.funds_available_state = available
            status.funds_available_attempts += 1
            status.funds_available_at = now
            status.funds_available_error = error
            audit.bank_call(session, "funds.check", envelope_id, _ok(available), error=error)
            callbacks.funds_changed(session, settings, status)
            if available != FundsAvailable.FUNDS_AVAILABLE:
                status.lease_until = None
                status.next_attempt_at = now + _backoff(settings, status.funds_available_attempts)
                return False
            # Intent first: from here on a retry re-sends the block with the same key.
            status.funds_blocked_state = FundsBlocked.BLOCKING

    outcome: str
    reference: str | None = None
    error = None
    try:
        result = bank.block_funds(account, currency, total, block_key(envelope_id))
        if result.blocked:
            outcome, reference = FundsBlocked.FUNDS_BLOCK_SUCCESS, result.reference
        else:
            outcome, error = FundsBlocked.FUNDS_BLOCK_FAILURE, result.detail
    except BankUnavailable as exc:
        # The bank may have blocked: stay BLOCKING so the retry asks with the same key.
        outcome, error = FundsBlocked.BLOCKING, str(exc)
    except BankRejected as exc:
        outcome, error = FundsBlocked.FUNDS_BLOCK_FAILURE, str(exc)
    lease.stop()
    with transaction(context.session_factory) as session:
        if not lease.holds(session):
            # The bank answers the same key with the same block: the holder now records it.
            return False
        status = get_required(session, EnvelopeStatus, envelope_id)
        now = utcnow()
        status.funds_blocked_state = outcome
        status.funds_blocked_attempts += 1
        status.funds_blocked_at = now
        status.funds_blocked_error = error
        status.funds_block_reference = reference
        audit.bank_call(session, "funds.block", envelope_id, _ok(outcome), error=error)
        callbacks.funds_changed(session, settings, status)
        status.lease_until = None
        if outcome != FundsBlocked.FUNDS_BLOCK_SUCCESS:
            status.next_attempt_at = now + _backoff(settings, status.funds_blocked_attempts)
    return outcome == FundsBlocked.FUNDS_BLOCK_SUCCESS
