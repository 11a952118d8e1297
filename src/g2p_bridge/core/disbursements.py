"""Disbursements: receiving them into an envelope, cancelling them, and telling where each is."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol, overload

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from g2p_bridge.connectors.mappers.base import AddressParser, ResolveItem
from g2p_bridge.connectors.mappers.local import inline_answers
from g2p_bridge.core import callbacks
from g2p_bridge.core.envelopes import bump_counters, get_envelope, lock_status
from g2p_bridge.core.errors import ErrorCode, InvalidRequest, NotFound
from g2p_bridge.core.mapper_resolution import destinations
from g2p_bridge.core.states import started_batches
from g2p_bridge.db import bulk_insert, one_of
from g2p_bridge.models import (
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    DisbursementRecon,
    EnvelopeStatus,
    ReconError,
    ResolvedAddress,
)
from g2p_bridge.models.base import new_id, utcnow
from g2p_bridge.models.enums import CANCELLABLE_STATES, DisbursementState
from g2p_bridge.money import has_valid_minor_units, quantize
from g2p_bridge.schemas import CancellationStatus, DisbursementPayload
from g2p_bridge.settings import Settings

_ID_LIMIT = 64
_TEXT_LIMITS = {"beneficiary_id": 256, "beneficiary_name": 256, "narrative": 512}
_LOOKUP_CHUNK = 5000
# The resolver plug-in (pyproject's entry points) whose answer is the disbursement itself.
INLINE_RESOLVER = "inline"


def _existing_ids(session: Session, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        found.update(
            session.scalars(select(Disbursement.id).where(one_of(session, Disbursement.id, chunk)))
        )
    return found


class NewDisbursement(Protocol):
    """What ingest reads of one disbursement: a ``DisbursementPayload``, or the lean wire path's
    ``LeanDisbursement`` (api/lean_ingest.py), which carries the very same values."""

    @property
    def disbursement_id(self) -> str | None: ...
    @property
    def disbursement_envelope_id(self) -> str | None: ...
    @property
    def mis_reference_number(self) -> str | None: ...
    @property
    def beneficiary_id(self) -> str | None: ...
    @property
    def beneficiary_name(self) -> str | None: ...
    @property
    def disbursement_amount(self) -> Decimal | None: ...
    @property
    def narrative(self) -> str | None: ...
    @property
    def financial_address(self) -> str | None: ...


class Stored(NamedTuple):
    """What ``store_disbursements`` wrote: one row per item, in the items' order, all received
    at ``now``; the row's ``id``, ``state`` and ``state_reason`` are what the answer says."""

    rows: list[dict[str, object]]
    now: datetime


def _reject(items: Sequence[NewDisbursement], errors: dict[int, list[str]], why: str) -> None:
    first = next(iter(errors.values()))[0]
    raise InvalidRequest(
        ErrorCode(first) if first in ErrorCode._value2member_map_ else ErrorCode.INVALID_REQUEST,
        why,
        {str(i): codes for i, codes in errors.items()},
    )


def _refuse_if_cancelled(envelope: DisbursementEnvelope) -> None:
    if envelope.cancelled:
        raise InvalidRequest(
            ErrorCode.ENVELOPE_ALREADY_CANCELLED, f"envelope {envelope.id} is cancelled"
        )


def _refuse_beyond_declared(
    envelope: DisbursementEnvelope, status: EnvelopeStatus, count: int, amount: Decimal
) -> None:
    if status.received_count + count > envelope.number_of_disbursements:
        raise InvalidRequest(
            ErrorCode.NO_OF_DISBURSEMENTS_EXCEEDS_DECLARED,
            f"envelope declares {envelope.number_of_disbursements} disbursements; "
            f"{status.received_count} received, {count} more would exceed it",
        )
    if status.received_amount + amount > envelope.total_disbursement_amount:
        raise InvalidRequest(
            ErrorCode.TOTAL_DISBURSEMENT_AMOUNT_EXCEEDS_DECLARED,
            f"envelope declares {envelope.total_disbursement_amount}; {status.received_amount} "
            f"received, {amount} more would exceed it",
        )


# Which field of a disbursement each item error code is about (a payroll file's column).
ERROR_FIELDS: dict[str, str] = {
    ErrorCode.INVALID_DISBURSEMENT_AMOUNT: "disbursement_amount",
    ErrorCode.INVALID_BENEFICIARY_ID: "beneficiary_id",
    ErrorCode.INVALID_BENEFICIARY_NAME: "beneficiary_name",
    ErrorCode.INVALID_NARRATIVE: "narrative",
    ErrorCode.INVALID_DISBURSEMENT_ID: "disbursement_id",
    ErrorCode.DUPLICATE_DISBURSEMENT: "disbursement_id",
}


def item_errors(item: NewDisbursement, currency: str) -> list[str]:
    """What is wrong with one disbursement on its own (no database): the rules every item of
    ``create_disbursements`` and every line of a payroll file is held to."""
    codes: list[str] = []
    amount = item.disbursement_amount
    if amount is None or amount <= 0 or not has_valid_minor_units(amount, currency):
        codes.append(ErrorCode.INVALID_DISBURSEMENT_AMOUNT)
    for field, code in (
        ("beneficiary_id", ErrorCode.INVALID_BENEFICIARY_ID),
        ("beneficiary_name", ErrorCode.INVALID_BENEFICIARY_NAME),
        ("narrative", ErrorCode.INVALID_NARRATIVE),
    ):
        value: str | None = getattr(item, field)
        if not value or len(value) > _TEXT_LIMITS[field]:
            codes.append(code)
    if item.disbursement_id is not None and (
        not item.disbursement_id or len(item.disbursement_id) > _ID_LIMIT
    ):
        codes.append(ErrorCode.INVALID_DISBURSEMENT_ID)
    return codes


@overload
def create_disbursements(
    session: Session,
    items: Sequence[DisbursementPayload],
    max_items: int,
    address_parser: AddressParser | None = None,
) -> list[DisbursementPayload]: ...


@overload
def create_disbursements(
    session: Session,
    items: Sequence[NewDisbursement],
    max_items: int,
    address_parser: AddressParser | None = None,
    *,
    as_rows: Literal[True],
) -> Stored: ...


def create_disbursements(
    session: Session,
    items: Sequence[Any],
    max_items: int,
    address_parser: AddressParser | None = None,
    *,
    as_rows: bool = False,
) -> list[DisbursementPayload] | Stored:
    """All or nothing: either every item is stored, or none is and each faulty item says why
    (``store_disbursements``). The answer is each item as stored; ``as_rows``: the stored rows
    (the lean wire path writes its answer from them)."""
    stored = store_disbursements(session, items, max_items, address_parser)
    return stored if as_rows else as_stored(items, stored)


def as_stored(items: Sequence[DisbursementPayload], stored: Stored) -> list[DisbursementPayload]:
    """Each item as ``stored``: its id, receipt time and state."""
    return [
        item.model_copy(
            update={
                "id": row["id"],
                "disbursement_id": row["id"],
                "receipt_time_stamp": stored.now,
                "cancellation_status": CancellationStatus.NOT_CANCELLED,
                "state": DisbursementState(str(row["state"])),
                "state_reason": row["state_reason"],
            }
        )
        for item, row in zip(items, stored.rows, strict=True)
    ]


def store_disbursements(
    session: Session,
    items: Sequence[NewDisbursement],
    max_items: int,
    address_parser: AddressParser | None = None,
) -> Stored:
    """All or nothing: either every item is stored, or none is and each faulty item says why.

    With ``address_parser``, disbursements of a program whose resolver is ``inline`` are
    resolved here, in the same transaction: they carry their address, so a mapper batch would
    only rewrite each row twice more (RESOLVING, RESOLVED) to learn nothing new."""
    if not items:
        raise InvalidRequest(ErrorCode.INVALID_DISBURSEMENT_PAYLOAD, "no disbursements given")
    if len(items) > max_items:
        raise InvalidRequest(
            ErrorCode.TOO_MANY_ITEMS,
            f"{len(items)} disbursements in one request; at most {max_items}",
        )
    envelope_ids = {item.disbursement_envelope_id for item in items}
    if len(envelope_ids) > 1:
        raise InvalidRequest(
            ErrorCode.MULTIPLE_ENVELOPES_FOUND,
            "all disbursements of a request must be in one envelope",
        )
    envelope = get_envelope(session, envelope_ids.pop())
    _refuse_if_cancelled(envelope)

    errors: dict[int, list[str]] = defaultdict(list)
    given_ids = [item.disbursement_id for item in items if item.disbursement_id]
    seen = Counter(given_ids)
    taken = _existing_ids(session, given_ids) if given_ids else set()
    total = Decimal(0)
    for index, item in enumerate(items):
        codes = errors[index]
        codes.extend(item_errors(item, envelope.currency))
        if ErrorCode.INVALID_DISBURSEMENT_AMOUNT not in codes and item.disbursement_amount:
            total += item.disbursement_amount
        given = item.disbursement_id
        if (
            given
            and ErrorCode.INVALID_DISBURSEMENT_ID not in codes
            and (seen[given] > 1 or given in taken)
        ):
            codes.append(ErrorCode.DUPLICATE_DISBURSEMENT)
    errors = {i: c for i, c in errors.items() if c}
    if errors:
        _reject(items, errors, f"{len(errors)} of {len(items)} disbursements are invalid")
    # Unlocked, to refuse early; checked again under the lock before anything counts.
    received = session.get(EnvelopeStatus, envelope.id)
    if received is not None:
        _refuse_beyond_declared(envelope, received, len(items), total)

    now = utcnow()
    received_state = DisbursementState.RECEIVED.value
    rows: list[dict[str, object]] = [
        {
            "id": item.disbursement_id or new_id(),
            "envelope_id": envelope.id,
            "mis_reference_number": item.mis_reference_number,
            "beneficiary_id": item.beneficiary_id,
            "beneficiary_name": item.beneficiary_name,
            # At the currency's minor units: the checks admit "1.000...0" with any number of
            # zeros, which PostgreSQL's binary NUMERIC refuses past 16,383 decimals. (Never
            # None here: item_errors refused that.)
            "amount": quantize(item.disbursement_amount or Decimal(0), envelope.currency),
            "narrative": item.narrative,
            "financial_address": item.financial_address,
            "receipt_at": now,
            "cancelled": False,
            "state": received_state,
            "state_reason": None,
            "updated_at": now,
        }
        for item in items
    ]
    addresses: list[dict[str, object]] = []
    unresolved: dict[str, str] = {}
    if address_parser is not None and _resolves_inline(session, envelope):
        resolve_items = [
            ResolveItem(str(row["id"]), item.beneficiary_id or "", item.financial_address)
            for item, row in zip(items, rows, strict=True)
        ]
        addresses, unresolved = destinations(
            address_parser, resolve_items, inline_answers(resolve_items), now, at_receipt=True
        )
        resolved, failed = DisbursementState.RESOLVED.value, DisbursementState.UNRESOLVED.value
        for row in rows:
            reason = unresolved.get(str(row["id"]))
            row["state"] = failed if reason else resolved
            row["state_reason"] = reason
    # Rows go in before the envelope is locked, so requests for one envelope insert side by
    # side; the lock is held only for the final check and the counters. Inserting in id order
    # means two requests that (wrongly) share ids wait on each other in one order, never in a
    # cycle: the second gets a unique violation, answered as DUPLICATE_DISBURSEMENT.
    bulk_insert(session, Disbursement, sorted(rows, key=lambda row: str(row["id"])), binary=True)
    bulk_insert(session, ResolvedAddress, addresses, binary=True)
    status = lock_status(session, envelope.id)
    session.refresh(envelope)  # a cancellation that committed while we inserted
    _refuse_if_cancelled(envelope)
    _refuse_beyond_declared(envelope, status, len(items), total)
    bump_counters(
        session,
        envelope.id,
        received_count=len(rows),
        received_amount=total,
        failed_count=len(unresolved),
    )
    return Stored(rows, now)


def _resolves_inline(session: Session, envelope: DisbursementEnvelope) -> bool:
    program = session.get(BenefitProgram, envelope.program_mnemonic)
    return program is not None and program.resolver_name == INLINE_RESOLVER


def cancel_disbursements(
    session: Session,
    items: Sequence[DisbursementPayload],
    max_items: int,
    settings: Settings | None = None,
) -> list[DisbursementPayload]:
    """Cancels all given disbursements or none. Only money not yet sent to the bank can be
    stopped; the row lock on each disbursement orders this against a dispatch that starts."""
    if not items:
        raise InvalidRequest(ErrorCode.INVALID_DISBURSEMENT_PAYLOAD, "no disbursements given")
    if len(items) > max_items:
        raise InvalidRequest(
            ErrorCode.TOO_MANY_ITEMS,
            f"{len(items)} disbursements in one request; at most {max_items}",
        )
    ids = [item.disbursement_id or "" for item in items]
    found = {
        row.id: row
        for start in range(0, len(ids), _LOOKUP_CHUNK)
        for row in session.scalars(
            select(Disbursement)
            .where(one_of(session, Disbursement.id, ids[start : start + _LOOKUP_CHUNK]))
            .order_by(Disbursement.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    # A dispatch starts a batch under the envelope's status row (core/dispatch.py): with these
    # held, a BATCHED row's batch cannot start before this commits. Rows first, then status
    # rows, the order a statement takes them in.
    envelope_ids = sorted({row.envelope_id for row in found.values()})
    for envelope_id in envelope_ids:
        lock_status(session, envelope_id)
    started = started_batches(
        session,
        {
            row.bank_batch_id
            for row in found.values()
            if row.state == DisbursementState.BATCHED and row.bank_batch_id
        },
    )
    errors: dict[int, list[str]] = {}
    for index, disbursement_id in enumerate(ids):
        row = found.get(disbursement_id)
        if row is None:
            errors[index] = [ErrorCode.INVALID_DISBURSEMENT_ID]
        elif row.cancelled:
            errors[index] = [ErrorCode.DISBURSEMENT_ALREADY_CANCELED]
        elif row.state not in CANCELLABLE_STATES or row.bank_batch_id in started:
            errors[index] = [ErrorCode.DISBURSEMENT_ALREADY_DISPATCHED]
    if len(set(ids)) != len(ids):
        for index, count in enumerate(Counter(ids)[i] for i in ids):
            if count > 1:
                errors.setdefault(index, []).append(ErrorCode.DUPLICATE_DISBURSEMENT)
    if errors:
        _reject(items, errors, f"{len(errors)} of {len(items)} disbursements cannot be cancelled")

    now = utcnow()
    by_envelope: dict[str, list[Disbursement]] = defaultdict(list)
    for row in found.values():
        by_envelope[row.envelope_id].append(row)
    for envelope_id in sorted(by_envelope):
        rows = by_envelope[envelope_id]
        session.execute(
            update(Disbursement)
            .where(one_of(session, Disbursement.id, [r.id for r in rows]))
            .values(
                state=DisbursementState.CANCELLED,
                cancelled=True,
                cancelled_at=now,
                state_reason="cancelled by the program",
            )
            .execution_options(synchronize_session=False)
        )
        bump_counters(
            session,
            envelope_id,
            received_count=-len(rows),
            received_amount=-sum((r.amount for r in rows), Decimal(0)),
            cancelled_count=len(rows),
            failed_count=-sum(1 for r in rows if r.state == DisbursementState.UNRESOLVED),
        )
        callbacks.disbursements_cancelled(session, settings, envelope_id, now)
    return [
        item.model_copy(
            update={
                "cancellation_status": CancellationStatus.CANCELLED,
                "cancellation_time_stamp": now,
                "state": DisbursementState.CANCELLED,
            }
        )
        for item in items
    ]


@dataclass(frozen=True)
class DisbursementRecords:
    """What is known of one disbursement id: its row (None for an id we never had), its
    envelope's currency, its reconciliation and the reconciliation errors naming it."""

    disbursement_id: str
    row: Disbursement | None
    currency: str | None
    recon: DisbursementRecon | None
    errors: list[ReconError]


def disbursement_records(session: Session, ids: Sequence[str]) -> list[DisbursementRecords]:
    rows = {r.id: r for r in session.scalars(select(Disbursement).where(Disbursement.id.in_(ids)))}
    currencies: dict[str, str] = {
        envelope_id: currency
        for envelope_id, currency in session.execute(
            select(DisbursementEnvelope.id, DisbursementEnvelope.currency).where(
                DisbursementEnvelope.id.in_(sorted({r.envelope_id for r in rows.values()}))
            )
        )
    }
    recons = {
        r.disbursement_id: r
        for r in session.scalars(
            select(DisbursementRecon).where(DisbursementRecon.disbursement_id.in_(ids))
        )
    }
    errors: dict[str, list[ReconError]] = defaultdict(list)
    for error in session.scalars(
        select(ReconError).where(ReconError.disbursement_id.in_(ids)).order_by(ReconError.id)
    ):
        errors[error.disbursement_id or ""].append(error)
    return [
        DisbursementRecords(
            disbursement_id,
            row,
            None if row is None else currencies.get(row.envelope_id),
            recons.get(disbursement_id),
            errors.get(disbursement_id, []),
        )
        for disbursement_id in ids
        for row in [rows.get(disbursement_id)]
    ]


def list_disbursements(
    session: Session, envelope_id: str, state: str | None, offset: int, limit: int
) -> tuple[list[Disbursement], int]:
    get_envelope(session, envelope_id)
    query = select(Disbursement).where(Disbursement.envelope_id == envelope_id)
    if state in (DisbursementState.BATCHED, DisbursementState.DISPATCHING):
        # Both are stored as BATCHED (core/states.py): the stored state keeps the index usable.
        query = query.where(
            Disbursement.state == DisbursementState.BATCHED, Disbursement.reported_state == state
        )
    elif state:
        query = query.where(Disbursement.state == state)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Disbursement.id).offset(offset).limit(limit))
    return list(rows), total


def get_disbursement(session: Session, disbursement_id: str) -> Disbursement:
    row = session.get(Disbursement, disbursement_id)
    if row is None:
        raise NotFound(ErrorCode.DISBURSEMENT_NOT_FOUND, f"no disbursement {disbursement_id!r}")
    return row
