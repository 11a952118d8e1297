"""Results pushed to the PBMS: the outbox written beside each state change, and its delivery.

Steps call :func:`record_results` or :func:`record_envelope` in the transaction that changes
the state: the callback's message is snapshotted there (chunks of ``callback_batch_size``
results), with an event id and the envelope's next sequence numbers. Sequence numbers are
handed out under the envelope's stream row lock, so they follow commit order. The sweep wakes
streams with undelivered events; :func:`deliver_callbacks` claims one envelope's stream (one
sender per envelope keeps the order), POSTs its events one by one in sequence order, signed,
and records each acknowledgement. Delivery is at least once: a sender that dies after the
POST and before its record sends the same event (same id, same bytes) again."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import ColumnElement, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from g2p_bridge.core import audit
from g2p_bridge.core.context import Context
from g2p_bridge.core.errors import ErrorCode, InvalidRequest, NotFound
from g2p_bridge.core.work import Lease, claim, retry_later
from g2p_bridge.db import bulk_insert, get_required, is_postgres, one_of, transaction
from g2p_bridge.models import (
    BenefitProgram,
    CallbackEvent,
    CallbackStream,
    CallbackSubscription,
    Disbursement,
    DisbursementEnvelope,
    DisbursementRecon,
    EnvelopeStatus,
)
from g2p_bridge.models.base import new_id, utcnow
from g2p_bridge.models.enums import DisbursementState, FundsAvailable, FundsBlocked, WorkState
from g2p_bridge.money import format_amount
from g2p_bridge.observability import CALLBACK_DELIVERIES, CALLBACK_RESULTS_DELIVERED
from g2p_bridge.settings import Settings, get_settings
from g2p_bridge.signing import SIGNATURE_HEADER, CallbackSigner, load_signer

log = logging.getLogger(__name__)

SENDER_ID = "g2p-bridge"
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_URL_MAX = 2048


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one kind of result says to the PBMS, per disbursement."""

    status: str  # G2P Connect's request status: succ, rjct, pdng
    reason_code: str


# Event types and what each says about its disbursements.
SHIPPED = "disbursements.shipped"
RECONCILED = "disbursements.reconciled"
REVERSED = "disbursements.reversed"
UNRESOLVED = "disbursements.failed.unresolved"
BANK_REFUSED = "disbursements.failed.bank_refused"
PARKED = "disbursements.failed.parked"
CANCELLED = "disbursements.cancelled"
FUNDS_BLOCKED = "funds.blocked"
FUNDS_REFUSED = "funds.refused"
FUNDS_RELEASED = "funds.released"
SETTLED = "envelope.settled"

OUTCOMES = {
    SHIPPED: Outcome("pdng", "pdng.bank.shipped"),
    RECONCILED: Outcome("succ", "succ.bank.paid"),
    REVERSED: Outcome("rjct", "rjct.bank.reversed"),
    UNRESOLVED: Outcome("rjct", "rjct.beneficiary.unresolved"),
    BANK_REFUSED: Outcome("rjct", "rjct.bank.refused"),
    PARKED: Outcome("rjct", "rjct.bank.outcome_unknown"),
    CANCELLED: Outcome("rjct", "rjct.disbursement.cancelled"),
}


# -- Subscriptions -------------------------------------------------------------------------


def check_url(url: str, settings: Settings) -> str:
    """A callback URL the bridge may POST to: https (http only to this machine, or when the
    deployment allows it), a host, no credentials in it (they would end up in logs)."""
    problem = None
    if len(url) > _URL_MAX or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url):
        problem = f"must be at most {_URL_MAX} printable characters without spaces"
    else:
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            parts, host = None, None
        if parts is None or not host:
            problem = "must be an absolute http(s) URL with a host"
        elif parts.username is not None or parts.password is not None:
            problem = "must not carry credentials"
        elif parts.fragment:
            problem = "must not carry a fragment"
        elif parts.scheme == "http":
            if host not in _LOOPBACK_HOSTS and not settings.callback_allow_http:
                problem = "must be https (plain http only to the loopback interface)"
        elif parts.scheme != "https":
            problem = "must be an http(s) URL"
    if problem:
        raise InvalidRequest(ErrorCode.INVALID_CALLBACK_URL, f"callback_url {problem}")
    return url


def set_callback_url(
    session: Session, program_mnemonic: str, url: str | None, settings: Settings
) -> CallbackSubscription | None:
    """Sets (or with None removes) a program's callback URL; audited with before and after."""
    get_program = session.get(BenefitProgram, program_mnemonic)
    if get_program is None:
        raise NotFound(
            ErrorCode.INVALID_PROGRAM_MNEMONIC, f"no benefit program {program_mnemonic!r}"
        )
    current = session.get(CallbackSubscription, program_mnemonic)
    before = display_url(current.url) if current else None
    if url is None:
        if current is not None:
            session.delete(current)
        result = None
    else:
        check_url(url, settings)
        if current is None:
            current = CallbackSubscription(program_mnemonic=program_mnemonic, url=url)
            session.add(current)
        else:
            current.url = url
        result = current
    session.flush()
    audit.record(
        session,
        "program.callback_url",
        "program",
        program_mnemonic,
        detail={"before": before, "after": display_url(url) if url else None},
    )
    return result


def display_url(url: str) -> str:
    """A URL as logs and the audit trail show it: scheme, host and path, never the query (a
    PBMS may put a token there)."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or ''}"
    if parts.port:
        shown += f":{parts.port}"
    return shown + parts.path + ("?..." if parts.query else "")


# -- The outbox ----------------------------------------------------------------------------


def _subscribed(session: Session, envelope_id: str) -> DisbursementEnvelope | None:
    """The envelope when its program has a callback URL; None costs the caller nothing more."""
    return session.scalar(
        select(DisbursementEnvelope)
        .join(
            CallbackSubscription,
            CallbackSubscription.program_mnemonic == DisbursementEnvelope.program_mnemonic,
        )
        .where(DisbursementEnvelope.id == envelope_id)
    )


def _lock_stream(session: Session, envelope_id: str, now: datetime) -> CallbackStream:
    """The envelope's stream row, created on its first callback, locked until the caller
    commits: sequence numbers handed out under it follow commit order, so a sender never sees
    n+1 committed while n is not."""
    values = {
        "envelope_id": envelope_id,
        "last_sequence": 0,
        "delivered_sequence": 0,
        "summary_written": False,
        "state": WorkState.DONE,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    table = cast(Table, CallbackStream.__table__)
    insert = pg_insert(table) if is_postgres(session) else sqlite_insert(table)
    session.execute(insert.values(values).on_conflict_do_nothing())
    return session.scalars(
        select(CallbackStream)
        .where(CallbackStream.id == envelope_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _allocate(session: Session, stream: CallbackStream, count: int, now: datetime) -> int:
    """Hands out ``count`` sequence numbers; returns the first."""
    first = stream.last_sequence + 1
    stream.last_sequence += count
    if stream.state == WorkState.DONE:
        # Due again; a running stream's sender finds the new events, a parked one waits for
        # an operator (its order must not be overtaken).
        stream.state = WorkState.PENDING
        stream.next_attempt_at = now
    return first


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _matching_ids(
    session: Session, envelope_id: str, conditions: tuple[ColumnElement[bool], ...]
) -> list[str]:
    d, r = Disbursement, DisbursementRecon
    # The conditions alone pick the rows (a batch id, through its index); the envelope is
    # checked on what they return. In the WHERE clause it let the planner, its statistics
    # behind a payday's inserts, walk the whole envelope for one batch's thousand rows.
    matching = (
        select(d.id, d.envelope_id)
        .outerjoin(r, r.disbursement_id == d.id)
        .where(*conditions)
        .order_by(d.id)
    )
    return [row_id for row_id, of in session.connection().execute(matching) if of == envelope_id]


def _in_id_order(session: Session, ids: Sequence[str]) -> list[str]:
    """``ids`` in the order ``ORDER BY id`` gives: the database's collation, which on
    PostgreSQL need not be Python's (SQLite's BINARY compares UTF-8 bytes, code point order)."""
    if not ids or not is_postgres(session):
        return sorted(ids)
    query = select(Disbursement.id).where(one_of(session, Disbursement.id, ids))
    return list(session.connection().execute(query.order_by(Disbursement.id)).scalars())


def _results(
    session: Session,
    envelope: DisbursementEnvelope,
    event_type: str,
    ids: list[str],
    now: datetime,
    reason: str | None,
) -> list[dict[str, Any]]:
    """One chunk of the disbursements the step just changed, as G2P Connect's
    ``disbursements_status`` items, in id order."""
    outcome = OUTCOMES[event_type]
    d, r = Disbursement, DisbursementRecon
    query = (
        select(
            d.id,
            d.amount,
            d.beneficiary_id,
            d.state_reason,
            d.shipped_at,
            d.bank_batch_id,
            r.remittance_reference_number,
            r.remittance_entry_date,
            r.remittance_value_date,
            r.remittance_statement_number,
            r.reversal_entry_date,
            r.reversal_reason,
        )
        .outerjoin(r, r.disbursement_id == d.id)
        # By primary key: the ids were matched in this transaction, whose step wrote (and so
        # locked) these rows. The conditions again would let the planner walk all of a
        # statement's rows through its index for every chunk of them.
        .where(one_of(session, d.id, ids))
        .order_by(d.id)
    )
    currency = envelope.currency
    timestamp = now.isoformat()
    paid = event_type in (RECONCILED, REVERSED)
    items: list[dict[str, Any]] = []
    for (
        disbursement_id,
        amount,
        beneficiary_id,
        state_reason,
        shipped_at,
        bank_batch_id,
        bank_reference,
        entry_date,
        value_date,
        statement_number,
        reversal_date,
        reversal_reason,
    ) in session.connection().execute(query):  # Core: no ORM row loading
        if event_type == REVERSED:
            message = f"reversed by the bank: {reversal_reason or 'no reason given'}"
        else:
            message = reason or state_reason or ""
        item: dict[str, Any] = {
            "reference_id": disbursement_id,
            "timestamp": timestamp,
            "status": outcome.status,
            "status_reason_code": outcome.reason_code,
            "status_reason_message": message,
            "beneficiary_id": beneficiary_id,
            "amount": format_amount(amount, currency),
            "currency_code": currency,
            "bank_batch_id": bank_batch_id,
            "shipped_at": _iso(shipped_at),
        }
        if paid:
            item["bank_reference"] = bank_reference
            item["bank_statement_number"] = statement_number
            item["remittance_entry_date"] = _iso(entry_date)
            item["remittance_value_date"] = _iso(value_date)
        if event_type == REVERSED:
            item["reversal_entry_date"] = _iso(reversal_date)
            item["reversal_reason"] = reversal_reason
        items.append(item)
    return items


def _event_row(
    envelope_id: str, sequence: int, event_type: str, count: int, message: dict[str, Any], now: Any
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "envelope_id": envelope_id,
        "sequence": sequence,
        "event_type": event_type,
        "result_count": count,
        "message": orjson.dumps(message).decode(),
        "created_at": now,
        "attempts": 0,
        "last_attempt_at": None,
        "last_error": None,
        "delivered_at": None,
    }


def record_results(
    session: Session,
    settings: Settings,
    envelope_id: str,
    event_type: str,
    *conditions: ColumnElement[bool],
    reason: str | None = None,
    settle: bool = True,
    ids: Sequence[str] | None = None,
) -> int:
    """Queues callbacks for the envelope's disbursements matching ``conditions`` (over
    Disbursement and DisbursementRecon), or for exactly the envelope's disbursements ``ids``
    when the step knows them (a statement, which recorded them). The conditions must select by
    something indexed (a batch id, or the envelope itself); rows of other envelopes they match
    are left out. The results are read as they are in the caller's transaction: call it after
    the step's own writes. One callback per
    ``callback_batch_size`` results, each serialised and stored before the next is read, so
    memory holds one chunk (and the ids). Returns the number of callbacks queued: 0 when the
    program has no callback URL."""
    envelope = _subscribed(session, envelope_id)
    if envelope is None:
        return 0
    if ids is None:
        matched = _matching_ids(session, envelope_id, conditions)
    else:
        matched = _in_id_order(session, ids)
    if not matched:
        return 0
    now = utcnow()
    size = settings.callback_batch_size
    chunks = [matched[i : i + size] for i in range(0, len(matched), size)]
    stream = _lock_stream(session, envelope_id, now)
    first = _allocate(session, stream, len(chunks), now)
    session.flush()
    for offset, chunk in enumerate(chunks):
        items = _results(session, envelope, event_type, chunk, now, reason)
        message = {"disbursements_status": items}
        row = _event_row(envelope_id, first + offset, event_type, len(items), message, now)
        bulk_insert(session, CallbackEvent, [row])
    return len(chunks) + (_summary_if_settled(session, envelope, stream, now) if settle else 0)


def record_envelope(
    session: Session, envelope_id: str, event_type: str, detail: dict[str, Any]
) -> int:
    """Queues one envelope-level callback (funds blocked or refused)."""
    envelope = _subscribed(session, envelope_id)
    if envelope is None:
        return 0
    now = utcnow()
    message = {"envelope_status": {"timestamp": now.isoformat(), **detail}}
    stream = _lock_stream(session, envelope_id, now)
    sequence = _allocate(session, stream, 1, now)
    session.flush()
    bulk_insert(
        session, CallbackEvent, [_event_row(envelope_id, sequence, event_type, 0, message, now)]
    )
    return 1


def _summary_if_settled(
    session: Session, envelope: DisbursementEnvelope, stream: CallbackStream, now: datetime
) -> int:
    """Queues the envelope's one summary the first time it is found settled."""
    if stream.summary_written:
        return 0
    summary = _settled_summary(session, envelope)
    if summary is None:
        return 0
    stream.summary_written = True
    sequence = _allocate(session, stream, 1, now)
    session.flush()
    bulk_insert(
        session, CallbackEvent, [_event_row(envelope.id, sequence, SETTLED, 0, summary, now)]
    )
    return 1


def _settled_summary(session: Session, envelope: DisbursementEnvelope) -> dict[str, Any] | None:
    """The envelope's closing figures once every disbursement it received is final (paid,
    reversed, failed); None before. Reads the counters the caller's step just moved."""
    status = session.execute(
        select(
            EnvelopeStatus.received_count,
            EnvelopeStatus.cancelled_count,
            EnvelopeStatus.reconciled_count,
            EnvelopeStatus.reversed_count,
            EnvelopeStatus.failed_count,
            EnvelopeStatus.funds_blocked_state,
        ).where(EnvelopeStatus.envelope_id == envelope.id)
    ).one()
    received, cancelled, reconciled, reversed_, failed, blocked = status
    # reconciled_count includes the reversed ones: a reversal follows a remittance.
    if (
        blocked != FundsBlocked.FUNDS_BLOCK_SUCCESS
        or received + cancelled < envelope.number_of_disbursements
        or reconciled + failed < received
    ):
        return None
    amounts = dict(
        session.execute(
            select(Disbursement.state, func.sum(Disbursement.amount))
            .where(Disbursement.envelope_id == envelope.id)
            .group_by(Disbursement.state)
        ).all()
    )

    def total(*states: str) -> str:
        value = sum((Decimal(amounts.get(s) or 0) for s in states), Decimal(0))
        return format_amount(value, envelope.currency)

    return {
        "envelope_status": {
            "timestamp": utcnow().isoformat(),
            "settled": True,
            "number_of_disbursements_received": received,
            "number_of_disbursements_cancelled": cancelled,
            "number_of_disbursements_paid": reconciled - reversed_,
            "number_of_disbursements_reversed": reversed_,
            "number_of_disbursements_failed": failed,
            "total_amount_paid": total("RECONCILED"),
            "total_amount_reversed": total("REVERSED"),
            "total_amount_failed": total("FAILED", "UNRESOLVED"),
            "currency_code": envelope.currency,
        }
    }


# -- What the steps call, one line each --------------------------------------------------


def funds_changed(session: Session, settings: Settings, status: EnvelopeStatus) -> int:
    """After the funds step wrote ``status``: blocked, or finally refused. A refusal (not enough
    funds, or the bank would not block) is retried with backoff, so it is told once, when it
    is final: on the attempt that uses up ``max_attempts`` (the step gives up; an operator
    re-queue that fails again is a new final outcome). An unanswered call (ERROR, BLOCKING)
    says nothing yet."""
    detail: dict[str, Any] = {
        "funds_available_state": status.funds_available_state,
        "funds_blocked_state": status.funds_blocked_state,
    }
    if status.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS:
        detail["funds_block_reference"] = status.funds_block_reference
        return record_envelope(session, status.envelope_id, FUNDS_BLOCKED, detail)
    if status.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_FAILURE:
        attempts = status.funds_blocked_attempts
    elif status.funds_available_state == FundsAvailable.FUNDS_NOT_AVAILABLE:
        attempts = status.funds_available_attempts
    else:
        return 0
    if attempts < settings.max_attempts:
        return 0  # asked again after the backoff: not an outcome yet
    detail["reason"] = status.funds_blocked_error or status.funds_available_error or ""
    detail["attempts"] = attempts
    return record_envelope(session, status.envelope_id, FUNDS_REFUSED, detail)


def funds_released(
    session: Session,
    envelope_id: str,
    amount: Decimal,
    currency: str,
    block_reference: str,
    reference: str | None,
) -> int:
    """After the release of the envelope's unspent block was recorded (once: the release row
    turns DONE once)."""
    detail = {
        "released_amount": format_amount(amount, currency),
        "currency_code": currency,
        "funds_block_reference": block_reference,
        "release_reference": reference,
    }
    return record_envelope(session, envelope_id, FUNDS_RELEASED, detail)


def disbursements_cancelled(
    session: Session, settings: Settings | None, envelope_id: str, cancelled_at: datetime
) -> int:
    """After disbursements of the envelope (or all its open ones) were cancelled at
    ``cancelled_at``; the summary follows when that made the envelope settled. Without
    ``settings`` (a caller that has none: a script, a test) the service's own."""
    if _subscribed(session, envelope_id) is None:
        return 0
    return record_results(
        session,
        settings if settings is not None else get_settings(),
        envelope_id,
        CANCELLED,
        Disbursement.envelope_id == envelope_id,
        Disbursement.state == DisbursementState.CANCELLED,
        Disbursement.cancelled_at == cancelled_at,
    )


def bank_batch_changed(
    session: Session, settings: Settings, envelope_id: str, batch_id: str, outcome: str, now: Any
) -> int:
    """After a bank batch's answer was recorded: shipped (at ``now``), refused, or parked
    with the bank's outcome unknown."""
    in_batch = Disbursement.bank_batch_id == batch_id
    if outcome == "shipped":
        return record_results(
            session, settings, envelope_id, SHIPPED, in_batch, Disbursement.shipped_at == now
        )
    if outcome == "refused":
        failed = Disbursement.state == DisbursementState.FAILED
        return record_results(session, settings, envelope_id, BANK_REFUSED, in_batch, failed)
    # Parked with the outcome unknown: its rows are still BATCHED (reported DISPATCHING).
    dispatching = Disbursement.state == DisbursementState.BATCHED
    return record_results(session, settings, envelope_id, PARKED, in_batch, dispatching)


def mapper_batch_failed(
    session: Session, settings: Settings, envelope_id: str, batch_id: str
) -> int:
    """After a mapper batch's unresolved disbursements were marked."""
    return record_results(
        session,
        settings,
        envelope_id,
        UNRESOLVED,
        Disbursement.mapper_batch_id == batch_id,
        Disbursement.state == DisbursementState.UNRESOLVED,
    )


def statement_applied(
    session: Session,
    settings: Settings,
    envelope_ids: list[str],
    remitted: Mapping[str, Sequence[str]],
    reversed_ids: Mapping[str, Sequence[str]],
) -> int:
    """After a statement's entries were applied: the remittances and the reversals this pass
    recorded (by envelope, as its chunks wrote them; so re-processing a statement reports only
    what it changed), envelope by envelope in id order, as the counters were locked."""
    queued = 0
    for envelope_id in sorted(envelope_ids):
        queued += record_results(
            session,
            settings,
            envelope_id,
            RECONCILED,
            ids=remitted.get(envelope_id, ()),
            settle=False,
        )
        queued += record_results(
            session,
            settings,
            envelope_id,
            REVERSED,
            ids=reversed_ids.get(envelope_id, ()),
            settle=False,
        )
        # After both: the summary closes the envelope's sequence.
        queued += settle_if_final(session, envelope_id)
    return queued


def settle_if_final(session: Session, envelope_id: str) -> int:
    """Queues the envelope's summary if it has just become settled."""
    envelope = _subscribed(session, envelope_id)
    if envelope is None:
        return 0
    now = utcnow()
    stream = _lock_stream(session, envelope_id, now)
    return _summary_if_settled(session, envelope, stream, now)


# -- Delivery ------------------------------------------------------------------------------


class CallbackSender:
    """One per process: the signing key and an HTTP connection pool (TLS verified)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._signer: CallbackSigner | None = None
        self._client = httpx.Client(
            timeout=settings.callback_timeout_seconds, verify=True, follow_redirects=False
        )

    @property
    def signer(self) -> CallbackSigner:
        if self._signer is None:
            self._signer = load_signer(self._settings)
        return self._signer

    def post(self, url: str, body: bytes, event_id: str, sequence: int) -> str | None:
        """POSTs one callback; None when the PBMS acknowledged it (2xx), else what went wrong
        (never the URL's query or any key)."""
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: self.signer.sign(body),
            "x-callback-event-id": event_id,
            "x-callback-sequence": str(sequence),
        }
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return "timed out"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def close(self) -> None:
        self._client.close()


def body_of(event: CallbackEvent, envelope: DisbursementEnvelope) -> bytes:
    """The callback's exact bytes, the same on every retry (the signature covers them)."""
    message = orjson.loads(event.message)
    created = event.created_at.isoformat()
    return orjson.dumps(
        {
            "header": {
                "version": "1.0.0",
                "message_id": event.id,
                "message_ts": created,
                "action": "on-disburse",
                "sender_id": SENDER_ID,
                "receiver_id": envelope.sender_id,
                "total_count": event.result_count,
                "is_msg_encrypted": False,
            },
            "message": {
                "event_id": event.id,
                "event_type": event.event_type,
                "sequence": event.sequence,
                "disbursement_envelope_id": envelope.id,
                "benefit_program_mnemonic": envelope.program_mnemonic,
                "created_at": created,
                **message,
            },
        }
    )


def _callback_settings(settings: Settings) -> Settings:
    """work.retry_later's backoff and parking, with the callbacks' own figures."""
    return settings.model_copy(
        update={
            "max_attempts": settings.callback_max_attempts,
            "retry_backoff_seconds": settings.callback_retry_backoff_seconds,
        }
    )


def deliver_callbacks(context: Context, envelope_id: str) -> bool:
    """Sends the envelope's undelivered callbacks in sequence order. True when it sent any."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        token = claim(session, CallbackStream, envelope_id, settings, utcnow())
        if token is None:
            return False
    sent = 0
    with Lease(context.session_factory, settings, CallbackStream.id, envelope_id, token) as lease:
        while True:
            with transaction(context.session_factory) as session:
                pending = None
                if sent < settings.callback_events_per_run:
                    pending = _next_event(session, envelope_id)
                if pending is not None:
                    event, envelope, url = pending
                    body = body_of(event, envelope)
                    event_id, sequence, count = event.id, event.sequence, event.result_count
            if pending is None:
                # Stopped outside any transaction: on SQLite a renewal in flight waits for the
                # database's one write lock, which a transaction open here would hold.
                lease.stop()
                with transaction(context.session_factory) as session:
                    _finish(session, lease, envelope_id)
                return sent > 0
            if url is None:
                error: str | None = "the program has no callback URL"
            else:
                error = context.callbacks().post(url, body, event_id, sequence)
            if error is not None:
                lease.stop()  # the retry's backoff is written as the lease
            with transaction(context.session_factory) as session:
                if not lease.holds(session):
                    return sent > 0
                if error is None:
                    _delivered(session, envelope_id, event_id, sequence, count)
                    sent += 1
                    continue
                _failed(session, settings, envelope_id, event_id, sequence, error, url)
                return sent > 0


def _next_event(
    session: Session, envelope_id: str
) -> tuple[CallbackEvent, DisbursementEnvelope, str | None] | None:
    stream = get_required(session, CallbackStream, envelope_id)
    event = session.scalar(
        select(CallbackEvent).where(
            CallbackEvent.envelope_id == envelope_id,
            CallbackEvent.sequence == stream.delivered_sequence + 1,
        )
    )
    if event is None:
        return None
    envelope = get_required(session, DisbursementEnvelope, envelope_id)
    url = session.scalar(
        select(CallbackSubscription.url).where(
            CallbackSubscription.program_mnemonic == envelope.program_mnemonic
        )
    )
    return event, envelope, url


def _finish(session: Session, lease: Lease, envelope_id: str) -> None:
    """Done when every sequence handed out is delivered; else (more came while sending, or the
    run's share is used up) the stream is given back, due now."""
    if not lease.holds(session):
        return
    stream = get_required(session, CallbackStream, envelope_id)
    done = stream.delivered_sequence >= stream.last_sequence
    stream.state = WorkState.DONE if done else WorkState.PENDING
    stream.lease_until = None
    stream.next_attempt_at = utcnow()


def _delivered(
    session: Session, envelope_id: str, event_id: str, sequence: int, count: int
) -> None:
    now = utcnow()
    session.execute(
        update(CallbackEvent)
        .where(CallbackEvent.id == event_id)
        .values(
            delivered_at=now,
            attempts=CallbackEvent.attempts + 1,
            last_attempt_at=now,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )
    # attempts back to 0: the next failure's backoff starts from the shortest again.
    session.execute(
        update(CallbackStream)
        .where(CallbackStream.id == envelope_id)
        .values(delivered_sequence=sequence, attempts=0, last_error=None)
        .execution_options(synchronize_session=False)
    )
    audit.record(
        session,
        "callback.delivered",
        "callback",
        event_id,
        envelope_id=envelope_id,
        detail={"sequence": sequence, "results": count},
    )
    CALLBACK_DELIVERIES.labels("delivered").inc()
    CALLBACK_RESULTS_DELIVERED.inc(count)


def _failed(
    session: Session,
    settings: Settings,
    envelope_id: str,
    event_id: str,
    sequence: int,
    error: str,
    url: str | None,
) -> None:
    now = utcnow()
    session.execute(
        update(CallbackEvent)
        .where(CallbackEvent.id == event_id)
        .values(attempts=CallbackEvent.attempts + 1, last_attempt_at=now, last_error=error)
        .execution_options(synchronize_session=False)
    )
    parked = retry_later(
        session, CallbackStream, envelope_id, error, _callback_settings(settings), now
    )
    if not parked:
        # Doubling from the first backoff, but never longer than the configured maximum.
        stream = get_required(session, CallbackStream, envelope_id)
        cap = now + timedelta(seconds=settings.callback_retry_backoff_max_seconds)
        if stream.next_attempt_at > cap:
            stream.next_attempt_at = stream.lease_until = cap
    shown = display_url(url) if url else "-"
    outcome = "parked" if parked else "retry"
    log.warning("callback %s seq %d to %s: %s (%s)", event_id, sequence, shown, error, outcome)
    audit.record(
        session,
        "callback.failed",
        "callback",
        event_id,
        outcome=outcome,
        envelope_id=envelope_id,
        detail={"sequence": sequence, "error": error, "url": shown},
    )
    CALLBACK_DELIVERIES.labels(outcome).inc()


# -- Operators -----------------------------------------------------------------------------


def resend(session: Session, envelope_id: str, from_sequence: int | None = None) -> CallbackStream:
    """An operator's re-send: a parked stream is due again with fresh attempts; with
    ``from_sequence`` the callbacks from that one on are sent again, delivered or not."""
    stream = session.scalar(
        select(CallbackStream).where(CallbackStream.id == envelope_id).with_for_update()
    )
    if stream is None:
        raise NotFound(
            ErrorCode.CALLBACK_STREAM_NOT_FOUND, f"no callbacks for envelope {envelope_id!r}"
        )
    before = {
        "state": stream.state,
        "delivered_sequence": stream.delivered_sequence,
        "attempts": stream.attempts,
    }
    if from_sequence is not None:
        if not 1 <= from_sequence <= stream.last_sequence:
            raise InvalidRequest(
                ErrorCode.INVALID_REQUEST,
                f"from_sequence must be between 1 and {stream.last_sequence}",
            )
        stream.delivered_sequence = min(stream.delivered_sequence, from_sequence - 1)
    stream.state = WorkState.PENDING
    stream.attempts = 0
    stream.lease_until = None
    stream.next_attempt_at = utcnow()
    stream.last_error = None
    session.flush()
    audit.record(
        session,
        "callback.resend",
        "callback_stream",
        envelope_id,
        envelope_id=envelope_id,
        detail={"before": before, "from_sequence": from_sequence},
    )
    return stream


def stream_status(
    session: Session, envelope_id: str, limit: int = 100
) -> tuple[CallbackStream, list[CallbackEvent]]:
    """The envelope's stream and its most recent events (newest first)."""
    stream = session.get(CallbackStream, envelope_id)
    if stream is None:
        raise NotFound(
            ErrorCode.CALLBACK_STREAM_NOT_FOUND, f"no callbacks for envelope {envelope_id!r}"
        )
    events = list(
        session.scalars(
            select(CallbackEvent)
            .where(CallbackEvent.envelope_id == envelope_id)
            .order_by(CallbackEvent.sequence.desc())
            .limit(limit)
        )
    )
    return stream, events


def parked_streams(session: Session, limit: int = 100) -> list[CallbackStream]:
    return list(
        session.scalars(
            select(CallbackStream)
            .where(CallbackStream.state == WorkState.FAILED)
            .order_by(CallbackStream.updated_at)
            .limit(limit)
        )
    )
