"""Migration 0010 (funds releases, batch page indexes) carries a database holding settled
envelopes forward: after it, the producer releases what their blocks did not spend, as for any
envelope; and it goes back down leaving the data as it was. On PostgreSQL and SQLite."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import create_engine, inspect, text
from test_migration_0003 import empty_database  # noqa: F401 - the fixture
from test_pipeline import setup_envelope

from bridge_support import FakeBank, fake_context
from g2p_bridge.db import make_engine, make_session_factory
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.migrations import downgrade, upgrade


def test_0010_releases_envelopes_settled_before_it_and_downgrades(
    empty_database: str,  # noqa: F811
) -> None:
    upgrade(empty_database, "0007")
    engine = make_engine(empty_database)
    try:
        factory = make_session_factory(engine)
        ids = setup_envelope(fake_context(factory), 4)  # 4 x 10.00, as an old version left it
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE envelope_status SET funds_available_state = 'FUNDS_AVAILABLE', "
                    "funds_blocked_state = 'FUNDS_BLOCK_SUCCESS', funds_block_reference = 'BLK-1'"
                )
            )
            conn.execute(
                text("UPDATE disbursements SET state = 'RECONCILED' WHERE id != :first"),
                {"first": ids[0]},
            )
            conn.execute(
                text("UPDATE disbursements SET state = 'CANCELLED', cancelled = :t WHERE id = :i"),
                {"i": ids[0], "t": True},
            )
        upgrade(empty_database)
        bank = FakeBank()
        assert EmbeddedRunner(fake_context(factory, bank)).run_until_idle(timeout=60)
        assert list(bank.releases.values()) == [("BLK-1", Decimal("10.00"), "REL-1")]
        with engine.connect() as conn:
            indexes = {i["name"] for i in inspect(conn).get_indexes("bank_batches")}
            assert "ix_bank_batches_envelope_page" in indexes
        downgrade(empty_database, "0007")
    finally:
        engine.dispose()
    plain = create_engine(empty_database)
    try:
        with plain.connect() as conn:
            assert "funds_releases" not in inspect(conn).get_table_names()
            assert conn.execute(text("SELECT count(*) FROM disbursements")).scalar() == 4
    finally:
        plain.dispose()
