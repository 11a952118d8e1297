"""``g2p-bridge demo``: the whole G2P flow on one machine, with no server to install.

It starts the bridge and the Example Bank as two HTTP services inside this process (each on a
free loopback port, each with its embedded SQLite database and in-process workers), then acts as
a program administrator and a PBMS over HTTP: funds the program account, configures the program
and its ID mappings, submits an envelope and its disbursements, and waits until every
disbursement is reconciled, reversed or failed."""

from __future__ import annotations

import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.pbms_client import (
    DisbursementItem,
    EnvelopeSpec,
    EnvelopeStatus,
    PbmsClient,
    ProgramConfig,
)
from g2p_bridge.settings import BankConnectorSettings, Settings
from g2p_bridge.workload import Destination, Workload, open_example_bank_accounts

PROGRAM = "CASH-TRANSFER"
PROGRAM_ACCOUNT = "PRG-0000000001"
REQUEST_SIZE = 1000
CONSOLE_USER = "demo-admin"
TERMINAL = ("RECONCILED", "REVERSED", "UNRESOLVED", "FAILED")
STATEMENT_FIELDS = (
    "statement_id",
    "state",
    "entries_total",
    "entries_matched",
    "entries_reversed",
    "entries_unmatched",
    "balance_problems",
    "sequence_gaps",
)
ACCOUNT_FIELDS = ("account_number", "book_balance", "blocked_amount", "available_balance")


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def _serve(app: Any, sock: socket.socket) -> Iterator[str]:
    # log_config=None: uvicorn's records go to the root handler (masked, one line each), not to
    # handlers of its own.
    config = uvicorn.Config(app, log_level="warning", lifespan="on", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    host, port = sock.getsockname()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# Six in ten beneficiaries bank elsewhere, two with the Example Bank (an account each), two
# hold a mobile wallet; one in a hundred is someone the ID mapper does not know.
DEMO_MIX = (
    (Destination.OTHER_BANK,) * 6 + (Destination.SPONSOR_BANK,) * 2 + (Destination.MOBILE,) * 2
)


def demo_workload(count: int) -> Workload:
    return Workload(
        count,
        unknown_fraction=Decimal("0.01"),
        returns_fraction=Decimal(0),
        mix=DEMO_MIX,
        own_accounts=None,
        id_prefix=None,
    )


def console_login(session_factory: sessionmaker[Session]) -> tuple[str, str]:
    """A console administrator for the demo, with a fresh random password."""
    from g2p_bridge.console.users import add_user
    from g2p_bridge.db import transaction

    password = secrets.token_urlsafe(12)
    with transaction(session_factory) as session:
        add_user(session, CONSOLE_USER, "admin", [], password)
    return CONSOLE_USER, password


def run_demo(
    count: int,
    failure_rate: Decimal,
    workdir: Path,
    quiet: bool = False,
    keep_serving: Callable[[str, sessionmaker[Session]], None] | None = None,
) -> dict[str, Any]:
    """``keep_serving``, when given, is called with the bridge's URL once every disbursement has
    settled, while the services still run (``demo --serve``: the console stays up)."""
    from example_bank.api import create_app as create_bank_app
    from example_bank.db import migrate as migrate_bank
    from example_bank.settings import BankSettings
    from g2p_bridge.api.app import create_app
    from g2p_bridge.auth import issue_token
    from g2p_bridge.connectors.mappers.local import load_mapping_csv
    from g2p_bridge.db import make_engine, make_session_factory, transaction
    from g2p_bridge.migrations import upgrade

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    if count < 1:
        raise ValueError("the demo needs at least one disbursement")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    bridge_sock, bank_sock = _free_socket(), _free_socket()
    bridge_url = f"http://127.0.0.1:{bridge_sock.getsockname()[1]}"
    bank_url = f"http://127.0.0.1:{bank_sock.getsockname()[1]}"
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'bridge.db'}",
        broker_url=None,
        beat_interval_seconds=0.2,
        retry_backoff_seconds=0.5,
        bank_connectors={"EXAMPLE": BankConnectorSettings(base_url=bank_url)},
    )
    # The embedded key file signs these: an operator, the program's MIS, and the bank.
    day = 86400
    admin_token = issue_token(settings, "demo-admin", "admin")
    pbms_token = issue_token(settings, "demo-pbms", "pbms", programs=[PROGRAM], ttl_seconds=day)
    bank_token = issue_token(settings, "demo-bank", "bank", bank_codes=["EXAMPLE"], ttl_seconds=day)
    bank_settings = BankSettings(
        bridge_token=bank_token,
        database_url=f"sqlite:///{workdir / 'bank.db'}",
        broker_url=None,
        failure_rate=float(failure_rate),
        bridge_statement_url=f"{bridge_url}/upload_mt940",
        processing_interval_seconds=0.2,
        delivery_retry_seconds=0.5,
    )
    upgrade(settings.database_url)
    migrate_bank(bank_settings.database_url)
    session_factory = make_session_factory(make_engine(settings.database_url))
    workload = demo_workload(count)
    total = workload.total()
    started = time.monotonic()

    with (
        _serve(create_bank_app(bank_settings), bank_sock),
        _serve(create_app(settings, session_factory, run_pipeline=True), bridge_sock),
        httpx.Client(base_url=bank_url) as bank,
        PbmsClient(bridge_url, admin_token, sender_id="demo-admin") as admin,
        PbmsClient(bridge_url, pbms_token, sender_id="demo-pbms") as pbms,
    ):
        say(f"Example Bank on {bank_url}, bridge on {bridge_url}; data in {workdir}/")
        own = open_example_bank_accounts(bank, workload, PROGRAM_ACCOUNT, total * 2)
        say(
            f"bank: program account {PROGRAM_ACCOUNT} funded with {total * 2} USD; "
            f"{own} beneficiaries bank with the Example Bank"
        )

        admin.create_program(ProgramConfig(PROGRAM, "EXAMPLE", PROGRAM_ACCOUNT, "USD", "table"))
        mapping = workdir / "id-mappings.csv"
        with mapping.open("w") as handle:
            handle.write("beneficiary_id,financial_address\n")
            handle.writelines(f"{b},{a}\n" for b, a in workload.mapping_rows())
        with transaction(session_factory) as session:
            mapped = load_mapping_csv(session, mapping)
        say(f"bridge: program {PROGRAM} configured; {mapped} ID mappings loaded")

        envelope = pbms.create_envelope(EnvelopeSpec(PROGRAM, count, total, "USD"))
        envelope_id = envelope.envelope_id
        # The table resolver finds each address: the items name only the beneficiary.
        items = (
            DisbursementItem(
                w.beneficiary_id,
                w.beneficiary_name,
                w.amount,
                mis_reference_number=w.mis_reference_number,
                narrative=w.narrative,
            )
            for w in workload.items()
        )
        pbms.create_disbursements(envelope_id, items, REQUEST_SIZE)
        ingested = time.monotonic()
        say(
            f"bridge: envelope {envelope_id} with {count} disbursements ({total} USD) received "
            f"in {ingested - started:.1f} s; the pipeline takes it from here"
        )

        def progress(s: EnvelopeStatus) -> None:
            say(
                f"  funds {s.funds_blocked}, shipped {s.shipped}, reconciled {s.reconciled}, "
                f"reversed {s.reversed}, failed {s.failed}"
            )

        status = pbms.wait_settled(
            envelope_id, count, timeout=max(120.0, count / 50), on_change=progress
        )
        finished = time.monotonic()
        account = bank.get(f"/accounts/{PROGRAM_ACCOUNT}").json()
        statements = admin.http.get("/statements", headers=admin.headers).json()
        if keep_serving is not None:
            keep_serving(bridge_url, session_factory)

    by_state = status.by_state
    return {
        "complete": sum(by_state.get(s, 0) for s in TERMINAL) == count,
        "envelope_id": envelope_id,
        "disbursements": count,
        "total_amount": str(total),
        "currency": "USD",
        "envelope_status": status.raw,
        "disbursements_by_state": by_state,
        "statements": [{k: s[k] for k in STATEMENT_FIELDS} for s in statements["items"]],
        "program_account": {k: account.get(k) for k in ACCOUNT_FIELDS},
        "seconds": {
            "ingest": round(ingested - started, 2),
            "ingest_to_settled": round(finished - ingested, 2),
        },
        "workdir": str(workdir),
    }


def print_summary(summary: dict[str, Any]) -> None:
    status = summary["envelope_status"]
    print()
    print(
        f"Envelope {summary['envelope_id']}: {summary['disbursements']} disbursements, "
        f"{summary['total_amount']} {summary['currency']}"
    )
    rows = [
        ("received", status.get("number_of_disbursements_received")),
        ("funds available", status.get("funds_available_with_bank")),
        (
            "funds blocked",
            f"{status.get('funds_blocked_with_bank')} "
            f"(ref {status.get('funds_blocked_reference_number')})",
        ),
        ("shipped", status.get("number_of_disbursements_shipped")),
        ("reconciled", status.get("number_of_disbursements_reconciled")),
        ("reversed", status.get("number_of_disbursements_reversed")),
        ("failed", status.get("number_of_disbursements_failed")),
        ("cancelled", status.get("number_of_disbursements_cancelled")),
    ]
    for label, value in rows:
        print(f"  {label:<16} {value}")
    print("Disbursements by state:")
    for state, number in sorted(summary["disbursements_by_state"].items()):
        print(f"  {state:<16} {number}")
    print("Statements reconciled:")
    for s in summary["statements"]:
        alarms = s["balance_problems"] or s["sequence_gaps"] or "balanced, no gaps"
        print(
            f"  {s['statement_id'][:8]} {s['state']:<10} {s['entries_total']:>6} entries, "
            f"{s['entries_matched']} remitted, {s['entries_reversed']} reversed, "
            f"{s['entries_unmatched']} unmatched; {alarms}"
        )
    account = summary["program_account"]
    print(
        f"Program account {account['account_number']}: book {account['book_balance']}, "
        f"blocked {account['blocked_amount']}, available {account['available_balance']}"
    )
    seconds = summary["seconds"]
    print(f"Ingest took {seconds['ingest']} s; ingest to settled {seconds['ingest_to_settled']} s.")
    print(
        "Complete."
        if summary["complete"]
        else "NOT complete: some disbursements are still in flight (see the states above)."
    )
