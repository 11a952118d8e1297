"""How a producer tick shares its mapper-batch budget between envelopes, on PostgreSQL and on the
embedded SQLite: every envelope with received disbursements gets a share each tick, envelopes
left out of one tick come first in the next, and a single envelope is batched as it always was."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from bridge_support import disbursement_items, envelope_request, fake_context
from g2p_bridge.core import disbursements, envelopes, programs
from g2p_bridge.core.context import Context
from g2p_bridge.core.mapper_resolution import plan_mapper_batches
from g2p_bridge.db import transaction
from g2p_bridge.models import Disbursement, MapperBatch
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload

SIZE = 50  # fake_context's mapper_batch_size

# Inline (addresses read off the payload) and an ID-mapper program: each batch names its resolver.
_PROGRAMS = {"PROG1": ("1000000001", False), "PROG2": ("1000000002", True)}
_RESOLVERS = {"PROG1": "inline", "PROG2": "g2p-connect"}


def _context(session_factory: Any, batches_per_tick: int) -> Context:
    return fake_context(session_factory, batches_planned_per_tick=batches_per_tick)


def _received_envelope(
    context: Context, envelope_id: str, count: int, program: str = "PROG1"
) -> None:
    """An envelope of ``count`` disbursements, all RECEIVED (none resolved on the way in)."""
    with transaction(context.session_factory) as session:
        if session.get(programs.BenefitProgram, program) is None:
            account, id_mapper = _PROGRAMS[program]
            programs.create_program(
                session,
                ProgramPayload(
                    program_mnemonic=program,
                    sponsor_bank_code="EXAMPLE",
                    sponsor_bank_account_number=account,
                    sponsor_bank_account_currency="USD",
                    id_mapper_resolution_required=id_mapper,
                ),
            )
        body = envelope_request(
            envelope_id, count=count, total=str(Decimal("10.00") * count), program=program
        )
        envelopes.create_envelope(
            session, EnvelopePayload(**body["message"]), "pbms-1", utcnow().date()
        )
        items = disbursement_items(envelope_id, count, amount="10.00", prefix=f"d-{envelope_id}")
        disbursements.create_disbursements(
            session, [DisbursementPayload(**i) for i in items], 100_000
        )


def _tick(context: Context, now: datetime) -> Counter[str]:
    """One planning pass; how many mapper batches each envelope got in it."""
    with transaction(context.session_factory) as session:
        planned = plan_mapper_batches(session, context.settings, now)
        return Counter(
            session.scalars(select(MapperBatch.envelope_id).where(MapperBatch.id.in_(planned)))
        )


def _batches(context: Context) -> dict[str, list[tuple[str, int]]]:
    """(resolver, size) of each envelope's mapper batches, largest first."""
    with transaction(context.session_factory) as session:
        batches: dict[str, list[tuple[str, int]]] = {}
        for envelope_id, resolver, size in session.execute(
            select(MapperBatch.envelope_id, MapperBatch.resolver, MapperBatch.size).order_by(
                MapperBatch.envelope_id, MapperBatch.size.desc()
            )
        ):
            batches.setdefault(envelope_id, []).append((resolver, size))
        return batches


def _received_left(context: Context) -> int:
    with transaction(context.session_factory) as session:
        return session.scalar(select(func.count()).where(Disbursement.state == "RECEIVED")) or 0


def test_envelopes_over_the_budget_each_get_a_share_every_tick(session_factory) -> None:
    context = _context(session_factory, batches_per_tick=4)  # 200 rows a tick
    names = {"env-a": "PROG1", "env-b": "PROG2", "env-c": "PROG1"}
    for envelope_id, program in names.items():
        _received_envelope(context, envelope_id, 300, program)
    start = utcnow()
    done: Counter[str] = Counter()
    ticks = 0
    while _received_left(context):
        got = _tick(context, start + timedelta(seconds=ticks))
        ticks += 1
        assert sum(got.values()) == 4 or not _received_left(context), got
        if ticks == 1:
            assert set(got) == set(names), got
        done += got
        # The remainder of 4 over 3 goes round: no envelope is ever more than a batch ahead.
        assert max(done.values()) - min(done.values()) <= 1, (ticks, done)
    assert ticks == 5  # 18 batches at 4 a tick
    assert _batches(context) == {e: [(_RESOLVERS[p], SIZE)] * 6 for e, p in names.items()}


def test_envelopes_left_out_of_a_tick_come_first_in_the_next(session_factory) -> None:
    context = _context(session_factory, batches_per_tick=2)
    names = [f"env-{c}" for c in "abcde"]
    for envelope_id in names:
        _received_envelope(context, envelope_id, 2 * SIZE)
    start = utcnow()
    done: Counter[str] = Counter()
    for tick in range(5):
        got = _tick(context, start + timedelta(seconds=tick))
        assert sum(got.values()) == 2 and max(got.values()) == 1, got
        done += got
        # Five envelopes, two batches a tick: each has had one by the third tick, a second by
        # the fifth, and none is ever more than one batch ahead of another.
        counts = [done[name] for name in names]
        assert max(counts) - min(counts) <= 1, (tick, done)
    assert done == dict.fromkeys(names, 2)
    assert _received_left(context) == 0


def test_an_envelope_with_less_than_its_share_leaves_the_rest_to_the_others(
    session_factory,
) -> None:
    context = _context(session_factory, batches_per_tick=4)
    _received_envelope(context, "env-small", 30)
    _received_envelope(context, "env-big", 300)
    got = _tick(context, utcnow())
    # An even split is two batches each; the small one needs one, the big one gets three, and
    # every batch but the small envelope's tail is full.
    assert got == {"env-small": 1, "env-big": 3}
    assert _batches(context) == {"env-small": [("inline", 30)], "env-big": [("inline", SIZE)] * 3}


def test_a_single_envelope_is_batched_as_before(session_factory) -> None:
    # A guard, not a fix: one envelope alone takes the whole budget in id order, as it always
    # did, full batches but the tail.
    context = _context(session_factory, batches_per_tick=4)
    _received_envelope(context, "env-a", 230, "PROG2")
    with transaction(context.session_factory) as session:
        ids = list(session.scalars(select(Disbursement.id).order_by(Disbursement.id)))
    start = utcnow()
    assert _tick(context, start) == {"env-a": 4}
    assert _tick(context, start + timedelta(seconds=1)) == {"env-a": 1}
    assert _tick(context, start + timedelta(seconds=2)) == {}
    with transaction(context.session_factory) as session:
        batches = session.execute(
            select(MapperBatch.id, MapperBatch.resolver, MapperBatch.size, MapperBatch.created_at)
        ).all()
        members = {
            batch_id: sorted(
                session.scalars(
                    select(Disbursement.id).where(Disbursement.mapper_batch_id == batch_id)
                )
            )
            for batch_id, *_ in batches
        }
    in_order = sorted(batches, key=lambda b: (b.created_at, members[b.id][0]))
    assert [(b.resolver, b.size) for b in in_order] == [("g2p-connect", SIZE)] * 4 + [
        ("g2p-connect", 30)
    ]
    assert [members[b.id] for b in in_order] == [ids[i : i + SIZE] for i in range(0, 230, SIZE)]
