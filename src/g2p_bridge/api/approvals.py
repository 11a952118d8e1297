"""Four-eyes approval over the API: ``POST /envelopes/{id}/approve`` and ``/reject``, for role
``approver`` granted the envelope's program, or ``admin``. The caller's client id is the
approver; the domain refuses the envelope's sender and amenders."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from g2p_bridge.api.access import envelope_programs
from g2p_bridge.api.g2p_connect import AfterCommit, Caller, G2PRoute, UnitOfWork
from g2p_bridge.auth import Principal
from g2p_bridge.core import approvals
from g2p_bridge.core.errors import ErrorCode, Forbidden

router = APIRouter(tags=["approvals"], route_class=G2PRoute)


class ApprovalNote(BaseModel):
    """The optional body of a decision."""

    note: str | None = Field(default=None, max_length=1024)


def _decide(
    request: Request,
    principal: Principal,
    session: Session,
    envelope_id: str,
    approve: bool,
    body: ApprovalNote | None,
) -> dict[str, Any]:
    # Refusals are audited under the decision's own name, as its successes are.
    request.state.g2p_action = "envelope.approve" if approve else "envelope.reject"
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
    decision = approvals.decide(
        session,
        envelope_id,
        principal.client_id,
        principal.role,
        approve,
        body.note if body is not None else None,
    )
    return decision.as_json()


@router.post("/envelopes/{envelope_id}/approve")
def approve_envelope(
    request: Request,
    envelope_id: str,
    principal: Caller,
    session: UnitOfWork,
    after: AfterCommit,
    body: ApprovalNote | None = None,
) -> dict[str, Any]:
    answer = _decide(request, principal, session, envelope_id, True, body)
    after.wake("envelope_approved")
    return answer


@router.post("/envelopes/{envelope_id}/reject")
def reject_envelope(
    request: Request,
    envelope_id: str,
    principal: Caller,
    session: UnitOfWork,
    after: AfterCommit,
    body: ApprovalNote | None = None,
) -> dict[str, Any]:
    answer = _decide(request, principal, session, envelope_id, False, body)
    after.wake("envelope_rejected")
    return answer
