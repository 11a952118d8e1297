"""The benchmark harness as an end-to-end test: every component its own OS process.

PostgreSQL backend: bridge API, beat and worker, Example Bank API and worker, each a separate
process, on fresh PostgreSQL databases and Redis brokers. Embedded backend: the two APIs, each on
its own SQLite file. A few hundred disbursements go in over HTTP; every one must come out
reconciled or reversed exactly once, with the counters equal to the rows and the bank's ledger
balanced (see bench/run.py for the checks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `bench` lives at the repository root, outside src/
    sys.path.insert(0, str(REPO_ROOT))

from bench.run import BenchConfig, run_bench  # noqa: E402

N = 300


def _run(backend: str, out: Path, **overrides: object) -> dict:
    config = BenchConfig(
        n=N,
        batch=100,
        failure_rate=0.05,
        backend=backend,
        clients=2,
        out=out,
        timeout=150,
        stall_timeout=60,
        write_latest=False,
        quiet=True,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return run_bench(config)


def _assert_correct(result: dict) -> None:
    failed = {k: v for k, v in result.get("checks", {}).items() if not v["passed"]}
    assert not result.get("error"), result.get("error")
    assert not failed, failed
    assert result["correct"] is True
    assert sum(result["disbursements_by_state"].values()) == N
    assert result["ingest_per_s"] and result["reconciled_after_s"] is not None
    assert result["peak_rss_mb"] and result["peak_rss_mb"] > 0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(240)
def test_postgres_every_component_its_own_process(tmp_path: Path) -> None:
    result = _run("postgres", tmp_path)
    _assert_correct(result)
    expected = {"bridge-api", "bridge-beat", "bridge-worker-1", "bank-api", "bank-worker"}
    assert expected <= set(result["rss"]), result["rss"].keys()
    # The Celery prefork pools show up as process trees.
    assert result["rss"]["bridge-worker-1"]["max_processes"] >= 2


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_embedded_two_processes_on_sqlite(tmp_path: Path) -> None:
    result = _run("embedded", tmp_path)
    _assert_correct(result)
    assert {"bridge-api", "bank-api"} <= set(result["rss"])
    assert "bridge-worker-1" not in result["rss"]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(300)
def test_worker_killed_mid_dispatch_pays_each_disbursement_once(tmp_path: Path) -> None:
    """SIGKILL of the bridge worker's whole process group while a payment batch is being sent:
    no ack, no clean-up. After a restart every disbursement is still paid exactly once (the
    bank holds one payment per shipped disbursement) and the counters equal the rows."""
    result = _run(
        "postgres",
        tmp_path,
        faults=("kill-bridge-worker",),
        dispatch_batch=25,
        timeout=240,
        stall_timeout=120,
        extra_env={"G2P_BRIDGE_LEASE_SECONDS": "10"},
    )
    (fault,) = result["faults"]
    assert fault.get("killed") and fault.get("restarted"), fault
    _assert_correct(result)
    payments = result["checks"]["one_bank_payment_per_shipped_disbursement"]
    assert payments["duplicate_payments"] == 0 and payments["missing_at_bank"] == 0
