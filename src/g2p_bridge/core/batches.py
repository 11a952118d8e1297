"""Per-batch status of an envelope: each ID-mapper batch, then each bank payment batch, with its
stage, attempts, last error and timestamps (what OpenG2P 2.x calls the batch control).

A 1,000,000-disbursement envelope has a thousand or more batches, so the listing is paged by
keyset: the cursor is the last batch seen (``mapper:<id>`` or ``bank:<id>``), and each page is
one indexed range read on (envelope, id), never an OFFSET scan."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from g2p_bridge.core.errors import ErrorCode, InvalidRequest
from g2p_bridge.models import BankBatch, MapperBatch
from g2p_bridge.models.enums import WorkState

KINDS: dict[str, Any] = {"mapper": MapperBatch, "bank": BankBatch}
_CURSOR = re.compile(r"^(mapper|bank):([A-Za-z0-9._:-]{1,64})$")


@dataclass(frozen=True)
class BatchStatus:
    kind: str
    batch_id: str
    state: str
    stage: str
    attempts: int
    last_error: str | None
    disbursement_count: int
    total_amount: Decimal | None
    destination: str | None
    resolver: str | None
    bank_response: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    lease_until: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class BatchPage:
    items: list[BatchStatus]
    counts: dict[str, dict[str, int]]  # per kind, batches per state
    next_cursor: str | None


def stage(state: str, last_error: str | None) -> str:
    """What a batch is doing, in one word: a RUNNING batch with an error is waiting out the
    backoff before its next attempt, not working."""
    if state == WorkState.RUNNING:
        return "RETRY_WAIT" if last_error else "IN_PROGRESS"
    if state == WorkState.PENDING:
        return "QUEUED"
    return "DONE" if state == WorkState.DONE else "PARKED"


def parse_cursor(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidRequest(
            ErrorCode.INVALID_REQUEST,
            "after must be a cursor from a previous page: mapper:<batch id> or bank:<batch id>",
        )
    return match.group(1), match.group(2)


def _row(kind: str, row: Any) -> BatchStatus:
    bank = kind == "bank"
    return BatchStatus(
        kind=kind,
        batch_id=row.id,
        state=row.state,
        stage=stage(row.state, row.last_error),
        attempts=row.attempts,
        last_error=row.last_error,
        disbursement_count=row.disbursement_count if bank else row.size,
        total_amount=row.total_amount if bank else None,
        destination=row.destination if bank else None,
        resolver=None if bank else row.resolver,
        bank_response=row.bank_response if bank else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_attempt_at=row.next_attempt_at,
        lease_until=row.lease_until,
        sent_at=row.sent_at if bank else None,
    )


def envelope_batches(
    session: Session, envelope_id: str, after: str | None, limit: int, kind: str | None = None
) -> BatchPage:
    """One page of the envelope's batches, mapper batches first (the order they run in); the
    envelope is known to exist and the caller to be allowed to see it."""
    position = parse_cursor(after)
    kinds = [kind] if kind else list(KINDS)
    if position is not None and position[0] not in kinds:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, "the cursor is for another kind")
    if position is not None:
        kinds = kinds[kinds.index(position[0]) :]
    items: list[BatchStatus] = []
    for name in kinds:
        model = KINDS[name]
        query = select(model).where(model.envelope_id == envelope_id)
        if position is not None and position[0] == name:
            query = query.where(model.id > position[1])
        # One more than asked: whether a next page exists, without counting.
        rows = list(session.scalars(query.order_by(model.id).limit(limit + 1 - len(items))))
        items += [_row(name, r) for r in rows]
        if len(items) > limit:
            break
    more = len(items) > limit
    items = items[:limit]
    counts = {
        name: {
            state: int(count)
            for state, count in session.execute(
                select(KINDS[name].state, func.count())
                .where(KINDS[name].envelope_id == envelope_id)
                .group_by(KINDS[name].state)
            )
        }
        for name in ([kind] if kind else list(KINDS))
    }
    cursor = f"{items[-1].kind}:{items[-1].batch_id}" if more and items else None
    return BatchPage(items, counts, cursor)
