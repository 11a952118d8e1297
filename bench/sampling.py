"""What a run measures besides its own figures: memory and CPU of every process tree, sampled
from /proc, and the machine and commit it ran on."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from bench.config import REPO_ROOT
from bench.processes import Processes


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
        # Database name -> label: a PostgreSQL backend serving one of them (its command line
        # names the database) is charged to that label too, beside the whole server.
        self.databases: dict[str, str] = {}
        self._backend_db: dict[int, str] = {}
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
            if self._note_cpu("postgres", pid, only="postgres"):
                label = self._database_of(pid)
                if label is not None:
                    self._note_cpu(label, pid, only="postgres")
        for label in {"postgres", *self.databases.values()}:
            if any(n == label for n, _ in self._cpu_last):
                self.cpu[label] = self.cpu_seconds(label)
        self.samples += 1

    def _database_of(self, pid: int) -> str | None:
        """The label of the run's database a backend serves. Kept once found; looked up again
        while not (a backend names its database only once it has read the startup packet)."""
        if pid in self._backend_db:
            return self._backend_db[pid]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                words = handle.read().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            return None
        for name, label in self.databases.items():
            if name in words:
                self._backend_db[pid] = label
                return label
        return None

    def _note_cpu(self, name: str, pid: int, only: str | None = None) -> bool:
        got = _cpu_ticks(pid)
        if got is None or (only is not None and got[0] != only):
            return False
        key = (name, pid)
        self._cpu_first.setdefault(key, got[1] if only else 0)
        self._cpu_last[key] = got[1]
        return True

    def tree_cpu_seconds(self, name: str) -> float | None:
        """CPU seconds used so far by the live process tree of component ``name``, read now
        (not rounded; for the CPU of one phase: the difference of two readings)."""
        roots = [p.pid for p in list(self.procs.procs) if p.name == name]
        if not roots:
            return None
        children = _children_map()
        tree, stack = set(roots), list(roots)
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in tree:
                    tree.add(child)
                    stack.append(child)
        ticks = sum(got[1] for pid in tree if (got := _cpu_ticks(pid)) is not None)
        return ticks / _TICKS

    def cpu_seconds(self, name: str) -> float:
        ticks = sum(
            last - self._cpu_first[key] for key, last in self._cpu_last.items() if key[0] == name
        )
        return round(ticks / _TICKS, 1)
