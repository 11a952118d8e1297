"""Four-eyes approval (maker-checker) of an envelope before its funds are blocked.

A program with ``approval_required`` holds every envelope whose declared total is at least its
``approval_threshold`` (0: every envelope), and every envelope submitted as a payroll file
(core/payroll_files.py: no PBMS checked its figures) is held whatever its program says, until a
second person decides:

- *awaiting approval*: every declared disbursement has arrived, nobody has decided yet; the
  funds sweep (``funds.due_envelopes``, through ``funds_may_proceed``) passes it by;
- *approved*: the sweep blocks its funds and the pipeline goes on as for any envelope;
- *rejected*: the envelope is cancelled through ``envelopes.cancel_envelope``.

The approver may be neither the client that submitted the envelope (``sender_id``) nor anyone
who amended it (the audit trail's ``envelope.amend`` events): the person who made the figures
does not check them. An amendment after an approval voids it (``void``), since the figures
approved are no longer the envelope's. Both decisions are audited with who, when and the
envelope's figures at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, not_, or_, select
from sqlalchemy.orm import Session

from g2p_bridge.core import audit, envelopes
from g2p_bridge.core.errors import Conflict, ErrorCode, Forbidden
from g2p_bridge.core.operations import clean_note
from g2p_bridge.models import (
    AuditEvent,
    BenefitProgram,
    DisbursementEnvelope,
    EnvelopeApproval,
    EnvelopeStatus,
    PayrollFile,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import FundsBlocked
from g2p_bridge.settings import Settings

APPROVED = "APPROVED"
REJECTED = "REJECTED"


class ApprovalState(StrEnum):
    NOT_REQUIRED = "NOT_REQUIRED"
    # Needs approval but not every disbursement has arrived yet: nothing to approve so far.
    REQUIRED = "REQUIRED"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


def _needs_clause() -> ColumnElement[bool]:
    """SQL: the envelope's program holds it for approval, or it came as a payroll file
    (correlated on the envelope row)."""
    return or_(
        exists(
            select(BenefitProgram.mnemonic).where(
                BenefitProgram.mnemonic == DisbursementEnvelope.program_mnemonic,
                BenefitProgram.approval_required.is_(True),
                DisbursementEnvelope.total_disbursement_amount >= BenefitProgram.approval_threshold,
            )
        ),
        exists(
            select(PayrollFile.sha256).where(PayrollFile.envelope_id == DisbursementEnvelope.id)
        ),
    )


def _approved_clause() -> ColumnElement[bool]:
    return exists(
        select(EnvelopeApproval.envelope_id).where(
            EnvelopeApproval.envelope_id == DisbursementEnvelope.id,
            EnvelopeApproval.decision == APPROVED,
        )
    )


def funds_may_proceed() -> ColumnElement[bool]:
    """The funds sweep's condition: no approval needed, or one given (on the declared figures
    as they are now: an amendment deletes the approval)."""
    return or_(not_(_needs_clause()), _approved_clause())


def awaiting_clause() -> ColumnElement[bool]:
    """SQL for "awaiting approval": complete, uncancelled, needs approval, nobody decided."""
    return and_(
        DisbursementEnvelope.cancelled.is_(False),
        EnvelopeStatus.received_count == DisbursementEnvelope.number_of_disbursements,
        _needs_clause(),
        not_(
            exists(
                select(EnvelopeApproval.envelope_id).where(
                    EnvelopeApproval.envelope_id == DisbursementEnvelope.id
                )
            )
        ),
    )


def needs_approval(program: BenefitProgram, envelope: DisbursementEnvelope) -> bool:
    """The program's rule (a payroll file's envelope needs approval whatever it says: see
    ``envelope_needs_approval``)."""
    return bool(program.approval_required) and (
        envelope.total_disbursement_amount >= (program.approval_threshold or Decimal(0))
    )


def from_payroll_file(session: Session, envelope_id: str) -> bool:
    return (
        session.scalar(select(PayrollFile.sha256).where(PayrollFile.envelope_id == envelope_id))
        is not None
    )


def envelope_needs_approval(session: Session, envelope: DisbursementEnvelope) -> bool:
    """The same rule as ``_needs_clause``, for one envelope in hand."""
    program = session.get(BenefitProgram, envelope.program_mnemonic)
    if program is not None and needs_approval(program, envelope):
        return True
    return from_payroll_file(session, envelope.id)


def may_block_funds(session: Session, envelope: DisbursementEnvelope) -> bool:
    """The same rule as ``funds_may_proceed``, for one envelope already in hand (the funds step
    checks it again under its claim: an amendment may have voided the approval since the
    sweep)."""
    if not envelope_needs_approval(session, envelope):
        return True
    decision = session.get(EnvelopeApproval, envelope.id, populate_existing=True)
    return decision is not None and decision.decision == APPROVED


def approval_state(
    session: Session, envelope: DisbursementEnvelope, status: EnvelopeStatus
) -> ApprovalState:
    decision = session.get(EnvelopeApproval, envelope.id)
    if decision is not None:
        return ApprovalState(decision.decision)
    if not envelope_needs_approval(session, envelope):
        return ApprovalState.NOT_REQUIRED
    if status.received_count < envelope.number_of_disbursements:
        return ApprovalState.REQUIRED
    return ApprovalState.AWAITING_APPROVAL


@dataclass(frozen=True)
class Decision:
    envelope_id: str
    decision: str
    decided_by: str
    decided_at: str
    figures: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "disbursement_envelope_id": self.envelope_id,
            "decision": self.decision,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "figures": self.figures,
        }


def figures(envelope: DisbursementEnvelope, status: EnvelopeStatus) -> dict[str, Any]:
    return {
        "number_of_disbursements_declared": envelope.number_of_disbursements,
        "total_disbursement_amount_declared": str(envelope.total_disbursement_amount),
        "number_of_disbursements_received": status.received_count,
        "total_disbursement_amount_received": str(status.received_amount),
        "currency": envelope.currency,
        "schedule_date": envelope.schedule_date.isoformat(),
    }


def makers(session: Session, envelope: DisbursementEnvelope) -> set[str]:
    """Who made the envelope's figures: its sender and everyone who amended it."""
    amenders = session.scalars(
        select(AuditEvent.actor)
        .where(
            AuditEvent.envelope_id == envelope.id,
            AuditEvent.action == "envelope.amend",
            AuditEvent.outcome == "ok",
        )
        .distinct()
    )
    return {envelope.sender_id, *amenders}


def decide(
    session: Session,
    envelope_id: str,
    approver: str,
    role: str | None,
    approve: bool,
    note: str | None = None,
    settings: Settings | None = None,
) -> Decision:
    """Approves or rejects, under the envelope's status lock (so an amendment or the funds step
    cannot interleave). Refuses the envelope's makers, an envelope that needs no approval, one
    not yet complete, cancelled, already decided or already funded."""
    note = clean_note(note, required=False)
    envelope = envelopes.get_envelope(session, envelope_id)
    status = envelopes.lock_status(session, envelope.id)
    session.refresh(envelope)
    action = "envelope.approve" if approve else "envelope.reject"
    if approver in makers(session, envelope):
        raise Forbidden(
            ErrorCode.ACCESS_DENIED,
            f"{approver!r} submitted or amended envelope {envelope.id}; "
            "a second person must decide",
        )
    if envelope.cancelled:
        raise Conflict(
            ErrorCode.DISBURSEMENT_ENVELOPE_ALREADY_CANCELED, f"envelope {envelope.id} is cancelled"
        )
    state = approval_state(session, envelope, status)
    if state is ApprovalState.NOT_REQUIRED:
        raise Conflict(ErrorCode.APPROVAL_NOT_REQUIRED, f"envelope {envelope.id} needs no approval")
    if state in (ApprovalState.APPROVED, ApprovalState.REJECTED):
        raise Conflict(
            ErrorCode.APPROVAL_ALREADY_DECIDED,
            f"envelope {envelope.id} was already {state.value.lower()}",
        )
    if state is ApprovalState.REQUIRED:
        raise Conflict(
            ErrorCode.APPROVAL_NOT_READY,
            f"envelope {envelope.id} has {status.received_count} of its "
            f"{envelope.number_of_disbursements} disbursements; approve it once all arrived",
        )
    if status.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS:
        raise Conflict(
            ErrorCode.ENVELOPE_FUNDS_CHECK_STARTED, f"funds of envelope {envelope.id} are blocked"
        )
    seen = figures(envelope, status)
    now = utcnow()
    session.add(
        EnvelopeApproval(
            envelope_id=envelope.id,
            decision=APPROVED if approve else REJECTED,
            decided_by=approver,
            decided_at=now,
            total_amount=envelope.total_disbursement_amount,
            disbursement_count=envelope.number_of_disbursements,
            note=note or None,
        )
    )
    detail: dict[str, Any] = {"figures": seen, "note": note or None}
    if approve:
        # Due at the next funds sweep rather than after whatever backoff a tick set.
        status.next_attempt_at = now
    else:
        envelopes.cancel_envelope(session, envelope.id, settings)
        refreshed = envelopes.envelope_figures(session, envelope.id)
        detail["disbursements_cancelled"] = refreshed.status.cancelled_count
    audit.record(
        session,
        action,
        "envelope",
        envelope.id,
        envelope_id=envelope.id,
        actor=approver,
        role=role,
        detail=detail,
    )
    session.flush()
    return Decision(envelope.id, APPROVED if approve else REJECTED, approver, now.isoformat(), seen)


def void(session: Session, envelope_id: str) -> bool:
    """An amendment changed the figures: an approval given on the old ones no longer holds."""
    result = session.execute(
        delete(EnvelopeApproval)
        .where(EnvelopeApproval.envelope_id == envelope_id, EnvelopeApproval.decision == APPROVED)
        .execution_options(synchronize_session=False)
    )
    voided = bool(result.rowcount)  # type: ignore[attr-defined]
    if voided:
        audit.record(
            session,
            "envelope.approval_void",
            "envelope",
            envelope_id,
            envelope_id=envelope_id,
            detail={"reason": "envelope amended after approval"},
        )
    return voided
