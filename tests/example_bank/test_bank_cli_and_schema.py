"""Command line, migrations and the Celery app configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import inspect

from example_bank.cli import main
from example_bank.db import alembic_config, make_engine, migrate
from example_bank.models import Base


def test_migrations_match_the_models_and_are_idempotent(database_url: str) -> None:
    migrate(database_url)  # already at head: a no-op
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            # On SQLite money lives as integer cents in NUMERIC columns (see models.Money),
            # so only PostgreSQL compares column types.
            context = MigrationContext.configure(
                conn, opts={"compare_type": conn.dialect.name != "sqlite"}
            )
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            assert head == "0003" and context.get_current_revision() == head
            diff = compare_metadata(context, Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"accounts", "ledger_entries", "statements", "payments"} <= tables
    assert diff == []


def test_cli_accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_BANK_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    runner = CliRunner()
    created = runner.invoke(
        main,
        ["accounts", "add", "--number", "PROG-1", "--name", "Ministry", "--currency", "usd",
         "--phone", "+254700000001", "--deposit", "1500.50"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    deposited = runner.invoke(main, ["accounts", "deposit", "PROG-1", "0.25"])
    assert deposited.exit_code == 0, deposited.output
    listed = runner.invoke(main, ["accounts", "list"])
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split() == ["ACCOUNT", "HOLDER", "CCY", "BOOK", "BLOCKED", "AVAILABLE"]
    assert lines[1].split() == ["PROG-1", "Ministry", "USD", "1500.75", "0.00", "1500.75"]
    assert len(lines) == 2  # the central account is internal
    assert "CENTRAL-EXAMPLE-USD" in runner.invoke(main, ["accounts", "list", "--all"]).output
    unknown = runner.invoke(main, ["accounts", "deposit", "NOPE", "1"])
    assert unknown.exit_code != 0 and "not found" in unknown.output
    bad = runner.invoke(main, ["accounts", "deposit", "PROG-1", "1.234"])
    assert bad.exit_code != 0
    assert runner.invoke(main, ["migrate"]).exit_code == 0


def test_celery_app_is_configured_for_at_least_once_processing() -> None:
    from example_bank.worker import QUEUE, celery_app

    conf = celery_app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True
    assert conf.task_default_queue == QUEUE == "example_bank"
    sweep = conf.beat_schedule["example-bank-sweep"]
    assert sweep["task"] == "example_bank.sweep" and sweep["schedule"] == 1.0
    assert {"example_bank.process_payment_batch", "example_bank.deliver_statements",
            "example_bank.sweep"} <= set(celery_app.tasks)  # fmt: skip
