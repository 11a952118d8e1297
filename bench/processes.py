"""The processes a run starts (each its own process group, stopped on the way out), and
waiting for them to be ready."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.config import REDIS_HOST, REDIS_PORT, BenchConfig
from bench.redis_db import RedisDatabaseClaim, claim_redis_db


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


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"overall timeout reached while {what}")


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


def wait_listening(port: int, procs: Processes, deadline: Deadline, limit: float = 90.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:``port`` (an SFTP endpoint)."""
    end = min(time.monotonic() + limit, deadline.end)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        dead = procs.dead()
        if dead:
            raise RuntimeError(f"process died while waiting for port {port}: {dead}")
        if time.monotonic() >= end:
            raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")
        time.sleep(0.2)
