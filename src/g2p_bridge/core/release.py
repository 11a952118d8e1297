"""Release what an envelope's funds block did not spend, once every disbursement is final.

The block holds the envelope's whole total. Each payment the bank takes is paid out of it (a
payment later returned comes back to the program account's free balance, not to the block), so
once nothing of the envelope can still go to the bank, what the block still holds is the sum of
the disbursements that never reached it: cancelled, unresolved, refused. That rest is given
back in one bank call, keyed ``release-<envelope id>``: the producer writes the release row with
its amount fixed (intent before the call), a worker claims it with a lease, calls the bank, and
records the answer only while it still holds the lease. A crash between the bank's answer and
the commit leaves the row to be claimed again, and the same key gets the same release from the
bank, never a second one. A bank that refuses is asked again with backoff, then the row is
parked (FAILED, with the bank's reason) for an operator.

Figures, per envelope (all in its currency, all exact):

* blocked  = the block (the envelope's total once the block succeeded, else 0)
* spent    = the disbursements paid and not returned (RECONCILED)
* returned = the disbursements paid and then returned by the bank (REVERSED)
* released = what the release gave back (0 until it is DONE)
* held     = blocked - spent - returned - released: what the block still holds for the
  envelope as far as the bridge knows (work in progress, in flight, or not yet released).

So blocked = spent + returned + released + held always, and held is 0 once the envelope is final
and its release done."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, exists, func, insert, literal, select
from sqlalchemy.orm import Session

from g2p_bridge.connectors.banks.base import BankRejected, BankUnavailable
from g2p_bridge.core import audit, callbacks
from g2p_bridge.core.context import Context
from g2p_bridge.core.work import Lease, claim, retry_later
from g2p_bridge.db import get_required, transaction
from g2p_bridge.models import (
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    EnvelopeStatus,
    FundsRelease,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import DisbursementState, FundsBlocked, WorkState

# Nothing of a disbursement in one of these can reach the bank any more, nor come back.
FINAL_STATES = (
    DisbursementState.RECONCILED,
    DisbursementState.REVERSED,
    DisbursementState.UNRESOLVED,
    DisbursementState.FAILED,
    DisbursementState.CANCELLED,
)
# What the bank took out of the block: paid, whether or not it was returned afterwards.
TAKEN_FROM_BLOCK = (DisbursementState.RECONCILED, DisbursementState.REVERSED)
_NOT_FINAL = tuple(s for s in DisbursementState if s not in FINAL_STATES)
PLAN_LIMIT = 100


def release_key(envelope_id: str) -> str:
    return f"release-{envelope_id}"


def plan_releases(session: Session, now: datetime) -> int:
    """Writes the release of every blocked envelope whose disbursements are all final and which
    has none yet, with its amount: one INSERT ... SELECT. Returns how many were planned."""
    e, s, d, r = DisbursementEnvelope, EnvelopeStatus, Disbursement, FundsRelease
    taken = (
        select(func.coalesce(func.sum(d.amount), 0))
        .where(d.envelope_id == e.id, d.state.in_(TAKEN_FROM_BLOCK))
        .scalar_subquery()
    )
    due = (
        select(
            e.id,
            s.funds_block_reference,
            e.currency,
            e.total_disbursement_amount - taken,
            literal(WorkState.PENDING.value),
            literal(0),
            literal(now, r.next_attempt_at.type),
            literal(now, r.created_at.type),
            literal(now, r.updated_at.type),
        )
        .join(s, s.envelope_id == e.id)
        .where(
            s.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS,
            s.funds_block_reference.is_not(None),
            ~exists().where(r.id == e.id),
            ~exists().where(and_(d.envelope_id == e.id, d.state.in_(_NOT_FINAL))),
        )
        .order_by(e.id)
        .limit(PLAN_LIMIT)
    )
    columns = [
        r.id,
        r.block_reference,
        r.currency,
        r.amount,
        r.state,
        r.attempts,
        r.next_attempt_at,
        r.created_at,
        r.updated_at,
    ]
    planned = session.scalars(
        insert(r).from_select([c.key for c in columns], due).returning(r.id)
    ).all()
    return len(planned)


def release_funds(context: Context, envelope_id: str) -> bool:
    """Releases the rest of the envelope's block at the bank. True when this call recorded it."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        token = claim(session, FundsRelease, envelope_id, settings, utcnow())
        if token is None:
            return False
        release = get_required(session, FundsRelease, envelope_id)
        envelope = get_required(session, DisbursementEnvelope, envelope_id)
        program = get_required(session, BenefitProgram, envelope.program_mnemonic)
        amount, currency, block = release.amount, release.currency, release.block_reference
        account, bank_code = program.sponsor_bank_account_number, program.sponsor_bank_code
        if amount <= 0:
            # Everything was paid: the block is used up, there is nothing to ask the bank for.
            _record_done(session, release, None, utcnow())
            return True
    lease = Lease(context.session_factory, settings, FundsRelease.id, envelope_id, token)
    with lease:
        reference: str | None = None
        error: str | None = None
        try:
            result = context.bank(bank_code).release_funds(
                account, currency, amount, block, release_key(envelope_id)
            )
            reference, error = result.reference, result.detail
            if not result.released:
                error = error or "release refused"
        except (BankUnavailable, BankRejected) as exc:
            # Unknown outcome or a refusal: the retry asks again with the same key.
            error = str(exc)
        lease.stop()
        with transaction(context.session_factory) as session:
            if not lease.holds(session):
                return False  # the worker that claimed it after this lease ran out records it
            now = utcnow()
            release = get_required(session, FundsRelease, envelope_id)
            if error is None:
                _record_done(session, release, reference, now)
                return True
            parked = retry_later(session, FundsRelease, envelope_id, error, settings, now)
            audit.bank_call(
                session,
                "funds.release",
                envelope_id,
                "failed" if parked else "retry",
                amount=str(amount),
                error=error,
            )
    return False


def _record_done(
    session: Session, release: FundsRelease, reference: str | None, now: datetime
) -> None:
    release.state = WorkState.DONE
    release.release_reference = reference
    release.released_at = now
    release.lease_until = None
    release.last_error = None
    audit.bank_call(
        session,
        "funds.release",
        release.id,
        "ok",
        amount=str(release.amount),
        reference=reference,
    )
    # In this transaction: the PBMS is told exactly when the release is recorded, and once
    # (a release turns DONE once; a second worker's record finds its lease gone).
    callbacks.funds_released(
        session, release.id, release.amount, release.currency, release.block_reference, reference
    )


@dataclass(frozen=True)
class FundsFigures:
    """Where an envelope's block went (see the module docstring), and its release step."""

    blocked: Decimal
    spent: Decimal
    returned: Decimal
    released: Decimal
    held: Decimal
    release_state: str | None = None
    release_amount: Decimal | None = None
    release_attempts: int = 0
    release_error: str | None = None
    release_reference: str | None = None
    released_at: datetime | None = None


def funds_figures(
    session: Session,
    envelope: DisbursementEnvelope,
    status: EnvelopeStatus,
    amounts_by_state: dict[str, Decimal],
) -> FundsFigures:
    """From the envelope's amounts per disbursement state (one GROUP BY the caller already ran)."""
    zero = Decimal(0)
    blocked = (
        envelope.total_disbursement_amount
        if status.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS
        else zero
    )
    spent = amounts_by_state.get(DisbursementState.RECONCILED, zero)
    returned = amounts_by_state.get(DisbursementState.REVERSED, zero)
    release = session.get(FundsRelease, envelope.id, populate_existing=True)
    if release is None:
        return FundsFigures(blocked, spent, returned, zero, blocked - spent - returned)
    released = release.amount if release.state == WorkState.DONE else zero
    return FundsFigures(
        blocked,
        spent,
        returned,
        released,
        blocked - spent - returned - released,
        release_state=release.state,
        release_amount=release.amount,
        release_attempts=release.attempts,
        release_error=release.last_error,
        release_reference=release.release_reference,
        released_at=release.released_at,
    )
