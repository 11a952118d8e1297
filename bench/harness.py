"""One bench run from start to finish: the phases in order, each process started and stopped.
A new phase is a step in ``Bench.run``."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.callbacks import start_receiver, wait_delivered
from bench.checks import Checks
from bench.config import (
    CURRENCY,
    MB,
    OWN_BANK,
    PG_PORT,
    PROGRAM_ACCOUNT,
    REDIS_HOST,
    BenchConfig,
)
from bench.faults import FaultInjection
from bench.floor import floor_ratios, measure_floor
from bench.postgres import (
    Db,
    PrivatePostgres,
    libpq,
    pg_admin,
    pg_database_size,
    pg_url,
    production_autovacuum,
    sqlite_size,
)
from bench.processes import (
    free_port,
    log,
    redis_broker,
    script,
    wait_listening,
    wait_ready,
)
from bench.report import SUMMARY_KEYS, _r, render_markdown
from bench.sampling import git_commit, loadavg, machine_info, percentile
from bench.vacuum import vacuumed_sizes
from bench.workload import bench_workload, expected_outcome
from g2p_bridge.pbms_client import (
    EnvelopeSpec,
    ProgramConfig,
    disbursement_message,
    retry_after_seconds,
)
from g2p_bridge.workload import Workload, open_example_bank_accounts


class Bench(FaultInjection, Checks):
    """One run: databases, services, configuration, ingest, faults, settling, checks, report."""

    # ----------------------------------------------------------------- orchestration

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.monotonic()
        error: str | None = None
        self.result = {
            "n": cfg.n,
            "backend": cfg.backend,
            "channel": cfg.channel,
            "run_id": self.run_id,
            "started_at": datetime.now(UTC).isoformat(),
            "git_commit": git_commit(),
            "settings": self._settings_dict(),
            "machine": machine_info(),
            "correct": False,
        }
        self.result["phases_s"] = self.phases
        try:
            for phase, step in (
                ("databases", self._setup_databases),
                ("start_services", self._start_services),
                ("configure", self._configure),
                ("arm_faults", self._arm_faults),
                ("ingest", self._ingest),
                ("faults", self._start_faults),
                ("settle", self._wait_settled),
                ("callbacks", self._wait_callbacks),
            ):
                t0 = time.monotonic()
                step()
                self.phases[phase] = round(time.monotonic() - t0, 2)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            log(cfg, f"run failed: {error}")
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                self.result["error"] = error
                self._finish(started)
                raise
        self.result["error"] = error
        self._finish(started)
        return self.result

    def _finish(self, started: float) -> None:
        try:
            self._stop_profilers()
            if self.pbms is not None:
                self.pbms.stop()
            self.watch_stop.set()
            self.sampler.stop()
            self._bank_fault_reports()
            self.procs.stop_all()
            t0 = time.monotonic()
            try:
                self._checks()
            except Exception as exc:
                self.result.setdefault("checks", {})["checks_ran"] = {
                    "passed": False,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            self.phases["checks"] = round(time.monotonic() - t0, 2)
            self._fault_figures()
            with contextlib.suppress(Exception):
                self._sizes()
            self._vacuumed()
            self._floor()
        finally:
            self.procs.stop_all()
            self._drop_databases()
            self.result["rss"] = self.sampler.stats
            if "postgres" in self.sampler.cpu:
                self.result["postgres_cpu_s"] = self.sampler.cpu["postgres"]
            self.result["cpu_ms_per_disbursement"] = self._cpu_per_disbursement()
            services = {k: v for k, v in self.sampler.stats.items() if k != "bench-client"}
            self.result["peak_rss_mb"] = max(
                (v["max_single_process_mb"] for v in services.values()), default=None
            )
            self.result["peak_rss_tree_mb"] = max(
                (v["peak_rss_mb"] for v in services.values()), default=None
            )
            self.result["log_bytes"] = sum(
                p.stat().st_size for p in self.run_dir.glob("*.log") if p.is_file()
            )
            self.result["wall_s"] = round(time.monotonic() - started, 2)
            self.result["machine"]["loadavg_at_end"] = loadavg()
            checks = self.result.get("checks", {})
            self.result["correct"] = bool(
                checks
                and all(c["passed"] for c in checks.values())
                and not self.result.get("error")
            )
            self._write()

    def _vacuumed(self) -> None:
        """The bridge database's size after VACUUM and after VACUUM FULL (bench/vacuum.py)."""
        if not self.cfg.vacuum or self.cfg.backend != "postgres" or self.result.get("error"):
            return
        t0 = time.monotonic()
        try:
            self.result["vacuumed"] = vacuumed_sizes(libpq(self.bridge_db_url), self.cfg.n)
        except Exception as exc:
            self.result["vacuumed"] = {"error": f"{type(exc).__name__}: {exc}"}
        self.phases["vacuum"] = round(time.monotonic() - t0, 2)

    def _floor(self) -> None:
        """Measured once every process of the system has stopped, so it has the server alone
        (as far as this shared machine allows: the load average is recorded with it)."""
        if not self.cfg.floor or self.cfg.backend != "postgres" or self.result.get("error"):
            return
        t0 = time.monotonic()
        try:
            self.result["floor"] = measure_floor(libpq(self.bridge_db_url), self.cfg.n)
        except Exception as exc:
            self.result["floor"] = {"error": f"{type(exc).__name__}: {exc}"}
        self.result["floor_ratio"] = floor_ratios(self.result)
        self.phases["floor"] = round(time.monotonic() - t0, 2)

    def _cpu_per_disbursement(self) -> dict[str, float]:
        """CPU milliseconds per disbursement of each component's process tree, of the backends
        serving each of the run's databases, and of the whole PostgreSQL server (its own
        processes too: checkpointer, WAL writer, autovacuum, and anyone else's queries)."""
        cpu = {name: v["cpu_s"] for name, v in self.sampler.stats.items() if "cpu_s" in v}
        cpu.update(self.sampler.cpu)
        return {
            name: round(seconds * 1000 / self.cfg.n, 3) for name, seconds in sorted(cpu.items())
        }

    # ----------------------------------------------------------------- databases

    def _setup_databases(self) -> None:
        cfg = self.cfg
        if cfg.backend == "postgres":
            self.result["postgres_settings"] = production_autovacuum(PG_PORT, cfg)
            tag = self.run_id.replace("-", "_")
            bridge_port = PG_PORT
            if "restart-database" in cfg.faults:
                self.private_pg = PrivatePostgres(self.run_dir)
                self.private_pg.init()
                bridge_port = self.private_pg.port
            for role, port in (("bridge", bridge_port), ("bank", PG_PORT)):
                name = f"g2pbench_{role}_{tag}"
                pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', port)
                pg_admin(f'CREATE DATABASE "{name}"', port)
                self.pg_dbs[role] = (name, port)
                if port == PG_PORT:  # the private cluster's processes are not sampled
                    self.sampler.databases[name] = f"postgres-{role}-db"
            urls = {
                role: pg_url(name, port, driver="postgresql+psycopg")
                for role, (name, port) in self.pg_dbs.items()
            }
            self.bridge_db_url, self.bank_db_url = urls["bridge"], urls["bank"]
            shown = {
                role: pg_url(name, port, driver="postgresql+psycopg", hide_password=True)
                for role, (name, port) in self.pg_dbs.items()
            }
            self.bank_broker: str | None = redis_broker(cfg.redis_db_bank, self.redis_claims)
            if "restart-broker" in cfg.faults:
                # A broker of its own that the run may kill: no snapshots, no append-only file,
                # so a restart really loses every queued message.
                self.broker_port = free_port()
                self._start_broker()
                self.bridge_broker: str | None = f"redis://{REDIS_HOST}:{self.broker_port}/0"
            else:
                self.bridge_broker = redis_broker(cfg.redis_db_bridge, self.redis_claims)
        else:
            self.bridge_sqlite = self.run_dir / "bridge.db"
            self.bank_sqlite = self.run_dir / "bank.db"
            self.bridge_db_url = f"sqlite:///{self.bridge_sqlite}"
            self.bank_db_url = f"sqlite:///{self.bank_sqlite}"
            self.bridge_broker = self.bank_broker = None
            shown = {"bridge": self.bridge_db_url, "bank": self.bank_db_url}
        self.result["databases"] = shown

    def _drop_databases(self) -> None:
        while self.redis_claims:
            self.redis_claims.pop().release()
        if self.private_pg is not None:
            # Never left running; with --keep-db its data directory stays.
            self.private_pg.destroy(keep_data=self.cfg.keep_db)
            self.private_pg = None
        if self.cfg.keep_db:
            return
        for name, port in self.pg_dbs.values():
            if port == PG_PORT:
                with contextlib.suppress(Exception):
                    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.pg_dbs.clear()
        if self.cfg.backend == "embedded":
            for path in (self.bridge_sqlite, self.bank_sqlite):
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    p.unlink(missing_ok=True)

    # ----------------------------------------------------------------- services

    def _start_services(self) -> None:
        cfg = self.cfg
        bridge_port, bank_port = free_port(), free_port()
        self.bridge_url = f"http://127.0.0.1:{bridge_port}"
        self.bank_url = f"http://127.0.0.1:{bank_port}"
        connector: dict[str, Any] = {"base_url": self.bank_url}
        if cfg.bank_timeout is not None:
            connector["timeout_seconds"] = cfg.bank_timeout
        bank_files: dict[str, str] = {}
        if cfg.channel == "iso20022-sftp":
            connector_files, bank_files = self._sftp_channel()
            connector.update(connector_files)
        bridge_env = dict(self.env_base)
        bridge_env.update(
            {
                "G2P_BRIDGE_DATABASE_URL": self.bridge_db_url,
                "G2P_BRIDGE_BANK_CONNECTORS__EXAMPLE__BASE_URL": self.bank_url,
                # The nested form above arrives lower-cased ("example") and the bank lookup is
                # by "EXAMPLE"; the JSON form keeps the key's case (see docs/performance.md).
                "G2P_BRIDGE_BANK_CONNECTORS": json.dumps({"EXAMPLE": connector}),
                "G2P_BRIDGE_BEAT_INTERVAL_SECONDS": str(cfg.beat_interval),
                "G2P_BRIDGE_MAX_DISBURSEMENTS_PER_REQUEST": str(max(cfg.batch, 10_000)),
                "G2P_BRIDGE_LOG_LEVEL": "WARNING",
                "G2P_BRIDGE_RETRY_BACKOFF_SECONDS": "1",
                # The bench measures the pipeline, not token checks (a no-op where unknown).
                "G2P_BRIDGE_AUTH_DISABLED": "true",
                # A key made for this run: the bench's receiving PBMS verifies with its half.
                "G2P_BRIDGE_CALLBACK_SIGNING_KEY": self.callback_key,
            }
        )
        if cfg.dispatch_batch:
            bridge_env["G2P_BRIDGE_DISPATCH_BATCH_SIZE"] = str(cfg.dispatch_batch)
        if cfg.mapper_batch:
            bridge_env["G2P_BRIDGE_MAPPER_BATCH_SIZE"] = str(cfg.mapper_batch)
        if self.bridge_broker:
            bridge_env["G2P_BRIDGE_BROKER_URL"] = self.bridge_broker
        bank_env = dict(self.env_base)
        bank_env.update(
            {
                "EXAMPLE_BANK_DATABASE_URL": self.bank_db_url,
                "EXAMPLE_BANK_BRIDGE_STATEMENT_URL": f"{self.bridge_url}/upload_mt940",
                "EXAMPLE_BANK_FAILURE_RATE": str(cfg.failure_rate),
                "EXAMPLE_BANK_SEED": str(cfg.seed),
                "EXAMPLE_BANK_PROCESSING_INTERVAL_SECONDS": str(cfg.bank_interval),
                "EXAMPLE_BANK_DELIVERY_RETRY_SECONDS": "1",
            }
        )
        if self.bank_broker:
            bank_env["EXAMPLE_BANK_BROKER_URL"] = self.bank_broker
        bank_env.update(bank_files)
        bank_env.update(self._bank_fault_env())
        for env in (bridge_env, bank_env):
            env.update(cfg.extra_env)
        # The SFTP endpoint runs in one process only: its own beside the worker (postgres), or
        # the embedded bank's API process, which does all the bank's work in-process.
        sftp_env = dict(bank_env)
        if self.sftp_port is not None:
            sftp_env["EXAMPLE_BANK_SFTP_PORT"] = str(self.sftp_port)
            if cfg.backend == "embedded":
                bank_env = sftp_env
        bridge, bank = script("g2p-bridge"), script("example-bank")
        migrate_limit = max(10.0, min(300.0, self.deadline.left()))
        self.procs.run("migrate-bridge", [bridge, "migrate"], bridge_env, migrate_limit)
        self.procs.run("migrate-bank", [bank, "migrate"], bank_env, migrate_limit)
        host = ["--host", "127.0.0.1"]
        self.procs.start("bank-api", [bank, "api", *host, "--port", str(bank_port)], bank_env)
        api_workers = ["--workers", str(cfg.api_workers)] if cfg.backend == "postgres" else []
        self.procs.start(
            "bridge-api",
            [bridge, "api", *host, "--port", str(bridge_port), *api_workers],
            bridge_env,
        )
        if cfg.backend == "postgres":
            quiet = ["--loglevel", "WARNING"]
            self.procs.start(
                "bank-worker",
                [bank, "worker", "--concurrency", str(cfg.bank_concurrency), *quiet],
                bank_env,
            )
            if self.sftp_port is not None:
                self.procs.start("bank-sftp", [bank, "sftp"], sftp_env)
            self.procs.start("bridge-beat", [bridge, "beat", *quiet], bridge_env)
            for w in range(cfg.workers):
                argv = [
                    bridge,
                    "worker",
                    "--queues",
                    "mapper,funds,dispatch,statements,callbacks",
                    "--concurrency",
                    str(cfg.worker_concurrency),
                    *quiet,
                ]
                self.worker_specs[f"bridge-worker-{w + 1}"] = (argv, bridge_env)
                self.procs.start(f"bridge-worker-{w + 1}", argv, bridge_env)
        wait_ready(f"{self.bank_url}/health/ready", self.procs, self.deadline)
        wait_ready(f"{self.bridge_url}/health/ready", self.procs, self.deadline)
        if self.sftp_port is not None:
            wait_listening(self.sftp_port, self.procs, self.deadline)
        self.result["processes"] = {p.name: p.pid for p in self.procs.procs}
        self.sampler.start()
        if cfg.profile:
            self._start_profilers()
        log(
            cfg,
            f"{cfg.backend}: bridge {self.bridge_url}, bank {self.bank_url}, "
            f"logs in {self.run_dir}",
        )

    def _sftp_channel(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The bank's profile on the bridge and the Example Bank's EXAMPLE_BANK_ variables for
        ISO 20022 over SFTP: the demo's keys, pinned host key and free port, in the run's
        directory (g2p_bridge.demo_sftp)."""
        from g2p_bridge.demo_sftp import sftp_channel

        files = sftp_channel(self.run_dir, self.bank_url, OWN_BANK)
        profile = files.bridge
        self.sftp_port = profile.sftp.port
        connector = {
            "channel": profile.channel,
            "bank_member_id": profile.bank_member_id,
            # How often the bridge looks in the bank's outbox for pain.002 and camt.053.
            "poll_interval_seconds": profile.poll_interval_seconds,
            # Key and known-hosts entry by file and text: no SecretStr field is set here.
            "sftp": profile.sftp.model_dump(mode="json", exclude_none=True),
        }
        bank = {
            f"EXAMPLE_BANK_{name.upper()}": str(value)
            for name, value in files.bank.items()
            if name != "sftp_port"
        }
        return connector, bank

    def _start_profilers(self) -> None:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(pyspy).exists():
            log(self.cfg, "py-spy not installed: no profiles")
            return
        for proc in list(self.procs.procs):
            for fmt, ext in self.cfg.profile_formats:
                out = self.run_dir / f"profile-{proc.name}.{ext}"
                handle = (self.run_dir / f"py-spy-{proc.name}-{fmt}.log").open("ab")
                self.profilers.append(
                    subprocess.Popen(
                        [
                            pyspy,
                            "record",
                            "--pid",
                            str(proc.pid),
                            "--subprocesses",
                            "--nonblocking",
                            "--rate",
                            str(self.cfg.profile_rate),
                            "--format",
                            fmt,
                            "-o",
                            str(out),
                        ],
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                handle.close()

    def _stop_profilers(self) -> None:
        for p in self.profilers:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for p in self.profilers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        self.profilers.clear()

    # ----------------------------------------------------------------- program and envelope

    def _configure(self) -> None:
        if len(self.plan) > 1:
            self._configure_envelopes()
            return
        cfg = self.cfg
        self.total = self.workload().total()
        self.deposit = self.total * 2
        self._open_accounts(self.deposit)
        self._configure_program("BENCH", PROGRAM_ACCOUNT)
        self.pbms = start_receiver(self.callback_jwks, self.bridge_url, "BENCH", self.http_headers)
        self.envelope_id = self._create_envelope(self.envelope_key, cfg.n, self.total)
        self.envelope_ids = [self.envelope_id]
        self.result["envelope_id"] = self.envelope_id
        self.expected = expected_outcome(self.workload(), cfg.seed, cfg.failure_rate, cfg.channel)
        self.result["expected"] = self.expected

    def _configure_envelopes(self) -> None:
        """Many programs at once: each program its own configuration, callback and account
        (holding twice what its envelopes pay), then every envelope created before any is
        sent, so ingest meets them all at once."""
        cfg = self.cfg
        workloads = [bench_workload(e.n, e.id_prefix) for e in self.plan]
        owed: dict[str, Decimal] = {}
        for planned, workload in zip(self.plan, workloads, strict=True):
            owed[planned.account] = owed.get(planned.account, Decimal(0)) + workload.total()
        self.deposits = {account: total * 2 for account, total in owed.items()}
        self.deposit = sum(self.deposits.values(), Decimal(0))
        self.total = sum(owed.values(), Decimal(0))
        with httpx.Client(base_url=self.bank_url, timeout=60, headers=self.http_headers) as bank:
            # The first envelope is the largest: its workload opens every beneficiary account
            # (they are shared, numbered by position); the other programs open their own.
            first = self.plan[0].account
            open_example_bank_accounts(bank, workloads[0], first, self.deposits[first], CURRENCY)
            for account, deposit in self.deposits.items():
                if account != first:
                    open_program_account(bank, account, deposit)
        programs = dict.fromkeys(e.program for e in self.plan)
        for planned in self.plan:
            if programs[planned.program] is None:
                self._configure_program(planned.program, planned.account)
                programs[planned.program] = planned.account
        names = list(programs)
        self.pbms = start_receiver(self.callback_jwks, self.bridge_url, names[0], self.http_headers)
        with httpx.Client(base_url=self.bridge_url, timeout=60, headers=self.http_headers) as http:
            for name in names[1:]:
                http.put(
                    f"/programs/{name}/callback", json={"callback_url": self.pbms.url}
                ).raise_for_status()
        self.envelope_ids = [
            self._create_envelope(e.key, e.n, w.total(), program=e.program)
            for e, w in zip(self.plan, workloads, strict=True)
        ]
        self.envelope_id = self.envelope_ids[0]
        self.result["envelope_ids"] = self.envelope_ids
        self.expected_by_envelope = [
            expected_outcome(w, cfg.seed, cfg.failure_rate) for w in workloads
        ]
        expected: Counter[str] = Counter()
        for one in self.expected_by_envelope:
            expected.update(one)
        self.expected = dict(expected)
        self.result["expected"] = self.expected

    def _open_accounts(self, deposit: Decimal) -> None:
        """The program account (holding ``deposit``) and the beneficiaries' accounts."""
        with httpx.Client(base_url=self.bank_url, timeout=60, headers=self.http_headers) as bank:
            open_example_bank_accounts(bank, self.workload(), PROGRAM_ACCOUNT, deposit, CURRENCY)

    def _configure_program(self, mnemonic: str, account: str) -> None:
        with self._client(60) as bridge:
            bridge.create_program(ProgramConfig(mnemonic, OWN_BANK, account, CURRENCY))

    def _create_envelope(self, key: str, n: int, total: Decimal, program: str = "BENCH") -> str:
        """Creates an envelope of ``n`` disbursements worth ``total``; returns its id."""
        spec = EnvelopeSpec(program, n, total, CURRENCY, envelope_id=key)
        with self._client(60) as bridge:
            return bridge.create_envelope(spec).envelope_id

    def _ingest_targets(self) -> list[tuple[str, Workload]]:
        """(envelope id, its disbursements) of what this ingest sends: every envelope of a
        many-envelope run at once, else the current one (the soak sends its own in turn)."""
        if len(self.plan) > 1:
            return [
                (envelope, bench_workload(e.n, e.id_prefix))
                for envelope, e in zip(self.envelope_ids, self.plan, strict=True)
            ]
        return [(self.envelope_id, self.workload())]

    def _ingest(self) -> None:
        cfg = self.cfg
        targets = self._ingest_targets()
        # Interleaved (first request of each envelope, then the second of each...) so every
        # envelope is in flight from the start, as when several programs submit at once.
        per_target = [
            [(k, s, min(s + cfg.batch, w.count)) for s in range(0, w.count, cfg.batch)]
            for k, (_, w) in enumerate(targets)
        ]
        chunks = [c for row in itertools.zip_longest(*per_target) for c in row if c is not None]
        n_sent = sum(w.count for _, w in targets)
        last_end = [0.0] * len(targets)
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        local = threading.local()

        def send(chunk: tuple[int, int, int]) -> None:
            if self.deadline.left() <= 0:
                with lock:
                    failures.append(f"{chunk}: overall timeout")
                return
            if not hasattr(local, "client"):
                local.client = self._client(120)
            target, start, stop = chunk
            envelope_id, workload = targets[target]
            if start > 0 and not self.ingest_gate.wait(timeout=max(self.deadline.left(), 0)):
                with lock:
                    failures.append(f"{chunk}: the database fault never opened the gate")
                return
            messages = [
                disbursement_message(envelope_id, item) for item in workload.items(start, stop)
            ]
            body = local.client.body("create_disbursements", messages, len(messages))
            last = ""
            failed = 0  # attempts that failed without a Retry-After
            waited = 0.0
            # The same body, so the same message_id, every time: a replay gets the first answer.
            while True:
                retry_after: float | None = None
                t0 = time.perf_counter()
                try:
                    response = local.client.post("create_disbursements", body)
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    with lock:
                        self.ingest_errors[type(exc).__name__] += 1
                    failed += 1
                else:
                    elapsed = time.perf_counter() - t0
                    try:
                        data = orjson.loads(response.content)
                    except orjson.JSONDecodeError:  # a server error page, not G2P Connect
                        data = None
                        last = f"HTTP {response.status_code}: {response.text[:300]}"
                    if data is not None:
                        with lock:
                            latencies.append(elapsed)
                        status = data.get("header", {}).get("status")
                        if response.status_code < 400 and status != "rjct":
                            with lock:
                                if len(self.ingest_answers) < 4:
                                    self.ingest_answers.append(
                                        (body, response.status_code, response.content)
                                    )
                            if start == 0:
                                self.first_chunk_done.set()
                            with lock:
                                last_end[target] = max(last_end[target], time.monotonic())
                            return
                        last = f"HTTP {response.status_code}: {str(data)[:300]}"
                    with lock:
                        self.ingest_errors[f"HTTP {response.status_code}"] += 1
                    if response.status_code < 500:
                        break
                    # The server says when to come back (the database restarting): a client that
                    # honours it rides out an outage without burning its attempts.
                    retry_after = retry_after_seconds(response)
                    if retry_after is None:
                        failed += 1
                if failed >= cfg.ingest_attempts:
                    break
                pause = (
                    retry_after if retry_after is not None else min(0.25 * 2 ** (failed - 1), 2.0)
                )
                if waited + pause > cfg.ingest_retry_budget:
                    last += f" (gave up after waiting {waited:.1f} s)"
                    break
                if retry_after is not None:
                    with lock:
                        self.ingest_retry_after_waits.append(retry_after)
                time.sleep(pause)
                waited += pause
            with lock:
                failures.append(f"{chunk}: {last}")

        log(
            cfg,
            f"ingesting {n_sent} disbursements into {len(targets)} envelope(s) in {len(chunks)}"
            f" requests from {cfg.clients} clients",
        )
        # The bridge API's CPU during ingest alone (the run's total also holds statement
        # uploads and its idle loops while the pipeline settles).
        api_cpu_before = self.sampler.tree_cpu_seconds("bridge-api")
        # ...and the bridge database's backends, as last sampled (every 0.5 s, in 0.1 s steps:
        # both readings lag by up to a sampling interval, a window shifted, not shortened).
        db_cpu_before = self.sampler.cpu.get("postgres-bridge-db")
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=cfg.clients, thread_name_prefix="client") as pool:
            list(pool.map(send, chunks))
        self.ingest_end = time.monotonic()
        api_cpu = _per_disbursement(
            api_cpu_before, self.sampler.tree_cpu_seconds("bridge-api"), n_sent
        )
        db_cpu = _per_disbursement(
            db_cpu_before, self.sampler.cpu.get("postgres-bridge-db"), n_sent
        )
        self.envelope_ingest_end = dict(zip((e for e, _ in targets), last_end, strict=True))
        seconds = self.ingest_end - t0
        self.result.update(
            {
                "ingest_s": round(seconds, 3),
                "ingest_per_s": round(n_sent / seconds, 1) if seconds > 0 else None,
                "ingest_requests": len(chunks),
                "ingest_failures": failures[:20],
                "ingest_failed_attempts": dict(self.ingest_errors),
                "ingest_retry_after_waits": len(self.ingest_retry_after_waits),
                "ingest_retry_after_waited_s": round(sum(self.ingest_retry_after_waits), 2),
                "ingest_p50_s": _r(percentile(latencies, 50)),
                "ingest_p95_s": _r(percentile(latencies, 95)),
                "ingest_p99_s": _r(percentile(latencies, 99)),
                "ingest_max_s": _r(max(latencies) if latencies else None),
                "ingest_api_cpu_ms_per_disbursement": api_cpu,
                "ingest_bridge_db_cpu_ms_per_disbursement": db_cpu,
            }
        )
        log(
            cfg,
            f"ingest: {self.result['ingest_per_s']}/s over {seconds:.2f} s, p99 "
            f"{self.result['ingest_p99_s']} s, {len(failures)} failed requests",
        )
        if failures:
            raise RuntimeError(f"{len(failures)} ingest requests failed: {failures[:3]}")

    def _open_batches(self, db: Db) -> int:
        where, ids = self._envelopes_where()
        try:
            return int(
                db.one(
                    f"SELECT count(*) FROM bank_batches WHERE {where}"
                    " AND state IN ('PENDING', 'RUNNING')",
                    *ids,
                )
                or 0
            )
        except Exception:
            db.close()
            return -1

    def _wait_callbacks(self) -> None:
        """After the last result: until the PBMS acknowledged every callback (callbacks_after_s:
        last result -> last callback delivered)."""
        if self.result.get("reconciled_after_s") is None:
            return
        where, ids = self._envelopes_where()
        db = Db(self.bridge_db_url)
        try:
            figures = wait_delivered(
                db,
                where,
                ids,
                timeout=max(self.deadline.left(), 1),
                stall=self.cfg.stall_timeout,
                poll=self.cfg.poll_interval,
            )
        finally:
            db.close()
        delivered = figures.pop("last_callback_delivered_epoch")
        self.result.update(figures)
        if delivered is not None and self.reconciled_wall is not None:
            self.result["callbacks_after_s"] = _r(max(delivered - self.reconciled_wall, 0.0), 2)
        if self.pbms is not None:
            got = self.pbms.received
            self.result["callbacks_received"] = len(got.bodies)
            self.result["callback_results_received"] = got.result_count
            self.result["callback_duplicates"] = got.duplicates
            self.result["callback_bad_signatures"] = got.bad_signatures
        log(
            self.cfg,
            f"callbacks: {self.result.get('callbacks')} delivered, last "
            f"{self.result.get('callbacks_after_s')} s after the last result",
        )

    def _wait_settled(self) -> None:
        cfg, n = self.cfg, self.n_total
        db = Db(self.bridge_db_url)
        shipped_at = reconciled_at = closed_at = None
        last: dict[str, int] = {}
        last_change = time.monotonic()
        progress: list[dict[str, Any]] = []
        next_log = 0.0
        settled_at: dict[str, float] = {}  # many envelopes: when each one settled
        try:
            while True:
                now = time.monotonic()
                if len(self.plan) > 1 and len(settled_at) < len(self.plan):
                    with contextlib.suppress(Exception):
                        self._note_settled_envelopes(db, settled_at, now)
                if self.deadline.left() <= 0:
                    self.result["wait_error"] = "overall timeout"
                    break
                try:
                    c = self._counters(db)
                except Exception as exc:  # a busy SQLite file, a restarted server: retry
                    db.close()
                    c = {}
                    self.result["poll_errors"] = self.result.get("poll_errors", 0) + 1
                    if self.result["poll_errors"] > 1000:
                        raise RuntimeError(f"cannot read progress: {exc}") from exc
                if c and c != last:
                    last, last_change = c, now
                    progress.append({"t": round(now - self.ingest_end, 2), **c})
                if c:
                    if shipped_at is None and c["shipped"] + c["failed"] >= n:
                        shipped_at = now
                    settled = c["reconciled"] + c["failed"] >= n
                    if settled and c["reversed"] >= self.expected["reversed"]:
                        reconciled_at = reconciled_at or now
                        self.reconciled_wall = self.reconciled_wall or time.time()
                        # A statement can reconcile a batch whose answer the bridge never
                        # recorded; the batch row stays open until its lease runs out and a
                        # worker finds nothing left to send. Wait for that as well.
                        if self._open_batches(db) == 0:
                            closed_at = now
                            # The envelopes that settled after this pass's look at them and
                            # before its counters: without this, they had no time at all.
                            if len(self.plan) > 1:
                                self._note_settled_envelopes(db, settled_at, now)
                            break
                if now >= next_log:
                    log(cfg, f"  t+{now - self.ingest_end:.1f}s {c}")
                    next_log = now + 5
                dead = self.procs.dead()
                if dead:
                    self.result["wait_error"] = f"process died: {dead}"
                    break
                if now - last_change > cfg.stall_timeout:
                    self.result["wait_error"] = f"no progress for {cfg.stall_timeout} s: {c}"
                    break
                time.sleep(cfg.poll_interval)
        finally:
            db.close()
        self.result["shipped_after_s"] = _r(shipped_at - self.ingest_end if shipped_at else None, 2)
        self.result["reconciled_after_s"] = _r(
            reconciled_at - self.ingest_end if reconciled_at else None, 2
        )
        self.result["batches_closed_after_s"] = _r(
            closed_at - self.ingest_end if closed_at else None, 2
        )
        self.result["final_counters"] = last
        if len(self.plan) > 1:
            self._envelope_figures(settled_at)
        # Keep the progress curve small: at most ~200 points.
        step = max(1, len(progress) // 200)
        self.result["progress"] = progress[::step] + ([progress[-1]] if progress else [])
        log(
            cfg,
            f"shipped after {self.result['shipped_after_s']} s, settled after "
            f"{self.result['reconciled_after_s']} s: {last}",
        )

    def _note_settled_envelopes(self, db: Db, settled_at: dict[str, float], now: float) -> None:
        """Records ``now`` for each envelope that has just settled: every disbursement final
        and as many returns as the bank's simulation makes."""
        where, ids = self._envelopes_where()
        rows = db.rows(
            "SELECT envelope_id, received_count, reconciled_count, reversed_count, failed_count"
            f" FROM envelope_status WHERE {where}",
            *ids,
        )
        index = {e: k for k, e in enumerate(self.envelope_ids)}
        for envelope, _received, reconciled, reversed_, failed in rows:
            k = index[envelope]
            done = int(reconciled or 0) + int(failed or 0) >= self.plan[k].n
            returned = int(reversed_ or 0) >= self.expected_by_envelope[k]["reversed"]
            if done and returned:
                settled_at.setdefault(envelope, now)

    def _envelope_figures(self, settled_at: dict[str, float]) -> None:
        """Per envelope: its last ingest request -> it reconciled; and the starvation figure,
        the slowest envelope's time over the median's (target: 1.5 or less)."""
        figures: list[dict[str, Any]] = []
        times: list[float] = []
        for envelope, planned in zip(self.envelope_ids, self.plan, strict=True):
            ended = self.envelope_ingest_end.get(envelope)
            at = settled_at.get(envelope)
            after = None if at is None or ended is None else round(at - ended, 2)
            if after is not None:
                times.append(after)
            figures.append(
                {
                    "envelope": envelope,
                    "program": planned.program,
                    "account": planned.account,
                    "n": planned.n,
                    "last_ingest_s": None if ended is None else round(ended - self.ingest_end, 2),
                    "reconciled_after_s": after,
                }
            )
        self.result["envelopes"] = figures
        median = statistics.median(times) if len(times) == len(self.plan) else None
        self.result["envelope_reconciled_median_s"] = _r(median, 2)
        self.result["envelope_reconciled_max_s"] = _r(max(times) if median else None, 2)
        self.result["envelope_starvation"] = round(max(times) / median, 3) if median else None
        self.result["envelopes_within_1_5x_median"] = (
            None if not median else max(times) <= 1.5 * median
        )

    def _sizes(self) -> None:
        if self.cfg.backend == "postgres":
            sizes = {k: pg_database_size(*v) for k, v in self.pg_dbs.items()}
        else:
            sizes = {
                "bridge": sqlite_size(self.bridge_sqlite),
                "bank": sqlite_size(self.bank_sqlite),
            }
        self.result["db_bytes"] = sizes
        self.result["db_mb"] = {k: round(v / MB, 1) if v else v for k, v in sizes.items()}

    # ----------------------------------------------------------------- output

    def _write(self) -> None:
        self.result["finished_at"] = datetime.now(UTC).isoformat()
        data = orjson.dumps(self.result, option=orjson.OPT_INDENT_2, default=str)
        markdown = render_markdown(self.result)
        (self.run_dir / "result.json").write_bytes(data)
        (self.run_dir / "result.md").write_text(markdown)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.write_latest:
            (self.out / "latest.json").write_bytes(data)
            (self.out / "latest.md").write_text(markdown)
        summary = {k: self.result.get(k) for k in SUMMARY_KEYS}
        with (self.out / "runs.jsonl").open("ab") as handle:
            handle.write(orjson.dumps(summary, default=str) + b"\n")
        self.result["run_dir"] = str(self.run_dir)


def open_program_account(bank: httpx.Client, account: str, deposit: Decimal) -> None:
    """A program's own account at the Example Bank, holding ``deposit``."""
    bank.post(
        "/accounts",
        json={
            "account_number": account,
            "holder_name": f"Ministry of Social Protection, {account}",
            "currency": CURRENCY,
            "initial_deposit": format(deposit, "f"),
        },
    ).raise_for_status()


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run one benchmark; always stops what it started and writes its results."""
    return Bench(cfg).run()


def _per_disbursement(before: float | None, after: float | None, n: int) -> float | None:
    """CPU ms per disbursement between two readings of CPU seconds (None if either is)."""
    if before is None or after is None or not n:
        return None
    return round((after - before) * 1000 / n, 4)
