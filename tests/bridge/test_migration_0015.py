"""Migration 0015 indexes mapper batches by (envelope, created_at): a database gains the index and
goes back down without it."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect
from test_migration_0003 import empty_database  # noqa: F401 (the fixture)

from g2p_bridge.migrations import downgrade, upgrade

_NAME = "ix_mapper_batches_envelope_created"


def _indexes(url: str) -> dict[str, list[str | None]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                i["name"] or "": list(i["column_names"])
                for i in inspect(conn).get_indexes("mapper_batches")
            }
    finally:
        engine.dispose()


def test_0015_indexes_when_an_envelope_was_last_planned_and_downgrades(
    empty_database: str,  # noqa: F811
) -> None:
    upgrade(empty_database, "0014")
    assert _NAME not in _indexes(empty_database)
    upgrade(empty_database, "0015")
    assert _indexes(empty_database)[_NAME] == ["envelope_id", "created_at"]
    downgrade(empty_database, "0014")
    assert _NAME not in _indexes(empty_database)
