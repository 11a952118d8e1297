"""What a bench run is: its scenario options (``BenchConfig``), the faults it can inject, and
the fixed names and servers it uses. A new scenario option goes in ``BenchConfig`` (and its
flag in ``bench/cli.py``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# The PostgreSQL server of the suite: TEST_POSTGRES_URL as scripts/ensure-services.sh exports it
# (its own cluster and role on a machine whose server wants a password), else the passwordless
# postgres@127.0.0.1:5432 of CI machines.
_PG = urlsplit(os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
PG_HOST, PG_PORT = _PG.hostname or "127.0.0.1", _PG.port or 5432
PG_USER = unquote(_PG.username or "postgres")
PG_PASSWORD = unquote(_PG.password) if _PG.password else None
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PROGRAM_ACCOUNT = "PRG-BENCH-0001"
CURRENCY = "USD"
OWN_BANK = "EXAMPLE"
OWN_ACCOUNTS = 50  # customer accounts at the Example Bank that beneficiaries share
TERMINAL = ("RECONCILED", "REVERSED", "FAILED", "UNRESOLVED")
MB = 1024 * 1024
# With G2P_BRIDGE_AUTH_DISABLED the caller is the anonymous principal, and a G2P Connect
# header must name its authenticated sender.
SENDER_ID = "anonymous"


@dataclass
class BenchConfig:
    n: int = 10_000
    batch: int = 5_000
    failure_rate: float = 0.05
    backend: str = "postgres"  # postgres | embedded
    # How the bridge reaches the Example Bank: one of CHANNELS.
    channel: str = "example-bank"
    workers: int = 1  # number of `g2p-bridge worker` processes (postgres)
    api_workers: int = 2  # `g2p-bridge api --workers` (postgres; embedded runs one)
    # Celery prefork children per bridge worker: 4, as the charts' production values deploy. The
    # steps mostly wait (on the bank, on row locks); with 2 the pipeline idled on a 2-core
    # machine (docs/performance.md, session 3). --worker-concurrency 2 gives the older figures.
    worker_concurrency: int = 4
    bank_concurrency: int = 2  # Celery prefork children of the bank worker
    clients: int = 4
    # Many programs at once: N split evenly over this many envelopes, submitted concurrently
    # by the clients, from ``programs`` programs (None: min(envelopes, 5)), each with its own
    # configuration and its own account at the Example Bank, as on a real payday.
    envelopes: int = 1
    programs: int | None = None
    out: Path = DEFAULT_OUT
    timeout: float = 1800.0  # the whole run, setup to checks
    stall_timeout: float = 120.0  # no counter moved for this long after ingest: give up
    beat_interval: float = 0.5
    dispatch_batch: int | None = None  # None: the bridge's default
    mapper_batch: int | None = None
    bank_interval: float = 0.2  # embedded bank processing interval
    seed: int = 42
    # None: claim a free database number for this run (bench/redis_db.py), so concurrent runs
    # on one machine never flush each other's queues; a number pins it (and skips the claim).
    redis_db_bridge: int | None = None
    redis_db_bank: int | None = None
    keep_db: bool = False
    # After the run, on its server: COPY and UPDATE ... FROM of N rows (bench/floor.py).
    floor: bool = True
    # After the checks: the bridge database's size after VACUUM and VACUUM FULL (bench/vacuum.py).
    vacuum: bool = True
    profile: bool = False  # py-spy record every component
    # Collapsed stacks ("raw") are greppable; add ("flamegraph", "svg") for pictures. Each py-spy
    # costs CPU on a 2-core machine: profiled runs are for where-the-time-goes, not for figures.
    profile_formats: tuple[tuple[str, str], ...] = (("raw", "txt"),)
    profile_rate: int = 25
    poll_interval: float = 0.1
    write_latest: bool = True
    quiet: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    # Faults to inject (postgres backend), any of FAULTS.
    faults: tuple[str, ...] = ()
    bank_timeout: float | None = None  # the bridge's timeout on bank calls; None: its default
    bank_fault_calls: int = 4  # bank faults: this many faulted calls per endpoint...
    bank_fault_every: int = 2  # ...one call in this many (the 1st, 3rd, 5th...)
    bank_fault_delay: float | None = None  # bank-slow's delay; None: well past bank_timeout
    outage_seconds: float = 3.0  # how long a restarted broker or database stays down
    ingest_attempts: int = 3  # per request, the same message_id each time
    # Per request: the longest the client waits in all, 503 answers' Retry-After included.
    ingest_retry_budget: float = 60.0


# "example-bank": the bank's JSON API; "iso20022-sftp": pain.001 files to the bank's SFTP
# endpoint, pain.002 and camt.053 back from its outbox (funds pre-arranged, as with a real bank).
CHANNELS = ("example-bank", "iso20022-sftp")
# The faults that act on the bank's JSON API, which the file channel does not use.
JSON_API_FAULTS = ("bank-slow", "bank-5xx", "bank-close")

FAULTS = {
    "kill-bridge-worker": "SIGKILL the bridge worker's process group while a payment batch is"
    " being sent, then start it again",
    "bank-slow": "the bank stores a payment batch, then answers only after the bridge's timeout",
    "bank-5xx": "the bank answers 503 without storing anything (block_funds, initiate_payment)",
    "bank-close": "the bank stores a payment batch, then drops the connection unanswered",
    "restart-broker": "SIGKILL the bridge's Redis broker (no persistence) while tasks are queued,"
    " start it again empty",
    "restart-database": "stop the bridge's PostgreSQL (fast) while ingest requests are in flight,"
    " and crash it (immediate) while a payment batch is being sent; start it again each time",
}
