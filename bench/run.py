"""End-to-end benchmark: the bridge and the Example Bank, every component its own OS process.

    python -m bench.run --n 10000 --batch 5000 --failure-rate 0.05 --backend postgres

``postgres`` backend: fresh PostgreSQL databases for the bridge and the bank (unique names,
migrated), two flushed Redis databases as brokers, and the processes ``g2p-bridge api``,
``g2p-bridge beat``, ``g2p-bridge worker`` (``--workers`` of them), ``example-bank api`` and
``example-bank worker``. ``embedded`` backend: ``g2p-bridge api`` and ``example-bank api`` only,
each on its own fresh SQLite file (they run their pipelines in-process).

The harness funds a program account at the bank, configures a program with the inline resolver,
creates one envelope of N disbursements and submits them over HTTP in requests of ``--batch``
from ``--clients`` threads. It then watches the envelope's counters until everything is shipped
and settled, checks the outcome against the databases (one bank payment per shipped
disbursement, counters equal rows, ledger balanced, exactly the expected reversals), and writes
``result.json`` / ``result.md`` in a run directory plus ``latest.json`` / ``latest.md`` in the
results directory. Every process it started is stopped on the way out (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import orjson

from bench.redis_db import RedisDatabaseClaim, claim_redis_db

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


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    n: int = 10_000
    batch: int = 5_000
    failure_rate: float = 0.05
    backend: str = "postgres"  # postgres | embedded
    workers: int = 1  # number of `g2p-bridge worker` processes (postgres)
    api_workers: int = 2  # `g2p-bridge api --workers` (postgres; embedded runs one)
    worker_concurrency: int = 2  # Celery prefork children per bridge worker
    bank_concurrency: int = 2  # Celery prefork children of the bank worker
    clients: int = 4
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


# --------------------------------------------------------------------------- the workload


def amount_cents(i: int) -> int:
    return 5000 + (i % 7) * 525


def amount_str(i: int) -> str:
    cents = amount_cents(i)
    return f"{cents // 100}.{cents % 100:02d}"


def address(i: int) -> str:
    """A deterministic mix of destinations.

    50 % accounts at two other banks, 20 % accounts at the Example Bank itself (shared by
    ``OWN_ACCOUNTS`` customers), 20 % mobile wallets, 10 % email wallets; one in a thousand is an
    address nobody can parse (the bridge leaves it UNRESOLVED) and one in a thousand an account
    the Example Bank does not have (paid into suspense and returned: REVERSED)."""
    if i % 1000 == 997:
        return f"bogus-address-{i}"
    if i % 1000 == 998:
        return f"account:NOSUCH{i:08d}@{OWN_BANK}.BR01"
    r = i % 10
    if r < 5:
        return f"account:{400000000 + i}@{('NORTHBANK', 'SOUTHBANK')[i % 2]}.BR{i % 5:02d}"
    if r < 7:
        return f"account:BEN-{i % OWN_ACCOUNTS:05d}@{OWN_BANK}.BR01"
    if r < 9:
        return f"mobile:07{i:08d}@{('MPESA', 'AIRTEL')[i % 2]}"
    return f"email:user{i}@example.org@PAYMAIL"


def goes_to_other_bank(i: int) -> bool:
    return i % 1000 not in (997, 998) and (i % 10 < 5 or i % 10 >= 7)


def expected_outcome(ids: Callable[[int], str], n: int, seed: int, rate: float) -> dict[str, int]:
    """What the Example Bank's deterministic failure simulation will do to this workload."""
    from example_bank.processing import simulated_failure

    reversed_ = unresolved = 0
    for i in range(n):
        if i % 1000 == 997:
            unresolved += 1
        elif i % 1000 == 998 or (
            goes_to_other_bank(i) and simulated_failure(seed, ids(i), rate) is not None
        ):
            reversed_ += 1
    return {"reversed": reversed_, "unresolved": unresolved, "reconciled": n - unresolved}


# --------------------------------------------------------------------------- helpers


def log(cfg: BenchConfig, text: str) -> None:
    if not cfg.quiet:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"console script {name!r} not found next to {sys.executable}")
    return found


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{'-dirty' if dirty else ''}" or None


def loadavg() -> str | None:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """The machine is shared: record how busy it was, the numbers depend on it."""
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1]) // 1024
    return {
        "cpus": os.cpu_count(),
        "mem_total_mb": mem,
        "loadavg_at_start": loadavg(),
        "python": sys.version.split()[0],
    }


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"overall timeout reached while {what}")


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


class Processes:
    """Every process the run started; each leads its own process group so its children
    (Celery prefork pool, beat) are signalled with it."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        # How each was started, so a supervisor (bench/soak.py) can start it again.
        self.specs: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.specs[name] = (argv, env)
        log_path = self.log_dir / f"{name}.log"
        handle = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=self.log_dir,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            handle.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        """Run a short command (migrations) to completion, logging to its file."""
        proc = self.start(name, argv, env)
        try:
            code = proc.popen.wait(timeout=timeout)
        finally:
            self.stop_one(proc)
        if code != 0:
            tail = proc.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {code}:\n{tail}")

    def dead(self) -> list[str]:
        return [
            f"{p.name} (exit {p.popen.returncode})"
            for p in self.procs
            if p.popen.poll() is not None
        ]

    @staticmethod
    def _signal(proc: Proc, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the group this run created for the process

    def stop_one(self, proc: Proc, grace: float = 10.0) -> None:
        if proc.popen.poll() is None:
            self._signal(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=grace)
        # The leader may be gone while its children linger: SIGKILL the group either way.
        self._signal(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self, grace: float = 10.0) -> None:
        live = [p for p in reversed(self.procs)]
        for proc in live:
            if proc.popen.poll() is None:
                self._signal(proc, signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, end - time.monotonic()))
        for proc in live:
            self._signal(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
        self.procs.clear()


# --------------------------------------------------------------------------- memory sampling


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid ...
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 1:
            children.setdefault(int(rest[1]), []).append(int(entry.name))
    return children


def _status_kb(pid: int) -> tuple[int, int] | None:
    hwm = rss = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        return None
    return hwm, rss


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> tuple[str, int] | None:
    """(command name, user + system CPU ticks) of a live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    comm = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
    rest = stat[stat.rfind(b")") + 2 :].split()
    return comm, int(rest[11]) + int(rest[12])


class RssSampler:
    """Samples VmHWM (and VmRSS) of every started process and all its descendants, and the CPU
    time each used (plus the PostgreSQL server's, all databases: other users of the server
    count too).

    Per component it keeps the largest single OS process and the largest sum over the tree
    (a prefork pool's children share pages with their parent, so the sum overstates what the
    tree really holds)."""

    def __init__(self, procs: Processes, interval: float = 0.5) -> None:
        self.procs = procs
        self.interval = interval
        self.stats: dict[str, dict[str, float]] = {}
        self.cpu: dict[str, float] = {}
        self._per_pid_hwm: dict[tuple[str, int], int] = {}
        # CPU ticks per process, taken at the first and latest sample: a process's time before
        # the run (a PostgreSQL backend from earlier) is not charged to it.
        self._cpu_first: dict[tuple[str, int], int] = {}
        self._cpu_last: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self.samples = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def sample(self) -> None:
        children = _children_map()
        roots = [
            (p.name, p.pid) for p in list(self.procs.procs) if not p.name.startswith("migrate")
        ]
        roots.append(("bench-client", os.getpid()))
        for name, root in roots:
            tree = [root]
            if name != "bench-client":
                stack = [root]
                seen = {root}
                while stack:
                    for child in children.get(stack.pop(), []):
                        if child not in seen and len(seen) < 256:
                            seen.add(child)
                            tree.append(child)
                            stack.append(child)
            hwm_sum = rss_sum = 0
            members = 0
            for pid in tree:
                self._note_cpu(name, pid)
                got = _status_kb(pid)
                if got is None:
                    continue
                hwm, rss = got
                members += 1
                key = (name, pid)
                self._per_pid_hwm[key] = max(self._per_pid_hwm.get(key, 0), hwm)
                hwm_sum += hwm
                rss_sum += rss
            if members == 0:
                continue
            single = max(v for (n, _), v in self._per_pid_hwm.items() if n == name)
            entry = self.stats.setdefault(
                name,
                {
                    "peak_rss_mb": 0.0,
                    "max_single_process_mb": 0.0,
                    "max_rss_now_sum_mb": 0.0,
                    "max_processes": 0,
                },
            )
            entry["peak_rss_mb"] = round(max(entry["peak_rss_mb"], hwm_sum / 1024), 1)
            entry["max_single_process_mb"] = round(
                max(entry["max_single_process_mb"], single / 1024), 1
            )
            entry["max_rss_now_sum_mb"] = round(max(entry["max_rss_now_sum_mb"], rss_sum / 1024), 1)
            entry["max_processes"] = max(entry["max_processes"], members)
            entry["cpu_s"] = self.cpu_seconds(name)
        for pid in {pid for kids in children.values() for pid in kids}:
            self._note_cpu("postgres", pid, only="postgres")
        if any(n == "postgres" for n, _ in self._cpu_last):
            self.cpu["postgres"] = self.cpu_seconds("postgres")
        self.samples += 1

    def _note_cpu(self, name: str, pid: int, only: str | None = None) -> bool:
        got = _cpu_ticks(pid)
        if got is None or (only is not None and got[0] != only):
            return False
        key = (name, pid)
        self._cpu_first.setdefault(key, got[1] if only else 0)
        self._cpu_last[key] = got[1]
        return True

    def cpu_seconds(self, name: str) -> float:
        ticks = sum(
            last - self._cpu_first[key] for key, last in self._cpu_last.items() if key[0] == name
        )
        return round(ticks / _TICKS, 1)


# --------------------------------------------------------------------------- databases


class Db:
    """A tiny read-only query helper over PostgreSQL (psycopg) or SQLite (sqlite3)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self._conn: Any = None

    def _connect(self) -> Any:
        if self._conn is None:
            if self.sqlite:
                path = self.url.split("///", 1)[1]
                self._conn = sqlite3.connect(
                    f"file:{path}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    timeout=30,
                    check_same_thread=False,
                )
            else:
                import psycopg

                self._conn = psycopg.connect(libpq(self.url), autocommit=True)
        return self._conn

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = self._connect()
        if self.sqlite:
            return list(conn.execute(sql.replace("%s", "?"), params).fetchall())
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def one(self, sql: str, *params: Any) -> Any:
        got = self.rows(sql, *params)
        return got[0][0] if got and got[0] else None

    def stream(self, sql: str, *params: Any, size: int = 20_000) -> Iterator[Any]:
        """First column of every row, fetched in pages (server-side cursor on PostgreSQL)."""
        conn = self._connect()
        if self.sqlite:
            cur = conn.execute(sql.replace("%s", "?"), params)
            while chunk := cur.fetchmany(size):
                for row in chunk:
                    yield row[0]
            return
        with conn.transaction(), conn.cursor(name=f"s{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = size
            cur.execute(sql, params)
            for row in cur:
                yield row[0]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def pg_url(
    database: str, port: int = PG_PORT, driver: str = "postgresql", hide_password: bool = False
) -> str:
    """A database on the suite's server (or, by ``port``, on the run's private cluster, which
    trusts loopback and ignores the password). ``hide_password`` for what goes in results."""
    password = ""
    if PG_PASSWORD:
        password = ":***" if hide_password else f":{quote(PG_PASSWORD, safe='')}"
    return f"{driver}://{quote(PG_USER, safe='')}{password}@{PG_HOST}:{port}/{database}"


def pg_admin(sql: str, port: int = PG_PORT) -> None:
    import psycopg

    with psycopg.connect(pg_url("postgres", port), autocommit=True) as conn:
        conn.execute(sql)


def pg_database_size(name: str, port: int = PG_PORT) -> int | None:
    import psycopg

    with psycopg.connect(pg_url("postgres", port)) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row else None


def pg_bindir() -> Path:
    """Where pg_ctl and initdb live: on the PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates or not (candidates[-1] / "pg_ctl").exists():
        raise RuntimeError("pg_ctl not found: no PostgreSQL server binaries on this machine")
    return candidates[-1]


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port, for the database fault: the run may stop
    and crash it at will, which the shared server on 5432 (other tests use it) must never be.

    Run as root, the server commands run as the ``postgres`` user (it refuses to run as root)."""

    def __init__(self, log_dir: Path) -> None:
        self.bin = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="g2pbench-pg-"))
        self.data = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.log_dir = log_dir
        self.port = free_port()

    def _run(self, *argv: str, timeout: float = 120.0) -> str:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with {done.returncode}: {done.stderr[-1000:]}")
        return done.stdout

    def init(self) -> None:
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        # fsync off: a crash here is a killed server, not a lost machine, so the OS keeps the
        # WAL; crash recovery still runs on every start after an immediate stop.
        options = f"-p {self.port} -k {self.root} -c listen_addresses={PG_HOST} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options,
            "-w", "-t", "120", "start",
        )  # fmt: skip

    def stop(self, mode: str) -> None:
        """``fast``: clients are disconnected, a clean shutdown; ``immediate``: a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split("\n")[0])
        return None

    def destroy(self, keep_data: bool = False) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log_file, self.log_dir / "bridge-postgres.log")
        if not keep_data:
            shutil.rmtree(self.root, ignore_errors=True)


def sqlite_size(path: Path) -> int:
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def flush_redis(db: int) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


def redis_broker(pinned: int | None, claims: list[RedisDatabaseClaim]) -> str:
    """A flushed broker URL on the shared Redis: the pinned database, or one claimed for this
    run (appended to ``claims``, which the run releases when it drops its databases)."""
    if pinned is not None:
        flush_redis(pinned)
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{pinned}"
    claim = claim_redis_db(host=REDIS_HOST, port=REDIS_PORT)
    claims.append(claim)
    return claim.url


# --------------------------------------------------------------------------- HTTP side


def header(action: str, count: int = 1, message_id: str | None = None) -> dict[str, Any]:
    return {
        "message_id": message_id or uuid.uuid4().hex,
        "message_ts": datetime.now(UTC).isoformat(),
        "action": action,
        "sender_id": SENDER_ID,
        "total_count": count,
    }


def post_json(client: httpx.Client, url: str, body: Any, timeout: float = 120.0) -> dict[str, Any]:
    response = client.post(
        url,
        content=orjson.dumps(body),
        headers={"content-type": "application/json"},
        timeout=timeout,
    )
    data: dict[str, Any] = response.json()
    if response.status_code >= 400 or data.get("header", {}).get("status") == "rjct":
        raise RuntimeError(f"{url} refused: HTTP {response.status_code} {str(data)[:500]}")
    return data


def _retry_after(response: httpx.Response) -> float | None:
    """A 503's ``Retry-After`` in seconds (the delta form the bridge sends), or None."""
    if response.status_code != 503:
        return None
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def wait_ready(url: str, procs: Processes, deadline: Deadline, limit: float = 90.0) -> None:
    end = time.monotonic() + min(limit, max(deadline.left(), 1))
    with httpx.Client() as client:
        while time.monotonic() < end:
            if procs.dead():
                raise RuntimeError(f"a process died during start-up: {procs.dead()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


# --------------------------------------------------------------------------- the run


class Bench:
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
        self.cfg = cfg
        self.run_id = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.out = Path(cfg.out)
        self.run_dir = self.out / f"{self.run_id}-{cfg.backend}-{cfg.n}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.run_dir)
        self.sampler = RssSampler(self.procs)
        self.deadline = Deadline(cfg.timeout)
        self.result: dict[str, Any] = {}
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
        self.envelope_key = f"bench-envelope-{cfg.n}"
        self.id_prefix = "bench"
        self.phases: dict[str, float] = {}
        # The soak (bench/soak.py) runs several envelopes, with a token: the checks and the
        # progress counters cover every envelope in ``envelope_ids``, ``n_total`` of them.
        self.envelope_ids: list[str] = []
        self.n_total = cfg.n
        self.http_headers: dict[str, str] = {}
        # The first few accepted ingest requests, (body, HTTP status, answer), for replays.
        self.ingest_answers: list[tuple[bytes, int, bytes]] = []

    def disbursement_id(self, i: int) -> str:
        return f"{self.id_prefix}-{i:08d}"

    # ----------------------------------------------------------------- orchestration

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.monotonic()
        error: str | None = None
        self.result = {
            "n": cfg.n,
            "backend": cfg.backend,
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
        finally:
            self.procs.stop_all()
            self._drop_databases()
            self.result["rss"] = self.sampler.stats
            if "postgres" in self.sampler.cpu:
                self.result["postgres_cpu_s"] = self.sampler.cpu["postgres"]
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

    def _settings_dict(self) -> dict[str, Any]:
        data = asdict(self.cfg)
        data["out"] = str(self.cfg.out)
        return data

    # ----------------------------------------------------------------- databases

    def _setup_databases(self) -> None:
        cfg = self.cfg
        if cfg.backend == "postgres":
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
        bank_env.update(self._bank_fault_env())
        for env in (bridge_env, bank_env):
            env.update(cfg.extra_env)
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
            self.procs.start("bridge-beat", [bridge, "beat", *quiet], bridge_env)
            for w in range(cfg.workers):
                argv = [
                    bridge,
                    "worker",
                    "--queues",
                    "mapper,funds,dispatch,statements",
                    "--concurrency",
                    str(cfg.worker_concurrency),
                    *quiet,
                ]
                self.worker_specs[f"bridge-worker-{w + 1}"] = (argv, bridge_env)
                self.procs.start(f"bridge-worker-{w + 1}", argv, bridge_env)
        wait_ready(f"{self.bank_url}/health/ready", self.procs, self.deadline)
        wait_ready(f"{self.bridge_url}/health/ready", self.procs, self.deadline)
        self.result["processes"] = {p.name: p.pid for p in self.procs.procs}
        self.sampler.start()
        if cfg.profile:
            self._start_profilers()
        log(
            cfg,
            f"{cfg.backend}: bridge {self.bridge_url}, bank {self.bank_url}, "
            f"logs in {self.run_dir}",
        )

    def _bank_fault_env(self) -> dict[str, str]:
        """The Example Bank's test-only fault injection for the bank-* faults (one per run)."""
        cfg = self.cfg
        modes = {
            "bank-slow": ("slow", ["/initiate_payment"]),
            "bank-5xx": ("error-5xx", ["/block_funds", "/initiate_payment"]),
            "bank-close": ("close-after-processing", ["/initiate_payment"]),
        }
        chosen = [f for f in cfg.faults if f in modes]
        if not chosen:
            return {}
        if len(chosen) > 1:
            raise ValueError(f"one bank fault per run, not {chosen}")
        mode, paths = modes[chosen[0]]
        timeout = cfg.bank_timeout or 30.0
        # By default well past the bridge's timeout: it gives up while the bank has the batch.
        delay = timeout * 2 + 1 if cfg.bank_fault_delay is None else cfg.bank_fault_delay
        self.result.setdefault("faults", []).append(
            {"fault": chosen[0], "mode": mode, "paths": paths, "bridge_bank_timeout_s": timeout}
        )
        return {
            "EXAMPLE_BANK_FAULT_MODE": mode,
            "EXAMPLE_BANK_FAULT_PATHS": json.dumps(paths),
            "EXAMPLE_BANK_FAULT_CALLS": str(cfg.bank_fault_calls),
            "EXAMPLE_BANK_FAULT_EVERY": str(cfg.bank_fault_every),
            "EXAMPLE_BANK_FAULT_DELAY_SECONDS": str(delay),
        }

    def _start_broker(self) -> Proc:
        """The bridge's private Redis broker (the restart-broker fault), started and pinged."""
        import redis

        assert self.broker_port is not None
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.broker_port), "--bind", REDIS_HOST,
            "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        proc = self.procs.start("bridge-broker", argv, dict(self.env_base))
        client = redis.Redis(host=REDIS_HOST, port=self.broker_port, socket_timeout=2)
        try:
            end = time.monotonic() + 30
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return proc
                if time.monotonic() > end or proc.popen.poll() is not None:
                    raise RuntimeError(f"redis-server on {self.broker_port} did not start")
                time.sleep(0.05)
        finally:
            client.close()

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
        cfg = self.cfg
        total_cents = sum(amount_cents(i) for i in range(cfg.n))
        self.total = Decimal(total_cents).scaleb(-2)
        self.deposit = self.total * 2
        self._open_accounts(self.deposit)
        self._configure_program("BENCH", PROGRAM_ACCOUNT)
        self.envelope_id = self._create_envelope(self.envelope_key, cfg.n, self.total)
        self.envelope_ids = [self.envelope_id]
        self.result["envelope_id"] = self.envelope_id
        self.expected = expected_outcome(self.disbursement_id, cfg.n, cfg.seed, cfg.failure_rate)
        self.result["expected"] = self.expected

    def _client(self, timeout: float) -> httpx.Client:
        return httpx.Client(timeout=timeout, headers=self.http_headers)

    def _open_accounts(self, deposit: Decimal) -> None:
        """The program account (holding ``deposit``) and the beneficiaries' accounts."""
        with self._client(60) as http:
            response = http.post(
                f"{self.bank_url}/accounts",
                json={
                    "account_number": PROGRAM_ACCOUNT,
                    "holder_name": "Ministry of Social Protection",
                    "currency": CURRENCY,
                    "initial_deposit": str(deposit),
                },
            )
            response.raise_for_status()
            for k in range(OWN_ACCOUNTS):
                http.post(
                    f"{self.bank_url}/accounts",
                    json={
                        "account_number": f"BEN-{k:05d}",
                        "holder_name": f"Beneficiary {k}",
                        "currency": CURRENCY,
                    },
                ).raise_for_status()

    def _configure_program(self, mnemonic: str, account: str) -> None:
        with self._client(60) as http:
            post_json(
                http,
                f"{self.bridge_url}/create_benefit_program_configuration",
                {
                    "header": header("create_benefit_program_configuration"),
                    "message": {
                        "program_mnemonic": mnemonic,
                        "sponsor_bank_code": OWN_BANK,
                        "sponsor_bank_account_number": account,
                        "sponsor_bank_account_currency": CURRENCY,
                        "id_mapper_resolution_required": True,
                        "resolver": "inline",
                    },
                },
            )

    def _create_envelope(self, key: str, n: int, total: Decimal, program: str = "BENCH") -> str:
        """Creates an envelope of ``n`` disbursements worth ``total``; returns its id."""
        today = datetime.now(UTC).date()
        with self._client(60) as http:
            envelope = post_json(
                http,
                f"{self.bridge_url}/create_disbursement_envelope",
                {
                    "header": header("create_disbursement_envelope"),
                    "message": {
                        "disbursement_envelope_id": key,
                        "benefit_program_mnemonic": program,
                        "disbursement_frequency": "Monthly",
                        "cycle_code_mnemonic": today.strftime("%Y-%m"),
                        "number_of_beneficiaries": n,
                        "number_of_disbursements": n,
                        "total_disbursement_amount": str(total),
                        "disbursement_currency_code": CURRENCY,
                        "disbursement_schedule_date": today.isoformat(),
                    },
                },
            )
        return str(envelope["message"]["disbursement_envelope_id"])

    def _items(self, start: int, stop: int) -> list[dict[str, Any]]:
        env = self.envelope_id
        return [
            {
                "disbursement_id": self.disbursement_id(i),
                "disbursement_envelope_id": env,
                "beneficiary_id": f"NID-{i:08d}",
                "beneficiary_name": f"Beneficiary {i}",
                "disbursement_amount": amount_str(i),
                "narrative": "Monthly cash transfer",
                "mis_reference_number": f"MIS-{i}",
                "financial_address": address(i),
            }
            for i in range(start, stop)
        ]

    def _ingest(self) -> None:
        cfg = self.cfg
        chunks = [(s, min(s + cfg.batch, cfg.n)) for s in range(0, cfg.n, cfg.batch)]
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        local = threading.local()
        url = f"{self.bridge_url}/create_disbursements"

        def send(chunk: tuple[int, int]) -> None:
            if self.deadline.left() <= 0:
                with lock:
                    failures.append(f"{chunk}: overall timeout")
                return
            if not hasattr(local, "client"):
                local.client = self._client(120)
            start, stop = chunk
            if start > 0 and not self.ingest_gate.wait(timeout=max(self.deadline.left(), 0)):
                with lock:
                    failures.append(f"{chunk}: the database fault never opened the gate")
                return
            body = orjson.dumps(
                {
                    "header": header("create_disbursements", stop - start),
                    "message": self._items(start, stop),
                }
            )
            last = ""
            failed = 0  # attempts that failed without a Retry-After
            waited = 0.0
            # The same body, so the same message_id, every time: a replay gets the first answer.
            while True:
                retry_after: float | None = None
                t0 = time.perf_counter()
                try:
                    response = local.client.post(
                        url, content=body, headers={"content-type": "application/json"}
                    )
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
                            return
                        last = f"HTTP {response.status_code}: {str(data)[:300]}"
                    with lock:
                        self.ingest_errors[f"HTTP {response.status_code}"] += 1
                    if response.status_code < 500:
                        break
                    # The server says when to come back (the database restarting): a client that
                    # honours it rides out an outage without burning its attempts.
                    retry_after = _retry_after(response)
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
            f"ingesting {cfg.n} disbursements in {len(chunks)} requests from {cfg.clients} clients",
        )
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=cfg.clients, thread_name_prefix="client") as pool:
            list(pool.map(send, chunks))
        self.ingest_end = time.monotonic()
        seconds = self.ingest_end - t0
        self.result.update(
            {
                "ingest_s": round(seconds, 3),
                "ingest_per_s": round(cfg.n / seconds, 1) if seconds > 0 else None,
                "ingest_requests": len(chunks),
                "ingest_failures": failures[:20],
                "ingest_failed_attempts": dict(self.ingest_errors),
                "ingest_retry_after_waits": len(self.ingest_retry_after_waits),
                "ingest_retry_after_waited_s": round(sum(self.ingest_retry_after_waits), 2),
                "ingest_p50_s": _r(percentile(latencies, 50)),
                "ingest_p95_s": _r(percentile(latencies, 95)),
                "ingest_p99_s": _r(percentile(latencies, 99)),
                "ingest_max_s": _r(max(latencies) if latencies else None),
            }
        )
        log(
            cfg,
            f"ingest: {self.result['ingest_per_s']}/s over {seconds:.2f} s, p99 "
            f"{self.result['ingest_p99_s']} s, {len(failures)} failed requests",
        )
        if failures:
            raise RuntimeError(f"{len(failures)} ingest requests failed: {failures[:3]}")

    # ----------------------------------------------------------------- progress

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

    def _fault_thread(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=target.__name__, daemon=True)
        thread.start()
        self.fault_threads.append(thread)

    def _arm_faults(self) -> None:
        """Faults that must be in place before ingest starts."""
        if self.cfg.faults:
            self._fault_thread(self._watch_progress)
        if "restart-database" in self.cfg.faults:
            self._fault_thread(self._restart_database)

    def _watch_progress(self) -> None:
        """Fault runs: when the envelope's counters move (received, shipped, reconciled,
        failed), from ingest to the end, to tell when the pipeline moved after each fault."""
        db = Db(self.bridge_db_url)
        last = -1
        try:
            while not self.watch_stop.is_set():
                try:
                    c = self._counters(db)
                except Exception:  # the database fault: reconnect on the next look
                    db.close()
                    c = {}
                if c:
                    total = c["received"] + c["shipped"] + c["reconciled"] + c["failed"]
                    if total > last:
                        self.progress_events.append((time.monotonic(), total))
                        last = total
                self.watch_stop.wait(0.1)
        finally:
            db.close()

    def _returned(self, entry: dict[str, Any]) -> None:
        """The faulted component is back (started, pinged): recovery is timed from here."""
        self.fault_returns.append((entry, time.monotonic()))

    def _recovered_after(self, returned: float) -> float | None:
        """Seconds from a component's return to the next move of the counters; None if they
        never moved again (nothing was left to do)."""
        before = [total for t, total in self.progress_events if t <= returned]
        baseline = before[-1] if before else -1
        for t, total in self.progress_events:
            if t > returned and total > baseline:
                return round(t - returned, 2)
        return None

    def _start_faults(self) -> None:
        if "kill-bridge-worker" in self.cfg.faults:
            self._fault_thread(self._kill_worker_mid_dispatch)
        if "restart-broker" in self.cfg.faults:
            self._fault_thread(self._restart_broker_with_tasks_queued)

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

    def _running_batches(self, db: Db) -> int:
        try:
            return int(db.one("SELECT count(*) FROM bank_batches WHERE state = 'RUNNING'") or 0)
        except Exception:
            db.close()  # a restarted server: reconnect on the next call
            raise

    def _restart_broker_with_tasks_queued(self) -> None:
        """SIGKILL the bridge's broker while step messages wait in its queues (nothing persists,
        so they are gone), start an empty one on the same port. The rows still say what is due;
        beat wakes each again once its wake-up mark (or a dead claim's lease) runs out."""
        import redis

        record: dict[str, Any] = {"fault": "restart-broker", "restarted": False}
        self.result.setdefault("faults", []).append(record)
        assert self.broker_port is not None
        client = redis.Redis(host=REDIS_HOST, port=self.broker_port, socket_timeout=2)
        queues = ("mapper", "funds", "dispatch", "statements", "producers")
        try:

            def queued() -> dict[str, int] | None:
                lengths = {q: int(client.llen(q)) for q in queues}
                return lengths if lengths["dispatch"] > 0 else None

            lengths = self._wait_for("send_bank_batch messages in the broker", queued)
            record["unacked_at_kill"] = int(client.hlen("unacked"))
            proc = next(p for p in self.procs.procs if p.name == "bridge-broker")
            self.procs.procs.remove(proc)  # first, so the progress loop never sees it dead
            os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
            killed_at = time.monotonic()
            record.update(queued_at_kill=lengths, pid_before=proc.pid, at_s=self._since_ingest())
            time.sleep(self.cfg.outage_seconds)
            new = self._start_broker()
            self._returned(record)
            record.update(
                restarted=True,
                pid_after=new.pid,
                down_s=round(time.monotonic() - killed_at, 2),
                restarted_at_s=self._since_ingest(),
            )
        except Exception as exc:  # reported in the result; the run's checks still decide
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    def _restart_database(self) -> None:
        """Two outages of the bridge's (private) PostgreSQL: a fast shutdown while ingest
        requests arrive (all but the first are held until the server is down), and an immediate
        stop, a crash, while a payment batch is being sent. Each lasts ``outage_seconds``.

        With ``bank-slow`` as well (its delay shorter than the outage and the bridge's
        timeout), the crash comes while the bank holds its answer to a batch it stored: the
        worker hears "accepted" with no database to write it to, the worst moment."""
        record: dict[str, Any] = {"fault": "restart-database", "restarts": []}
        self.result.setdefault("faults", []).append(record)
        pg = self.private_pg
        assert pg is not None
        db = Db(self.bridge_db_url)

        def bank_holds_an_answer() -> bool:
            injected: dict[str, int] = httpx.get(f"{self.bank_url}/faults", timeout=5).json()[
                "injected"
            ]
            return sum(injected.values()) > 0

        try:
            self._wait_for("the first ingest request", self.first_chunk_done.is_set)
            self._outage(pg, "fast", "ingest", record, before=self.ingest_gate.set)
            if "bank-slow" in self.cfg.faults:
                self._wait_for("the bank to hold an answer", bank_holds_an_answer)
            else:
                self._wait_for("a RUNNING bank batch", lambda: self._running_batches(db))
            db.close()
            self._outage(pg, "immediate", "dispatch", record)
        except Exception as exc:  # reported in the result; the run's checks still decide
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.ingest_gate.set()
            db.close()

    def _outage(
        self,
        pg: PrivatePostgres,
        mode: str,
        during: str,
        record: dict[str, Any],
        before: Callable[[], None] | None = None,
    ) -> None:
        pid_before = pg.pid()
        pg.stop(mode)
        stopped = time.monotonic()
        entry: dict[str, Any] = {
            "during": during,
            "mode": mode,
            "pid_before": pid_before,
            "at_s": self._since_ingest(),
        }
        record["restarts"].append(entry)
        if before is not None:
            before()
        # What a caller sees while the database is away: an answer, quickly, not a hang.
        with httpx.Client(timeout=30) as http:
            t0 = time.perf_counter()
            try:
                ready = http.get(f"{self.bridge_url}/health/ready")
                entry["api_ready_status"] = ready.status_code
            except httpx.HTTPError as exc:
                entry["api_ready_status"] = type(exc).__name__
            entry["api_ready_answer_s"] = round(time.perf_counter() - t0, 3)
        time.sleep(max(0.0, self.cfg.outage_seconds - (time.monotonic() - stopped)))
        pg.start()
        self._returned(entry)
        entry.update(
            pid_after=pg.pid(),
            down_s=round(time.monotonic() - stopped, 2),
            restarted_at_s=self._since_ingest(),
        )

    def _kill_worker_mid_dispatch(self) -> None:
        """SIGKILL (no clean-up, no ack) the bridge worker while a batch is RUNNING: its intent
        is recorded and the bank may or may not have the payments. Then restart it."""
        record: dict[str, Any] = {"fault": "kill-bridge-worker", "killed": False}
        self.result.setdefault("faults", []).append(record)
        db = Db(self.bridge_db_url)
        try:
            end = time.monotonic() + 120
            while time.monotonic() < end:
                running = db.one("SELECT count(*) FROM bank_batches WHERE state = 'RUNNING'")
                if running:
                    break
                time.sleep(0.02)
            else:
                record["error"] = "no batch was ever RUNNING"
                return
            name = "bridge-worker-1"
            proc = next(p for p in self.procs.procs if p.name == name)
            self.procs.procs.remove(proc)  # first, so the progress loop never sees it dead
            os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(timeout=10)
            record.update(
                killed=True,
                batches_running=running,
                at_s=round(time.monotonic() - self.ingest_end, 2),
            )
            time.sleep(2)
            argv, env = self.worker_specs[name]
            self.procs.start(name, argv, env)
            self._returned(record)
            record.update(restarted=True, restarted_at_s=self._since_ingest())
        except Exception as exc:  # reported in the result; the run's checks still decide
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            db.close()

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

    def _wait_settled(self) -> None:
        cfg, n = self.cfg, self.n_total
        db = Db(self.bridge_db_url)
        shipped_at = reconciled_at = closed_at = None
        last: dict[str, int] = {}
        last_change = time.monotonic()
        progress: list[dict[str, Any]] = []
        next_log = 0.0
        try:
            while True:
                now = time.monotonic()
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
                        # A statement can reconcile a batch whose answer the bridge never
                        # recorded; the batch row stays open until its lease runs out and a
                        # worker finds nothing left to send. Wait for that as well.
                        if self._open_batches(db) == 0:
                            closed_at = now
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
        # Keep the progress curve small: at most ~200 points.
        step = max(1, len(progress) // 200)
        self.result["progress"] = progress[::step] + ([progress[-1]] if progress else [])
        log(
            cfg,
            f"shipped after {self.result['shipped_after_s']} s, settled after "
            f"{self.result['reconciled_after_s']} s: {last}",
        )

    # ----------------------------------------------------------------- correctness

    def _checks(self) -> None:
        checks: dict[str, dict[str, Any]] = {}
        self.result["checks"] = checks

        def check(name: str, passed: bool, **values: Any) -> None:
            checks[name] = {"passed": bool(passed), **values}

        n = self.n_total
        where, ids = self._envelopes_where()
        pg = self.cfg.backend == "postgres"
        bridge, bank = Db(self.bridge_db_url), Db(self.bank_db_url)
        bridge_scale = Decimal(1) if pg else Decimal(10_000)
        bank_scale = Decimal(1) if pg else Decimal(100)
        order = ' COLLATE "C"' if pg else ""
        try:
            check(
                "completed",
                self.result.get("reconciled_after_s") is not None,
                wait_error=self.result.get("wait_error"),
            )
            batch_states = {
                s: int(c)
                for s, c in bridge.rows(
                    f"SELECT state, count(*) FROM bank_batches WHERE {where} GROUP BY state",
                    *ids,
                )
            }
            check(
                "bank_batches_closed",
                not {"PENDING", "RUNNING"} & set(batch_states),
                bank_batches_by_state=batch_states,
            )
            by_state = {
                s: int(c)
                for s, c in bridge.rows(
                    f"SELECT state, count(*) FROM disbursements WHERE {where} GROUP BY state",
                    *ids,
                )
            }
            self.result["disbursements_by_state"] = by_state
            total = sum(by_state.values())
            check(
                "every_disbursement_terminal_once",
                total == n and all(s in TERMINAL for s in by_state),
                rows=total,
                expected=n,
                by_state=by_state,
            )
            no_reason = int(
                bridge.one(
                    f"SELECT count(*) FROM disbursements WHERE {where}"
                    " AND state IN ('FAILED', 'UNRESOLVED') AND state_reason IS NULL",
                    *ids,
                )
                or 0
            )
            check("failures_have_reasons", no_reason == 0, without_reason=no_reason)
            exp = self.expected
            failed_rows = by_state.get("FAILED", 0) + by_state.get("UNRESOLVED", 0)
            check(
                "expected_outcome",
                by_state.get("REVERSED", 0) == exp["reversed"]
                and failed_rows == exp["unresolved"]
                and by_state.get("RECONCILED", 0) == n - exp["reversed"] - exp["unresolved"],
                reversed=by_state.get("REVERSED", 0),
                expected_reversed=exp["reversed"],
                failed_or_unresolved=failed_rows,
                expected_unresolved=exp["unresolved"],
                reversed_share=round(by_state.get("REVERSED", 0) / n, 4),
            )
            counters = self._counters(bridge)
            shipped_rows = int(
                bridge.one(
                    f"SELECT count(*) FROM disbursements WHERE {where} AND shipped_at IS NOT NULL",
                    *ids,
                )
                or 0
            )
            rows = {
                "received": total - by_state.get("CANCELLED", 0),
                "shipped": shipped_rows,
                "reconciled": by_state.get("RECONCILED", 0) + by_state.get("REVERSED", 0),
                "reversed": by_state.get("REVERSED", 0),
                "failed": failed_rows,
                "cancelled": by_state.get("CANCELLED", 0),
            }
            check("counters_equal_rows", counters == rows, counters=counters, rows=rows)

            # One bank payment per shipped disbursement, none extra, none twice.
            shipped_ids = bridge.stream(
                f"SELECT id FROM disbursements WHERE {where} AND shipped_at IS NOT NULL"
                f" ORDER BY id{order}",
                *ids,
            )
            payment_refs = bank.stream(
                "SELECT payment_reference_number FROM payments"
                f" ORDER BY payment_reference_number{order}"
            )
            missing, extra, duplicates, payments = _merge_compare(shipped_ids, payment_refs)
            check(
                "one_bank_payment_per_shipped_disbursement",
                missing == 0 and extra == 0 and duplicates == 0 and payments == shipped_rows,
                shipped=shipped_rows,
                bank_payments=payments,
                missing_at_bank=missing,
                extra_at_bank=extra,
                duplicate_payments=duplicates,
            )
            bank_states = {
                s: int(c)
                for s, c in bank.rows("SELECT state, count(*) FROM payments GROUP BY state")
            }
            check(
                "bank_outcomes_match_bridge",
                bank_states.get("PAID", 0) == by_state.get("RECONCILED", 0)
                and bank_states.get("FAILED", 0) == by_state.get("REVERSED", 0)
                and sum(bank_states.values())
                == bank_states.get("PAID", 0) + bank_states.get("FAILED", 0),
                bank_payments_by_state=bank_states,
            )
            ledger_sum = Decimal(
                bank.one("SELECT coalesce(sum(amount), 0) FROM ledger_entries") or 0
            )
            entries = int(bank.one("SELECT count(*) FROM ledger_entries") or 0)
            off = int(
                bank.one(
                    "SELECT count(*) FROM accounts a LEFT JOIN (SELECT account_number,"
                    " sum(amount) AS s FROM ledger_entries GROUP BY account_number) l"
                    " ON l.account_number = a.account_number"
                    " WHERE a.book_balance <> coalesce(l.s, 0)"
                )
                or 0
            )
            check(
                "ledger_balanced",
                ledger_sum == 0 and off == 0,
                sum_of_entries=str(ledger_sum / bank_scale),
                ledger_entries=entries,
                accounts_off_balance=off,
            )
            paid_sum = (
                Decimal(
                    bank.one(
                        "SELECT coalesce(sum(payment_amount), 0) FROM payments WHERE state = 'PAID'"
                    )
                    or 0
                )
                / bank_scale
            )
            book = (
                Decimal(
                    bank.one(
                        "SELECT book_balance FROM accounts WHERE account_number = %s",
                        PROGRAM_ACCOUNT,
                    )
                    or 0
                )
                / bank_scale
            )
            reconciled_sum = (
                Decimal(
                    bridge.one(
                        f"SELECT coalesce(sum(amount), 0) FROM disbursements WHERE {where}"
                        " AND state = 'RECONCILED'",
                        *ids,
                    )
                    or 0
                )
                / bridge_scale
            )
            check(
                "program_account_debited_exactly",
                book == self.deposit - paid_sum and paid_sum == reconciled_sum,
                deposit=str(self.deposit),
                book_balance=str(book),
                bank_paid=str(paid_sum),
                bridge_reconciled=str(reconciled_sum),
            )
            recon_errors = int(bridge.one("SELECT count(*) FROM recon_errors") or 0)
            statements = {
                s: int(c)
                for s, c in bridge.rows(
                    "SELECT state, count(*) FROM account_statements GROUP BY state"
                )
            }
            check(
                "statements_reconciled_cleanly",
                recon_errors == 0 and set(statements) <= {"PROCESSED"},
                recon_errors=recon_errors,
                statements_by_state=statements,
            )
            bank_statements = {
                s: int(c)
                for s, c in bank.rows(
                    "SELECT delivery_state, count(*) FROM statements GROUP BY delivery_state"
                )
            }
            self.result["bank_statements_by_delivery_state"] = bank_statements
            batches = bridge.rows(
                "SELECT count(*), coalesce(sum(attempts), 0), coalesce(max(attempts), 0),"
                " count(*) FILTER (WHERE bank_response LIKE %s) FROM bank_batches"
                f" WHERE {where}",
                "%already known%",
                *ids,
            )[0]
            bank_batches = int(bank.one("SELECT count(*) FROM payment_batches") or 0)
            self.result["batches"] = {
                "bridge_bank_batches": int(batches[0]),
                "bridge_bank_batch_attempts": int(batches[1]),
                "bridge_max_attempts_of_a_batch": int(batches[2]),
                # Re-sent after an answer the bridge never heard; the bank knew the payments.
                "bridge_batches_answered_with_duplicates": int(batches[3]),
                "bank_payment_batches": bank_batches,
                "funds_block_attempts": int(
                    bridge.one(
                        f"SELECT sum(funds_blocked_attempts) FROM envelope_status WHERE {where}",
                        *ids,
                    )
                    or 0
                ),
            }
        finally:
            bridge.close()
            bank.close()

    def _bank_fault_reports(self) -> None:
        """What the bank's fault injection saw and did (asked before the bank is stopped)."""
        for record in self.result.get("faults", []):
            if record["fault"].startswith("bank-"):
                try:
                    record["bank"] = httpx.get(f"{self.bank_url}/faults", timeout=10).json()
                except (httpx.HTTPError, ValueError) as exc:
                    record["bank"] = {"error": f"{type(exc).__name__}: {exc}"}

    def _fault_figures(self) -> None:
        """Beside each fault, how the run went: attempts it cost and when it was whole again."""
        for record in self.result.get("faults", []):
            record["batches"] = self.result.get("batches")
            record["ingest_failed_attempts"] = self.result.get("ingest_failed_attempts")
            done = self.result.get("reconciled_after_s")
            record["reconciled_after_s"] = done
            last = record.get("restarted_at_s")
            if record.get("restarts"):
                last = record["restarts"][-1].get("restarted_at_s")
            if done is not None and last is not None:
                record["reconciled_after_restart_s"] = round(done - last, 2)
        # The figure of issue 10: from each component's return to the pipeline's next move.
        for entry, returned in self.fault_returns:
            entry["recovered_after_s"] = self._recovered_after(returned)
        for record in self.result.get("faults", []):
            restarts = [r.get("recovered_after_s") for r in record.get("restarts", [])]
            if restarts:
                known = [r for r in restarts if r is not None]
                record["recovered_after_s"] = max(known) if known else None
        if self.progress_events and self.cfg.faults:
            times = [t for t, _ in self.progress_events]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            self.result["longest_stall_s"] = round(max(gaps), 2) if gaps else None

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


SUMMARY_KEYS = (
    "run_id",
    "n",
    "backend",
    "ingest_per_s",
    "ingest_p50_s",
    "ingest_p99_s",
    "shipped_after_s",
    "reconciled_after_s",
    "peak_rss_mb",
    "peak_rss_tree_mb",
    "db_mb",
    "log_bytes",
    "correct",
    "git_commit",
)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _merge_compare(left: Iterator[str], right: Iterator[str]) -> tuple[int, int, int, int]:
    """Compare two sorted id streams: (missing on the right, extra on the right, duplicates on
    the right, rows on the right)."""
    missing = extra = duplicates = count = 0
    sentinel = object()
    a: Any = next(left, sentinel)
    b: Any = next(right, sentinel)
    previous: Any = None
    while a is not sentinel or b is not sentinel:
        if b is not sentinel and b == previous:
            duplicates += 1
            count += 1
            b = next(right, sentinel)
            continue
        if b is sentinel or (a is not sentinel and a < b):
            missing += 1
            a = next(left, sentinel)
        elif a is sentinel or b < a:
            extra += 1
            count += 1
            previous = b
            b = next(right, sentinel)
        else:
            count += 1
            previous = b
            a, b = next(left, sentinel), next(right, sentinel)
    return missing, extra, duplicates, count


def render_markdown(r: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    lines = [
        f"# Bench {r.get('run_id')}: {r.get('backend')}, N = {r.get('n')}",
        "",
        f"commit `{r.get('git_commit')}`; correct: **{r.get('correct')}**"
        + (f"; error: {r['error']}" if r.get("error") else ""),
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for label, key in (
        ("ingest rate (disbursements/s)", "ingest_per_s"),
        ("ingest wall time (s)", "ingest_s"),
        ("request latency p50 (s)", "ingest_p50_s"),
        ("request latency p95 (s)", "ingest_p95_s"),
        ("request latency p99 (s)", "ingest_p99_s"),
        ("last ingest -> all shipped (s)", "shipped_after_s"),
        ("last ingest -> all reconciled (s)", "reconciled_after_s"),
        ("peak RSS, largest single process (MB)", "peak_rss_mb"),
        ("peak RSS, largest process tree (MB)", "peak_rss_tree_mb"),
        ("database size (MB)", "db_mb"),
        ("log bytes", "log_bytes"),
        ("wall time of the whole run (s)", "wall_s"),
    ):
        lines.append(f"| {label} | {fmt(r.get(key))} |")
    lines += [
        "",
        "| process | peak RSS tree sum (MB) | largest single (MB) | processes | CPU (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, v in sorted(r.get("rss", {}).items()):
        lines.append(
            f"| {name} | {v['peak_rss_mb']} | {v['max_single_process_mb']} | {v['max_processes']}"
            f" | {v.get('cpu_s', '-')} |"
        )
    if "postgres_cpu_s" in r:
        lines.append(f"| postgres (whole server) | - | - | - | {r['postgres_cpu_s']} |")
    lines += ["", "| check | passed | values |", "| --- | --- | --- |"]
    for name, c in r.get("checks", {}).items():
        values = {k: v for k, v in c.items() if k != "passed"}
        lines.append(f"| {name} | {c['passed']} | `{json.dumps(values, default=str)}` |")
    recovered = [
        (f"{fault.get('fault')}" + (f" ({x['during']})" if "during" in x else ""), x)
        for fault in r.get("faults", [])
        for x in fault.get("restarts") or [fault]
        if "recovered_after_s" in x
    ]
    if recovered:
        lines += [
            "",
            "| fault | back at (s after last ingest) | recovered after (s) |",
        ]
        lines.append("| --- | --- | --- |")
        for name, x in recovered:
            lines.append(
                f"| {name} | {fmt(x.get('restarted_at_s'))} | {fmt(x['recovered_after_s'])} |"
            )
        lines.append(f"\nlongest stall of the counters (s): {fmt(r.get('longest_stall_s'))}")
    for fault in r.get("faults", []):
        lines += ["", f"fault `{fault.get('fault')}`: `{json.dumps(fault, default=str)}`"]
    lines += ["", f"settings: `{json.dumps(r.get('settings'), default=str)}`", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run one benchmark; always stops what it started and writes its results."""
    return Bench(cfg).run()


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="disbursements in the envelope")
    p.add_argument("--batch", type=int, default=5_000, help="disbursements per HTTP request")
    p.add_argument("--failure-rate", type=float, default=0.05)
    p.add_argument("--backend", choices=("postgres", "embedded"), default="postgres")
    p.add_argument("--workers", type=int, default=1, help="g2p-bridge worker processes")
    p.add_argument("--api-workers", type=int, default=2, help="g2p-bridge api processes")
    p.add_argument("--worker-concurrency", type=int, default=2)
    p.add_argument("--bank-concurrency", type=int, default=2)
    p.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--timeout", type=float, default=1800.0, help="overall limit in seconds")
    p.add_argument("--stall-timeout", type=float, default=120.0)
    p.add_argument("--beat-interval", type=float, default=0.5)
    p.add_argument("--dispatch-batch", type=int, default=None)
    p.add_argument("--mapper-batch", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--redis-db-bridge", type=int, default=None, help="default: claim a free one")
    p.add_argument("--redis-db-bank", type=int, default=None, help="default: claim a free one")
    p.add_argument("--keep-db", action="store_true", help="do not drop the databases afterwards")
    p.add_argument("--profile", action="store_true", help="py-spy record every component")
    p.add_argument("--profile-svg", action="store_true", help="also write flamegraph SVGs")
    p.add_argument("--profile-rate", type=int, default=25, help="py-spy samples per second")
    p.add_argument("--no-latest", action="store_true", help="do not overwrite latest.json")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--fault",
        action="append",
        choices=sorted(FAULTS),
        default=[],
        help="inject a fault (repeatable): "
        + "; ".join(f"{name}: {what}" for name, what in FAULTS.items()),
    )
    p.add_argument("--bank-timeout", type=float, default=None, help="bridge's bank timeout (s)")
    p.add_argument("--outage-seconds", type=float, default=3.0)
    p.add_argument("--ingest-attempts", type=int, default=3)
    p.add_argument(
        "--ingest-retry-budget",
        type=float,
        default=60.0,
        help="per request, the longest the client waits out 503 Retry-After answers (s)",
    )
    a = p.parse_args(argv)
    return BenchConfig(
        n=a.n,
        batch=a.batch,
        failure_rate=a.failure_rate,
        backend=a.backend,
        workers=a.workers,
        api_workers=a.api_workers,
        worker_concurrency=a.worker_concurrency,
        bank_concurrency=a.bank_concurrency,
        clients=a.clients,
        out=a.out,
        timeout=a.timeout,
        stall_timeout=a.stall_timeout,
        beat_interval=a.beat_interval,
        dispatch_batch=a.dispatch_batch,
        mapper_batch=a.mapper_batch,
        seed=a.seed,
        redis_db_bridge=a.redis_db_bridge,
        redis_db_bank=a.redis_db_bank,
        keep_db=a.keep_db,
        profile=a.profile or a.profile_svg,
        profile_rate=a.profile_rate,
        profile_formats=(("raw", "txt"), ("flamegraph", "svg"))
        if a.profile_svg
        else (("raw", "txt"),),
        write_latest=not a.no_latest,
        quiet=a.quiet,
        faults=tuple(a.fault),
        bank_timeout=a.bank_timeout,
        outage_seconds=a.outage_seconds,
        ingest_attempts=a.ingest_attempts,
        ingest_retry_budget=a.ingest_retry_budget,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    result = run_bench(cfg)
    print(render_markdown(result))
    print(f"results: {result.get('run_dir')} and {cfg.out / 'latest.json'}")
    return 0 if result.get("correct") else 1


if __name__ == "__main__":
    sys.exit(main())
