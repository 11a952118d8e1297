"""The audit trail's query endpoint, for administrators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query

from g2p_bridge.api.g2p_connect import Caller, G2PRoute, UnitOfWork
from g2p_bridge.core import audit
from g2p_bridge.core.errors import ErrorCode, InvalidRequest

router = APIRouter(tags=["audit"], route_class=G2PRoute)


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, f"{name} needs a UTC offset (e.g. Z)")
    return value


@router.get("/audit")
def list_audit_events(
    principal: Caller,
    session: UnitOfWork,
    envelope_id: str | None = Query(None, max_length=64),
    disbursement_id: str | None = Query(None, max_length=64),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Audit events, oldest first, by envelope, disbursement and time range."""
    since, until = _aware(since, "since"), _aware(until, "until")
    principal.require_role("admin")
    events = audit.query(
        session,
        envelope_id=envelope_id,
        disbursement_id=disbursement_id,
        since=since,
        until=until,
        limit=limit,
    )
    return [audit.event_payload(e) for e in events]
