"""Migration 0016 (reconciliation rows without copies): a database holding remittances,
reversals and resolved addresses answers exactly as before after going down to 0015 (the
columns recomputed from what remains) and up again (the daily totals summed from the columns);
and the old columns, restored, hold what the code before stored."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, text
from test_migration_0003 import empty_database  # noqa: F401 (the fixture)
from test_statement_trust import add_program

from bridge_support import (
    TODAY,
    FakeBank,
    disbursement_items,
    envelope_request,
    fake_context,
    mt940,
)
from g2p_bridge.api.views import disbursement_statuses
from g2p_bridge.auth import Principal
from g2p_bridge.connectors.mappers.base import AddressParser
from g2p_bridge.core import disbursements, envelopes, overview
from g2p_bridge.core.context import Context
from g2p_bridge.core.dispatch import plan_bank_batches, send_bank_batch
from g2p_bridge.core.funds import secure_funds
from g2p_bridge.core.statements import process_statement, store_statement
from g2p_bridge.db import make_engine, make_session_factory, transaction
from g2p_bridge.migrations import downgrade, upgrade
from g2p_bridge.models import BankBatch, Disbursement
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.console import FAILED_ROWS
from g2p_bridge.models.disbursement import BATCHED_ROWS
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload

ACCOUNT = "1000000001"
BANK = Principal("bank", "bank", bank_codes=frozenset({"EXAMPLE"}))
AMOUNTS = {"env-a": "10.00", "env-b": "7.25"}
LATER = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _build(context: Context) -> list[str]:
    """Two envelopes paid; one of each reversed, one in the statement that paid it and one in a
    later one; one disbursement never shipped (its address unparseable)."""
    with transaction(context.session_factory) as session:
        add_program(session, "PROG1", "EXAMPLE", ACCOUNT)
    ids: list[str] = []
    for envelope_id, amount in AMOUNTS.items():
        count = 4
        with transaction(context.session_factory) as session:
            body = envelope_request(envelope_id, count=count, total=str(Decimal(amount) * count))
            envelopes.create_envelope(
                session, EnvelopePayload(**body["message"]), "pbms-1", utcnow().date()
            )
        items = [
            DisbursementPayload(**item)
            for item in disbursement_items(envelope_id, count, amount, prefix=envelope_id)
        ]
        if envelope_id == "env-b":
            items[3] = items[3].model_copy(update={"financial_address": "nowhere"})
        with transaction(context.session_factory) as session:
            stored = disbursements.create_disbursements(
                session, items, 100, AddressParser(context.settings)
            )
        ids += [d.disbursement_id or "" for d in stored]
        assert secure_funds(context, envelope_id)
    with transaction(context.session_factory) as session:
        plan_bank_batches(context, session, utcnow())
        batches = list(session.scalars(select(BankBatch.id).order_by(BankBatch.id)))
    for batch_id in batches:
        assert send_bank_batch(context, batch_id)
    with transaction(context.session_factory) as session:
        shipped = {
            i: a
            for i, a in session.execute(
                select(Disbursement.id, Disbursement.amount)
                .where(Disbursement.state == "SHIPPED")
                .order_by(Disbursement.id)
            )
        }
    assert len(shipped) == 7
    paid = [("D", i, a, f"/EREF/{i}") for i, a in shipped.items()]
    first = [("RD", "env-a-000000", shipped["env-a-000000"], "/EREF/x/RTRN/ACCOUNT_CLOSED")]
    later = [("RD", "env-b-000001", shipped["env-b-000001"], "/EREF/y/RTRN/NO_SUCH_ACCOUNT")]
    for number, entries in ((1, paid + first), (2, later)):
        with transaction(context.session_factory) as session:
            content = mt940(ACCOUNT, entries, number=number).encode()
            statement_id = store_statement(session, content, "s.mt940", BANK, 10**7).id
        assert process_statement(context, statement_id)
    return [*ids, "never-had-it"]


def _answers(context: Context, ids: list[str]) -> dict[str, Any]:
    """What the status API, the console's disbursement page and its dashboard show."""
    with transaction(context.session_factory) as session:
        statuses = [a.model_dump(mode="json") for a in disbursement_statuses(session, ids)]
        stories = {}
        for disbursement_id in ids[:-1]:
            story = overview.disbursement_story(session, disbursement_id)
            assert story is not None
            recon, address = story.recon, story.address
            stories[disbursement_id] = (
                None
                if recon is None
                else (
                    recon.remittance_statement_id,
                    recon.remittance_statement_number,
                    recon.remittance_entry_sequence,
                    recon.remittance_entry_date,
                    recon.remittance_amount,
                    recon.remittance_reference_number,
                    recon.beneficiary_name_from_bank,
                    recon.reversal_found,
                    recon.reversal_entry_date,
                    recon.reversal_reason,
                ),
                None
                if address is None
                else (address.address_type, address.financial_address, address.resolved_at),
            )
        board = overview.dashboard(session, None, TODAY, 3)
    return {"statuses": statuses, "stories": stories, "today": board.today}


def test_0016_keeps_every_answer_down_to_0015_and_up_again(empty_database: str) -> None:  # noqa: F811
    upgrade(empty_database)
    engine = make_engine(empty_database)
    try:
        context = fake_context(make_session_factory(engine), FakeBank())
        ids = _build(context)
        before = _answers(context, ids)
        assert before["today"] == {
            "USD": {
                "blocked": Decimal("69.00"),
                "paid": Decimal("40.00") + Decimal("7.25") * 3,
                "returned": Decimal("10.00") + Decimal("7.25"),
            }
        }
        reversed_ = {
            s["disbursement_id"]
            for s in before["statuses"]
            if s["disbursement_recon_records"]
            and any(
                r["reversal_found"]
                for r in s["disbursement_recon_records"]["disbursement_recon_payloads"]
            )
        }
        assert reversed_ == {"env-a-000000", "env-b-000001"}
        recons = [
            r
            for s in before["statuses"]
            if s["disbursement_recon_records"]
            for r in s["disbursement_recon_records"]["disbursement_recon_payloads"]
        ]
        assert len(recons) == 7
        assert all(
            r["bank_disbursement_batch_id"] and r["disbursement_envelope_id"] for r in recons
        )
        assert sum(recon is not None for recon, _ in before["stories"].values()) == 7

        engine.dispose()
        downgrade(empty_database, "0015")
        with engine.connect() as conn:
            # The columns as the code before wrote them: the disbursement's own values.
            restored = conn.execute(
                text(
                    "SELECT r.disbursement_id, r.envelope_id = d.envelope_id, "
                    "r.bank_batch_id = d.bank_batch_id, r.remittance_amount = d.amount, "
                    "r.reversal_found, r.created_at IS NOT NULL AND r.updated_at IS NOT NULL "
                    "FROM disbursement_recons r JOIN disbursements d ON d.id = r.disbursement_id "
                    "ORDER BY r.disbursement_id"
                )
            ).all()
            assert [(row[0], *map(bool, row[1:])) for row in restored] == [
                (i, True, True, True, i in reversed_, True)
                for i in ids
                if i != "env-b-000003" and i != "never-had-it"
            ]
            # The dashboard's query before 0016, over the restored columns.
            old_sums = {
                kind: conn.execute(
                    text(
                        f"SELECT SUM(remittance_amount) FROM disbursement_recons WHERE {day} = :d"
                    ),
                    {"d": TODAY},
                ).scalar()
                for kind, day in (
                    ("paid", "remittance_entry_date"),
                    ("returned", "reversal_entry_date"),
                )
            }
        if engine.dialect.name == "sqlite":  # stored as 1/10,000ths there
            old_sums = {k: Decimal(v).scaleb(-4) for k, v in old_sums.items()}
        assert old_sums == {
            "paid": before["today"]["USD"]["paid"],
            "returned": before["today"]["USD"]["returned"],
        }
        with engine.connect() as conn:
            # What an ID mapper answers is not the disbursement's own address, nor at its time.
            conn.execute(
                text(
                    "UPDATE resolved_addresses SET financial_address = 'account:X1@SOUTHBANK.BR9', "
                    "resolved_at = :later WHERE disbursement_id = 'env-a-000002'"
                ),
                {"later": LATER},
            )
            conn.commit()
        recon, (kind, _, _) = before["stories"]["env-a-000002"]
        before["stories"]["env-a-000002"] = (recon, (kind, "account:X1@SOUTHBANK.BR9", LATER))

        upgrade(empty_database)  # the totals summed from the restored columns
        engine.dispose()
        assert _answers(context, ids) == before
        with engine.connect() as conn:
            stored = conn.execute(
                text(
                    "SELECT disbursement_id, answered_address FROM resolved_addresses "
                    "WHERE answered_address IS NOT NULL OR answered_at IS NOT NULL"
                )
            ).all()
        assert [tuple(r) for r in stored] == [("env-a-000002", "account:X1@SOUTHBANK.BR9")]
    finally:
        engine.dispose()


def test_0016_the_failures_list_reads_only_its_own_index_entries(empty_database: str) -> None:  # noqa: F811
    upgrade(empty_database)
    engine = make_engine(empty_database)
    query = (
        select(Disbursement.id)
        .where(FAILED_ROWS, Disbursement.id > "d-1")
        .order_by(Disbursement.id)
        .limit(50)
    )
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
                assert "ix_disbursements_failed_id" in plan and "TEMP B-TREE" not in plan
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {sql}")))
                assert "ix_disbursements_failed_id" in plan and "Sort" not in plan
        engine.dispose()
        downgrade(empty_database, "0015")
        with engine.connect() as conn:
            names = {i["name"] for i in sa_inspect(conn).get_indexes("disbursements")}
        assert "ix_disbursements_state_id" in names and "ix_disbursements_failed_id" not in names
    finally:
        engine.dispose()


def test_0016_the_dispatching_count_reads_only_batched_rows(empty_database: str) -> None:  # noqa: F811
    """The /metrics gauge's DISPATCHING count (core/states.breakdown without a filter) joins the
    BATCHED rows to their batches: a partial index on those rows serves it, not the table."""
    upgrade(empty_database)
    engine = make_engine(empty_database)
    sql = (
        "SELECT count(*) FROM disbursements JOIN bank_batches "
        "ON bank_batches.id = disbursements.bank_batch_id "
        f"WHERE disbursements.{BATCHED_ROWS} AND bank_batches.state != 'PENDING'"
    )
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {sql}")))
        assert "ix_disbursements_batched" in plan
    finally:
        engine.dispose()
