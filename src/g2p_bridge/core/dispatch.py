"""Sending payments to the sponsor bank in batches, each payment exactly once.

A batch is planned (disbursements BATCHED, still cancellable), then claimed by one worker which
records the intent (batch RUNNING: its disbursements are reported DISPATCHING and are no longer
cancellable, see core/states.py; the rows themselves are not rewritten) and commits before
calling the bank. Every payment carries its disbursement id as the bank's idempotency
key, so a batch re-sent after a crash or a timeout is paid once."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Row, case, exists, func, insert, select, update
from sqlalchemy.orm import Session

from g2p_bridge.connectors.banks.base import (
    BankRejected,
    BankUnavailable,
    PaymentBatchInfo,
    PaymentInstruction,
)
from g2p_bridge.core import audit, callbacks
from g2p_bridge.core.budget import next_share, share_round_robin
from g2p_bridge.core.context import Context
from g2p_bridge.core.envelopes import bump_counters, lock_status
from g2p_bridge.core.work import Lease, claim, retry_later
from g2p_bridge.db import get_required, one_of, transaction
from g2p_bridge.models import (
    BankBatch,
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    EnvelopeStatus,
    ResolvedAddress,
)
from g2p_bridge.models.base import new_id, utcnow
from g2p_bridge.models.enums import DisbursementState, FundsBlocked, WorkState


def _destination(group_by: str | None, *codes: str | None) -> str | None:
    """The bank or wallet provider a payment goes to, when the bank wants batches split so."""
    if group_by is None:
        return None
    return next((code for code in codes if code), "")


def _envelopes_with_work(session: Session) -> list[tuple[str, str]]:
    """(envelope id, sponsor bank code) of every funded, uncancelled envelope that has RESOLVED
    disbursements, least recently batched first.

    A settled envelope stays FUNDS_BLOCK_SUCCESS for ever, so the funds state alone would list
    the whole history. Its counters rule it out with no probe: a RESOLVED row is counted as
    received and neither as reconciled nor as failed, and the counters equal the rows (see
    EnvelopeStatus). An envelope still in flight (its rows batched or shipped, not all settled)
    costs one probe of ix_disbursements_envelope_state_id.

    The order: never batched first, then by when the envelope's last batch was planned
    (ix_bank_batches_envelope_created), so an envelope left out of a tick's budget comes first
    in the next; among those batched in the same tick, the one given fewer rows so far first,
    so the budget's remainder goes round too; then the oldest envelope."""
    e, s, p, d, b = DisbursementEnvelope, EnvelopeStatus, BenefitProgram, Disbursement, BankBatch
    last_batched = (
        select(func.max(b.created_at)).where(b.envelope_id == e.id).correlate(e).scalar_subquery()
    )
    rows_batched = (
        select(func.coalesce(func.sum(b.disbursement_count), 0))
        .where(b.envelope_id == e.id)
        .correlate(e)
        .scalar_subquery()
    )
    query = (
        select(e.id, p.sponsor_bank_code)
        .join(s, s.envelope_id == e.id)
        .join(p, p.mnemonic == e.program_mnemonic)
        .where(
            s.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS,
            e.cancelled.is_(False),
            s.received_count > s.reconciled_count + s.failed_count,
            exists().where(d.envelope_id == e.id, d.state == DisbursementState.RESOLVED),
        )
        .order_by(last_batched.asc().nulls_first(), rows_batched, e.created_at, e.id)
    )
    return [(envelope_id, bank_code) for envelope_id, bank_code in session.execute(query)]


# A disbursement to batch: id, amount, and the codes its destination is read from.
if TYPE_CHECKING:  # Row takes one argument per column only from SQLAlchemy 2.1 on
    _Row = Row[str, Decimal, str | None, str | None, str | None]


def _resolved_rows(session: Session, envelope_id: str, after: str | None, limit: int) -> list[_Row]:
    """The envelope's next RESOLVED rows with the codes their destination is read from."""
    query = select(
        Disbursement.id,
        Disbursement.amount,
        ResolvedAddress.bank_code,
        ResolvedAddress.mobile_wallet_provider,
        ResolvedAddress.email_wallet_provider,
    ).join(ResolvedAddress, ResolvedAddress.disbursement_id == Disbursement.id)
    resolved = DisbursementState.RESOLVED
    return list(session.execute(next_share(session, query, envelope_id, resolved, after, limit)))


def plan_bank_batches(context: Context, session: Session, now: datetime) -> list[str]:
    """Batches the resolved disbursements of envelopes whose funds are blocked, sharing the
    tick's budget of ``batches_planned_per_tick`` batches between them.

    Round-robin (``share_round_robin``) in the order of ``_envelopes_with_work``, each envelope's
    share taken with one SELECT ... LIMIT a round. So one huge envelope no longer holds back the
    rest, and a single envelope is batched exactly as before: one SELECT of the whole budget,
    full batches but the tail."""
    settings = context.settings
    size = settings.dispatch_batch_size
    envelopes = _envelopes_with_work(session)
    bank_codes = dict(envelopes)

    def take(envelope_id: str, last: _Row | None, limit: int) -> list[_Row]:
        return _resolved_rows(session, envelope_id, last[0] if last else None, limit)

    taken = share_round_robin(list(bank_codes), settings.batches_planned_per_tick, size, take)

    batch_ids: list[str] = []
    for envelope_id, rows in taken.items():
        if not rows:
            continue
        group_by = context.bank(bank_codes[envelope_id]).group_payments_by
        groups: dict[str | None, list[tuple[str, Decimal]]] = defaultdict(list)
        for disbursement_id, amount, *codes in rows:
            groups[_destination(group_by, *codes)].append((disbursement_id, amount))
        for destination, group in groups.items():
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                batch_id = new_id()
                session.execute(
                    insert(BankBatch).values(
                        id=batch_id,
                        envelope_id=envelope_id,
                        destination=destination,
                        disbursement_count=len(chunk),
                        total_amount=sum(a for _, a in chunk),
                        state=WorkState.PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
                session.execute(
                    update(Disbursement)
                    .where(one_of(session, Disbursement.id, [d for d, _ in chunk]))
                    .values(state=DisbursementState.BATCHED, bank_batch_id=batch_id, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                batch_ids.append(batch_id)
    return batch_ids


def _instructions(
    session: Session,
    batch_id: str,
    block_reference: str | None,
    program: BenefitProgram,
    envelope: DisbursementEnvelope,
    today: datetime,
) -> list[PaymentInstruction]:
    # Plain columns, not ORM objects: a batch is thousands of rows and this runs per batch.
    d, a = Disbursement, ResolvedAddress
    rows = session.execute(
        select(
            d.id,
            d.amount,
            d.beneficiary_name,
            d.narrative,
            d.beneficiary_id,
            a.bank_account_number,
            a.address_type,
            a.bank_code,
            a.branch_code,
            a.mobile_wallet_provider,
            a.mobile_number,
            a.email_address,
            a.email_wallet_provider,
            d.state,
        )
        .join(a, a.disbursement_id == d.id)
        # By the batch id alone, through its index; the state is checked on the batch's rows.
        # With it in the WHERE clause the planner, its statistics behind a payday's inserts,
        # walked every BATCHED row of the table through (state, id) for one batch.
        .where(d.bank_batch_id == batch_id)
        .order_by(d.id)
    )
    return [
        PaymentInstruction(
            payment_reference=r.id,
            remitting_account=program.sponsor_bank_account_number,
            remitting_currency=envelope.currency,
            amount=r.amount,
            block_reference=block_reference,
            beneficiary_name=r.beneficiary_name,
            beneficiary_account=r.bank_account_number,
            beneficiary_account_type=r.address_type,
            beneficiary_bank_code=r.bank_code,
            beneficiary_branch_code=r.branch_code,
            beneficiary_mobile_wallet_provider=r.mobile_wallet_provider,
            beneficiary_phone=r.mobile_number,
            beneficiary_email=r.email_address,
            beneficiary_email_wallet_provider=r.email_wallet_provider,
            narratives=(
                r.narrative,
                program.mnemonic,
                envelope.cycle_code_mnemonic,
                r.beneficiary_id,
            ),
            payment_date=today.date(),
        )
        for r in rows
        if r.state == DisbursementState.BATCHED
    ]


def send_bank_batch(context: Context, batch_id: str) -> bool:
    """Sends one batch. True when this call did the work."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        now = utcnow()
        batch = session.get(BankBatch, batch_id)
        if batch is None or not _claimable(batch, now):
            # A repeated wake-up for a batch in hand or done: leave before queueing for the
            # envelope's status row, which every step of the envelope takes.
            return False
        # Ordered with envelope cancellation: both take the envelope's status row first.
        status = lock_status(session, batch.envelope_id)
        token = claim(session, BankBatch, batch_id, settings, now)
        if token is None:
            return False
        session.refresh(batch)
        envelope = get_required(session, DisbursementEnvelope, batch.envelope_id)
        if envelope.cancelled:
            batch.state, batch.last_error, batch.lease_until = WorkState.FAILED, "cancelled", None
            return True
        program = get_required(session, BenefitProgram, envelope.program_mnemonic)
        block_reference = status.funds_block_reference
        bank_code, program_mnemonic = program.sponsor_bank_code, program.mnemonic
        envelope_id = envelope.id
        # From stored rows only, so a file channel's resend after a crash is the same file.
        info = PaymentBatchInfo(
            batch_id=batch_id,
            created_at=batch.created_at,
            execution_date=max(envelope.schedule_date, batch.created_at.date()),
            debtor_name=program.benefit_program_name or program.mnemonic,
            debtor_account=program.sponsor_bank_account_number,
            debtor_branch_code=program.sponsor_bank_branch_code,
            currency=envelope.currency,
            block_reference=block_reference,
        )
    with Lease(context.session_factory, settings, BankBatch.id, batch_id, token) as lease:
        # Read after the commit that releases the envelope's status row (every step of the
        # envelope waits for it): the batch's rows no longer change until the bank has answered
        # (a RUNNING batch's rows cannot be cancelled).
        with transaction(context.session_factory) as session:
            program = get_required(session, BenefitProgram, program_mnemonic)
            envelope = get_required(session, DisbursementEnvelope, envelope_id)
            payments = _instructions(session, batch_id, block_reference, program, envelope, now)
        return _send(context, lease, info, envelope_id, bank_code, payments)


def _claimable(batch: BankBatch, now: datetime) -> bool:
    if batch.state == WorkState.PENDING:
        return True
    return batch.state == WorkState.RUNNING and (
        batch.lease_until is None or batch.lease_until < now
    )


def _send(
    context: Context,
    lease: Lease,
    info: PaymentBatchInfo,
    envelope_id: str,
    bank_code: str,
    payments: list[PaymentInstruction],
) -> bool:
    settings = context.settings
    batch_id = info.batch_id
    error: str | None = None
    delivery: str | None = None
    accepted = False
    rejected = False
    duplicates: tuple[str, ...] = ()
    if payments:
        try:
            result = context.bank(bank_code).initiate_batch(info, payments)
            accepted, duplicates = result.accepted, result.duplicates
            rejected = not result.accepted
            if accepted:
                delivery = result.detail  # e.g. which file a file channel delivered
            else:
                error = result.detail
        except BankUnavailable as exc:
            error = str(exc)
        except BankRejected as exc:
            rejected, error = True, str(exc)
    else:
        accepted = True

    lease.stop()
    with transaction(context.session_factory) as session:
        if not lease.holds(session):
            # This lease ran out while the bank answered and another worker claimed the batch:
            # it sends the same payment references again (the bank pays each once) and records
            # that answer. Recording this one too would count the batch twice.
            return False
        now = utcnow()
        batch = get_required(session, BankBatch, batch_id)
        if accepted:
            batch.state, batch.sent_at, batch.lease_until = WorkState.DONE, now, None
            batch.bank_response = (
                f"accepted; {len(duplicates)} already known to the bank"
                if duplicates
                else "accepted"
            ) + (f": {delivery}" if delivery else "")
            # One rewrite per row: a row a statement already reconciled keeps its state and
            # has its shipped_at from then, so it is neither changed nor counted again.
            shipped = session.execute(
                update(Disbursement)
                .where(
                    Disbursement.bank_batch_id == batch_id,
                    Disbursement.shipped_at.is_(None),
                    Disbursement.state != DisbursementState.CANCELLED,
                )
                .values(
                    shipped_at=now,
                    state=case(
                        (
                            Disbursement.state == DisbursementState.BATCHED,
                            DisbursementState.SHIPPED,
                        ),
                        else_=Disbursement.state,
                    ),
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            bump_counters(session, envelope_id, shipped_count=shipped)
            callbacks.bank_batch_changed(session, settings, envelope_id, batch_id, "shipped", now)
        elif rejected:
            # The bank answered no: nothing of this batch was paid. Park it for an operator.
            batch.state, batch.last_error, batch.lease_until = WorkState.FAILED, error, None
            batch.bank_response = error
            failed = session.execute(
                update(Disbursement)
                .where(
                    Disbursement.bank_batch_id == batch_id,
                    Disbursement.state == DisbursementState.BATCHED,
                )
                .values(
                    state=DisbursementState.FAILED,
                    state_reason=f"bank refused the batch: {error}",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            bump_counters(session, envelope_id, failed_count=failed)
            callbacks.bank_batch_changed(session, settings, envelope_id, batch_id, "refused", now)
        else:
            parked = retry_later(session, BankBatch, batch_id, error or "unknown", settings, now)
            if parked:
                # The bank may or may not hold these payments: say so, and leave them where a
                # statement can still reconcile them.
                session.execute(
                    update(Disbursement)
                    .where(
                        Disbursement.bank_batch_id == batch_id,
                        Disbursement.state == DisbursementState.BATCHED,
                    )
                    .values(
                        state_reason=f"bank outcome unknown after {settings.max_attempts} "
                        f"attempts: {error}"
                    )
                    .execution_options(synchronize_session=False)
                )
                callbacks.bank_batch_changed(
                    session, settings, envelope_id, batch_id, "parked", now
                )
        audit.bank_batch_sent(session, batch_id, envelope_id, accepted, rejected, error)
    return True
