"""Migration 0011 (bank files) carries a database holding statements and batches forward,
enforces once-per-file, and goes back down leaving that data as it was."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from g2p_bridge.migrations import downgrade, upgrade
from g2p_bridge.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"g2p_bridge_mig_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BANK_FILE = (
    "INSERT INTO bank_files (bank_code, name, content_sha256, size_bytes, kind, outcome, "
    "received_at) VALUES ('NORTH', 'a.pain002.xml', :sha, 10, 'pain.002', 'applied', "
    "CURRENT_TIMESTAMP)"
)


def test_0011_upgrades_a_database_holding_data_and_downgrades(empty_database: str) -> None:
    upgrade(empty_database, "0007")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO account_statements (id, content_sha256, content, size_bytes, "
                    "uploaded_by, state, entries_total, entries_matched, entries_reversed, "
                    "entries_unmatched, attempts, next_attempt_at, uploaded_at, format) VALUES "
                    "('s-1', :sha, :content, 5, 'bank-1', 'PENDING', 0, 0, 0, 0, 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'mt940')"
                ),
                {"sha": "a" * 64, "content": b":20:X"},
            )
        upgrade(empty_database)  # to head: the models describe the head
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert {"bank_files", "bank_outbox_polls"} <= tables
            assert conn.execute(text("SELECT count(*) FROM account_statements")).scalar() == 1
            context = MigrationContext.configure(
                conn, opts={"compare_type": conn.dialect.name != "sqlite"}
            )
            assert compare_metadata(context, Base.metadata) == []
        with engine.begin() as conn:
            conn.execute(text(BANK_FILE), {"sha": "b" * 64})
        # The same file (bank, name, content) cannot be recorded twice: applied once.
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(BANK_FILE), {"sha": "b" * 64})
        with engine.begin() as conn:  # the same name with other content is another file
            conn.execute(text(BANK_FILE), {"sha": "c" * 64})
        downgrade(empty_database, "0007")
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert "bank_files" not in tables and "bank_outbox_polls" not in tables
            assert conn.execute(text("SELECT count(*) FROM account_statements")).scalar() == 1
    finally:
        engine.dispose()
