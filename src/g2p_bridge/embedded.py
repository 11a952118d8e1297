"""The embedded runtime: producers and workers in this process, no broker, for one machine.

It runs the very same producer tick and steps as the Celery deployment; only the transport
differs (a direct call instead of a broker message)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from g2p_bridge.core.context import Context
from g2p_bridge.core.steps import STEPS
from g2p_bridge.producers import find_due_work

log = logging.getLogger(__name__)


class EmbeddedRunner:
    def __init__(self, context: Context, workers: int = 1) -> None:
        self.context = context
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # SQLite takes one writer at a time; a few threads still overlap the waits on the bank.
        self._pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    def run_once(self) -> int:
        """One producer tick and the work it found; returns how much work there was."""
        work = find_due_work(self.context)
        if self._pool is None:
            for item in work:
                self._run(item.task, item.key)
        else:
            list(self._pool.map(lambda w: self._run(w.task, w.key), work))
        return len(work)

    def _run(self, task: str, key: str) -> None:
        try:
            STEPS[task](self.context, key)
        except Exception:
            # The row keeps its lease and is picked up again when it expires; the loop goes on.
            log.exception("step %s on %s failed", task, key)

    def run_until_idle(self, timeout: float = 60.0, quiet_ticks: int = 2) -> bool:
        """Runs ticks until a few in a row find nothing; False if the timeout came first."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < deadline:
            quiet = quiet + 1 if self.run_once() == 0 else 0
            if quiet >= quiet_ticks:
                return True
        return False

    def wake(self, *_reason: str) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="g2p-embedded", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.context.settings.beat_interval_seconds
        while not self._stop.is_set():
            try:
                busy = self.run_once() > 0
            except Exception:
                log.exception("producer tick failed")
                busy = False
            if not busy:
                self._wake.wait(interval)
                self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
