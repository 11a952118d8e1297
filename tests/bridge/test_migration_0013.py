"""Migration 0013 indexes reconciliation rows by statement: a database holding them gains the
indexes with their rows in them, and goes back down."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text
from test_migration_0003 import empty_database  # noqa: F401 (the fixture)

from g2p_bridge.migrations import downgrade, upgrade

_NAMES = {
    "ix_disbursement_recons_remittance_statement",
    "ix_disbursement_recons_reversal_statement",
}


def _recon_indexes(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {i["name"] or "" for i in inspect(conn).get_indexes("disbursement_recons")}
    finally:
        engine.dispose()


def test_0013_indexes_the_statement_ids_and_downgrades(
    empty_database: str,  # noqa: F811
) -> None:
    upgrade(empty_database, "0012")
    assert not _NAMES & _recon_indexes(empty_database)
    upgrade(empty_database, "0013")
    assert _NAMES.issubset(_recon_indexes(empty_database))
    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                # A statement's rows come off the index, already in id order.
                plan = " ".join(
                    str(row[-1])
                    for row in conn.execute(
                        text(
                            "EXPLAIN QUERY PLAN SELECT disbursement_id FROM disbursement_recons"
                            " WHERE remittance_statement_id = 's1' ORDER BY disbursement_id"
                        )
                    )
                )
                assert "ix_disbursement_recons_remittance_statement" in plan
                assert "TEMP B-TREE" not in plan
            else:
                definition = conn.scalar(
                    text(
                        "SELECT indexdef FROM pg_indexes WHERE indexname = "
                        "'ix_disbursement_recons_reversal_statement'"
                    )
                )
                assert "(reversal_statement_id, disbursement_id)" in definition
                assert "WHERE (reversal_statement_id IS NOT NULL)" in definition
    finally:
        engine.dispose()
    downgrade(empty_database, "0012")
    assert not _NAMES & _recon_indexes(empty_database)
