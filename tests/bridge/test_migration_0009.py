"""Migration 0009 (callbacks) carries a database holding programs and envelopes forward,
matches the models, and goes back down leaving them as they were."""

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

from g2p_bridge.migrations import downgrade, upgrade
from g2p_bridge.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
NEW_TABLES = {"callback_subscriptions", "callback_streams", "callback_events"}


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


def test_0009_carries_programs_and_envelopes_forward_and_back(empty_database: str) -> None:
    upgrade(empty_database, "0007")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO benefit_programs (mnemonic, sponsor_bank_code, "
                    "sponsor_bank_account_number, sponsor_bank_account_currency, "
                    "id_mapper_resolution_required, approval_required, approval_threshold, "
                    "created_at, updated_at) VALUES ('P1', 'EXAMPLE', '1', 'USD', false, false, "
                    "0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(empty_database)
        with engine.begin() as conn:
            assert set(inspect(conn).get_table_names()) >= NEW_TABLES
            assert conn.execute(text("SELECT mnemonic FROM benefit_programs")).scalar() == "P1"
            conn.execute(
                text(
                    "INSERT INTO callback_subscriptions (program_mnemonic, url, created_at, "
                    "updated_at) VALUES ('P1', 'https://pbms.example.org/cb', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            context = MigrationContext.configure(
                conn, opts={"compare_type": conn.dialect.name != "sqlite"}
            )
            assert compare_metadata(context, Base.metadata) == []
        downgrade(empty_database, "0007")
        with engine.connect() as conn:
            assert not NEW_TABLES & set(inspect(conn).get_table_names())
            assert conn.execute(text("SELECT count(*) FROM benefit_programs")).scalar() == 1
    finally:
        engine.dispose()
