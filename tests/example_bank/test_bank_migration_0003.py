"""Example Bank migration 0003 (payment files) carries a database holding a paid batch forward,
keeps a payment file's message id unique, and goes back down leaving the batch as it was."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from example_bank.db import alembic_config, make_engine, migrate

BATCH = (
    "INSERT INTO payment_batches (id, received_at, state, attempts, payment_count) "
    "VALUES (7, CURRENT_TIMESTAMP, 'PROCESSED', 1, 1)"
)
FILE = (
    "INSERT INTO payment_files (message_id, file_name, content_sha256, group_status, batch_id, "
    "transaction_count, accepted_count, report_id, pain002, received_at) VALUES ('batch-1', "
    "'batch-1.pain001.xml', :sha, 'ACCP', 7, 1, 1, 'EBSTS1', '<Document/>', CURRENT_TIMESTAMP)"
)


def test_0003_upgrades_a_database_holding_data_and_downgrades(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        # The fixture built head: go back to 0002 with a batch in it, then forward again.
        command.downgrade(alembic_config(database_url), "0002")
        assert "payment_files" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(text(BATCH))
        migrate(database_url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT state FROM payment_batches")).scalar_one() == (
                "PROCESSED"
            )
            conn.execute(text(FILE), {"sha": "a" * 64})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(FILE), {"sha": "b" * 64})
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM payment_files"))
        command.downgrade(alembic_config(database_url), "0002")
        with engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM payment_batches")).scalar_one() == 1
            conn.execute(text("DELETE FROM payment_batches"))
        migrate(database_url)
    finally:
        engine.dispose()
