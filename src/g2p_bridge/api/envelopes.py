"""Envelope endpoints: create, cancel, status (G2P Connect) and an operator listing."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import TypeAdapter

from g2p_bridge.api.handling import handle, session_factory, wake
from g2p_bridge.api.wire import json_response, request_body, success_header
from g2p_bridge.core import envelopes
from g2p_bridge.db import transaction
from g2p_bridge.models.base import utcnow
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
from g2p_bridge.schemas import EnvelopePayload, EnvelopeStatusPayload, Page

router = APIRouter(tags=["envelopes"])

_envelope_request = TypeAdapter(EnvelopeRequest)
_status_request = TypeAdapter(EnvelopeStatusRequest)


@router.post(
    "/create_disbursement_envelope",
    response_model=EnvelopeResponse,
    openapi_extra=request_body(EnvelopeRequest),
)
async def create_disbursement_envelope(request: Request) -> Response:
    def work(session, req: EnvelopeRequest) -> EnvelopeResponse:  # type: ignore[no-untyped-def]
        envelope = envelopes.create_envelope(
            session, req.message, req.header.sender_id, utcnow().date()
        )
        return EnvelopeResponse(
            header=success_header(req.header, 1), message=envelopes.envelope_payload(envelope)
        )

    response, _ = await handle(request, _envelope_request, work, replayable=True)
    return response


@router.post(
    "/cancel_disbursement_envelope",
    response_model=EnvelopeResponse,
    openapi_extra=request_body(EnvelopeRequest),
)
async def cancel_disbursement_envelope(request: Request) -> Response:
    def work(session, req: EnvelopeRequest) -> EnvelopeResponse:  # type: ignore[no-untyped-def]
        envelope = envelopes.cancel_envelope(session, req.message.disbursement_envelope_id)
        return EnvelopeResponse(
            header=success_header(req.header, 1), message=envelopes.envelope_payload(envelope)
        )

    response, _ = await handle(request, _envelope_request, work, replayable=True)
    return response


@router.post(
    "/get_disbursement_envelope_status",
    response_model=EnvelopeStatusResponse,
    openapi_extra=request_body(EnvelopeStatusRequest),
)
async def get_disbursement_envelope_status(request: Request) -> Response:
    def work(session, req: EnvelopeStatusRequest) -> EnvelopeStatusResponse:  # type: ignore[no-untyped-def]
        return EnvelopeStatusResponse(
            header=success_header(req.header, 1),
            message=envelopes.envelope_status(session, req.message),
        )

    response, _ = await handle(request, _status_request, work, replayable=False)
    return response


@router.get("/envelopes", response_model=Page[EnvelopePayload])
async def list_envelopes(
    request: Request,
    program: str | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=1000),
) -> Response:
    def run() -> Page[EnvelopePayload]:
        with transaction(session_factory(request)) as session:
            rows, total = envelopes.list_envelopes(session, program, offset, limit)
            items = [envelopes.envelope_payload(r) for r in rows]
        return Page[EnvelopePayload](items=items, total=total, offset=offset, limit=limit)

    return json_response(await run_in_threadpool(run))


@router.get("/envelopes/{envelope_id}/status", response_model=EnvelopeStatusPayload)
async def envelope_status(request: Request, envelope_id: str) -> Response:
    def run() -> EnvelopeStatusPayload:
        with transaction(session_factory(request)) as session:
            return envelopes.envelope_status(session, envelope_id)

    return json_response(await run_in_threadpool(run))


__all__ = ["router", "wake"]
