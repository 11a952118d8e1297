"""Sharing one producer tick's budget of batches between the envelopes that have work, and the
one query both planners take an envelope's share with.

The mapper planner and the payment planner both take rows of many envelopes into batches of a
fixed size, at most a budget of batches a tick. Given to the envelopes in turn, the first one
with a million rows would take every tick's budget until it ran dry; shared, every envelope
with work moves each tick (or, with more envelopes than batches, within a few ticks: the callers
list the ones served least recently first)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar, TypeVarTuple

from sqlalchemy import Select
from sqlalchemy.orm import Session

from g2p_bridge.db import is_postgres
from g2p_bridge.models import Disbursement

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
Ts = TypeVarTuple("Ts")


def share_round_robin(
    keys: Sequence[K],
    batches: int,
    size: int,
    take: Callable[[K, R | None, int], Sequence[R]],
) -> dict[K, list[R]]:
    """The rows each key gets out of a budget of ``batches`` batches of ``size`` rows.

    In rounds: each round splits what is left of the budget evenly (in whole batches) between
    the keys still wanting, in the order given, the remainder one batch each to the first; each
    key's share is fetched with one call ``take(key, last row it got so far or None, rows)``,
    which must return the key's next rows after that one. A key that returns fewer rows than
    asked has no more, and what it left goes to the others in the next round, the ones given
    fewest batches so far first. A single key gets one call for the whole budget."""
    taken: dict[K, list[R]] = {key: [] for key in keys}
    granted = dict.fromkeys(taken, 0)
    wanting = list(taken)
    while batches > 0 and wanting:
        each, extra = divmod(batches, len(wanting))
        still: list[K] = []
        for position, key in enumerate(wanting):
            share = each + (1 if position < extra else 0)
            if share == 0:
                still.append(key)
                continue
            rows = taken[key]
            more = take(key, rows[-1] if rows else None, share * size)
            rows += more
            used = -(-len(more) // size)  # a short tail is a batch of its own
            granted[key] += used
            batches -= used
            if len(more) == share * size:
                still.append(key)
        still.sort(key=granted.__getitem__)  # stable: the order above among equals
        wanting = still
    return taken


def next_share(
    session: Session,
    query: Select[*Ts],
    envelope_id: str,
    state: str,
    after: str | None,
    limit: int,
) -> Select[*Ts]:
    """``query`` narrowed to an envelope's next ``limit`` disbursements in ``state``, in id
    order after ``after`` (the last one this tick already took: on PostgreSQL this transaction
    holds it locked, which SKIP LOCKED does not skip), locked for the caller's transaction.
    Served by ix_disbursements_envelope_state_id without a sort."""
    narrowed = (
        query.where(Disbursement.envelope_id == envelope_id, Disbursement.state == state)
        .order_by(Disbursement.id)
        .limit(limit)
    )
    if after is not None:
        narrowed = narrowed.where(Disbursement.id > after)
    if is_postgres(session):
        narrowed = narrowed.with_for_update(of=Disbursement, skip_locked=True)
    return narrowed
