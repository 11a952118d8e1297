"""Resolving beneficiary ids to financial addresses, in batches, through the program's resolver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Table, bindparam, exists, func, insert, select, update
from sqlalchemy.orm import Session

from g2p_bridge.connectors.mappers.base import (
    AddressParser,
    MapperUnavailable,
    ResolveItem,
    Unresolved,
)
from g2p_bridge.core import callbacks
from g2p_bridge.core.budget import next_share, share_round_robin
from g2p_bridge.core.context import Context
from g2p_bridge.core.envelopes import bump_counters
from g2p_bridge.core.work import Lease, claim, retry_later
from g2p_bridge.db import bulk_insert, get_required, one_of, transaction
from g2p_bridge.models import (
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    EnvelopeStatus,
    MapperBatch,
    ResolvedAddress,
)
from g2p_bridge.models.base import new_id, utcnow
from g2p_bridge.models.enums import DisbursementState, WorkState
from g2p_bridge.settings import Settings


def _envelopes_with_received(session: Session) -> list[tuple[str, BenefitProgram]]:
    """(envelope id, program) of every envelope that has RECEIVED disbursements, least recently
    planned first.

    Its counters rule a settled envelope out with no probe: a RECEIVED row is counted as
    received and neither as reconciled nor as failed, and the counters equal the rows (see
    EnvelopeStatus). An envelope not yet settled costs one probe of
    ix_disbursements_envelope_state_id.

    The order: never planned first, then by when the envelope's last mapper batch was planned
    (ix_mapper_batches_envelope_created), so an envelope left out of a tick's budget comes first
    in the next; among those planned in the same tick, the one given fewer rows so far first, so
    the budget's remainder goes round too; then the oldest envelope."""
    e, s, p, d, m = DisbursementEnvelope, EnvelopeStatus, BenefitProgram, Disbursement, MapperBatch
    last_planned = (
        select(func.max(m.created_at)).where(m.envelope_id == e.id).correlate(e).scalar_subquery()
    )
    rows_planned = (
        select(func.coalesce(func.sum(m.size), 0))
        .where(m.envelope_id == e.id)
        .correlate(e)
        .scalar_subquery()
    )
    query = (
        select(e.id, p)
        .join(s, s.envelope_id == e.id)
        .join(p, p.mnemonic == e.program_mnemonic)
        .where(
            s.received_count > s.reconciled_count + s.failed_count,
            exists().where(d.envelope_id == e.id, d.state == DisbursementState.RECEIVED),
        )
        .order_by(last_planned.asc().nulls_first(), rows_planned, e.created_at, e.id)
    )
    return [(envelope_id, program) for envelope_id, program in session.execute(query)]


def _received_ids(session: Session, envelope_id: str, after: str | None, limit: int) -> list[str]:
    """The envelope's next RECEIVED rows."""
    received = DisbursementState.RECEIVED
    query = next_share(session, select(Disbursement.id), envelope_id, received, after, limit)
    return list(session.scalars(query))


def plan_mapper_batches(session: Session, settings: Settings, now: datetime) -> list[str]:
    """Puts newly received disbursements into mapper batches, sharing the tick's budget of
    ``batches_planned_per_tick`` batches between the envelopes that have them; returns the new
    batch ids.

    Round-robin (``share_round_robin``) in the order of ``_envelopes_with_received``, each
    envelope's share taken with one SELECT ... LIMIT a round, so a million-row envelope no
    longer holds back the resolution of every envelope after it. A single envelope is batched
    exactly as before: one SELECT of the whole budget, full batches but the tail."""
    envelopes = _envelopes_with_received(session)
    resolvers = {envelope_id: program.resolver_name for envelope_id, program in envelopes}

    def take(envelope_id: str, last: str | None, limit: int) -> list[str]:
        return _received_ids(session, envelope_id, last, limit)

    taken = share_round_robin(
        list(resolvers), settings.batches_planned_per_tick, settings.mapper_batch_size, take
    )
    batch_ids = []
    for envelope_id, ids in taken.items():
        resolver = resolvers[envelope_id]
        for start in range(0, len(ids), settings.mapper_batch_size):
            chunk = ids[start : start + settings.mapper_batch_size]
            batch_id = new_id()
            session.execute(
                insert(MapperBatch).values(
                    id=batch_id,
                    envelope_id=envelope_id,
                    resolver=resolver,
                    size=len(chunk),
                    state=WorkState.PENDING,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            session.execute(
                update(Disbursement)
                .where(
                    one_of(session, Disbursement.id, chunk),
                    Disbursement.state == DisbursementState.RECEIVED,
                )
                .values(state=DisbursementState.RESOLVING, mapper_batch_id=batch_id, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            batch_ids.append(batch_id)
    return batch_ids


def resolve_mapper_batch(context: Context, batch_id: str) -> bool:
    """Resolves one batch. The resolver is called outside any transaction; the answer is written
    in one. True when this call did the work (False: someone else holds or finished it)."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        token = claim(session, MapperBatch, batch_id, settings, utcnow())
        if token is None:
            return False
        resolver_name = get_required(session, MapperBatch, batch_id).resolver
        items = [
            ResolveItem(row.id, row.beneficiary_id, row.financial_address)
            for row in session.execute(
                select(
                    Disbursement.id, Disbursement.beneficiary_id, Disbursement.financial_address
                ).where(
                    Disbursement.mapper_batch_id == batch_id,
                    Disbursement.state == DisbursementState.RESOLVING,
                )
            )
        ]
    with Lease(context.session_factory, settings, MapperBatch.id, batch_id, token) as lease:
        return _resolve(context, lease, batch_id, resolver_name, items)


def _resolve(
    context: Context, lease: Lease, batch_id: str, resolver_name: str, items: list[ResolveItem]
) -> bool:
    settings = context.settings
    try:
        answers = context.resolver(resolver_name).resolve(items) if items else {}
    except MapperUnavailable as exc:
        lease.stop()
        with transaction(context.session_factory) as session:
            if not lease.holds(session):
                return False
            parked = retry_later(session, MapperBatch, batch_id, str(exc), settings, utcnow())
            if parked:
                _fail_unresolved(session, settings, batch_id, f"mapper unavailable: {exc}")
        return True

    now = utcnow()
    addresses, unresolved = destinations(context.address_parser, items, answers, now)
    lease.stop()
    with transaction(context.session_factory) as session:
        # Locked, so a worker whose lease ran out cannot write the same answers a second time.
        if not lease.holds(session):
            return False
        batch = session.get(MapperBatch, batch_id)
        if batch is None or batch.state != WorkState.RUNNING:
            return False
        resolved_ids = [str(a["disbursement_id"]) for a in addresses]
        if resolved_ids:
            bulk_insert(session, ResolvedAddress, addresses)
            session.execute(
                update(Disbursement)
                .where(
                    one_of(session, Disbursement.id, resolved_ids),
                    Disbursement.state == DisbursementState.RESOLVING,
                )
                .values(state=DisbursementState.RESOLVED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        failed = 0
        if unresolved:
            # One executemany; a row cancelled meanwhile is left alone, hence the count after.
            table = Disbursement.__table__
            if not isinstance(table, Table):  # a mapped class's table, never a subquery
                raise TypeError(f"{Disbursement.__name__} is not mapped to a table")
            session.execute(
                update(table)
                .where(
                    table.c.id == bindparam("row_id"), table.c.state == DisbursementState.RESOLVING
                )
                .values(
                    state=DisbursementState.UNRESOLVED,
                    state_reason=bindparam("reason"),
                    updated_at=now,
                ),
                [{"row_id": i, "reason": r} for i, r in unresolved.items()],
            )
            failed = (
                session.scalar(
                    select(func.count()).where(
                        Disbursement.mapper_batch_id == batch_id,
                        Disbursement.state == DisbursementState.UNRESOLVED,
                    )
                )
                or 0
            )
        bump_counters(session, batch.envelope_id, failed_count=failed)
        if failed:
            callbacks.mapper_batch_failed(session, context.settings, batch.envelope_id, batch_id)
        batch.state = WorkState.DONE
        batch.lease_until = None
    return True


def destinations(
    parser: AddressParser,
    items: Sequence[ResolveItem],
    answers: Mapping[str, str | Unresolved],
    now: datetime,
    at_receipt: bool = False,
) -> tuple[list[dict[str, object]], dict[str, str]]:
    """The resolved-address rows of the items the resolver answered with a parseable address,
    and why each of the others has none. ``at_receipt``: resolved at ingest, ``now`` being the
    disbursements' own ``receipt_at`` (then not stored again)."""
    addresses: list[dict[str, object]] = []
    unresolved: dict[str, str] = {}
    for item in items:
        answer = answers.get(item.disbursement_id) or Unresolved("resolver gave no answer")
        destination = answer if isinstance(answer, Unresolved) else parser.parse(answer)
        if isinstance(destination, Unresolved):
            unresolved[item.disbursement_id] = destination.reason
            continue
        if not isinstance(answer, str):  # only an Unresolved parses to an Unresolved
            raise TypeError(f"resolver answer {answer!r} is not an address")
        addresses.append(
            {
                "disbursement_id": item.disbursement_id,
                # Not stored twice: an inline program's answer is the disbursement's own.
                "answered_address": None if answer == item.inline_address else answer,
                "address_type": destination.address_type.value,
                "bank_account_number": destination.bank_account_number,
                "bank_code": destination.bank_code,
                "branch_code": destination.branch_code,
                "mobile_number": destination.mobile_number,
                "mobile_wallet_provider": destination.mobile_wallet_provider,
                "email_address": destination.email_address,
                "email_wallet_provider": destination.email_wallet_provider,
                "answered_at": None if at_receipt else now,
            }
        )
    return addresses, unresolved


def _fail_unresolved(session: Session, settings: Settings, batch_id: str, reason: str) -> None:
    batch = get_required(session, MapperBatch, batch_id)
    failed = session.execute(
        update(Disbursement)
        .where(
            Disbursement.mapper_batch_id == batch_id,
            Disbursement.state == DisbursementState.RESOLVING,
        )
        .values(state=DisbursementState.UNRESOLVED, state_reason=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    bump_counters(session, batch.envelope_id, failed_count=failed)
    if failed:
        callbacks.mapper_batch_failed(session, settings, batch.envelope_id, batch_id)
