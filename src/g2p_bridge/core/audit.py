"""The audit trail: one append-only event per state change, written in the caller's transaction.

Who acted comes from the request's authenticated client (a context variable the API sets), or is
``system`` for the pipeline's own steps; the request or task id is attached the same way. Bulk
requests write one event with the count and the id range, never one event per disbursement."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from g2p_bridge.models import AuditEvent, Disbursement
from g2p_bridge.observability import actor_var, request_id_var, role_var, task_id_var

SYSTEM_ACTOR = "system"


def record(
    session: Session,
    action: str,
    entity_type: str,
    entity_id: str | None,
    *,
    outcome: str = "ok",
    envelope_id: str | None = None,
    detail: dict[str, Any] | None = None,
    actor: str | None = None,
    role: str | None = None,
) -> AuditEvent:
    """Adds one event to the session; it commits or rolls back with the change it describes."""
    event = AuditEvent(
        actor=(actor or actor_var.get() or SYSTEM_ACTOR)[:128],
        role=role or role_var.get(),
        action=action[:64],
        entity_type=entity_type[:32],
        entity_id=entity_id[:128] if entity_id else None,
        envelope_id=envelope_id[:64] if envelope_id else None,
        request_id=(request_id_var.get() or task_id_var.get() or "")[:64] or None,
        outcome=outcome[:16],
        detail=json.dumps(detail, default=str, sort_keys=True) if detail else None,
    )
    session.add(event)
    return event


def id_range(ids: Sequence[str]) -> dict[str, Any]:
    """What a bulk event says about its items: how many, and the first and last id in order."""
    ordered = sorted(ids)
    return {
        "count": len(ordered),
        "first_id": ordered[0] if ordered else None,
        "last_id": ordered[-1] if ordered else None,
    }


def query(
    session: Session,
    *,
    envelope_id: str | None = None,
    disbursement_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Events oldest first. A disbursement's trail is its own events plus the bulk events of its
    envelope whose id range covers it."""
    statement = select(AuditEvent)
    if envelope_id is not None:
        statement = statement.where(AuditEvent.envelope_id == envelope_id)
    if disbursement_id is not None:
        owner = session.scalar(
            select(Disbursement.envelope_id).where(Disbursement.id == disbursement_id)
        )
        own = (AuditEvent.entity_type == "disbursement") & (AuditEvent.entity_id == disbursement_id)
        statement = statement.where(
            or_(own, AuditEvent.envelope_id == owner) if owner is not None else own
        )
    if since is not None:
        statement = statement.where(AuditEvent.at >= since)
    if until is not None:
        statement = statement.where(AuditEvent.at < until)
    events = list(session.scalars(statement.order_by(AuditEvent.at, AuditEvent.id).limit(limit)))
    if disbursement_id is not None:
        events = [e for e in events if _concerns(e, disbursement_id)]
    return events


def _concerns(event: AuditEvent, disbursement_id: str) -> bool:
    if event.entity_type == "disbursement" and event.entity_id == disbursement_id:
        return True
    if event.entity_type != "disbursements" or not event.detail:
        # Envelope-level events (funds, batches, cancellation) concern its every disbursement.
        return event.entity_type != "disbursement"
    detail = json.loads(event.detail)
    first, last = detail.get("first_id"), detail.get("last_id")
    return first is not None and last is not None and first <= disbursement_id <= last


def event_payload(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "role": event.role,
        "action": event.action,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "envelope_id": event.envelope_id,
        "request_id": event.request_id,
        "outcome": event.outcome,
        "detail": json.loads(event.detail) if event.detail else None,
    }


def statement_processed(session: Session, statement_id: str, error: str | None = None) -> None:
    """The outcome of a statement's processing, in the transaction that records it."""
    from g2p_bridge.models import AccountStatement
    from g2p_bridge.observability import STATEMENTS_PROCESSED

    statement = session.get(AccountStatement, statement_id)
    detail: dict[str, Any] = {"error": error}
    if statement is not None and error is None:
        detail = {
            "account": statement.account_number,
            "program": statement.program_mnemonic,
            "entries": statement.entries_total,
            "matched": statement.entries_matched,
            "reversed": statement.entries_reversed,
            "unmatched": statement.entries_unmatched,
            "balance_problems": bool(statement.balance_problems),
            "sequence_gaps": bool(statement.sequence_gaps),
        }
    outcome = "error" if error else "ok"
    record(session, "statement.process", "statement", statement_id, outcome=outcome, detail=detail)
    STATEMENTS_PROCESSED.labels(outcome).inc()


def bank_call(
    session: Session,
    action: str,
    envelope_id: str,
    outcome: str,
    entity_type: str = "envelope",
    entity_id: str | None = None,
    **detail: Any,
) -> None:
    """The outcome of a call to the sponsor bank (funds check, block, payment batch)."""
    record(
        session,
        action,
        entity_type,
        entity_id or envelope_id,
        outcome=outcome,
        envelope_id=envelope_id,
        detail={k: v for k, v in detail.items() if v is not None} or None,
    )


def bank_batch_sent(
    session: Session,
    batch_id: str,
    envelope_id: str,
    accepted: bool,
    rejected: bool,
    error: str | None,
) -> None:
    """A payment batch's send: accepted, refused by the bank, or unknown (to be retried)."""
    from g2p_bridge.models import BankBatch

    batch = session.get(BankBatch, batch_id)
    bank_call(
        session,
        "bank_batch.send",
        envelope_id,
        "ok" if accepted else ("failed" if rejected else "retry"),
        entity_type="bank_batch",
        entity_id=batch_id,
        payments=batch.disbursement_count if batch is not None else None,
        total_amount=str(batch.total_amount) if batch is not None else None,
        bank_response=batch.bank_response if batch is not None else None,
        error=error,
    )
