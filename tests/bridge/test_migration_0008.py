"""Migration 0008 (DISPATCHING read off the bank batch) carries forward a database that holds
envelopes in every disbursement state, as the code before it left them, and the pipeline then
finishes every one of them: each payment made once, counters equal to rows."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text, update

from bridge_support import (
    FakeBank,
    counters_match_rows,
    disbursement_items,
    envelope_request,
    fake_context,
    mt940,
    states,
)
from g2p_bridge.auth import Principal
from g2p_bridge.connectors.mappers.base import AddressParser
from g2p_bridge.core import disbursements, envelopes, programs
from g2p_bridge.core.context import Context
from g2p_bridge.core.dispatch import plan_bank_batches, send_bank_batch
from g2p_bridge.core.funds import secure_funds
from g2p_bridge.core.mapper_resolution import plan_mapper_batches, resolve_mapper_batch
from g2p_bridge.core.statements import process_statement, store_statement
from g2p_bridge.db import make_engine, make_session_factory, transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.migrations import downgrade, upgrade
from g2p_bridge.models import BankBatch, Disbursement, MapperBatch
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ACCOUNT = "1000000001"
BANK = Principal("bank", "bank", bank_codes=frozenset({"EXAMPLE"}))
EVERY_STATE = {
    "RECEIVED",
    "RESOLVING",
    "RESOLVED",
    "UNRESOLVED",
    "BATCHED",
    "DISPATCHING",
    "SHIPPED",
    "RECONCILED",
    "REVERSED",
    "FAILED",
    "CANCELLED",
}


class WorkerKilled(BaseException):
    """Stands for SIGKILL after the bank was paid: nothing after it runs."""


@pytest.fixture(params=["postgres", "sqlite"])
def database_at_0007(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        upgrade(url)
        yield url
        return
    name = f"g2p_bridge_mig_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)  # the test takes it back to 0007 once its envelopes are built
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _envelope(context: Context, envelope_id: str, count: int, declared: int | None = None) -> None:
    declared = declared or count
    with transaction(context.session_factory) as session:
        body = envelope_request(envelope_id, count=declared, total=f"{10 * declared}.00")
        envelopes.create_envelope(
            session, EnvelopePayload(**body["message"]), "pbms-1", utcnow().date()
        )
    _receive(context, envelope_id, count)


def _receive(
    context: Context, envelope_id: str, count: int, first: int = 0, at_ingest: bool = False
) -> list[str]:
    items = [
        DisbursementPayload(**item)
        for item in disbursement_items(envelope_id, first + count, "10.00", prefix=envelope_id)[
            first:
        ]
    ]
    if envelope_id == "env-done":  # one address nobody can parse
        items[0] = items[0].model_copy(update={"financial_address": "nowhere"})
    parser = AddressParser(context.settings) if at_ingest else None
    with transaction(context.session_factory) as session:
        stored = disbursements.create_disbursements(session, items, 100, parser)
    return [d.disbursement_id or "" for d in stored]


def _ids(context: Context, envelope_id: str, state: str | None = None) -> list[str]:
    with transaction(context.session_factory) as session:
        query = select(Disbursement.id).where(Disbursement.envelope_id == envelope_id)
        if state:
            query = query.where(Disbursement.state == state)
        return list(session.scalars(query.order_by(Disbursement.id)))


def _batch_of(context: Context, envelope_id: str) -> str:
    with transaction(context.session_factory) as session:
        return session.scalars(
            select(BankBatch.id).where(BankBatch.envelope_id == envelope_id)
        ).one()


def _resolve_all(context: Context, *envelope_ids: str) -> None:
    with transaction(context.session_factory) as session:
        plan_mapper_batches(session, context.settings, utcnow())
        batches = list(
            session.scalars(select(MapperBatch.id).where(MapperBatch.envelope_id.in_(envelope_ids)))
        )
    for batch_id in batches:
        assert resolve_mapper_batch(context, batch_id)


def _statement(context: Context, paid: list[str], returned: list[str], number: int) -> None:
    entries = [("D", i, Decimal("10.00"), f"/EREF/{i}") for i in paid]
    entries += [("RD", i, Decimal("10.00"), f"/EREF/{i}/RTRN/ACCOUNT_CLOSED") for i in returned]
    with transaction(context.session_factory) as session:
        statement_id = store_statement(
            session, mt940(ACCOUNT, entries, number=number).encode(), "s.mt940", BANK, 10**7
        ).id
    assert process_statement(context, statement_id)


def _build_old_database(context: Context, bank: FakeBank) -> None:
    """Every state, reached with today's steps, and DISPATCHING written as the code before 0008
    wrote it (on the rows of a batch whose worker died after the bank had paid it)."""
    with transaction(context.session_factory) as session:
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
    sent = ["env-failed", "env-dispatching", "env-shipped", "env-done", "env-batched"]
    for envelope_id in sent:
        _envelope(context, envelope_id, 3)
    _resolve_all(context, *sent)
    for envelope_id in sent:
        assert secure_funds(context, envelope_id)
    with transaction(context.session_factory) as session:
        plan_bank_batches(context, session, utcnow())

    bank.reject_payments = True
    assert send_bank_batch(context, _batch_of(context, "env-failed"))
    bank.reject_payments = False

    real = bank.initiate_payment

    def pay_then_die(payments):  # type: ignore[no-untyped-def]
        real(payments)
        raise WorkerKilled

    bank.initiate_payment = pay_then_die  # type: ignore[method-assign]
    with pytest.raises(WorkerKilled):
        send_bank_batch(context, _batch_of(context, "env-dispatching"))
    bank.initiate_payment = real  # type: ignore[method-assign]
    with transaction(context.session_factory) as session:
        session.execute(
            update(Disbursement)
            .where(Disbursement.envelope_id == "env-dispatching")
            .values(state="DISPATCHING")
        )
        session.execute(  # the dead worker's lease has run out
            update(BankBatch)
            .where(BankBatch.envelope_id == "env-dispatching")
            .values(lease_until=utcnow(), next_attempt_at=utcnow())
        )

    assert send_bank_batch(context, _batch_of(context, "env-shipped"))
    assert send_bank_batch(context, _batch_of(context, "env-done"))
    done = _ids(context, "env-done", "SHIPPED")
    _statement(context, done, done[:1], number=1)

    with transaction(context.session_factory) as session:
        disbursements.cancel_disbursements(
            session, [DisbursementPayload(disbursement_id=_ids(context, "env-batched")[0])], 100
        )

    _envelope(context, "env-resolved", 2, declared=3)  # incomplete: its funds wait
    _envelope(context, "env-resolving", 2)
    _resolve_all(context, "env-resolved")  # env-resolving's mapper batch is never run
    _envelope(context, "env-received", 2)


def test_0008_carries_every_state_forward_and_the_pipeline_finishes_them(
    database_at_0007: str,
) -> None:
    engine = make_engine(database_at_0007)
    try:
        session_factory = make_session_factory(engine)
        bank = FakeBank()
        context = fake_context(session_factory, bank)
        # Today's steps build the envelopes (on today's schema, which they need), then the
        # database goes back to 0007: 0008's downgrade stores DISPATCHING on the started batch's
        # rows, as the code of 0007 did, and every later table goes away.
        _build_old_database(context, bank)
        downgrade(database_at_0007, "0007")
        with engine.connect() as conn:
            stored = {
                state for (state,) in conn.execute(text("SELECT DISTINCT state FROM disbursements"))
            }
        assert stored == EVERY_STATE
        before = {e: states(session_factory, e) for e in _envelope_ids(context)}
        paid_before = dict(bank.payments)
        assert len(paid_before) == 3 + 3 + 2  # dispatching (the bank has it), shipped, done

        assert _partial_batch_indexes(engine) is False
        upgrade(database_at_0007)  # through 0008 to the head
        assert _partial_batch_indexes(engine) is True
        with engine.connect() as conn:
            assert (
                conn.execute(
                    text("SELECT count(*) FROM disbursements WHERE state = 'DISPATCHING'")
                ).scalar()
                == 0
            )
        # Every answer as before: the started batch's rows are reported DISPATCHING.
        assert {e: states(session_factory, e) for e in _envelope_ids(context)} == before
        assert before["env-dispatching"] == {"DISPATCHING": 3}
        with pytest.raises(Exception) as refused, transaction(session_factory) as session:
            disbursements.cancel_disbursements(
                session,
                [DisbursementPayload(disbursement_id=_ids(context, "env-dispatching")[0])],
                100,
            )
        assert getattr(refused.value, "item_errors", None) == {
            "0": ["DISBURSEMENT_ALREADY_DISPATCHED"]
        }
        downgrade(database_at_0007, "0007")  # and back: DISPATCHING stored again
        with engine.connect() as conn:
            assert (
                conn.execute(
                    text("SELECT count(*) FROM disbursements WHERE state = 'DISPATCHING'")
                ).scalar()
                == 3
            )
        assert _partial_batch_indexes(engine) is False
        upgrade(database_at_0007)
        counters_match_rows(session_factory)

        # Finish them: the missing disbursement of the incomplete envelope, then the pipeline.
        _receive(context, "env-resolved", 1, first=2, at_ingest=True)
        assert EmbeddedRunner(context).run_until_idle(timeout=60)
        shipped = {e: _ids(context, e, "SHIPPED") for e in _envelope_ids(context)}
        _statement(context, [i for ids in shipped.values() for i in ids], [], number=2)
        assert EmbeddedRunner(context).run_until_idle(timeout=60)

        after = {e: states(session_factory, e) for e in _envelope_ids(context)}
        assert after == {
            "env-batched": {"CANCELLED": 1, "RECONCILED": 2},
            "env-dispatching": {"RECONCILED": 3},
            "env-done": {"UNRESOLVED": 1, "RECONCILED": 1, "REVERSED": 1},
            "env-failed": {"FAILED": 3},
            "env-received": {"RECONCILED": 2},
            "env-resolved": {"RECONCILED": 3},
            "env-resolving": {"RECONCILED": 2},
            "env-shipped": {"RECONCILED": 3},
        }
        # Exactly once: the dead worker's batch went to the bank again, under the same
        # references, and the bank holds one payment per reconciled or reversed disbursement.
        with transaction(session_factory) as session:
            settled = session.scalar(
                select(func.count()).where(Disbursement.state.in_(["RECONCILED", "REVERSED"]))
            )
        assert len(bank.payments) == settled == 17
        assert {k: v for k, v in bank.payments.items() if k in paid_before} == paid_before
        counters_match_rows(session_factory)
    finally:
        engine.dispose()


def _envelope_ids(context: Context) -> list[str]:
    with transaction(context.session_factory) as session:
        return sorted(set(session.scalars(select(Disbursement.envelope_id))))


def _partial_batch_indexes(engine: Engine) -> bool:
    """Whether the batch-id indexes of disbursements are partial (both change together)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            query = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'disbursements'"
        else:
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'disbursements'"
        rows = conn.execute(text(query)).all()
    pair = ("ix_disbursements_mapper_batch", "ix_disbursements_bank_batch")
    found = {name: "WHERE" in (sql or "").upper() for name, sql in rows if name in pair}
    assert len(found) == 2 and len(set(found.values())) == 1, found
    return found["ix_disbursements_bank_batch"]
