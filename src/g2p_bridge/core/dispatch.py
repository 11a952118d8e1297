"""Sending payments to the sponsor bank in batches, each payment exactly once.

A batch is planned (disbursements BATCHED, still cancellable), then claimed by one worker which
records the intent (batch RUNNING, disbursements DISPATCHING, no longer cancellable) and commits
before calling the bank. Every payment carries its disbursement id as the bank's idempotency
key, so a batch re-sent after a crash or a timeout is paid once."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from g2p_bridge.connectors.banks.base import BankRejected, BankUnavailable, PaymentInstruction
from g2p_bridge.core.context import Context
from g2p_bridge.core.envelopes import bump_counters, lock_status
from g2p_bridge.core.work import claim, retry_later
from g2p_bridge.db import is_postgres, transaction
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


def _destination(group_by: str | None, address: ResolvedAddress) -> str | None:
    if group_by is None:
        return None
    return (
        address.bank_code or address.mobile_wallet_provider or address.email_wallet_provider or ""
    )


def plan_bank_batches(context: Context, session: Session, now: datetime) -> list[str]:
    """Batches the resolved disbursements of envelopes whose funds are blocked."""
    settings = context.settings
    envelopes = session.execute(
        select(DisbursementEnvelope.id, BenefitProgram.sponsor_bank_code)
        .join(EnvelopeStatus, EnvelopeStatus.envelope_id == DisbursementEnvelope.id)
        .join(BenefitProgram, BenefitProgram.mnemonic == DisbursementEnvelope.program_mnemonic)
        .where(
            EnvelopeStatus.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS,
            DisbursementEnvelope.cancelled.is_(False),
        )
    )
    budget = settings.dispatch_batch_size * settings.batches_planned_per_tick
    batch_ids: list[str] = []
    for envelope_id, bank_code in list(envelopes):
        if budget <= 0:
            break
        group_by = context.bank(bank_code).group_payments_by
        query = (
            select(Disbursement.id, Disbursement.amount, ResolvedAddress)
            .join(ResolvedAddress, ResolvedAddress.disbursement_id == Disbursement.id)
            .where(
                Disbursement.envelope_id == envelope_id,
                Disbursement.state == DisbursementState.RESOLVED,
            )
            .order_by(Disbursement.id)
            .limit(budget)
        )
        if is_postgres(session):
            query = query.with_for_update(of=Disbursement, skip_locked=True)
        groups: dict[str | None, list[tuple[str, Decimal]]] = defaultdict(list)
        for disbursement_id, amount, address in session.execute(query):
            groups[_destination(group_by, address)].append((disbursement_id, amount))
            budget -= 1
        for destination, rows in groups.items():
            for start in range(0, len(rows), settings.dispatch_batch_size):
                chunk = rows[start : start + settings.dispatch_batch_size]
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
                    .where(Disbursement.id.in_([d for d, _ in chunk]))
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
    rows = session.execute(
        select(Disbursement, ResolvedAddress)
        .join(ResolvedAddress, ResolvedAddress.disbursement_id == Disbursement.id)
        .where(
            Disbursement.bank_batch_id == batch_id,
            Disbursement.state == DisbursementState.DISPATCHING,
        )
        .order_by(Disbursement.id)
    )
    return [
        PaymentInstruction(
            payment_reference=d.id,
            remitting_account=program.sponsor_bank_account_number,
            remitting_currency=envelope.currency,
            amount=d.amount,
            block_reference=block_reference,
            beneficiary_name=d.beneficiary_name,
            beneficiary_account=a.bank_account_number,
            beneficiary_account_type=a.address_type,
            beneficiary_bank_code=a.bank_code,
            beneficiary_branch_code=a.branch_code,
            beneficiary_mobile_wallet_provider=a.mobile_wallet_provider,
            beneficiary_phone=a.mobile_number,
            beneficiary_email=a.email_address,
            beneficiary_email_wallet_provider=a.email_wallet_provider,
            narratives=(
                d.narrative,
                program.mnemonic,
                envelope.cycle_code_mnemonic,
                d.beneficiary_id,
            ),
            payment_date=today.date(),
        )
        for d, a in rows
    ]


def send_bank_batch(context: Context, batch_id: str) -> bool:
    """Sends one batch. True when this call did the work."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        now = utcnow()
        batch = session.get(BankBatch, batch_id)
        if batch is None:
            return False
        # Ordered with envelope cancellation: both take the envelope's status row first.
        status = lock_status(session, batch.envelope_id)
        if not claim(session, BankBatch, batch_id, settings, now):
            return False
        session.refresh(batch)
        envelope = session.get(DisbursementEnvelope, batch.envelope_id)
        assert envelope is not None
        if envelope.cancelled:
            batch.state, batch.last_error, batch.lease_until = WorkState.FAILED, "cancelled", None
            return True
        program = session.get(BenefitProgram, envelope.program_mnemonic)
        assert program is not None
        session.execute(
            update(Disbursement)
            .where(
                Disbursement.bank_batch_id == batch_id,
                Disbursement.state == DisbursementState.BATCHED,
            )
            .values(state=DisbursementState.DISPATCHING, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        payments = _instructions(
            session, batch_id, status.funds_block_reference, program, envelope, now
        )
        bank_code = program.sponsor_bank_code
        envelope_id = envelope.id

    error: str | None = None
    accepted = False
    rejected = False
    duplicates: tuple[str, ...] = ()
    if payments:
        try:
            result = context.bank(bank_code).initiate_payment(payments)
            accepted, duplicates = result.accepted, result.duplicates
            rejected = not result.accepted
            error = result.detail
        except BankUnavailable as exc:
            error = str(exc)
        except BankRejected as exc:
            rejected, error = True, str(exc)
    else:
        accepted = True

    with transaction(context.session_factory) as session:
        now = utcnow()
        batch = session.get(BankBatch, batch_id)
        assert batch is not None
        if accepted:
            batch.state, batch.sent_at, batch.lease_until = WorkState.DONE, now, None
            batch.bank_response = (
                f"accepted; {len(duplicates)} already known to the bank"
                if duplicates
                else "accepted"
            )
            shipped = session.execute(
                update(Disbursement)
                .where(
                    Disbursement.bank_batch_id == batch_id,
                    Disbursement.shipped_at.is_(None),
                    Disbursement.state != DisbursementState.CANCELLED,
                )
                .values(shipped_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            session.execute(
                update(Disbursement)
                .where(
                    Disbursement.bank_batch_id == batch_id,
                    Disbursement.state == DisbursementState.DISPATCHING,
                )
                .values(state=DisbursementState.SHIPPED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            bump_counters(session, envelope_id, shipped_count=shipped)
        elif rejected:
            # The bank answered no: nothing of this batch was paid. Park it for an operator.
            batch.state, batch.last_error, batch.lease_until = WorkState.FAILED, error, None
            batch.bank_response = error
            failed = session.execute(
                update(Disbursement)
                .where(
                    Disbursement.bank_batch_id == batch_id,
                    Disbursement.state == DisbursementState.DISPATCHING,
                )
                .values(
                    state=DisbursementState.FAILED,
                    state_reason=f"bank refused the batch: {error}",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            bump_counters(session, envelope_id, failed_count=failed)
        else:
            parked = retry_later(session, BankBatch, batch_id, error or "unknown", settings, now)
            if parked:
                # The bank may or may not hold these payments: say so, and leave them where a
                # statement can still reconcile them.
                session.execute(
                    update(Disbursement)
                    .where(
                        Disbursement.bank_batch_id == batch_id,
                        Disbursement.state == DisbursementState.DISPATCHING,
                    )
                    .values(
                        state_reason=f"bank outcome unknown after {settings.max_attempts} "
                        f"attempts: {error}"
                    )
                    .execution_options(synchronize_session=False)
                )
    return True
