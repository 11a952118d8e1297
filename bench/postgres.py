"""The run's databases: a read-only query helper over PostgreSQL or SQLite, the suite's
PostgreSQL server, and a private cluster the database fault may stop and crash."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.config import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, BenchConfig
from bench.processes import free_port, log


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


_REPORTED_SETTINGS = ("autovacuum", "shared_buffers", "work_mem", "synchronous_commit")


def production_autovacuum(port: int, cfg: BenchConfig) -> dict[str, Any]:
    """The server's settings that shape the run, as found; autovacuum is switched on (server
    wide, ALTER SYSTEM and a reload, left on afterwards) when it is off. A production server
    runs it: without it nothing is ever analysed, so the planner chooses with no statistics for
    a table that grew by a million rows in the last minute, and dead rows are never reclaimed.
    What the server says after the reload is recorded, not what was asked for: a setting on the
    server's command line outranks ALTER SYSTEM."""
    import psycopg

    def show(conn: psycopg.Connection[Any], name: str) -> str:
        row = conn.execute(f"SHOW {name}").fetchone()
        return str(row[0]) if row else ""

    figures: dict[str, Any] = {}
    try:
        with psycopg.connect(pg_url("postgres", port), autocommit=True) as conn:
            found = {name: show(conn, name) for name in _REPORTED_SETTINGS}
            figures["as_found"] = found
            if found["autovacuum"] != "on":
                log(cfg, "autovacuum is off on this server: turning it on, as production runs it")
                conn.execute("ALTER SYSTEM SET autovacuum = on")
                conn.execute("SELECT pg_reload_conf()")
                # The reload is a signal to the server: a bounded wait for it to be read.
                deadline = time.monotonic() + 10
                while show(conn, "autovacuum") != "on" and time.monotonic() < deadline:
                    time.sleep(0.1)
            figures["autovacuum_during_run"] = show(conn, "autovacuum")
    except psycopg.Error as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"
    return figures


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
