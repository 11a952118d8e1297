"""Disbursement endpoints: create, cancel, status (G2P Connect) and an operator listing."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from g2p_bridge.api import views
from g2p_bridge.api.access import (
    disbursement_envelopes,
    disbursement_programs,
    envelope_programs,
)
from g2p_bridge.api.envelopes import require_envelope
from g2p_bridge.api.g2p_connect import BulkRoute, Caller, G2PRoute, PbmsCall, UnitOfWork
from g2p_bridge.api.wire import success_header
from g2p_bridge.connectors.mappers.base import AddressParser
from g2p_bridge.core import audit, disbursements, envelopes
from g2p_bridge.core.errors import ErrorCode, InvalidRequest
from g2p_bridge.schemas import (
    INT32_MAX,
    DisbursementPayload,
    DisbursementRequest,
    DisbursementResponse,
    DisbursementStatusRequest,
    DisbursementStatusResponse,
    DisbursementView,
    Page,
)

router = APIRouter(tags=["disbursements"], route_class=G2PRoute)
# Requests of up to max_disbursements_per_request items each: run holding a bulk slot.
bulk = APIRouter(route_class=BulkRoute)


def _programs_of_envelopes(session: Session, items: list[DisbursementPayload]) -> set[str]:
    return envelope_programs(session, [item.disbursement_envelope_id for item in items])


def _programs_of_items(session: Session, items: list[DisbursementPayload]) -> set[str]:
    """For a cancellation the stored disbursement decides, whatever envelope the item names."""
    return _programs_of_envelopes(session, items) | disbursement_programs(
        session, [item.disbursement_id for item in items]
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


@bulk.post("/create_disbursements", response_model=DisbursementResponse, tags=["disbursements"])
def create_disbursements(req: DisbursementRequest, call: PbmsCall) -> Response:
    limit = call.settings.max_disbursements_per_request
    # Its patterns come from re's compiled-pattern cache after the first request.
    parser = AddressParser(call.settings)

    def work(session: Session) -> DisbursementResponse:
        stored = disbursements.create_disbursements(session, req.message, limit, parser)
        _audit_bulk(session, "disbursements.create", stored)
        return DisbursementResponse(header=success_header(req.header, len(stored)), message=stored)

    return call.answer(
        req,
        work,
        programs=lambda session: _programs_of_envelopes(session, req.message),
        wake="disbursements_received",
    )


@bulk.post("/cancel_disbursements", response_model=DisbursementResponse, tags=["disbursements"])
def cancel_disbursements(req: DisbursementRequest, call: PbmsCall) -> Response:
    limit = call.settings.max_disbursements_per_request

    def work(session: Session) -> DisbursementResponse:
        cancelled = disbursements.cancel_disbursements(session, req.message, limit, call.settings)
        owners = disbursement_envelopes(session, [c.disbursement_id for c in cancelled])
        _audit_bulk(session, "disbursements.cancel", cancelled, owners)
        return DisbursementResponse(
            header=success_header(req.header, len(cancelled)), message=cancelled
        )

    return call.answer(req, work, programs=lambda session: _programs_of_items(session, req.message))


@router.post("/get_disbursement_status", response_model=DisbursementStatusResponse)
def get_disbursement_status(req: DisbursementStatusRequest, call: PbmsCall) -> Response:
    limit = call.settings.max_disbursements_per_request

    def work(session: Session) -> DisbursementStatusResponse:
        statuses = views.disbursement_statuses(session, req.message)
        return DisbursementStatusResponse(
            header=success_header(req.header, len(statuses)), message=statuses
        )

    def programs(session: Session) -> set[str]:
        # Checked here, before the look-up of the programs, so it is never over the limit.
        if len(req.message) > limit:
            raise InvalidRequest(ErrorCode.TOO_MANY_ITEMS, f"at most {limit} ids per request")
        return disbursement_programs(session, req.message)

    return call.answer(req, work, programs=programs, replayable=False)


@router.get("/envelopes/{envelope_id}/disbursements", response_model=Page[DisbursementView])
def list_disbursements(
    envelope_id: str,
    principal: Caller,
    session: UnitOfWork,
    state: str | None = Query(None, max_length=32),
    offset: int = Query(0, ge=0, le=INT32_MAX),
    limit: int = Query(100, ge=1, le=1000),
) -> Page[DisbursementView]:
    require_envelope(principal, session, envelope_id)
    rows, total = disbursements.list_disbursements(session, envelope_id, state, offset, limit)
    currency = {"currency": envelopes.get_envelope(session, envelope_id).currency}
    items = [DisbursementView.model_validate(r, context=currency) for r in rows]
    return Page[DisbursementView](items=items, total=total, offset=offset, limit=limit)


router.include_router(bulk)
