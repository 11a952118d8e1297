"""How a producer tick shares its payment-batch budget between envelopes, on PostgreSQL and on the
embedded SQLite: every envelope with work gets a share each tick, envelopes left out of one tick
come first in the next, and an envelope with nothing left to batch is not queried at all."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import event, func, select
from test_pipeline import ACCOUNT, upload

from bridge_support import FakeBank, disbursement_items, envelope_request, fake_context, mt940
from g2p_bridge.core import disbursements, envelopes, programs
from g2p_bridge.core.context import Context
from g2p_bridge.core.dispatch import plan_bank_batches
from g2p_bridge.core.funds import secure_funds
from g2p_bridge.core.mapper_resolution import plan_mapper_batches, resolve_mapper_batch
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import BankBatch, Disbursement
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload

SIZE = 50  # fake_context's dispatch_batch_size


def _context(session_factory: Any, batches_per_tick: int, bank: FakeBank | None = None) -> Context:
    return fake_context(session_factory, bank, batches_planned_per_tick=batches_per_tick)


def _funded_envelope(context: Context, envelope_id: str, *parts: tuple[int, str]) -> None:
    """An envelope of resolved disbursements, (count, bank) per part, its funds blocked."""
    count = sum(n for n, _ in parts)
    with transaction(context.session_factory) as session:
        if session.get(programs.BenefitProgram, "PROG1") is None:
            programs.create_program(
                session,
                ProgramPayload(
                    program_mnemonic="PROG1",
                    sponsor_bank_code="EXAMPLE",
                    sponsor_bank_account_number=ACCOUNT,
                    sponsor_bank_account_currency="USD",
                    resolver="inline",
                    id_mapper_resolution_required=False,
                ),
            )
        body = envelope_request(envelope_id, count=count, total=str(Decimal("10.00") * count))
        envelopes.create_envelope(
            session, EnvelopePayload(**body["message"]), "pbms-1", utcnow().date()
        )
        for n, bank in parts:
            items = disbursement_items(
                envelope_id, n, amount="10.00", prefix=f"d-{envelope_id}-{bank}", bank=bank
            )
            disbursements.create_disbursements(
                session, [DisbursementPayload(**i) for i in items], 100_000
            )
    while True:  # the inline addresses are read by the mapper step, as a worker would
        with transaction(context.session_factory) as session:
            mapper_batches = plan_mapper_batches(session, context.settings, utcnow())
        if not mapper_batches:
            break
        for batch_id in mapper_batches:
            assert resolve_mapper_batch(context, batch_id)
    assert secure_funds(context, envelope_id)


def _tick(context: Context, now: datetime) -> Counter[str]:
    """One planning pass; how many batches each envelope got in it."""
    with transaction(context.session_factory) as session:
        planned = plan_bank_batches(context, session, now)
        return Counter(
            session.scalars(select(BankBatch.envelope_id).where(BankBatch.id.in_(planned)))
        )


def _batch_sizes(context: Context) -> dict[str, list[int]]:
    with transaction(context.session_factory) as session:
        sizes: dict[str, list[int]] = {}
        for envelope_id, count in session.execute(
            select(BankBatch.envelope_id, BankBatch.disbursement_count).order_by(
                BankBatch.envelope_id, BankBatch.disbursement_count.desc()
            )
        ):
            sizes.setdefault(envelope_id, []).append(count)
        return sizes


def _resolved_left(context: Context) -> int:
    with transaction(context.session_factory) as session:
        return session.scalar(select(func.count()).where(Disbursement.state == "RESOLVED")) or 0


def test_envelopes_over_the_budget_each_get_a_share_every_tick(session_factory) -> None:
    context = _context(session_factory, batches_per_tick=4)  # 200 rows a tick
    for envelope_id in ("env-a", "env-b", "env-c"):
        _funded_envelope(context, envelope_id, (300, "OTHERBANK"))
    start = utcnow()
    done: Counter[str] = Counter()
    ticks = 0
    while _resolved_left(context):
        got = _tick(context, start + timedelta(seconds=ticks))
        ticks += 1
        assert sum(got.values()) == 4 or not _resolved_left(context)
        if ticks == 1:
            assert set(got) == {"env-a", "env-b", "env-c"}, got
        done += got
        # The remainder of 4 over 3 goes round: no envelope is ever more than a batch ahead.
        assert max(done.values()) - min(done.values()) <= 1, (ticks, done)
    assert ticks == 5  # 18 batches at 4 a tick
    assert _batch_sizes(context) == {e: [SIZE] * 6 for e in ("env-a", "env-b", "env-c")}


def test_envelopes_left_out_of_a_tick_come_first_in_the_next(session_factory) -> None:
    context = _context(session_factory, batches_per_tick=2)
    names = [f"env-{c}" for c in "abcde"]
    for envelope_id in names:
        _funded_envelope(context, envelope_id, (2 * SIZE, "OTHERBANK"))
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
    assert _resolved_left(context) == 0


def test_an_envelope_with_less_than_its_share_leaves_the_rest_to_the_others(
    session_factory,
) -> None:
    context = _context(session_factory, batches_per_tick=4)
    _funded_envelope(context, "env-small", (30, "OTHERBANK"))
    _funded_envelope(context, "env-big", (300, "OTHERBANK"))
    got = _tick(context, utcnow())
    # An even split is two batches each; the small one needs one, the big one gets three, and
    # every batch but the small envelope's tail is full.
    assert got == {"env-small": 1, "env-big": 3}
    assert _batch_sizes(context) == {"env-small": [30], "env-big": [SIZE] * 3}


def test_a_single_envelope_is_batched_by_destination_as_before(session_factory) -> None:
    bank = FakeBank(group_payments_by="bank")
    context = _context(session_factory, batches_per_tick=4, bank=bank)
    _funded_envelope(context, "env-a", (120, "BANKA"), (30, "BANKB"), (100, "BANKC"))
    assert _tick(context, utcnow()) == {"env-a": 5}  # 200 rows: the first 200 in id order
    with transaction(context.session_factory) as session:
        by_destination = sorted(
            session.execute(select(BankBatch.destination, BankBatch.disbursement_count))
        )
    assert by_destination == [
        ("BANKA", 20),
        ("BANKA", 50),
        ("BANKA", 50),
        ("BANKB", 30),
        ("BANKC", 50),
    ]


@contextmanager
def _statements(context: Context) -> Iterator[list[str]]:
    """Every statement sent on the context's engine, with its parameters."""
    seen: list[str] = []
    engine = context.session_factory.kw["bind"]

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append(f"{statement} {parameters!r}")

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_envelopes_with_nothing_left_to_batch_are_not_queried(session_factory) -> None:
    bank = FakeBank()
    context = _context(session_factory, batches_per_tick=4, bank=bank)
    runner = EmbeddedRunner(context)
    # Settled: shipped and reconciled (its counters say nothing is left)...
    _funded_envelope(context, "env-old", (60, "OTHERBANK"))
    assert runner.run_until_idle(timeout=60)
    with transaction(context.session_factory) as session:
        shipped = list(
            session.execute(
                select(Disbursement.id, Disbursement.amount).where(
                    Disbursement.envelope_id == "env-old"
                )
            )
        )
    entries = [("D", i, amount, f"/EREF/{i}/BENM//NAME/Person {i}") for i, amount in shipped]
    upload(context, mt940(ACCOUNT, entries))
    # ...and shipped, waiting for its statement (its rows say nothing is left to batch).
    _funded_envelope(context, "env-sent", (60, "OTHERBANK"))
    assert runner.run_until_idle(timeout=60)
    with transaction(context.session_factory) as session:
        states = dict(
            session.execute(
                select(Disbursement.envelope_id, func.min(Disbursement.state)).group_by(
                    Disbursement.envelope_id
                )
            ).all()
        )
    assert states == {"env-old": "RECONCILED", "env-sent": "SHIPPED"}

    _funded_envelope(context, "env-new", (60, "OTHERBANK"))
    with _statements(context) as seen:
        got = _tick(context, utcnow())
    assert got == {"env-new": 2}
    touching = [s for s in seen if "env-old" in s or "env-sent" in s]
    assert touching == [], touching
