"""Fixtures for the Example Bank tests: migrated SQLite and PostgreSQL databases.

The PostgreSQL database is created once per test session with a unique name (server from
``TEST_POSTGRES_URL``) and dropped at the end; each test starts from empty tables.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

try:
    import example_bank  # noqa: F401
except ImportError:  # the project is not pip-installed in this environment
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

with warnings.catch_warnings():
    # Recent Starlette warns that its TestClient wants the 'httpx2' package; pyproject
    # turns warnings into errors, so import it once here with that warning silenced.
    warnings.simplefilter("ignore")
    import starlette.testclient  # noqa: F401

from example_bank.db import make_engine, make_session_factory, migrate
from example_bank.models import Account, FundBlock, LedgerEntry, Statement
from example_bank.processing import claim_next_batch, process_batch
from example_bank.services import block_funds, create_account
from example_bank.settings import BankSettings

PG_BASE = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Children first; DELETE is much cheaper than TRUNCATE on the small tables of a test.
TABLES = (
    "payment_files",
    "statements",
    "ledger_entries",
    "payments",
    "payment_batches",
    "fund_releases",
    "fund_blocks",
    "accounts",
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    import psycopg

    base = make_url(PG_BASE)
    name = f"example_bank_test_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not available: {exc}")
    url = base.set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test runs on a fresh SQLite file and on the (emptied) PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bank.db'}"
        migrate(url)
        return url
    url: str = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()
    return url


@pytest.fixture
def settings(database_url: str) -> BankSettings:
    return BankSettings(
        database_url=database_url,
        broker_url=None,
        failure_rate=0.2,
        seed=7,
        bridge_statement_url="http://bridge.test/upload_mt940",
        statement_max_entries=5000,
        delivery_max_attempts=3,
        delivery_retry_seconds=0,
        processing_chunk_size=7,  # small, so multi-chunk paths run in every test
    )


@pytest.fixture
def engine(settings: BankSettings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


class Bank:
    """Test helper around the service and processing functions."""

    def __init__(self, settings: BankSettings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._phones = 0

    def account(self, number: str, deposit: str | None = "1000.00", currency: str = "USD") -> None:
        with self.sessions() as s, s.begin():
            create_account(
                s,
                account_number=number,
                holder_name=f"Holder {number}",
                currency=currency,
                bank_code=self.settings.bank_code,
                phone=self._next_phone(),
                initial_deposit=Decimal(deposit) if deposit else None,
                narrative_layout=self.settings.mt940_narrative_layout,
            )

    def _next_phone(self) -> str:
        self._phones += 1
        return f"+254700{self._phones:06d}"

    def block(self, number: str, amount: str, currency: str = "USD", key: str | None = None) -> str:
        with self.sessions() as s, s.begin():
            result = block_funds(s, number, currency, Decimal(amount), key)
        assert result.block_reference is not None, result.error_message
        return result.block_reference

    def process_all(self) -> list[int]:
        processed = []
        while True:
            with self.sessions() as s, s.begin():
                batch_id = claim_next_batch(s)
                if batch_id is None:
                    return processed
                process_batch(s, batch_id, self.settings)
                processed.append(batch_id)

    def balances(self, number: str) -> tuple[Decimal, Decimal]:
        with self.sessions() as s:
            account = s.get(Account, number)
            assert account is not None
            return account.book_balance, account.blocked_amount

    def entries(self, **filters: Any) -> list[LedgerEntry]:
        with self.sessions() as s:
            stmt = select(LedgerEntry).filter_by(**filters).order_by(LedgerEntry.id)
            return list(s.scalars(stmt))

    def assert_invariants(self) -> None:
        """Double entry, balances = entries, blocked = open blocks, statements balance."""
        with self.sessions() as s:
            total = s.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)))
            assert Decimal(total) == 0, f"ledger does not balance: {total}"
            sums = dict(
                s.execute(
                    select(LedgerEntry.account_number, func.sum(LedgerEntry.amount)).group_by(
                        LedgerEntry.account_number
                    )
                ).all()
            )
            blocked = dict(
                s.execute(
                    select(FundBlock.account_number, func.sum(FundBlock.remaining)).group_by(
                        FundBlock.account_number
                    )
                ).all()
            )
            for account in s.scalars(select(Account)):
                number = account.account_number
                assert account.book_balance == sums.get(number, Decimal(0)), number
                assert account.blocked_amount == blocked.get(number, Decimal(0)), number
                assert account.blocked_amount >= 0
            for statement in s.scalars(select(Statement)):
                moved = s.scalar(
                    select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                        LedgerEntry.statement_id == statement.id
                    )
                )
                count = s.scalar(
                    select(func.count()).where(LedgerEntry.statement_id == statement.id)
                )
                assert statement.opening_balance + Decimal(moved) == statement.closing_balance
                assert count == statement.entry_count


@pytest.fixture
def bank(settings: BankSettings, sessions: sessionmaker[Session]) -> Bank:
    return Bank(settings, sessions)


def payment(
    ref: str,
    block: str,
    amount: str = "10.00",
    *,
    account: str = "PROG-1",
    currency: str = "USD",
    bank_code: str | None = "OTHERBANK",
    beneficiary: str | None = "9000001",
    **extra: Any,
) -> dict[str, Any]:
    """A payment instruction as the bridge sends it."""
    body: dict[str, Any] = {
        "payment_reference_number": ref,
        "remitting_account": account,
        "remitting_account_currency": currency,
        "payment_amount": amount,
        "funds_blocked_reference_number": block,
        "beneficiary_name": f"Beneficiary {ref}",
        "beneficiary_account": beneficiary,
        "beneficiary_account_currency": currency,
        "beneficiary_bank_code": bank_code,
        "narrative_1": "Cash transfer Nov",
        "narrative_2": "PROG1",
        "narrative_3": "C1",
        "narrative_4": f"BEN-{ref}",
        "payment_date": "2026-11-25",
    }
    body.update(extra)
    return body


@pytest.fixture
def make_payment() -> Any:
    return payment
