"""Migration 0003 (statement trust) upgrades a database that holds statements, matches the
models, and goes back down; a database already at 0004 (written beside it) gets it too."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from g2p_bridge.migrations import alembic_config, downgrade, upgrade
from g2p_bridge.models import Base

# As tests/conftest.py: the shared server, where each run makes its own database.
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


def test_0003_upgrades_a_database_holding_statements_and_downgrades(empty_database: str) -> None:
    upgrade(empty_database, "0002")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO account_statements (id, content_sha256, content, size_bytes, "
                    "uploaded_by, state, entries_total, entries_matched, entries_reversed, "
                    "entries_unmatched, attempts, next_attempt_at, uploaded_at) VALUES "
                    "('s-1', :sha, :content, 5, 'bank-1', 'PENDING', 0, 0, 0, 0, 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"sha": "a" * 64, "content": b":20:X"},
            )
        upgrade(empty_database, "0003")
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT uploaded_by, uploader_role, uploader_bank_codes, state "
                    "FROM account_statements"
                )
            ).one()
            assert tuple(row) == ("bank-1", None, None, "PENDING")  # processing refuses it
            assert "statement_accounts" in inspect(conn).get_table_names()
        upgrade(empty_database)  # and whatever revisions come after it
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": conn.dialect.name != "sqlite"}
            )
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
        downgrade(empty_database, "0002")
        with engine.connect() as conn:
            assert "statement_accounts" not in inspect(conn).get_table_names()
            columns = {c["name"] for c in inspect(conn).get_columns("account_statements")}
            assert "uploader_role" not in columns
            assert conn.execute(text("SELECT count(*) FROM account_statements")).scalar() == 1
    finally:
        engine.dispose()


def test_a_database_already_at_0004_gets_0003_on_upgrade(empty_database: str) -> None:
    upgrade(empty_database, "0004")
    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            assert "statement_accounts" not in inspect(conn).get_table_names()
        upgrade(empty_database)
        with engine.connect() as conn:
            assert "statement_accounts" in inspect(conn).get_table_names()
            context = MigrationContext.configure(
                conn, opts={"compare_type": conn.dialect.name != "sqlite"}
            )
            # The merge 0005 is applied; the revisions written after it (0007...) follow.
            (head,) = context.get_current_heads()
            assert head == "0005" or "0005" in _ancestors(head)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def _ancestors(revision: str) -> set[str]:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {r.revision for r in scripts.iterate_revisions(revision, "base")}
