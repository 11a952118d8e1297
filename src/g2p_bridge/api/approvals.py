"""Four-eyes approval over the API: ``POST /envelopes/{id}/approve`` and ``/reject``, for role
``approver`` granted the envelope's program, or ``admin``. The caller's client id is the
approver; the domain refuses the envelope's sender and amenders."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from g2p_bridge.api.access import envelope_programs
from g2p_bridge.api.g2p_connect import AfterCommit, Caller, G2PRoute, UnitOfWork
from g2p_bridge.core import approvals
from g2p_bridge.core.errors import ErrorCode, Forbidden

router = APIRouter(tags=["approvals"], route_class=G2PRoute)


class ApprovalNote(BaseModel):
    """The optional body of a decision."""

    note: str | None = Field(default=None, max_length=1024)


class Decision:
    """An approver's (or an administrator's) decision on one envelope: what approve and reject
    take and answer. The domain records it and refuses the envelope's sender and amenders."""

    def __init__(
        self,
        request: Request,
        envelope_id: str,
        principal: Caller,
        session: UnitOfWork,
        after: AfterCommit,
        body: ApprovalNote | None = None,
    ) -> None:
        self.request, self.envelope_id, self.principal = request, envelope_id, principal
        self.session, self.after, self.body = session, after, body

    def make(self, approve: bool) -> dict[str, Any]:
        principal, session = self.principal, self.session
        # Refusals are audited under the decision's own name, as its successes are.
        self.request.state.g2p_action = "envelope.approve" if approve else "envelope.reject"
        if not principal.is_admin:
            if principal.role != "approver":
                raise Forbidden(
                    ErrorCode.ACCESS_DENIED, f"role {principal.role!r} may not approve envelopes"
                )
            outside = envelope_programs(session, [self.envelope_id]) - principal.programs
            if outside:
                raise Forbidden(
                    ErrorCode.ACCESS_DENIED,
                    f"client {principal.client_id!r} is not granted program(s) "
                    f"{', '.join(sorted(outside))}",
                )
        decision = approvals.decide(
            session,
            self.envelope_id,
            principal.client_id,
            principal.role,
            approve,
            self.body.note if self.body is not None else None,
            self.request.app.state.settings,
        )
        self.after.wake("envelope_approved" if approve else "envelope_rejected")
        return decision.as_json()


@router.post("/envelopes/{envelope_id}/approve")
def approve_envelope(decision: Annotated[Decision, Depends()]) -> dict[str, Any]:
    return decision.make(approve=True)


@router.post("/envelopes/{envelope_id}/reject")
def reject_envelope(decision: Annotated[Decision, Depends()]) -> dict[str, Any]:
    return decision.make(approve=False)
