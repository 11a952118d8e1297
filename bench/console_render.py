"""Render times of the console's heaviest pages on a database of N disbursements.

    python -m bench.console_render --n 100000 [--database-url URL]

Builds the database with bulk inserts (one envelope of N disbursements, most reconciled, some
reversed, some failed; its payment batches, recon rows, a few reconciliation errors; twenty
small envelopes besides), then times the dashboard, the envelope page (and its polled part),
the disbursement search and a disbursement's story, the failures and envelope lists, through
the ASGI app in-process as a signed-in admin. Prints the median of several requests each."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from g2p_bridge.api.app import create_app
from g2p_bridge.console.users import add_user
from g2p_bridge.db import bulk_insert, make_engine, make_session_factory, transaction
from g2p_bridge.migrations import upgrade
from g2p_bridge.models import (
    AccountStatement,
    BankBatch,
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    DisbursementRecon,
    EnvelopeStatus,
    ReconDayTotal,
    ReconError,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.settings import Settings

PASSWORD = "bench-password-0123456789"
AMOUNT = Decimal("50.00")
CHUNK = 10_000


def _build(session: Session, n: int) -> str:
    now = utcnow()
    today = now.date()
    session.add(
        BenefitProgram(
            mnemonic="BENCH",
            sponsor_bank_code="EXAMPLE",
            sponsor_bank_account_number="9000000001",
            sponsor_bank_account_currency="USD",
            id_mapper_resolution_required=False,
            resolver="inline",
        )
    )
    session.flush()
    envelopes = [("env-big", n)] + [(f"env-small-{i:02d}", 10) for i in range(20)]
    for envelope_id, count in envelopes:
        session.add(
            DisbursementEnvelope(
                id=envelope_id,
                sender_id="bench-pbms",
                program_mnemonic="BENCH",
                disbursement_frequency="Monthly",
                cycle_code_mnemonic="2026-12",
                number_of_beneficiaries=count,
                number_of_disbursements=count,
                total_disbursement_amount=AMOUNT * count,
                currency="USD",
                schedule_date=today,
                cancelled=False,
                created_at=now,
            )
        )
    session.flush()
    failed, reversed_ = n // 100, n // 20
    for envelope_id, count in envelopes:
        big = envelope_id == "env-big"
        session.add(
            EnvelopeStatus(
                envelope_id=envelope_id,
                received_count=count,
                received_amount=AMOUNT * count,
                shipped_count=count - failed if big else 0,
                reconciled_count=count - failed if big else 0,
                reversed_count=reversed_ if big else 0,
                failed_count=failed if big else 0,
                funds_available_state="FUNDS_AVAILABLE" if big else "PENDING_CHECK",
                funds_blocked_state="FUNDS_BLOCK_SUCCESS" if big else "PENDING_CHECK",
                funds_blocked_at=now if big else None,
                next_attempt_at=now + timedelta(days=1),
            )
        )
    batches = max(n // 1000, 1)
    bulk_insert(
        session,
        BankBatch,
        [
            {
                "id": f"batch-{b:06d}",
                "envelope_id": "env-big",
                "destination": None,
                "disbursement_count": 1000,
                "total_amount": AMOUNT * 1000,
                "state": "DONE",
                "attempts": 1,
                "next_attempt_at": now,
                "lease_until": None,
                "last_error": None,
                "bank_response": "accepted",
                "sent_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for b in range(batches)
        ],
    )
    session.add(
        AccountStatement(
            id="stmt-1",
            content_sha256="0" * 64,
            content=b"",
            size_bytes=0,
            account_number="9000000001",
            program_mnemonic="BENCH",
            state="PROCESSED",
        )
    )
    session.flush()
    for start in range(0, n, CHUNK):
        rows: list[dict[str, Any]] = []
        recons: list[dict[str, Any]] = []
        for i in range(start, min(start + CHUNK, n)):
            state = (
                "FAILED" if i < failed else ("REVERSED" if i < failed + reversed_ else "RECONCILED")
            )
            rows.append(
                {
                    "id": f"d-{i:08d}",
                    "envelope_id": "env-big",
                    "mis_reference_number": None,
                    "beneficiary_id": f"NID-{i:08d}",
                    "beneficiary_name": f"Beneficiary {i}",
                    "amount": AMOUNT,
                    "narrative": "December transfer",
                    "financial_address": f"account:{i:010d}@NORTHBANK.BR01",
                    "receipt_at": now,
                    "cancelled": False,
                    "cancelled_at": None,
                    "state": state,
                    "state_reason": "bank refused the batch" if state == "FAILED" else None,
                    "mapper_batch_id": None,
                    "bank_batch_id": f"batch-{i // 1000:06d}",
                    "shipped_at": now,
                    "updated_at": now,
                }
            )
            if state != "FAILED":
                recons.append(
                    {
                        "disbursement_id": f"d-{i:08d}",
                        "remittance_reference_number": f"BREF-{i:08d}",
                        "remittance_statement_id": "stmt-1",
                        "remittance_entry_date": today,
                        "reversal_statement_id": "stmt-1" if state == "REVERSED" else None,
                        "reversal_entry_date": today if state == "REVERSED" else None,
                        "reversal_reason": "account closed" if state == "REVERSED" else None,
                    }
                )
        bulk_insert(session, Disbursement, rows)
        session.flush()
        session.add_all(DisbursementRecon(**r) for r in recons)
        session.flush()
    # What statement processing would have added up for today's dashboard.
    session.add_all(
        [
            ReconDayTotal(
                entry_date=today, envelope_id="env-big", kind="paid", amount=AMOUNT * (n - failed)
            ),
            ReconDayTotal(
                entry_date=today, envelope_id="env-big", kind="returned", amount=AMOUNT * reversed_
            ),
        ]
    )
    session.flush()
    for i in range(50):
        session.add(
            ReconError(statement_id="stmt-1", error_code="DISBURSEMENT_NOT_FOUND", detail=f"#{i}")
        )
    return "env-big"


def _time(client: TestClient, path: str, runs: int) -> float:
    response = client.get(path)  # warm: templates compiled, caches filled
    if response.status_code != 200:
        raise SystemExit(f"{path} answered {response.status_code}: not a page to time")
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}")
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="an empty database (else SQLite)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="console-bench-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    started = time.perf_counter()
    with transaction(factory) as session:
        envelope_id = _build(session, args.n)
        add_user(session, "bench", "admin", [], PASSWORD)
    built = time.perf_counter() - started
    if url.startswith("postgresql"):
        # What autovacuum does soon after a load this size: statistics for the planner and the
        # visibility map that lets the covering indexes answer without reading the table.
        with make_engine(url).connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
    settings = Settings(database_url=url, auth_secret_key="x" * 40)
    app = create_app(settings, factory, wake=lambda *a: None)
    paths = {
        "dashboard": "/console",
        "envelope page": f"/console/envelopes/{envelope_id}",
        "envelope progress (polled)": f"/console/envelopes/{envelope_id}/progress",
        "search by beneficiary id": f"/console/disbursements?q=NID-{args.n // 2:08d}",
        "search by bank reference": f"/console/disbursements?q=BREF-{args.n // 3:08d}",
        "disbursement story": f"/console/disbursements/d-{args.n // 2:08d}",
        "failures list": "/console/failures",
        "envelopes list": "/console/envelopes",
    }
    with TestClient(app, base_url="https://bench") as client:
        nonce_page = client.get("/console/login").text
        nonce = nonce_page.split('name="nonce" value="')[1].split('"')[0]
        client.post(
            "/console/login", data={"username": "bench", "password": PASSWORD, "nonce": nonce}
        )
        timings = {name: round(_time(client, path, args.runs), 1) for name, path in paths.items()}
    result = {
        "disbursements": args.n,
        "backend": url.split(":", 1)[0],
        "build_seconds": round(built, 1),
        "median_ms": timings,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
