"""The state of one run, shared by the modules of each concern."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.callbacks import new_signing_key
from bench.config import CHANNELS, FAULTS, JSON_API_FAULTS, PROGRAM_ACCOUNT, SENDER_ID, BenchConfig
from bench.postgres import Db, PrivatePostgres
from bench.processes import Deadline, Processes
from bench.redis_db import RedisDatabaseClaim
from bench.sampling import RssSampler
from bench.workload import bench_workload
from g2p_bridge.pbms_client import PbmsClient
from g2p_bridge.pbms_receiver import ReceivingPBMS
from g2p_bridge.workload import Workload


@dataclass(frozen=True)
class PlannedEnvelope:
    """One envelope of a run: its key, its program and that program's account, its share of
    N and the prefix of its disbursement ids."""

    key: str
    program: str
    account: str
    n: int
    id_prefix: str


def plan_envelopes(n: int, envelopes: int, programs: int | None) -> list[PlannedEnvelope]:
    """N split evenly over ``envelopes`` (the first ones carry the remainder), dealt round
    robin to ``programs`` programs (default min(envelopes, 5)). One envelope is the classic
    run: program BENCH on PROGRAM_ACCOUNT, ids ``bench-...``."""
    if envelopes < 1 or envelopes > n:
        raise ValueError("envelopes must be between 1 and n")
    count = min(envelopes, 5) if programs is None else programs
    if count < 1 or count > envelopes:
        raise ValueError("programs must be between 1 and the number of envelopes")
    if envelopes == 1:
        return [PlannedEnvelope(f"bench-envelope-{n}", "BENCH", PROGRAM_ACCOUNT, n, "bench")]
    share, extra = divmod(n, envelopes)
    return [
        PlannedEnvelope(
            key=f"bench-envelope-{n}-{k:03d}",
            program=f"BENCH{k % count:02d}",
            account=f"PRG-BENCH-{k % count + 1:04d}",
            n=share + (1 if k < extra else 0),
            id_prefix=f"bench{k:03d}",
        )
        for k in range(envelopes)
    ]


class RunState:
    """What a run knows while it runs: its configuration, processes, services and figures.
    The concerns of a run (faults, checks, the harness) are mixins over it."""

    # Set by the harness as the run goes: the databases, then the services, then ingest.
    bridge_db_url: str
    bank_db_url: str
    bridge_sqlite: Path
    bank_sqlite: Path
    bridge_broker: str | None
    bank_broker: str | None
    bridge_url: str
    bank_url: str
    envelope_id: str
    ingest_end: float
    expected: dict[str, int]
    total: Decimal
    deposit: Decimal

    def __init__(self, cfg: BenchConfig) -> None:
        self.worker_specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.fault_threads: list[threading.Thread] = []
        if cfg.backend not in ("postgres", "embedded"):
            raise ValueError("backend must be postgres or embedded")
        if cfg.n < 1 or cfg.batch < 1 or cfg.clients < 1:
            raise ValueError("n, batch and clients must be positive")
        unknown = set(cfg.faults) - set(FAULTS)
        if unknown or (cfg.faults and cfg.backend != "postgres"):
            raise ValueError(f"faults need the postgres backend and one of {sorted(FAULTS)}")
        if cfg.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}")
        if cfg.channel != "example-bank" and set(cfg.faults) & set(JSON_API_FAULTS):
            raise ValueError(f"{JSON_API_FAULTS} act on the bank's JSON API, not {cfg.channel}")
        if cfg.envelopes > 1 and cfg.faults:
            raise ValueError("faults run with one envelope")
        self.plan = plan_envelopes(cfg.n, cfg.envelopes, cfg.programs)
        # Many envelopes: what each program account holds, what the bank will make of each
        # envelope, and when each envelope's last ingest request ended.
        self.deposits: dict[str, Decimal] = {}
        self.expected_by_envelope: list[dict[str, int]] = []
        self.envelope_ingest_end: dict[str, float] = {}
        self.cfg = cfg
        self.run_id = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        # Absolute: the services it starts run elsewhere and open their SQLite files by path.
        self.out = Path(cfg.out).resolve()
        channel = "" if cfg.channel == "example-bank" else f"-{cfg.channel}"
        self.run_dir = self.out / f"{self.run_id}-{cfg.backend}{channel}-{cfg.n}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.run_dir)
        self.sampler = RssSampler(self.procs)
        self.deadline = Deadline(cfg.timeout)
        self.result: dict[str, Any] = {}
        # Callbacks: the bridge signs with a key made for this run; the bench's PBMS receives.
        self.callback_key, self.callback_jwks = new_signing_key()
        self.pbms: ReceivingPBMS | None = None
        self.reconciled_wall: float | None = None
        self.env_base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("G2P_BRIDGE_", "EXAMPLE_BANK_"))
        }
        self.env_base["PYTHONUNBUFFERED"] = "1"
        # name -> (database, port): the shared server's databases are dropped afterwards, the
        # private cluster's vanish with it.
        self.pg_dbs: dict[str, tuple[str, int]] = {}
        self.private_pg: PrivatePostgres | None = None
        self.redis_claims: list[RedisDatabaseClaim] = []
        self.broker_port: int | None = None
        # The database fault holds all but the first ingest request until the server is down.
        self.first_chunk_done = threading.Event()
        self.ingest_gate = threading.Event()
        if "restart-database" not in cfg.faults:
            self.ingest_gate.set()
        self.ingest_errors: Counter[str] = Counter()
        self.ingest_retry_after_waits: list[float] = []
        # Fault runs: (time, sum of the envelope's counters) at each change, from ingest on, and
        # (what to annotate, time) of each faulted component's return.
        self.progress_events: list[tuple[float, int]] = []
        self.fault_returns: list[tuple[dict[str, Any], float]] = []
        self.watch_stop = threading.Event()
        self.profilers: list[subprocess.Popen[bytes]] = []
        # Fixed ids (the databases are fresh): the same seed fails the same payments every run.
        self.envelope_key = self.plan[0].key
        self.id_prefix = "bench"
        self.phases: dict[str, float] = {}
        # The soak (bench/soak.py) runs several envelopes, with a token: the checks and the
        # progress counters cover every envelope in ``envelope_ids``, ``n_total`` of them.
        self.envelope_ids: list[str] = []
        self.n_total = cfg.n
        self.http_headers: dict[str, str] = {}
        # The Example Bank's SFTP endpoint, when the run reaches the bank over files.
        self.sftp_port: int | None = None
        # The first few accepted ingest requests, (body, HTTP status, answer), for replays.
        self.ingest_answers: list[tuple[bytes, int, bytes]] = []

    def _settings_dict(self) -> dict[str, Any]:
        data = asdict(self.cfg)
        data["out"] = str(self.cfg.out)
        return data

    def _client(self, timeout: float) -> PbmsClient:
        return PbmsClient(
            self.bridge_url, sender_id=SENDER_ID, timeout=timeout, headers=self.http_headers
        )

    def workload(self) -> Workload:
        """The disbursements of the envelope being sent (the soak sends several, in turn)."""
        return bench_workload(self.cfg.n, self.id_prefix)

    def _counters(self, db: Db) -> dict[str, int]:
        where, ids = self._envelopes_where()
        # count(*) rather than HAVING without GROUP BY, which SQLite before 3.39 refuses.
        row = db.rows(
            "SELECT sum(received_count), sum(shipped_count), sum(reconciled_count),"
            " sum(reversed_count), sum(failed_count), sum(cancelled_count), count(*)"
            f" FROM envelope_status WHERE {where}",
            *ids,
        )
        keys = ("received", "shipped", "reconciled", "reversed", "failed", "cancelled")
        if not row or not row[0][-1]:
            return {}
        return dict(zip(keys, (int(v or 0) for v in row[0][:-1]), strict=True))

    def _envelopes_where(self) -> tuple[str, list[str]]:
        """``envelope_id IN (...)`` over the run's envelopes, and its parameters."""
        ids = self.envelope_ids or [self.envelope_id]
        return f"envelope_id IN ({', '.join(['%s'] * len(ids))})", ids

    def _since_ingest(self) -> float | None:
        """Seconds since the last ingest request ended; None while ingest is still running."""
        end: float | None = getattr(self, "ingest_end", None)
        return None if end is None else round(time.monotonic() - end, 2)

    def _wait_for(self, what: str, probe: Callable[[], Any], limit: float = 120.0) -> Any:
        """Polls ``probe`` until it returns something true; its errors count as not yet."""
        end = time.monotonic() + min(limit, max(self.deadline.left(), 1))
        while time.monotonic() < end:
            with contextlib.suppress(Exception):
                got = probe()
                if got:
                    return got
            time.sleep(0.02)
        raise TimeoutError(f"gave up waiting for {what}")
