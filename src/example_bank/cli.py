"""Command line of the Example Bank: ``example-bank api|worker|sftp|migrate|accounts``."""

from __future__ import annotations

import contextlib
from decimal import Decimal, InvalidOperation

import click
from sqlalchemy import Engine

from example_bank import services
from example_bank.db import make_engine, make_session_factory, migrate
from example_bank.models import INTERNAL_TYPES, Account
from example_bank.settings import BankSettings


def _engine(settings: BankSettings) -> Engine:
    """Engine for admin commands; an embedded SQLite database is created on first use."""
    if settings.database_url.startswith("sqlite"):
        migrate(settings.database_url)
    return make_engine(settings.database_url)


def _setup_logging(settings: BankSettings) -> None:
    # The bridge's handler: the bank's records hold the same kinds of personal data and client
    # input, and both ship in one package.
    from g2p_bridge.observability import setup_logging

    setup_logging(settings.log_level.upper(), settings.log_format)


def _amount(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"not a decimal amount: {value}") from None
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        raise click.BadParameter("amount must be finite with at most 2 decimals")
    return amount


@click.group()
def main() -> None:
    """Example Bank: a simulated sponsor bank for G2P Bridge rehearsals."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8003, show_default=True, type=int)
def api(host: str, port: int) -> None:
    """Run the HTTP API (with in-process processing when no broker is configured)."""
    import uvicorn

    from example_bank.api import create_app

    settings = BankSettings()
    _setup_logging(settings)
    if settings.broker_url is None:
        migrate(settings.database_url)
    # log_config=None: uvicorn's own handlers would write its records (a traceback quoting a
    # database error, an access line quoting the path) unmasked and over several lines.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,
    )


@main.command()
@click.option("--concurrency", "-c", default=2, show_default=True, type=int)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int, loglevel: str) -> None:
    """Run the Celery worker with embedded beat on queue example_bank."""
    from example_bank.worker import QUEUE, celery_app
    from g2p_bridge.observability import route_celery_logging

    settings = BankSettings()
    if settings.broker_url is None:
        raise click.UsageError("EXAMPLE_BANK_BROKER_URL is not set (embedded mode needs no worker)")
    route_celery_logging(settings.log_format)
    celery_app.worker_main(
        ["worker", "-B", "-Q", QUEUE, "-c", str(concurrency), f"--loglevel={loglevel}"]
    )


@main.command()
def sftp() -> None:
    """Run only the SFTP endpoint (EXAMPLE_BANK_SFTP_*), beside an API or worker on one database."""
    import signal
    import threading

    from example_bank.sftp import SftpEndpoint

    settings = BankSettings()
    _setup_logging(settings)
    engine = _engine(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with SftpEndpoint(settings, make_session_factory(engine)) as endpoint:
            click.echo(f"SFTP endpoint listening on {settings.sftp_host}:{endpoint.port}")
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        engine.dispose()


@main.command(name="migrate")
def migrate_command() -> None:
    """Upgrade the database schema to the latest revision."""
    settings = BankSettings()
    migrate(settings.database_url)
    click.echo("database is up to date")


@main.group()
def accounts() -> None:
    """Administer customer and program accounts."""


@accounts.command(name="add")
@click.option("--number", required=True)
@click.option("--name", required=True)
@click.option("--currency", required=True)
@click.option("--phone")
@click.option("--email")
@click.option("--deposit", "deposit_amount")
def add_account(
    number: str,
    name: str,
    currency: str,
    phone: str | None,
    email: str | None,
    deposit_amount: str | None,
) -> None:
    """Open an account, optionally with an initial deposit."""
    settings = BankSettings()
    initial = _amount(deposit_amount) if deposit_amount else None
    engine = _engine(settings)
    try:
        with make_session_factory(engine)() as session, session.begin():
            services.create_account(
                session,
                account_number=number,
                holder_name=name,
                currency=currency,
                bank_code=settings.bank_code,
                phone=phone,
                email=email,
                initial_deposit=initial,
                narrative_layout=settings.mt940_narrative_layout,
            )
    except services.BankError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    click.echo(f"account {number} created")


@accounts.command(name="deposit")
@click.argument("number")
@click.argument("amount")
def deposit_command(number: str, amount: str) -> None:
    """Deposit AMOUNT into account NUMBER."""
    settings = BankSettings()
    engine = _engine(settings)
    try:
        with make_session_factory(engine)() as session, session.begin():
            reference = services.deposit(
                session,
                number,
                _amount(amount),
                bank_code=settings.bank_code,
                narrative_layout=settings.mt940_narrative_layout,
            )
    except services.BankError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    click.echo(f"deposited {amount} into {number} ({reference})")


@accounts.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="Include internal accounts.")
def list_accounts(show_all: bool) -> None:
    """Print accounts with book, blocked and available balances."""
    from sqlalchemy import select

    settings = BankSettings()
    engine = _engine(settings)
    try:
        with make_session_factory(engine)() as session:
            stmt = select(Account).order_by(Account.account_number)
            if not show_all:
                stmt = stmt.where(Account.account_type.not_in(INTERNAL_TYPES))
            rows = [
                (
                    a.account_number,
                    a.holder_name,
                    a.currency,
                    str(a.book_balance),
                    str(a.blocked_amount),
                    str(a.book_balance - a.blocked_amount),
                )
                for a in session.scalars(stmt)
            ]
    finally:
        engine.dispose()
    header = ("ACCOUNT", "HOLDER", "CCY", "BOOK", "BLOCKED", "AVAILABLE")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        cells = [
            cell.rjust(w) if col >= 3 and i > 0 else cell.ljust(w)
            for col, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())
