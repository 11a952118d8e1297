"""Disbursement endpoints: create, cancel, status (G2P Connect) and an operator listing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from g2p_bridge.api.handling import handle, session_factory, settings_of, wake
from g2p_bridge.api.wire import json_response, request_body, success_header
from g2p_bridge.core import disbursements
from g2p_bridge.core.errors import BridgeError
from g2p_bridge.db import transaction
from g2p_bridge.schemas import (
    DisbursementPayload,
    DisbursementRequest,
    DisbursementResponse,
    DisbursementStatusRequest,
    DisbursementStatusResponse,
    Page,
)

router = APIRouter(tags=["disbursements"])
_disbursement_request = TypeAdapter(DisbursementRequest)
_status_request = TypeAdapter(DisbursementStatusRequest)


def _items_with_errors(error: BridgeError, req: DisbursementRequest) -> list[dict[str, Any]]:
    """Echoes the request's items, each with its own error codes, as the reference does."""
    return [
        item.model_copy(
            update={"response_error_codes": error.item_errors.get(str(i), [])}
        ).model_dump(mode="json", exclude_none=True)
        for i, item in enumerate(req.message)
    ]


@router.post(
    "/create_disbursements",
    response_model=DisbursementResponse,
    openapi_extra=request_body(DisbursementRequest),
)
async def create_disbursements(request: Request) -> Response:
    limit = settings_of(request).max_disbursements_per_request

    def work(session: Session, req: DisbursementRequest) -> DisbursementResponse:
        stored = disbursements.create_disbursements(session, req.message, limit)
        return DisbursementResponse(header=success_header(req.header, len(stored)), message=stored)

    response, req = await handle(
        request, _disbursement_request, work, replayable=True, on_refusal=_items_with_errors
    )
    if req is not None:
        wake(request, "disbursements_received")
    return response


@router.post(
    "/cancel_disbursements",
    response_model=DisbursementResponse,
    openapi_extra=request_body(DisbursementRequest),
)
async def cancel_disbursements(request: Request) -> Response:
    limit = settings_of(request).max_disbursements_per_request

    def work(session: Session, req: DisbursementRequest) -> DisbursementResponse:
        cancelled = disbursements.cancel_disbursements(session, req.message, limit)
        return DisbursementResponse(
            header=success_header(req.header, len(cancelled)), message=cancelled
        )

    response, _ = await handle(
        request, _disbursement_request, work, replayable=True, on_refusal=_items_with_errors
    )
    return response


@router.post(
    "/get_disbursement_status",
    response_model=DisbursementStatusResponse,
    openapi_extra=request_body(DisbursementStatusRequest),
)
async def get_disbursement_status(request: Request) -> Response:
    limit = settings_of(request).max_disbursements_per_request

    def work(session: Session, req: DisbursementStatusRequest) -> DisbursementStatusResponse:
        if len(req.message) > limit:
            from g2p_bridge.core.errors import ErrorCode, InvalidRequest

            raise InvalidRequest(ErrorCode.TOO_MANY_ITEMS, f"at most {limit} ids per request")
        statuses = disbursements.disbursement_statuses(session, req.message)
        return DisbursementStatusResponse(
            header=success_header(req.header, len(statuses)), message=statuses
        )

    response, _ = await handle(request, _status_request, work, replayable=False)
    return response


@router.get("/envelopes/{envelope_id}/disbursements", response_model=Page[DisbursementPayload])
async def list_disbursements(
    request: Request,
    envelope_id: str,
    state: str | None = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    def run() -> Page[DisbursementPayload]:
        with transaction(session_factory(request)) as session:
            rows, total = disbursements.list_disbursements(
                session, envelope_id, state, offset, limit
            )
            items = [disbursements.disbursement_payload(r) for r in rows]
        return Page[DisbursementPayload](items=items, total=total, offset=offset, limit=limit)

    return json_response(await run_in_threadpool(run))
