"""The ``g2p-bridge`` command: run the services, configure programs, inspect statements, demo."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from g2p_bridge.settings import get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def _setup_logging() -> None:
    from g2p_bridge.observability import setup_logging

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)


def _setup_celery_logging() -> None:
    from g2p_bridge.observability import route_celery_logging

    route_celery_logging(get_settings().log_format)


@click.group()
def main() -> None:
    """G2P Bridge: benefit payments from a program's MIS to beneficiaries, exactly once."""


@main.command()
def migrate() -> None:
    """Upgrade the database schema to the latest revision."""
    from g2p_bridge.migrations import upgrade

    upgrade(get_settings().database_url)
    click.echo("database schema is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="API processes sharing the port (not in the embedded default, whose one process "
    "also runs the pipeline)",
)
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API (embedded default: also runs producers and workers here)."""
    import uvicorn

    from g2p_bridge.api.app import create_app
    from g2p_bridge.migrations import upgrade

    _setup_logging()
    settings = get_settings()
    if settings.embedded:
        if workers > 1:
            raise click.ClickException(
                "--workers needs G2P_BRIDGE_BROKER_URL: the embedded default runs its pipeline "
                "in the one API process"
            )
        upgrade(settings.database_url)
    if workers > 1:
        # Each process builds its own app (and database pool) from the environment. A
        # configuration error would only kill the children and leave this parent answering
        # nothing, so it is found here first and ends the command.
        from g2p_bridge.auth import AuthConfigurationError

        try:
            create_app(settings)
        except (AuthConfigurationError, ValueError) as error:
            raise click.ClickException(f"cannot start the API: {error}") from error
        uvicorn.run(
            "g2p_bridge.cli:api_app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            log_config=None,
        )
        return
    # log_config=None: uvicorn's own handlers would write its records (the traceback of an
    # unhandled exception, quoting a database error; the access line, quoting the path)
    # unmasked and over several lines; without them they reach the root handler set up above.
    uvicorn.run(
        create_app(settings, run_pipeline=settings.embedded),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,
    )


def api_app_from_environment() -> FastAPI:
    """What each process of `api --workers N` serves."""
    from g2p_bridge.api.app import create_app

    _setup_logging()
    return create_app(get_settings())


def _require_broker() -> None:
    if get_settings().embedded:
        raise click.ClickException(
            "G2P_BRIDGE_BROKER_URL is not set: in the embedded default `g2p-bridge api` already "
            "runs the producers and workers"
        )


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run the producers: Celery beat and the one worker that runs the producer tick."""
    _require_broker()
    _setup_celery_logging()
    from g2p_bridge.workers.celery_app import PRODUCER_QUEUE, celery_app

    celery_app().worker_main(
        [
            "worker",
            "--beat",
            "-Q",
            PRODUCER_QUEUE,
            "--concurrency",
            "1",
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            "-n",
            "producers@%h",
        ]
    )


@main.command()
@click.option("--queues", default="mapper,funds,dispatch,statements,callbacks", show_default=True)
@click.option("--concurrency", default=2, show_default=True, type=int)
@click.option("--pool", default="prefork", show_default=True)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues: str, concurrency: int, pool: str, loglevel: str) -> None:
    """Run a Celery worker for the pipeline's steps."""
    _require_broker()
    _setup_celery_logging()
    from g2p_bridge.workers.celery_app import celery_app

    celery_app().worker_main(
        [
            "worker",
            "-Q",
            queues,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )


@main.group()
def programs() -> None:
    """Benefit program configuration."""


@programs.command("add")
@click.option("--mnemonic", required=True)
@click.option("--bank-code", required=True)
@click.option("--account", required=True, help="sponsor bank account number")
@click.option("--currency", required=True)
@click.option("--branch", default=None)
@click.option("--resolver", default=None, help="inline, table or g2p-connect")
@click.option(
    "--mapper/--no-mapper",
    "mapper",
    default=False,
    show_default=True,
    help="whether beneficiary ids need ID-mapper resolution",
)
@click.option(
    "--approval-threshold",
    default=None,
    help="envelopes declaring at least this total (0: all) wait for a second person's approval",
)
def programs_add(
    mnemonic: str,
    bank_code: str,
    account: str,
    currency: str,
    branch: str | None,
    resolver: str | None,
    mapper: bool,
    approval_threshold: str | None,
) -> None:
    """Create a benefit program."""
    from g2p_bridge.core import programs as service
    from g2p_bridge.core.errors import BridgeError
    from g2p_bridge.db import make_engine, make_session_factory, transaction
    from g2p_bridge.schemas import ProgramPayload

    factory = make_session_factory(make_engine(get_settings().database_url))
    payload = ProgramPayload(
        program_mnemonic=mnemonic,
        sponsor_bank_code=bank_code,
        sponsor_bank_account_number=account,
        sponsor_bank_branch_code=branch,
        sponsor_bank_account_currency=currency,
        resolver=resolver,
        id_mapper_resolution_required=mapper,
        approval_required=approval_threshold is not None,
        approval_threshold=approval_threshold,
    )
    try:
        with transaction(factory) as session:
            service.create_program(session, payload)
    except BridgeError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    click.echo(f"program {mnemonic} created")


@programs.command("list")
@click.option("--json", "as_json", is_flag=True)
def programs_list(as_json: bool) -> None:
    """List benefit programs."""
    from g2p_bridge.core import programs as service
    from g2p_bridge.db import make_engine, make_session_factory, transaction
    from g2p_bridge.schemas import ProgramView

    factory = make_session_factory(make_engine(get_settings().database_url))
    with transaction(factory) as session:
        rows = [
            ProgramView.model_validate(p).model_dump(mode="json")
            for p in service.list_programs(session)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'MNEMONIC':<16} {'BANK':<10} {'ACCOUNT':<20} {'CUR':<4} RESOLVER")
    for r in rows:
        click.echo(
            f"{r['program_mnemonic']:<16} {r['sponsor_bank_code']:<10} "
            f"{r['sponsor_bank_account_number']:<20} "
            f"{r['sponsor_bank_account_currency']:<4} {r['resolver']}"
        )


@main.group()
def statements() -> None:
    """Bank statements."""


@statements.command("parse")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def statements_parse(file: Path, as_json: bool) -> None:
    """Show what the bridge reads from an MT940 or camt.053/camt.054 file, storing nothing."""
    from g2p_bridge.core.statement_files import UNREADABLE, describe, read_pages, sniff_format

    content = file.read_bytes()
    # Sniffed and read as an upload is: what is shown is what would be reconciled.
    fmt = sniff_format(content)
    pages: list[dict[str, Any]] = []
    try:
        for page in read_pages(content, fmt):
            entries: list[dict[str, Any]] = []
            for e in page.entries:
                fields = e.subfields()
                entries.append(
                    {
                        "sequence": e.sequence,
                        "mark": e.mark,
                        "amount": str(e.amount),
                        "value_date": e.value_date.isoformat() if e.value_date else None,
                        "entry_date": e.entry_date.isoformat() if e.entry_date else None,
                        "disbursement_id": e.customer_reference or None,
                        "bank_reference": e.bank_reference,
                        "beneficiary_name": fields.get("NAME"),
                        "reversal_reason": fields.get("RTRN") if e.is_reversal else None,
                        "details": e.details,
                        "date_warning": e.raw_date_warning,
                    }
                )
            pages.append(
                {
                    "format": fmt,
                    "reference": page.reference,
                    "account": page.account,
                    "statement_number": page.statement_number,
                    "sequence_number": page.sequence_number,
                    "opening_balance": None if page.opening is None else str(page.opening),
                    "closing_balance": None if page.closing is None else str(page.closing),
                    "currency": page.currency,
                    "balance_problem": page.balance_problem,
                    "entries": entries,
                }
            )
    except UNREADABLE as exc:
        raise click.ClickException(f"the file does not parse as {describe(fmt)}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(pages, indent=2))
        return
    for shown in pages:
        debits = sum(Decimal(e["amount"]) for e in shown["entries"] if e["mark"] == "D")
        reversals = [e for e in shown["entries"] if e["mark"] == "RD"]
        click.echo(
            f"{shown['format']} statement {shown['reference']}  account {shown['account']}  "
            f"number {shown['statement_number'] or '-'}/{shown['sequence_number'] or '-'}  "
            f"{shown['currency'] or '-'} {shown['opening_balance'] or '-'} -> "
            f"{shown['closing_balance'] or '-'}"
        )
        click.echo(
            f"  {len(shown['entries'])} entries, debits {debits}, {len(reversals)} reversals"
        )
        click.echo(f"  balance: {shown['balance_problem'] or 'opening + entries = closing'}")
        for e in shown["entries"][:20]:
            click.echo(
                f"  {e['sequence']:>5} {e['mark']:<2} {e['amount']:>14} "
                f"{e['disbursement_id'] or '-':<36} {e['beneficiary_name'] or ''}"
                f"{'  reason: ' + e['reversal_reason'] if e['reversal_reason'] else ''}"
            )
        if len(shown["entries"]) > 20:
            click.echo(f"  ... {len(shown['entries']) - 20} more")


def _operate_on_statement(action: str, statement_id: str, reason: str | None = None) -> None:
    """Runs an operator action on a statement as the local operator, audited like the API's."""
    import getpass

    from g2p_bridge.core import statements as service
    from g2p_bridge.core.errors import BridgeError
    from g2p_bridge.db import make_engine, make_session_factory, transaction
    from g2p_bridge.observability import actor_var, role_var

    # Whoever can run this command on the server holds the database: an administrator.
    actor = actor_var.set(f"cli:{getpass.getuser()}"[:128])
    role = role_var.set("admin")
    engine = make_engine(get_settings().database_url)
    factory = make_session_factory(engine)
    try:
        with transaction(factory) as session:
            if action == "park":
                service.park_statement(session, statement_id, reason)
            elif action == "retry":
                service.retry_statement(session, statement_id, reason)
            else:
                service.reprocess_statement(session, statement_id, reason)
            session.flush()
            state = service.get_statement(session, statement_id).state
    except BridgeError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    finally:
        # Not left behind for whatever else runs in this process (an embedding, a test).
        actor_var.reset(actor)
        role_var.reset(role)
        engine.dispose()
    click.echo(f"statement {statement_id} is {state}")


@statements.command("park")
@click.argument("statement_id")
@click.option("--reason", default=None, help="why, for the statement and the audit trail")
def statements_park(statement_id: str, reason: str | None) -> None:
    """Park a waiting statement in ERROR so later statements of its accounts go ahead."""
    _operate_on_statement("park", statement_id, reason)


@statements.command("retry")
@click.argument("statement_id")
@click.option("--reason", default=None, help="why, for the audit trail")
def statements_retry(statement_id: str, reason: str | None) -> None:
    """Queue a statement in ERROR again, its attempts reset (the workers apply it)."""
    _operate_on_statement("retry", statement_id, reason)


@statements.command("reprocess")
@click.argument("statement_id")
@click.option("--reason", default=None, help="why, for the audit trail")
def statements_reprocess(statement_id: str, reason: str | None) -> None:
    """Apply a PROCESSED or ERROR statement again; entries already applied become duplicates."""
    _operate_on_statement("reprocess", statement_id, reason)


@main.group()
def callbacks() -> None:
    """Results pushed to the PBMS: callback URLs, delivery state, re-sends, the signing key."""


def _callbacks_admin(work: Any) -> Any:
    """Runs ``work(session, settings)`` as the local administrator, audited like the API
    (callbacks and releases)."""
    import getpass

    from g2p_bridge.core.errors import BridgeError
    from g2p_bridge.db import make_engine, make_session_factory, transaction
    from g2p_bridge.observability import actor_var, role_var

    actor = actor_var.set(f"cli:{getpass.getuser()}"[:128])
    role = role_var.set("admin")
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            return work(session, settings)
    except BridgeError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    finally:
        actor_var.reset(actor)
        role_var.reset(role)
        engine.dispose()


@callbacks.command("set-url")
@click.argument("program")
@click.argument("url", required=False)
@click.option("--remove", is_flag=True, help="remove the program's callback URL")
def callbacks_set_url(program: str, url: str | None, remove: bool) -> None:
    """Set the callback URL every result of PROGRAM's envelopes is POSTed to."""
    from g2p_bridge.core import callbacks as service

    if (url is None) != remove:
        raise click.UsageError("give a URL, or --remove")
    _callbacks_admin(
        lambda session, settings: service.set_callback_url(session, program, url, settings)
    )
    shown = service.display_url(url) if url else "none"
    click.echo(f"program {program}: callback URL {shown}")


@callbacks.command("status")
@click.argument("envelope_id")
@click.option("--json", "as_json", is_flag=True)
def callbacks_status(envelope_id: str, as_json: bool) -> None:
    """An envelope's callbacks: how far delivery got, and the latest events."""
    from g2p_bridge.core import callbacks as service

    def read(session: Any, _settings: Any) -> dict[str, Any]:
        stream, events = service.stream_status(session, envelope_id, limit=20)
        return {
            "envelope_id": stream.id,
            "state": stream.state,
            "delivered_sequence": stream.delivered_sequence,
            "last_sequence": stream.last_sequence,
            "attempts": stream.attempts,
            "last_error": stream.last_error,
            "events": [
                {
                    "sequence": e.sequence,
                    "event_id": e.id,
                    "event_type": e.event_type,
                    "results": e.result_count,
                    "attempts": e.attempts,
                    "delivered_at": e.delivered_at.isoformat() if e.delivered_at else None,
                    "last_error": e.last_error,
                }
                for e in events
            ],
        }

    status = _callbacks_admin(read)
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(
        f"envelope {status['envelope_id']}: {status['state']}, delivered "
        f"{status['delivered_sequence']} of {status['last_sequence']}"
        + (f", last error: {status['last_error']}" if status["last_error"] else "")
    )
    for e in status["events"]:
        click.echo(
            f"  #{e['sequence']} {e['event_type']} ({e['results']} results) "
            f"{e['delivered_at'] or 'not delivered'} attempts={e['attempts']}"
        )


@callbacks.command("parked")
def callbacks_parked() -> None:
    """Envelopes whose callbacks kept failing and wait for a re-send."""
    from g2p_bridge.core import callbacks as service

    rows = _callbacks_admin(
        lambda session, _s: [
            (s.id, s.delivered_sequence, s.last_sequence, s.last_error)
            for s in service.parked_streams(session)
        ]
    )
    for envelope_id, delivered, last, error in rows:
        click.echo(f"{envelope_id}  delivered {delivered} of {last}  {error or ''}")
    if not rows:
        click.echo("no parked callbacks")


@callbacks.command("resend")
@click.argument("envelope_id")
@click.option("--from-sequence", type=int, default=None, help="send again from this one on")
def callbacks_resend(envelope_id: str, from_sequence: int | None) -> None:
    """Make an envelope's parked callbacks due again, or re-send them from a sequence number."""
    from g2p_bridge.core import callbacks as service

    state = _callbacks_admin(
        lambda session, _s: service.resend(session, envelope_id, from_sequence).state
    )
    click.echo(f"envelope {envelope_id}: callbacks {state}")


@callbacks.command("new-key")
def callbacks_new_key() -> None:
    """Print a new Ed25519 signing key (PKCS#8 PEM) for G2P_BRIDGE_CALLBACK_SIGNING_KEY."""
    from g2p_bridge.signing import generate_private_pem

    click.echo(generate_private_pem(), nl=False)


@main.group()
def releases() -> None:
    """Releases of what an envelope's funds block did not spend."""


@releases.command("retry")
@click.argument("envelope_id")
def releases_retry(envelope_id: str) -> None:
    """Give a parked funds release (FAILED after its last attempt) fresh attempts."""
    from g2p_bridge.core import operations
    from g2p_bridge.observability import actor_var

    def requeue(session: Any, settings: Any) -> str:
        release = operations.requeue_funds_release(
            session, envelope_id, actor_var.get() or "cli", "admin", settings.max_attempts
        )
        return str(release.state)

    state = _callbacks_admin(requeue)
    click.echo(f"envelope {envelope_id}: funds release {state}")


@main.group()
def mappings() -> None:
    """The local ID-to-financial-address table (the "table" resolver)."""


@mappings.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def mappings_load(file: Path) -> None:
    """Load a CSV with columns beneficiary_id,financial_address (upsert)."""
    from g2p_bridge.connectors.mappers.local import load_mapping_csv
    from g2p_bridge.db import make_engine, make_session_factory, transaction

    factory = make_session_factory(make_engine(get_settings().database_url))
    with transaction(factory) as session:
        count = load_mapping_csv(session, file)
    click.echo(f"{count} mappings loaded")


@main.group()
def auth() -> None:
    """Access tokens for the API."""


@auth.command("token")
@click.option("--client", "client_id", required=True, help="the client id (the token's sub)")
@click.option("--role", type=click.Choice(["pbms", "bank", "admin", "approver"]), default="pbms")
@click.option("--program", "programs", multiple=True, help="a program the client may act on")
@click.option("--bank-code", "bank_codes", multiple=True, help="a bank code (role bank)")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(1, 366 * 86400))
def auth_token(
    client_id: str, role: str, programs: tuple[str, ...], bank_codes: tuple[str, ...], ttl: int
) -> None:
    """Print a signed token for a client (the embedded key file, or G2P_BRIDGE_AUTH_SECRET_KEY)."""
    from g2p_bridge.auth import AuthConfigurationError, issue_token

    try:
        token = issue_token(get_settings(), client_id, role, programs, bank_codes, ttl)
    except AuthConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)


@main.group()
def envelopes() -> None:
    """Envelopes without a PBMS: payroll files (docs/console/payroll-files.md)."""


@envelopes.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--program", required=True, help="the benefit program's mnemonic")
@click.option("--cycle", "cycle_code", required=True, help="the cycle code, e.g. 2026-12")
@click.option("--schedule-date", default=None, help="YYYY-MM-DD; today if left out")
@click.option("--frequency", default="OnDemand", show_default=True)
@click.option("--envelope-id", default=None, help="the envelope's id; generated if left out")
@click.option("--expected-count", type=click.IntRange(1), default=None, help="control total")
@click.option("--expected-total", default=None, help="control total, e.g. 125000.00")
@click.option(
    "--api-url", envvar="G2P_BRIDGE_API_URL", default="http://127.0.0.1:8000", show_default=True
)
@click.option("--token", envvar="G2P_BRIDGE_API_TOKEN", default=None, help="a bearer token")
@click.option("--wait/--no-wait", default=True, help="follow the pipeline until settled")
@click.option("--timeout", type=click.FloatRange(0), default=600.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the final answer as JSON")
def envelopes_submit(
    file: Path,
    program: str,
    cycle_code: str,
    schedule_date: str | None,
    frequency: str,
    envelope_id: str | None,
    expected_count: int | None,
    expected_total: str | None,
    api_url: str,
    token: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Submit FILE (CSV or XLSX) as one envelope through a running bridge, showing the upload
    and then the pipeline's stages on stderr. Exit 0 once settled (or accepted, with
    --no-wait), 1 if refused (each faulty line printed), 3 if --timeout passed first."""
    import time
    from datetime import UTC, datetime

    import httpx

    from g2p_bridge.cli_http import ApiRefused, BridgeApi
    from g2p_bridge.cli_progress import FINAL_STAGES, ProgressLine, bar, describe, size, stage_of

    params = {
        "program": program,
        "cycle_code": cycle_code,
        "schedule_date": schedule_date or datetime.now(UTC).date().isoformat(),
        "frequency": frequency,
    }
    for key, value in (
        ("envelope_id", envelope_id),
        ("expected_count", str(expected_count) if expected_count else None),
        ("expected_total", expected_total),
    ):
        if value:
            params[key] = value
    api = BridgeApi(api_url.rstrip("/"), token)
    line = ProgressLine()
    total = file.stat().st_size

    def sent(done: int) -> None:
        line.show(f"uploading {file.name} {bar(done, total)} {size(done)} of {size(total)}")

    try:
        answer = api.submit_payroll_file(file, params, sent)
        line.show(f"uploaded {file.name}, {size(total)}: checked")
        line.done()
        summary = (
            f"envelope {answer['disbursement_envelope_id']}: "
            f"{answer['number_of_disbursements']} disbursements, "
            f"{answer['total_disbursement_amount']} {answer['currency']}"
        )
        if answer.get("resubmitted"):
            click.echo(f"this file was submitted before; {summary}", err=True)
        else:
            click.echo(f"accepted; {summary}; it waits for a second person's approval", err=True)
        status: dict[str, Any] = {}
        stage = "SUBMITTED"
        if wait:
            deadline = time.monotonic() + timeout
            while True:
                status = api.envelope_status(answer["disbursement_envelope_id"])
                stage = stage_of(status)
                line.show(describe(status))
                if stage in FINAL_STAGES or time.monotonic() >= deadline:
                    break
                time.sleep(1.0)  # a poll interval, not a wait for a condition: each poll checks
            line.done()
    except ApiRefused as refused:
        line.done()
        click.echo(f"refused (HTTP {refused.status}): {refused.message}", err=True)
        for fault in refused.lines:
            where = f"line {fault.get('line')}" if fault.get("line") else "file"
            column = f", {fault['column']}" if fault.get("column") else ""
            click.echo(f"  {where}{column}: {fault.get('reason')}", err=True)
        sys.exit(1)
    except httpx.HTTPError as exc:
        line.done()
        raise click.ClickException(f"cannot reach the bridge at {api_url}: {exc}") from exc
    if as_json:
        click.echo(json.dumps({**answer, "stage": stage, "status": status}, indent=2))
    else:
        click.echo(f"{answer['disbursement_envelope_id']} {stage}")
    if wait and stage not in FINAL_STAGES:
        click.echo(f"still {stage} after {timeout:.0f} s; the envelope goes on", err=True)
        sys.exit(3)


@main.group()
def users() -> None:
    """People who sign in to the console (/console)."""


@users.command("add")
@click.option("--username", required=True)
@click.option(
    "--role", required=True, type=click.Choice(["viewer", "operator", "approver", "admin"])
)
@click.option("--program", "programs", multiple=True, help="a program they may see ('*': all)")
@click.option(
    "--password-stdin", is_flag=True, help="read the password from stdin instead of a prompt"
)
def users_add(username: str, role: str, programs: tuple[str, ...], password_stdin: bool) -> None:
    """Add a console user; the password is hashed with argon2id and never echoed."""
    from g2p_bridge.console.users import UserError, add_user
    from g2p_bridge.db import make_engine, make_session_factory, transaction

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    factory = make_session_factory(make_engine(get_settings().database_url))
    try:
        with transaction(factory) as session:
            add_user(session, username, role, list(programs), password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} ({role}) added")


@main.command("audit")
@click.option("--envelope", "envelope_id", default=None, help="an envelope's trail")
@click.option("--disbursement", "disbursement_id", default=None, help="a disbursement's trail")
@click.option("--since", default=None, help="ISO 8601 time, UTC if no offset is given")
@click.option("--until", default=None, help="ISO 8601 time, UTC if no offset is given")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True)
def audit_command(
    envelope_id: str | None,
    disbursement_id: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the audit trail, oldest first."""
    from datetime import UTC, datetime

    from g2p_bridge.core import audit as service
    from g2p_bridge.db import make_engine, make_session_factory, transaction

    def when(value: str | None) -> datetime | None:
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    factory = make_session_factory(make_engine(get_settings().database_url))
    with transaction(factory) as session:
        events = [
            service.event_payload(e)
            for e in service.query(
                session,
                envelope_id=envelope_id,
                disbursement_id=disbursement_id,
                since=when(since),
                until=when(until),
                limit=limit,
            )
        ]
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    for e in events:
        click.echo(
            f"{e['at']}  {e['actor']:<16} {e['action']:<22} {e['outcome']:<7} "
            f"{e['entity_type']}:{e['entity_id'] or '-'}  {json.dumps(e['detail'] or {})}"
        )


@main.command()
@click.option("--disbursements", "count", default=1000, show_default=True, type=int)
@click.option(
    "--failure-rate",
    default="0.05",
    show_default=True,
    help="share of payments to other banks the Example Bank fails and reverses",
)
@click.option(
    "--workdir",
    default=".g2p-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option(
    "--serve", is_flag=True, help="keep the services (and the console) running until Ctrl-C"
)
@click.option(
    "--channel",
    type=click.Choice(["example-bank", "iso20022-sftp"]),
    default="example-bank",
    show_default=True,
    help="how the bridge reaches the bank: its JSON API, or ISO 20022 files over SFTP",
)
def demo(
    count: int, failure_rate: str, workdir: Path, as_json: bool, serve: bool, channel: str
) -> None:
    """Run the whole flow on the embedded default, with the Example Bank, and summarise it."""
    import threading

    from g2p_bridge.demo import console_login, print_summary, run_demo
    from g2p_bridge.observability import setup_logging

    def keep_serving(url: str, factory: Any) -> None:
        username, password = console_login(factory)
        click.echo(f"\nConsole: {url}/console  (user {username}, password {password})")
        click.echo("The bridge and the Example Bank keep running; Ctrl-C stops them.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopping")

    # Warnings and errors only (the summary is the output), through the masking handler.
    setup_logging("WARNING", get_settings().log_format)
    summary = run_demo(
        count,
        Decimal(failure_rate),
        workdir,
        quiet=as_json,
        keep_serving=keep_serving if serve else None,
        channel=channel,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    if not summary.get("complete"):
        sys.exit(1)


if __name__ == "__main__":
    main()
