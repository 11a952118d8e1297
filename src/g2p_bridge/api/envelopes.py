"""Envelope endpoints: create, cancel, amend, status (G2P Connect) and operator listings."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from g2p_bridge.api import views
from g2p_bridge.api.access import envelope_programs
from g2p_bridge.api.g2p_connect import AfterCommit, Caller, G2PRoute, PbmsCall, UnitOfWork
from g2p_bridge.api.wire import success_header
from g2p_bridge.auth import Principal
from g2p_bridge.core import audit, batches, envelopes, operations
from g2p_bridge.core.errors import ErrorCode, Forbidden
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import (
    INT32_MAX,
    SAFE_ID_PATTERN,
    BatchStatusView,
    EnvelopeBatchesPage,
    EnvelopeStatusPayload,
    EnvelopeView,
    Page,
)
from g2p_bridge.schemas import (
    DisbursementEnvelopeAmendRequest as EnvelopeAmendRequest,
)
from g2p_bridge.schemas import (
    DisbursementEnvelopeRequest as EnvelopeRequest,
)
from g2p_bridge.schemas import (
    DisbursementEnvelopeResponse as EnvelopeResponse,
)
from g2p_bridge.schemas import (
    DisbursementEnvelopeStatusRequest as EnvelopeStatusRequest,
)
from g2p_bridge.schemas import (
    DisbursementEnvelopeStatusResponse as EnvelopeStatusResponse,
)

router = APIRouter(tags=["envelopes"], route_class=G2PRoute)


@router.post("/create_disbursement_envelope", response_model=EnvelopeResponse)
def create_disbursement_envelope(req: EnvelopeRequest, call: PbmsCall) -> Response:
    def work(session: Session) -> EnvelopeResponse:
        envelope = envelopes.create_envelope(
            session, req.message, req.header.sender_id, utcnow().date()
        )
        payload = EnvelopeView.model_validate(envelope)
        audit.record(
            session,
            "envelope.create",
            "envelope",
            envelope.id,
            envelope_id=envelope.id,
            detail={"after": payload.model_dump(mode="json", exclude_none=True)},
        )
        return EnvelopeResponse(header=success_header(req.header, 1), message=payload)

    return call.answer(
        req, work, programs=lambda _session: {req.message.benefit_program_mnemonic or ""}
    )


@router.post("/cancel_disbursement_envelope", response_model=EnvelopeResponse)
def cancel_disbursement_envelope(req: EnvelopeRequest, call: PbmsCall) -> Response:
    def work(session: Session) -> EnvelopeResponse:
        envelope = envelopes.cancel_envelope(
            session, req.message.disbursement_envelope_id, call.settings
        )
        status = views.envelope_status(session, envelope.id)
        audit.record(
            session,
            "envelope.cancel",
            "envelope",
            envelope.id,
            envelope_id=envelope.id,
            detail={
                "before": {"cancelled": False},
                "after": {
                    "cancelled": True,
                    "disbursements_cancelled": status.number_of_disbursements_cancelled,
                },
            },
        )
        return EnvelopeResponse(
            header=success_header(req.header, 1), message=EnvelopeView.model_validate(envelope)
        )

    return call.answer(
        req,
        work,
        programs=lambda session: envelope_programs(session, [req.message.disbursement_envelope_id]),
    )


@router.post("/amend_disbursement_envelope", response_model=EnvelopeResponse)
def amend_disbursement_envelope(req: EnvelopeAmendRequest, call: PbmsCall) -> Response:
    def work(session: Session) -> EnvelopeResponse:
        envelope, before = envelopes.amend_envelope(session, req.message, utcnow().date())
        audit.record(
            session,
            "envelope.amend",
            "envelope",
            envelope.id,
            envelope_id=envelope.id,
            detail={"before": before, "after": envelopes.amendable_figures(envelope)},
        )
        return EnvelopeResponse(
            header=success_header(req.header, 1), message=EnvelopeView.model_validate(envelope)
        )

    return call.answer(
        req,
        work,
        programs=lambda session: envelope_programs(session, [req.message.disbursement_envelope_id]),
        wake="envelope_amended",
    )


@router.post("/get_disbursement_envelope_status", response_model=EnvelopeStatusResponse)
def get_disbursement_envelope_status(req: EnvelopeStatusRequest, call: PbmsCall) -> Response:
    def work(session: Session) -> EnvelopeStatusResponse:
        return EnvelopeStatusResponse(
            header=success_header(req.header, 1),
            message=views.envelope_status(session, req.message),
        )

    return call.answer(
        req,
        work,
        programs=lambda session: envelope_programs(session, [req.message]),
        replayable=False,
    )


@router.get("/envelopes", response_model=Page[EnvelopeView])
def list_envelopes(
    principal: Caller,
    session: UnitOfWork,
    program: str | None = Query(None, max_length=64),
    offset: int = Query(0, ge=0, le=INT32_MAX),
    limit: int = Query(50, ge=1, le=1000),
) -> Page[EnvelopeView]:
    granted = None
    if not principal.is_admin:
        principal.require_programs({program} if program else set())
        granted = principal.programs
    rows, total = envelopes.list_envelopes(session, program, offset, limit, granted)
    items = [EnvelopeView.model_validate(r) for r in rows]
    return Page[EnvelopeView](items=items, total=total, offset=offset, limit=limit)


def require_envelope(principal: Principal, session: Session, envelope_id: str) -> None:
    """An operator route on one envelope: admins, or a PBMS client granted its program."""
    if principal.is_admin:
        return
    if principal.role != "pbms":
        raise Forbidden(ErrorCode.ACCESS_DENIED, f"role {principal.role!r} may not do this")
    principal.require_programs(envelope_programs(session, [envelope_id]))


@router.get("/envelopes/{envelope_id}/status", response_model=EnvelopeStatusPayload)
def envelope_status(
    envelope_id: str, principal: Caller, session: UnitOfWork
) -> EnvelopeStatusPayload:
    require_envelope(principal, session, envelope_id)
    return views.envelope_status(session, envelope_id)


@router.get("/envelopes/{envelope_id}/batches", response_model=EnvelopeBatchesPage)
def envelope_batches(
    principal: Caller,
    session: UnitOfWork,
    envelope_id: str = Path(max_length=64, pattern=SAFE_ID_PATTERN),
    kind: Literal["mapper", "bank"] | None = Query(None),
    after: str | None = Query(None, max_length=80),
    limit: int = Query(100, ge=1, le=1000),
) -> EnvelopeBatchesPage:
    """Each mapper and bank batch of the envelope with its stage, attempts, last error and
    timestamps, mapper batches first, paged by ``after`` (the previous page's cursor)."""
    require_envelope(principal, session, envelope_id)
    envelope = envelopes.get_envelope(session, envelope_id)
    page = batches.envelope_batches(session, envelope.id, after, limit, kind)
    context = {"currency": envelope.currency}
    return EnvelopeBatchesPage(
        disbursement_envelope_id=envelope.id,
        counts=page.counts,
        items=[BatchStatusView.model_validate(i, context=context) for i in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/envelopes/{envelope_id}/release/retry", response_model=EnvelopeStatusPayload)
def retry_release(
    request: Request,
    principal: Caller,
    session: UnitOfWork,
    after: AfterCommit,
    envelope_id: str = Path(max_length=64, pattern=SAFE_ID_PATTERN),
) -> EnvelopeStatusPayload:
    """Gives a parked release of the envelope's unspent funds (FAILED after its last attempt)
    fresh attempts, as the console does for a parked bank batch."""
    principal.require_role("admin")
    settings = request.app.state.settings
    operations.requeue_funds_release(
        session, envelope_id, principal.client_id, principal.role, settings.max_attempts
    )
    after.wake("funds_release_requeued")
    return views.envelope_status(session, envelope_id)
