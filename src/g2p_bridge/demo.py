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

from g2p_bridge.models.base import new_id, utcnow
from g2p_bridge.settings import BankConnectorSettings, Settings

PROGRAM = "CASH-TRANSFER"
PROGRAM_ACCOUNT = "PRG-0000000001"
REQUEST_SIZE = 1000
OTHER_BANKS = ("NORTHBANK", "SOUTHBANK")
CONSOLE_USER = "demo-admin"


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


def _amount(i: int) -> Decimal:
    return Decimal("50.00") + Decimal(i % 7) * Decimal("5.25")


def _address(i: int) -> str | None:
    """A mix of destinations, and one beneficiary in a hundred the mapper does not know."""
    if i % 100 == 99:
        return None
    if i % 10 < 6:
        return f"account:{400000000 + i}@{OTHER_BANKS[i % 2]}.BR{i % 5:02d}"
    if i % 10 < 8:
        return f"account:BEN-{i:08d}@EXAMPLE.BR01"
    return f"mobile:07{i:08d}@MPESA"


def _post(client: httpx.Client, path: str, body: Any, token: str) -> dict[str, Any]:
    response = client.post(
        path, json=body, timeout=120, headers={"Authorization": f"Bearer {token}"}
    )
    data: dict[str, Any] = response.json()
    if response.status_code >= 400 or data.get("header", {}).get("status") == "rjct":
        raise RuntimeError(f"{path} refused: HTTP {response.status_code} {data}")
    return data


def _header(action: str, count: int = 1, sender: str = "demo-pbms") -> dict[str, Any]:
    return {
        "message_id": new_id(),
        "message_ts": utcnow().isoformat(),
        "action": action,
        "sender_id": sender,
        "total_count": count,
    }


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
    from g2p_bridge.demo_callbacks import callbacks_received, receiving_pbms, subscribe
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
    admin_token = issue_token(settings, "demo-admin", "admin")
    day = 86400
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
    total = sum((_amount(i) for i in range(count)), Decimal(0))
    started = time.monotonic()

    with (
        _serve(create_bank_app(bank_settings), bank_sock),
        _serve(create_app(settings, session_factory, run_pipeline=True), bridge_sock),
        receiving_pbms(settings) as pbms,
        httpx.Client() as http,
    ):
        say(f"Example Bank on {bank_url}, bridge on {bridge_url}; data in {workdir}/")
        response = http.post(
            f"{bank_url}/accounts",
            json={
                "account_number": PROGRAM_ACCOUNT,
                "holder_name": "Ministry of Social Protection",
                "currency": "USD",
                "initial_deposit": str(total * 2),
            },
        )
        response.raise_for_status()
        own = [i for i in range(count) if (_address(i) or "").endswith("@EXAMPLE.BR01")]
        for i in own:
            http.post(
                f"{bank_url}/accounts",
                json={
                    "account_number": f"BEN-{i:08d}",
                    "holder_name": f"Beneficiary {i}",
                    "currency": "USD",
                    "phone": f"07{i:08d}",
                },
            ).raise_for_status()
        say(
            f"bank: program account {PROGRAM_ACCOUNT} funded with {total * 2} USD; "
            f"{len(own)} beneficiaries bank with the Example Bank"
        )

        http.base_url = httpx.URL(bridge_url)
        _post(
            http,
            "/create_benefit_program_configuration",
            {
                "header": _header("create_benefit_program_configuration", sender="demo-admin"),
                "message": {
                    "program_mnemonic": PROGRAM,
                    "sponsor_bank_code": "EXAMPLE",
                    "sponsor_bank_account_number": PROGRAM_ACCOUNT,
                    "sponsor_bank_account_currency": "USD",
                    "id_mapper_resolution_required": True,
                    "resolver": "table",
                },
            },
            admin_token,
        )
        mapping = workdir / "id-mappings.csv"
        with mapping.open("w") as handle:
            handle.write("beneficiary_id,financial_address\n")
            for i in range(count):
                if (address := _address(i)) is not None:
                    handle.write(f"NID-{i:08d},{address}\n")
        with transaction(session_factory) as session:
            mapped = load_mapping_csv(session, mapping)
        subscribe(http, PROGRAM, pbms.url, admin_token)
        say(f"bridge: program {PROGRAM} configured; {mapped} ID mappings loaded")

        envelope = _post(
            http,
            "/create_disbursement_envelope",
            {
                "header": _header("create_disbursement_envelope"),
                "message": {
                    "benefit_program_mnemonic": PROGRAM,
                    "disbursement_frequency": "Monthly",
                    "cycle_code_mnemonic": utcnow().strftime("%Y-%m"),
                    "number_of_beneficiaries": count,
                    "number_of_disbursements": count,
                    "total_disbursement_amount": str(total),
                    "disbursement_currency_code": "USD",
                    "disbursement_schedule_date": utcnow().date().isoformat(),
                },
            },
            pbms_token,
        )
        envelope_id = envelope["message"]["disbursement_envelope_id"]
        for start in range(0, count, REQUEST_SIZE):
            items = [
                {
                    "disbursement_envelope_id": envelope_id,
                    "beneficiary_id": f"NID-{i:08d}",
                    "beneficiary_name": f"Beneficiary {i}",
                    "disbursement_amount": str(_amount(i)),
                    "narrative": "Monthly cash transfer",
                    "mis_reference_number": f"MIS-{i}",
                }
                for i in range(start, min(start + REQUEST_SIZE, count))
            ]
            _post(
                http,
                "/create_disbursements",
                {"header": _header("create_disbursements", len(items)), "message": items},
                pbms_token,
            )
        ingested = time.monotonic()
        say(
            f"bridge: envelope {envelope_id} with {count} disbursements ({total} USD) received "
            f"in {ingested - started:.1f} s; the pipeline takes it from here"
        )

        deadline = time.monotonic() + max(120.0, count / 50)
        status: dict[str, Any] = {}
        last = ""
        while time.monotonic() < deadline:
            status = _post(
                http,
                "/get_disbursement_envelope_status",
                {"header": _header("get_disbursement_envelope_status"), "message": envelope_id},
                pbms_token,
            )["message"]
            progress = (
                f"  funds {status['funds_blocked_with_bank']}, shipped "
                f"{status['number_of_disbursements_shipped']}, reconciled "
                f"{status['number_of_disbursements_reconciled']}, reversed "
                f"{status['number_of_disbursements_reversed']}, failed "
                f"{status['number_of_disbursements_failed']}"
            )
            if progress != last:
                say(progress)
                last = progress
            settled = (
                status["number_of_disbursements_reconciled"]
                + status["number_of_disbursements_failed"]
            )
            if settled >= count - status["number_of_disbursements_cancelled"]:
                break
            time.sleep(0.3)
        finished = time.monotonic()
        callbacks = callbacks_received(pbms, session_factory, envelope_id)
        account = http.get(f"{bank_url}/accounts/{PROGRAM_ACCOUNT}").json()
        statements = http.get(
            "/statements", headers={"Authorization": f"Bearer {admin_token}"}
        ).json()
        if keep_serving is not None:
            keep_serving(bridge_url, session_factory)

    by_state = status.get("disbursements_by_state", {})
    complete = (
        sum(by_state.get(s, 0) for s in ("RECONCILED", "REVERSED", "UNRESOLVED", "FAILED")) == count
    )
    return {
        "complete": complete,
        "envelope_id": envelope_id,
        "disbursements": count,
        "total_amount": str(total),
        "currency": "USD",
        "envelope_status": status,
        "disbursements_by_state": by_state,
        "statements": [
            {
                k: s[k]
                for k in (
                    "statement_id",
                    "state",
                    "entries_total",
                    "entries_matched",
                    "entries_reversed",
                    "entries_unmatched",
                    "balance_problems",
                    "sequence_gaps",
                )
            }
            for s in statements["items"]
        ],
        "program_account": {
            k: account.get(k)
            for k in ("account_number", "book_balance", "blocked_amount", "available_balance")
        },
        "seconds": {
            "ingest": round(ingested - started, 2),
            "ingest_to_settled": round(finished - ingested, 2),
        },
        "workdir": str(workdir),
        "callbacks": callbacks,
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
    from g2p_bridge.demo_callbacks import describe

    print(describe(summary["callbacks"]) + ".")
    seconds = summary["seconds"]
    print(f"Ingest took {seconds['ingest']} s; ingest to settled {seconds['ingest_to_settled']} s.")
    print(
        "Complete."
        if summary["complete"]
        else "NOT complete: some disbursements are still in flight (see the states above)."
    )
