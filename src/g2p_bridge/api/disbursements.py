"""Disbursement endpoints: create, cancel, status (G2P Connect) and an operator listing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic_core import to_json
from sqlalchemy.orm import Session

from g2p_bridge.api import views
from g2p_bridge.api.access import (
    disbursement_envelopes,
    disbursement_programs,
    envelope_programs,
)
from g2p_bridge.api.envelopes import require_envelope
from g2p_bridge.api.g2p_connect import (
    BulkRoute,
    Caller,
    G2PCall,
    G2PRoute,
    PbmsCall,
    UnitOfWork,
    echo_validated,
    lean,
)
from g2p_bridge.api.lean_ingest import LeanDisbursement, LeanRequest, lean_request
from g2p_bridge.api.wire import success_header
from g2p_bridge.connectors.mappers.base import AddressParser
from g2p_bridge.core import audit, disbursements, envelopes
from g2p_bridge.core.disbursements import NewDisbursement
from g2p_bridge.core.errors import BridgeError, ErrorCode, InvalidRequest
from g2p_bridge.schemas import (
    INT32_MAX,
    CancellationStatus,
    DisbursementPayload,
    DisbursementRequest,
    DisbursementResponse,
    DisbursementStatusRequest,
    DisbursementStatusResponse,
    DisbursementView,
    Page,
    ResponseHeader,
)

router = APIRouter(tags=["disbursements"], route_class=G2PRoute)
# Requests of up to max_disbursements_per_request items each: run holding a bulk slot.
bulk = APIRouter(route_class=BulkRoute)


def _programs_of_envelopes(session: Session, items: Sequence[NewDisbursement]) -> set[str]:
    return envelope_programs(session, [item.disbursement_envelope_id for item in items])


def _programs_of_items(session: Session, items: list[DisbursementPayload]) -> set[str]:
    """For a cancellation the stored disbursement decides, whatever envelope the item names."""
    return _programs_of_envelopes(session, items) | disbursement_programs(
        session, [item.disbursement_id for item in items]
    )


def _audit_bulk(
    session: Session,
    action: str,
    items: Sequence[NewDisbursement],
    envelopes: dict[str, str] | None = None,
) -> None:
    """One event per envelope touched, with the count and id range: never one per item.
    ``envelopes`` maps disbursement ids to their envelope when the items do not say."""
    by_envelope: dict[str, list[NewDisbursement]] = defaultdict(list)
    for item in items:
        envelope_id = item.disbursement_envelope_id or (envelopes or {}).get(
            item.disbursement_id or "", ""
        )
        by_envelope[envelope_id].append(item)
    for envelope_id, group in sorted(by_envelope.items()):
        _audit_envelope(
            session,
            action,
            envelope_id,
            [i.disbursement_id or "" for i in group],
            [i.disbursement_amount for i in group if i.disbursement_amount is not None],
        )


def _audit_envelope(
    session: Session, action: str, envelope_id: str, ids: list[str], amounts: list[Decimal]
) -> None:
    audit.record(
        session,
        action,
        "disbursements",
        envelope_id or None,
        envelope_id=envelope_id or None,
        detail={**audit.id_range(ids), "total_amount": str(sum(amounts, Decimal(0)))},
    )


async def _create_lean(request: Request, data: Any) -> Response | None:
    """``create_disbursements`` by the lean wire path (api/lean_ingest.py), or None for a
    request it does not take."""
    call = G2PCall(request, ("pbms",))
    req = lean_request(data, call.settings.max_string_length)
    if req is None:
        return None
    return await run_in_threadpool(_create_from_tuples, req, call, data)


def created_answer(
    header: ResponseHeader, items: Sequence[LeanDisbursement], stored: disbursements.Stored
) -> bytes:
    """``DisbursementResponse(header=header, message=<each item as stored>)``'s JSON, byte for
    byte (tests/bridge/test_lean_ingest.py), written by orjson from the items and rows: the
    header and the timestamp by pydantic itself; amounts as pydantic writes a Decimal, its
    str(); every string passed the lean path's checks (no control character to escape)."""
    received = to_json(stored.now).decode()[1:-1]
    answer = [
        {
            "id": row["id"],
            "mis_reference_number": item.mis_reference_number,
            "disbursement_id": row["id"],
            "disbursement_envelope_id": item.disbursement_envelope_id,
            "beneficiary_id": item.beneficiary_id,
            "beneficiary_name": item.beneficiary_name,
            "disbursement_amount": item.disbursement_amount,
            "narrative": item.narrative,
            "financial_address": item.financial_address,
            "receipt_time_stamp": received,
            "cancellation_status": CancellationStatus.NOT_CANCELLED.value,
            "cancellation_time_stamp": None,
            "state": row["state"],
            "state_reason": row["state_reason"],
            "response_error_codes": None,
        }
        for item, row in zip(items, stored.rows, strict=True)
    ]
    return b"".join(
        (
            b'{"signature":null,"header":',
            header.model_dump_json().encode(),
            b',"message":',
            orjson.dumps(answer, default=_decimal_text),
            b"}",
        )
    )


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _create_from_tuples(req: LeanRequest, call: G2PCall, data: Any) -> Response:
    """The same work and answer as ``create_disbursements``, from tuples."""
    limit = call.settings.max_disbursements_per_request
    parser = AddressParser(call.settings)

    def work(session: Session) -> bytes:
        items = req.message
        stored = disbursements.create_disbursements(session, items, limit, parser, as_rows=True)
        # _audit_bulk's one event: a stored request is all of one envelope, every amount given.
        _audit_envelope(
            session,
            "disbursements.create",
            items[0].disbursement_envelope_id or "",
            [str(row["id"]) for row in stored.rows],
            [item.disbursement_amount for item in items if item.disbursement_amount is not None],
        )
        header = success_header(req.header, len(stored.rows))
        return created_answer(header, items, stored)

    def echo(error: BridgeError) -> list[Any] | None:
        # A refusal (rare) echoes the items as the full path does: from the schema's models,
        # which take this body (the lean path took it).
        return echo_validated(DisbursementRequest.model_validate(data), error)

    return call.answer(
        req,
        work,
        programs=lambda session: _programs_of_envelopes(session, req.message),
        wake="disbursements_received",
        echo=echo,
    )


@bulk.post("/create_disbursements", response_model=DisbursementResponse, tags=["disbursements"])
@lean(_create_lean)
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
