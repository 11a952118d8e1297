"""Disbursement endpoints: create, cancel, status (G2P Connect) and an operator listing."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from g2p_bridge.api.access import (
    disbursement_envelopes,
    disbursement_programs,
    envelope_programs,
    guarded,
)
from g2p_bridge.api.envelopes import require_envelope
from g2p_bridge.api.handling import handle, settings_of, wake
from g2p_bridge.api.wire import json_response, request_body, success_header
from g2p_bridge.core import audit, disbursements
from g2p_bridge.core.errors import BridgeError, ErrorCode, InvalidRequest
from g2p_bridge.schemas import (
    INT32_MAX,
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


def _programs_of_envelopes(session: Session, req: DisbursementRequest) -> set[str]:
    return envelope_programs(session, [item.disbursement_envelope_id for item in req.message])


def _programs_of_items(session: Session, req: DisbursementRequest) -> set[str]:
    """For a cancellation the stored disbursement decides, whatever envelope the item names."""
    return _programs_of_envelopes(session, req) | disbursement_programs(
        session, [item.disbursement_id for item in req.message]
    )


def _audit_bulk(
    session: Session,
    action: str,
    items: list[DisbursementPayload],
    envelopes: dict[str, str] | None = None,
) -> None:
    """One event per envelope touched, with the count and id range: never one per item.
    ``envelopes`` maps disbursement ids to their envelope when the items do not say."""
    by_envelope: dict[str, list[DisbursementPayload]] = defaultdict(list)
    for item in items:
        envelope_id = item.disbursement_envelope_id or (envelopes or {}).get(
            item.disbursement_id or "", ""
        )
        by_envelope[envelope_id].append(item)
    for envelope_id, group in sorted(by_envelope.items()):
        amounts = [i.disbursement_amount for i in group if i.disbursement_amount is not None]
        audit.record(
            session,
            action,
            "disbursements",
            envelope_id or None,
            envelope_id=envelope_id or None,
            detail={
                **audit.id_range([i.disbursement_id or "" for i in group]),
                "total_amount": str(sum(amounts, Decimal(0))),
            },
        )


@router.post(
    "/create_disbursements",
    response_model=DisbursementResponse,
    openapi_extra=request_body(DisbursementRequest),
)
async def create_disbursements(request: Request) -> Response:
    limit = settings_of(request).max_disbursements_per_request

    def work(session: Session, req: DisbursementRequest) -> DisbursementResponse:
        stored = disbursements.create_disbursements(session, req.message, limit)
        _audit_bulk(session, "disbursements.create", stored)
        return DisbursementResponse(header=success_header(req.header, len(stored)), message=stored)

    response, req = await handle(
        request,
        _disbursement_request,
        work,
        replayable=True,
        bulk=True,
        on_refusal=_items_with_errors,
        programs_of=_programs_of_envelopes,
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
        owners = disbursement_envelopes(session, [c.disbursement_id for c in cancelled])
        _audit_bulk(session, "disbursements.cancel", cancelled, owners)
        return DisbursementResponse(
            header=success_header(req.header, len(cancelled)), message=cancelled
        )

    response, _ = await handle(
        request,
        _disbursement_request,
        work,
        replayable=True,
        bulk=True,
        on_refusal=_items_with_errors,
        programs_of=_programs_of_items,
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
        statuses = disbursements.disbursement_statuses(session, req.message)
        return DisbursementStatusResponse(
            header=success_header(req.header, len(statuses)), message=statuses
        )

    def programs_of(session: Session, req: DisbursementStatusRequest) -> set[str]:
        # Checked here, before the look-up of the programs, so it is never over the limit.
        if len(req.message) > limit:
            raise InvalidRequest(ErrorCode.TOO_MANY_ITEMS, f"at most {limit} ids per request")
        return disbursement_programs(session, req.message)

    response, _ = await handle(
        request, _status_request, work, replayable=False, programs_of=programs_of
    )
    return response


@router.get("/envelopes/{envelope_id}/disbursements", response_model=Page[DisbursementPayload])
async def list_disbursements(
    request: Request,
    envelope_id: str,
    state: str | None = Query(None, max_length=32),
    offset: int = Query(0, ge=0, le=INT32_MAX),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    def run(session: Session) -> Page[DisbursementPayload]:
        require_envelope(request, session, envelope_id)
        rows, total = disbursements.list_disbursements(session, envelope_id, state, offset, limit)
        items = [disbursements.disbursement_payload(r) for r in rows]
        return Page[DisbursementPayload](items=items, total=total, offset=offset, limit=limit)

    return await guarded(request, "envelopes/disbursements", run, json_response)
