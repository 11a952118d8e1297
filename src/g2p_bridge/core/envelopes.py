"""Disbursement envelopes: one program cycle, its declared count and total, its status."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from g2p_bridge.core import approvals, callbacks, states
from g2p_bridge.core.errors import BridgeError, Conflict, ErrorCode, InvalidRequest, NotFound
from g2p_bridge.core.release import FundsFigures, funds_figures
from g2p_bridge.models import (
    BankBatch,
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    EnvelopeStatus,
)
from g2p_bridge.models.base import new_id, utcnow
from g2p_bridge.models.enums import (
    CANCELLABLE_STATES,
    DisbursementFrequency,
    DisbursementState,
    FundsAvailable,
    FundsBlocked,
    WorkState,
)
from g2p_bridge.money import has_valid_minor_units
from g2p_bridge.schemas import EnvelopeAmendPayload, EnvelopePayload
from g2p_bridge.settings import Settings

_FREQUENCIES = {f.value for f in DisbursementFrequency}


def create_envelope(
    session: Session, payload: EnvelopePayload, sender_id: str, today: date
) -> DisbursementEnvelope:
    program = (
        session.get(BenefitProgram, payload.benefit_program_mnemonic)
        if payload.benefit_program_mnemonic
        else None
    )
    problems: list[tuple[ErrorCode, str]] = []
    if program is None:
        problems.append(
            (
                ErrorCode.INVALID_PROGRAM_MNEMONIC,
                f"no benefit program {payload.benefit_program_mnemonic!r}",
            )
        )
    if payload.disbursement_frequency not in _FREQUENCIES:
        problems.append(
            (
                ErrorCode.INVALID_DISBURSEMENT_FREQUENCY,
                f"frequency must be one of {sorted(_FREQUENCIES)}",
            )
        )
    if not payload.cycle_code_mnemonic:
        problems.append((ErrorCode.INVALID_CYCLE_CODE_MNEMONIC, "cycle_code_mnemonic is required"))
    if not payload.number_of_beneficiaries or payload.number_of_beneficiaries < 1:
        problems.append(
            (ErrorCode.INVALID_NO_OF_BENEFICIARIES, "number_of_beneficiaries must be at least 1")
        )
    if not payload.number_of_disbursements or payload.number_of_disbursements < 1:
        problems.append(
            (ErrorCode.INVALID_NO_OF_DISBURSEMENTS, "number_of_disbursements must be at least 1")
        )
    currency = payload.disbursement_currency_code
    if program is not None and currency != program.sponsor_bank_account_currency:
        problems.append(
            (
                ErrorCode.INVALID_DISBURSEMENT_CURRENCY_CODE,
                f"currency {currency!r} is not the program account's "
                f"{program.sponsor_bank_account_currency}",
            )
        )
    total = payload.total_disbursement_amount
    if total is None or total <= 0:
        problems.append(
            (
                ErrorCode.INVALID_TOTAL_DISBURSEMENT_AMOUNT,
                "total_disbursement_amount must be greater than 0",
            )
        )
    elif currency and not has_valid_minor_units(total, currency):
        problems.append(
            (
                ErrorCode.INVALID_TOTAL_DISBURSEMENT_AMOUNT,
                f"total_disbursement_amount has more decimals than {currency} allows",
            )
        )
    schedule = payload.disbursement_schedule_date
    if schedule is None or schedule < today:
        problems.append(
            (
                ErrorCode.INVALID_DISBURSEMENT_SCHEDULE_DATE,
                "disbursement_schedule_date is required and may not be in the past",
            )
        )
    if problems:
        raise InvalidRequest(
            problems[0][0],
            "; ".join(m for _, m in problems),
            {"envelope": [c.value for c, _ in problems]},
        )

    envelope_id = payload.disbursement_envelope_id or new_id()
    if session.get(DisbursementEnvelope, envelope_id) is not None:
        raise Conflict(ErrorCode.DUPLICATE_ENVELOPE, f"envelope {envelope_id} already exists")
    # Each of these was refused above; checked again (not asserted: asserts vanish under -O)
    # so that a gap in those checks is an error, not a row with NULLs, and the types narrow.
    if (
        program is None
        or total is None
        or schedule is None
        or not currency
        or not payload.disbursement_frequency
        or not payload.cycle_code_mnemonic
        or not payload.number_of_beneficiaries
        or not payload.number_of_disbursements
    ):
        raise RuntimeError(f"envelope {envelope_id}: a required field passed validation empty")
    envelope = DisbursementEnvelope(
        id=envelope_id,
        sender_id=sender_id,
        program_mnemonic=program.mnemonic,
        disbursement_frequency=payload.disbursement_frequency,
        cycle_code_mnemonic=payload.cycle_code_mnemonic,
        number_of_beneficiaries=payload.number_of_beneficiaries,
        number_of_disbursements=payload.number_of_disbursements,
        total_disbursement_amount=total,
        currency=currency,
        schedule_date=schedule,
    )
    session.add(envelope)
    session.flush()
    session.add(EnvelopeStatus(envelope_id=envelope_id, received_amount=Decimal(0)))
    session.flush()
    return envelope


def get_envelope(session: Session, envelope_id: str | None) -> DisbursementEnvelope:
    envelope = session.get(DisbursementEnvelope, envelope_id) if envelope_id else None
    if envelope is None:
        raise NotFound(
            ErrorCode.DISBURSEMENT_ENVELOPE_NOT_FOUND, f"no disbursement envelope {envelope_id!r}"
        )
    return envelope


def lock_status(session: Session, envelope_id: str) -> EnvelopeStatus:
    """Serialises everything that changes what an envelope may still do (adding, cancelling,
    starting to send money) on the envelope's status row."""
    status = session.scalar(
        select(EnvelopeStatus)
        .where(EnvelopeStatus.envelope_id == envelope_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if status is None:
        raise NotFound(
            ErrorCode.DISBURSEMENT_ENVELOPE_NOT_FOUND, f"no disbursement envelope {envelope_id!r}"
        )
    return status


def bump_counters(session: Session, envelope_id: str, **deltas: int | Decimal) -> None:
    """Moves the envelope's counters in the caller's transaction, beside the row changes."""
    deltas = {k: v for k, v in deltas.items() if v}
    if not deltas:
        return
    columns = EnvelopeStatus.__table__.c
    session.execute(
        update(EnvelopeStatus)
        .where(EnvelopeStatus.envelope_id == envelope_id)
        .values({columns[name]: columns[name] + delta for name, delta in deltas.items()})
        .execution_options(synchronize_session=False)
    )


def cancel_envelope(
    session: Session, envelope_id: str | None, settings: Settings | None = None
) -> DisbursementEnvelope:
    envelope = get_envelope(session, envelope_id)
    lock_status(session, envelope.id)
    if envelope.cancelled:
        raise Conflict(
            ErrorCode.DISBURSEMENT_ENVELOPE_ALREADY_CANCELED,
            f"envelope {envelope.id} is already cancelled",
        )
    started = session.scalar(
        select(func.count())
        .select_from(BankBatch)
        .where(BankBatch.envelope_id == envelope.id, BankBatch.state != WorkState.PENDING)
    )
    if started:
        raise Conflict(
            ErrorCode.ENVELOPE_ALREADY_DISPATCHED,
            f"money of envelope {envelope.id} has already gone to the bank",
        )
    now = utcnow()
    envelope.cancelled = True
    envelope.cancelled_at = now
    counts = dict(
        session.execute(
            select(Disbursement.state, func.count())
            .where(
                Disbursement.envelope_id == envelope.id, Disbursement.state.in_(CANCELLABLE_STATES)
            )
            .group_by(Disbursement.state)
        ).all()
    )
    amount = session.scalar(
        select(func.coalesce(func.sum(Disbursement.amount), 0)).where(
            Disbursement.envelope_id == envelope.id, Disbursement.state.in_(CANCELLABLE_STATES)
        )
    )
    session.execute(
        update(Disbursement)
        .where(Disbursement.envelope_id == envelope.id, Disbursement.state.in_(CANCELLABLE_STATES))
        .values(
            state=DisbursementState.CANCELLED,
            cancelled=True,
            cancelled_at=now,
            state_reason="envelope cancelled",
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(BankBatch)
        .where(BankBatch.envelope_id == envelope.id, BankBatch.state == WorkState.PENDING)
        .values(state=WorkState.FAILED, last_error="envelope cancelled")
    )
    cancelled = sum(counts.values())
    bump_counters(
        session,
        envelope.id,
        received_count=-cancelled,
        received_amount=-Decimal(amount or 0),
        cancelled_count=cancelled,
        failed_count=-counts.get(DisbursementState.UNRESOLVED, 0),
    )
    session.flush()
    if cancelled:
        callbacks.disbursements_cancelled(session, settings, envelope.id, now)
    return envelope


def amend_envelope(
    session: Session, payload: EnvelopeAmendPayload, today: date
) -> tuple[DisbursementEnvelope, dict[str, object]]:
    """Changes the declared figures or the schedule date of an envelope whose funds check has
    not started, under the envelope's status lock (so a funds step that starts meanwhile waits
    for this and then reads the new figures, or this sees it started and refuses). The figures
    can never go below what was already received. Returns the envelope and its figures before.
    """
    envelope = get_envelope(session, payload.disbursement_envelope_id)
    status = lock_status(session, envelope.id)
    session.refresh(envelope)  # a cancellation that committed while we waited for the lock
    if envelope.cancelled:
        raise Conflict(
            ErrorCode.DISBURSEMENT_ENVELOPE_ALREADY_CANCELED,
            f"envelope {envelope.id} is cancelled",
        )
    started = (
        status.lease_until is not None
        or status.funds_available_attempts > 0
        or status.funds_available_state != FundsAvailable.PENDING_CHECK
        or status.funds_blocked_state != FundsBlocked.PENDING_CHECK
    )
    if started:
        raise Conflict(
            ErrorCode.ENVELOPE_FUNDS_CHECK_STARTED,
            f"the funds check of envelope {envelope.id} has started; it can no longer be amended",
        )
    if envelope.schedule_date < today:
        raise InvalidRequest(
            ErrorCode.DISBURSEMENT_ENVELOPE_DATE_PASSED,
            f"envelope {envelope.id} was due on {envelope.schedule_date}",
        )
    problems: list[tuple[ErrorCode, str]] = []
    beneficiaries = payload.number_of_beneficiaries
    if beneficiaries is not None and beneficiaries < 1:
        problems.append(
            (ErrorCode.INVALID_NO_OF_BENEFICIARIES, "number_of_beneficiaries must be at least 1")
        )
    count = payload.number_of_disbursements
    if count is not None and count < max(1, status.received_count):
        problems.append(
            (
                ErrorCode.INVALID_NO_OF_DISBURSEMENTS,
                f"number_of_disbursements must be at least {max(1, status.received_count)}: "
                f"{status.received_count} were already received",
            )
        )
    total = payload.total_disbursement_amount
    if total is not None:
        if total <= 0 or total < status.received_amount:
            problems.append(
                (
                    ErrorCode.INVALID_TOTAL_DISBURSEMENT_AMOUNT,
                    "total_disbursement_amount must be greater than 0 and at least the "
                    f"{status.received_amount} already received",
                )
            )
        elif not has_valid_minor_units(total, envelope.currency):
            problems.append(
                (
                    ErrorCode.INVALID_TOTAL_DISBURSEMENT_AMOUNT,
                    f"total_disbursement_amount has more decimals than {envelope.currency} allows",
                )
            )
    schedule = payload.disbursement_schedule_date
    if schedule is not None and schedule < today:
        problems.append(
            (
                ErrorCode.INVALID_DISBURSEMENT_SCHEDULE_DATE,
                "disbursement_schedule_date may not be in the past",
            )
        )
    if problems:
        raise InvalidRequest(
            problems[0][0],
            "; ".join(m for _, m in problems),
            {"envelope": [c.value for c, _ in problems]},
        )
    before = amendable_figures(envelope)
    if beneficiaries is not None:
        envelope.number_of_beneficiaries = beneficiaries
    if count is not None:
        envelope.number_of_disbursements = count
    if total is not None:
        envelope.total_disbursement_amount = total
    if schedule is not None:
        envelope.schedule_date = schedule
    # Due at the next sweep if it now is, whatever a tick marked before.
    status.next_attempt_at = utcnow()
    approvals.void(session, envelope.id)  # the figures approved are no longer these
    session.flush()
    return envelope, before


def amendable_figures(envelope: DisbursementEnvelope) -> dict[str, object]:
    return {
        "number_of_beneficiaries": envelope.number_of_beneficiaries,
        "number_of_disbursements": envelope.number_of_disbursements,
        "total_disbursement_amount": str(envelope.total_disbursement_amount),
        "disbursement_schedule_date": envelope.schedule_date.isoformat(),
    }


@dataclass(frozen=True)
class EnvelopeFigures:
    """An envelope with its status row, its program and its disbursements counted by state."""

    envelope: DisbursementEnvelope
    status: EnvelopeStatus
    program: BenefitProgram
    by_state: dict[str, int]
    funds: FundsFigures
    # Four-eyes approval (core/approvals.py): NOT_REQUIRED, REQUIRED, AWAITING_APPROVAL...
    approval: str


def envelope_figures(session: Session, envelope_id: str | None) -> EnvelopeFigures:
    envelope = get_envelope(session, envelope_id)
    status = session.get(EnvelopeStatus, envelope.id, populate_existing=True)
    program = session.get(BenefitProgram, envelope.program_mnemonic)
    if status is None or program is None:
        raise BridgeError(ErrorCode.DISBURSEMENT_ENVELOPE_NOT_FOUND, "envelope has no status")
    found = states.breakdown(session, Disbursement.envelope_id == envelope.id, amounts=True)
    by_state = {state: count for state, (count, _) in found.items()}
    amounts = {state: amount for state, (_, amount) in found.items()}
    funds = funds_figures(session, envelope, status, amounts)
    approval = approvals.approval_state(session, envelope, status).value
    return EnvelopeFigures(envelope, status, program, by_state, funds, approval)


def list_envelopes(
    session: Session,
    program: str | None,
    offset: int,
    limit: int,
    programs: Collection[str] | None = None,
) -> tuple[list[DisbursementEnvelope], int]:
    """``programs``, when given, limits the listing to those (a client's grants)."""
    query = select(DisbursementEnvelope)
    if program:
        query = query.where(DisbursementEnvelope.program_mnemonic == program)
    if programs is not None:
        query = query.where(DisbursementEnvelope.program_mnemonic.in_(sorted(programs)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(DisbursementEnvelope.created_at.desc(), DisbursementEnvelope.id)
        .offset(offset)
        .limit(limit)
    )
    return list(rows), total
