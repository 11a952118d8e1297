"""Migration 0012 (payroll files) carries a database holding envelopes forward: they keep their
figures and, having come from a PBMS, start needing no approval; and it goes back down."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session
from test_migration_0003 import empty_database  # noqa: F401 (the fixture)

from g2p_bridge.core import approvals
from g2p_bridge.migrations import downgrade, upgrade
from g2p_bridge.models import BenefitProgram, DisbursementEnvelope, EnvelopeStatus


def test_0012_upgrades_a_database_holding_envelopes_and_downgrades(
    empty_database: str,  # noqa: F811
) -> None:
    upgrade(empty_database, "0007")
    engine = create_engine(empty_database)
    try:
        with Session(engine) as session, session.begin():
            session.add(
                BenefitProgram(
                    mnemonic="OLD",
                    sponsor_bank_code="EXAMPLE",
                    sponsor_bank_account_number="1",
                    sponsor_bank_account_currency="USD",
                    id_mapper_resolution_required=False,
                    resolver="inline",
                )
            )
            session.flush()
            session.add(
                DisbursementEnvelope(
                    id="env-old",
                    sender_id="pbms-1",
                    program_mnemonic="OLD",
                    disbursement_frequency="Monthly",
                    cycle_code_mnemonic="c1",
                    number_of_beneficiaries=1,
                    number_of_disbursements=1,
                    total_disbursement_amount=Decimal("10.00"),
                    currency="USD",
                    schedule_date=date(2026, 12, 1),
                )
            )
            session.flush()
            session.add(EnvelopeStatus(envelope_id="env-old", received_count=1, received_amount=10))
        upgrade(empty_database)  # to head: the models describe the head
        with engine.connect() as conn:
            assert "payroll_files" in inspect(conn).get_table_names()
        with Session(engine) as session:
            envelope = session.get(DisbursementEnvelope, "env-old")
            status = session.get(EnvelopeStatus, "env-old")
            assert envelope is not None and status is not None
            assert envelope.total_disbursement_amount == Decimal("10.00")
            assert approvals.approval_state(session, envelope, status).value == "NOT_REQUIRED"
            awaiting = session.scalars(
                select(DisbursementEnvelope.id)
                .join(EnvelopeStatus, EnvelopeStatus.envelope_id == DisbursementEnvelope.id)
                .where(approvals.awaiting_clause())
            ).all()
            assert awaiting == []
        downgrade(empty_database, "0007")
        with engine.connect() as conn:
            assert "payroll_files" not in inspect(conn).get_table_names()
        with Session(engine) as session:
            assert session.get(DisbursementEnvelope, "env-old") is not None
    finally:
        engine.dispose()
