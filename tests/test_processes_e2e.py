"""The benchmark harness as an end-to-end test: every component its own OS process.

PostgreSQL backend: bridge API, beat and worker, Example Bank API and worker, each a separate
process, on fresh PostgreSQL databases and Redis brokers. Embedded backend: the two APIs, each on
its own SQLite file. A few hundred disbursements go in over HTTP; every one must come out
reconciled or reversed exactly once, with the counters equal to the rows and the bank's ledger
balanced (see bench/checks.py).

The fault tests run the same with one fault injected into real processes (bench/config.py FAULTS):
a SIGKILLed worker, a bank that answers late, with a 503 or not at all after doing the work, a
broker restarted with tasks queued, a database restarted during ingest and crashed during
dispatch. Each asserts that the fault really happened and that the run is still correct."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.config import BenchConfig
from bench.harness import run_bench

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
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(240)
def test_postgres_through_celery_over_iso20022_files(tmp_path: Path) -> None:
    """The whole pipeline with Celery workers, paying and reconciling through pain.001,
    pain.002 and camt.053 files over the Example Bank's SFTP endpoint (its own process)."""
    result = _run("postgres", tmp_path, channel="iso20022-sftp")
    _assert_correct(result)
    assert result["channel"] == "iso20022-sftp"
    assert "bank-sftp" in result["processes"], result["processes"]
    # Payments the bank returned come back as camt.053 returns, each reversed once.
    assert result["disbursements_by_state"].get("REVERSED", 0) > 0, result


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(240)
def test_postgres_many_envelopes_from_several_programs_at_once(tmp_path: Path) -> None:
    result = _run("postgres", tmp_path, envelopes=3, programs=2)
    _assert_correct(result)
    assert len(result["envelopes"]) == 3
    assert result["envelope_starvation"] is not None


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


def _run_with_fault(tmp_path: Path, fault: str, **overrides: object) -> tuple[dict, dict]:
    """One fault, small batches (several to hit), short leases (a lost message or an unheard
    answer is retried within seconds, not minutes). Returns the result and the fault's record."""
    settings: dict[str, object] = {
        "faults": (fault,),
        "dispatch_batch": 25,
        "timeout": 240,
        "stall_timeout": 120,
        "extra_env": {"G2P_BRIDGE_LEASE_SECONDS": "10"},
    }
    settings.update(overrides)
    result = _run("postgres", tmp_path, **settings)
    records = [r for r in result.get("faults", []) if r["fault"] == fault]
    assert len(records) == 1, result.get("faults")
    assert "error" not in records[0], records[0]
    return result, records[0]


def _assert_bank_fault(result: dict, fault: dict, injected: dict[str, int]) -> None:
    """The bank really injected its faults, each payment fault cost the bridge a failed
    attempt, and still every disbursement was paid once."""
    _assert_correct(result)
    assert fault["bank"]["injected"] == injected, fault["bank"]
    batches = result["batches"]
    failed = injected["/initiate_payment"]
    assert batches["bridge_bank_batch_attempts"] >= batches["bridge_bank_batches"] + failed, batches
    assert batches["bridge_max_attempts_of_a_batch"] >= 2, batches
    payments = result["checks"]["one_bank_payment_per_shipped_disbursement"]
    assert payments["duplicate_payments"] == 0 and payments["missing_at_bank"] == 0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(300)
def test_bank_answering_after_the_timeout_pays_each_once(tmp_path: Path) -> None:
    """The bank stores four payment batches and answers each only after the bridge gave up
    waiting (2 s timeout, 5 s answer). The bridge re-sends them; the bank reports the payments
    as already known and pays none twice."""
    result, fault = _run_with_fault(tmp_path, "bank-slow", bank_timeout=2.0)
    _assert_bank_fault(result, fault, {"/initiate_payment": 4})


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(300)
def test_bank_answering_503_pays_each_once(tmp_path: Path) -> None:
    """The bank refuses the first funds block and four payment batches with a 503 before doing
    anything; the bridge retries each after a backoff and everything is paid once."""
    result, fault = _run_with_fault(tmp_path, "bank-5xx")
    # One envelope, so one block: its first call got the 503, the second went through.
    _assert_bank_fault(result, fault, {"/block_funds": 1, "/initiate_payment": 4})
    assert result["batches"]["funds_block_attempts"] == 2, result["batches"]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(300)
def test_bank_dropping_the_connection_after_processing_pays_each_once(tmp_path: Path) -> None:
    """The bank stores four payment batches and closes the connection without a byte of answer;
    the bridge cannot know they were taken, re-sends them, and nothing is paid twice."""
    # A quick retry, so that some re-sends reach the bank before its statement reconciled the
    # batch, and the bank answers with duplicates.
    env = {"G2P_BRIDGE_LEASE_SECONDS": "10", "G2P_BRIDGE_RETRY_BACKOFF_SECONDS": "0.1"}
    result, fault = _run_with_fault(tmp_path, "bank-close", beat_interval=0.2, extra_env=env)
    _assert_bank_fault(result, fault, {"/initiate_payment": 4})


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(300)
def test_broker_restarted_with_tasks_queued_pays_each_once(tmp_path: Path) -> None:
    """The bridge's Redis broker (no persistence) is SIGKILLed while send_bank_batch messages
    wait in it, and started again empty: the messages are lost, the workers and beat reconnect,
    and beat finds the work again from the rows once its enqueue marks run out."""
    result, fault = _run_with_fault(tmp_path, "restart-broker")
    assert fault["restarted"] and fault["pid_after"] != fault["pid_before"], fault
    assert fault["queued_at_kill"]["dispatch"] > 0, fault
    _assert_correct(result)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.broker
@pytest.mark.timeout(300)
def test_database_restarted_under_load_pays_each_once(tmp_path: Path) -> None:
    """The bridge's own PostgreSQL cluster is shut down (fast) while ingest requests arrive,
    and crashed (immediate) while the bank holds its answer to a stored batch. The API answers
    at once while it is away, the client's retries with the same message_id land once, and the
    batch whose answer was lost is re-sent or reconciled, never paid twice."""
    result, fault = _run_with_fault(
        tmp_path,
        "restart-database",
        faults=("restart-database", "bank-slow"),
        bank_fault_calls=1,
        bank_fault_delay=1.5,
        outage_seconds=3.0,
        ingest_attempts=30,
    )
    ingest, dispatch = fault["restarts"]
    for restart in (ingest, dispatch):
        assert restart["pid_after"] != restart["pid_before"], restart
        assert restart["api_ready_status"] == 503 and restart["api_ready_answer_s"] < 5, restart
    assert (ingest["mode"], dispatch["mode"]) == ("fast", "immediate")
    # The held requests met the outage, failed, and were sent again.
    assert sum(result["ingest_failed_attempts"].values()) >= 1, result["ingest_failed_attempts"]
    # The answer the bank gave during the crash was lost: that batch took a second attempt.
    assert result["batches"]["bridge_max_attempts_of_a_batch"] >= 2, result["batches"]
    _assert_correct(result)
