"""Four-eyes approval over the API: ``POST /envelopes/{id}/approve`` and ``/reject``, for role
``approver`` granted the envelope's program, or ``admin``. The caller's client id is the
approver; the domain refuses the envelope's sender and amenders."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from g2p_bridge.api.access import envelope_programs, guarded
from g2p_bridge.api.handling import wake
from g2p_bridge.api.security import principal_of
from g2p_bridge.api.wire import json_response, read_body
from g2p_bridge.core import approvals
from g2p_bridge.core.errors import ErrorCode, Forbidden, InvalidRequest

router = APIRouter(tags=["approvals"])
_BODY_LIMIT = 4096


async def _note(request: Request) -> str | None:
    """An optional JSON body ``{"note": "..."}``."""
    body = await read_body(request, _BODY_LIMIT)
    if not body.strip():
        return None
    try:
        data: Any = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, "the body must be JSON") from exc
    note = data.get("note") if isinstance(data, dict) else None
    if note is not None and not isinstance(note, str):
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, "note must be a string")
    return note


async def _decide(request: Request, envelope_id: str, approve: bool) -> Response:
    principal = principal_of(request)
    note = await _note(request)

    def run(session: Session) -> approvals.Decision:
        if not principal.is_admin:
            if principal.role != "approver":
                raise Forbidden(
                    ErrorCode.ACCESS_DENIED, f"role {principal.role!r} may not approve envelopes"
                )
            outside = envelope_programs(session, [envelope_id]) - principal.programs
            if outside:
                raise Forbidden(
                    ErrorCode.ACCESS_DENIED,
                    f"client {principal.client_id!r} is not granted program(s) "
                    f"{', '.join(sorted(outside))}",
                )
        return approvals.decide(
            session, envelope_id, principal.client_id, principal.role, approve, note
        )

    action = "envelope.approve" if approve else "envelope.reject"
    response = await guarded(request, action, run, lambda d: json_response(d.as_json()))
    if response.status_code == 200:
        wake(request, "envelope_approved" if approve else "envelope_rejected")
    return response


@router.post("/envelopes/{envelope_id}/approve")
async def approve_envelope(request: Request, envelope_id: str) -> Response:
    return await _decide(request, envelope_id, approve=True)


@router.post("/envelopes/{envelope_id}/reject")
async def reject_envelope(request: Request, envelope_id: str) -> Response:
    return await _decide(request, envelope_id, approve=False)
