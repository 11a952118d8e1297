"""Envelope endpoints: create, cancel, status (G2P Connect) and an operator listing."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from g2p_bridge.api.access import envelope_programs, guarded
from g2p_bridge.api.handling import handle, wake
from g2p_bridge.api.security import principal_of
from g2p_bridge.api.wire import json_response, request_body, success_header
from g2p_bridge.core import audit, envelopes
from g2p_bridge.core.errors import ErrorCode, Forbidden
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import INT32_MAX, EnvelopePayload, EnvelopeStatusPayload, Page
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

router = APIRouter(tags=["envelopes"])

_envelope_request = TypeAdapter(EnvelopeRequest)
_status_request = TypeAdapter(EnvelopeStatusRequest)
_amend_request = TypeAdapter(EnvelopeAmendRequest)


def _programs_of_envelope(session: Session, req: EnvelopeRequest) -> set[str]:
    return envelope_programs(session, [req.message.disbursement_envelope_id])


@router.post(
    "/create_disbursement_envelope",
    response_model=EnvelopeResponse,
    openapi_extra=request_body(EnvelopeRequest),
)
async def create_disbursement_envelope(request: Request) -> Response:
    def work(session: Session, req: EnvelopeRequest) -> EnvelopeResponse:
        envelope = envelopes.create_envelope(
            session, req.message, req.header.sender_id, utcnow().date()
        )
        payload = envelopes.envelope_payload(envelope)
        audit.record(
            session,
            "envelope.create",
            "envelope",
            envelope.id,
            envelope_id=envelope.id,
            detail={"after": payload.model_dump(mode="json", exclude_none=True)},
        )
        return EnvelopeResponse(header=success_header(req.header, 1), message=payload)

    response, _ = await handle(
        request,
        _envelope_request,
        work,
        replayable=True,
        programs_of=lambda _s, req: {req.message.benefit_program_mnemonic or ""},
    )
    return response


@router.post(
    "/cancel_disbursement_envelope",
    response_model=EnvelopeResponse,
    openapi_extra=request_body(EnvelopeRequest),
)
async def cancel_disbursement_envelope(request: Request) -> Response:
    def work(session: Session, req: EnvelopeRequest) -> EnvelopeResponse:
        envelope = envelopes.cancel_envelope(session, req.message.disbursement_envelope_id)
        status = envelopes.envelope_status(session, envelope.id)
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
            header=success_header(req.header, 1), message=envelopes.envelope_payload(envelope)
        )

    response, _ = await handle(
        request, _envelope_request, work, replayable=True, programs_of=_programs_of_envelope
    )
    return response


@router.post(
    "/amend_disbursement_envelope",
    response_model=EnvelopeResponse,
    openapi_extra=request_body(EnvelopeAmendRequest),
)
async def amend_disbursement_envelope(request: Request) -> Response:
    def work(session: Session, req: EnvelopeAmendRequest) -> EnvelopeResponse:
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
            header=success_header(req.header, 1), message=envelopes.envelope_payload(envelope)
        )

    response, req = await handle(
        request,
        _amend_request,
        work,
        replayable=True,
        programs_of=lambda session, req: envelope_programs(
            session, [req.message.disbursement_envelope_id]
        ),
    )
    if req is not None:
        wake(request, "envelope_amended")
    return response


@router.post(
    "/get_disbursement_envelope_status",
    response_model=EnvelopeStatusResponse,
    openapi_extra=request_body(EnvelopeStatusRequest),
)
async def get_disbursement_envelope_status(request: Request) -> Response:
    def work(session: Session, req: EnvelopeStatusRequest) -> EnvelopeStatusResponse:
        return EnvelopeStatusResponse(
            header=success_header(req.header, 1),
            message=envelopes.envelope_status(session, req.message),
        )

    response, _ = await handle(
        request,
        _status_request,
        work,
        replayable=False,
        programs_of=lambda session, req: envelope_programs(session, [req.message]),
    )
    return response


@router.get("/envelopes", response_model=Page[EnvelopePayload])
async def list_envelopes(
    request: Request,
    program: str | None = Query(None, max_length=64),
    offset: int = Query(0, ge=0, le=INT32_MAX),
    limit: int = Query(50, ge=1, le=1000),
) -> Response:
    principal = principal_of(request)

    def run(session: Session) -> Page[EnvelopePayload]:
        granted = None
        if not principal.is_admin:
            principal.require_programs({program} if program else set())
            granted = principal.programs
        rows, total = envelopes.list_envelopes(session, program, offset, limit, granted)
        items = [envelopes.envelope_payload(r) for r in rows]
        return Page[EnvelopePayload](items=items, total=total, offset=offset, limit=limit)

    return await guarded(request, "envelopes", run, json_response)


def require_envelope(request: Request, session: Session, envelope_id: str) -> None:
    """An operator route on one envelope: admins, or a PBMS client granted its program."""
    principal = principal_of(request)
    if principal.is_admin:
        return
    if principal.role != "pbms":
        raise Forbidden(ErrorCode.ACCESS_DENIED, f"role {principal.role!r} may not do this")
    principal.require_programs(envelope_programs(session, [envelope_id]))


@router.get("/envelopes/{envelope_id}/status", response_model=EnvelopeStatusPayload)
async def envelope_status(request: Request, envelope_id: str) -> Response:
    def run(session: Session) -> EnvelopeStatusPayload:
        require_envelope(request, session, envelope_id)
        return envelopes.envelope_status(session, envelope_id)

    return await guarded(request, "envelopes/status", run, json_response)


__all__ = ["router", "wake"]
