"""In-process processing for the embedded mode (no broker).

:class:`InProcessProcessor` runs a daemon thread that repeatedly claims and processes
payment batches, writes statements for program accounts and delivers them to the
bridge. ``example-bank api`` starts one when ``broker_url`` is unset, and the bridge's
demo gets one for free by running the app (see :func:`example_bank.api.create_app`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx
from sqlalchemy.orm import Session

from example_bank.processing import (
    claim_next_batch,
    deliver_pending_statements,
    mark_batch_error,
    process_batch,
    write_due_statements,
)
from example_bank.settings import BankSettings

log = logging.getLogger(__name__)

# Longest stretch spent on batches before statements are written and delivered, so a
# continuous inflow still produces timely statements.
PROCESSING_BUDGET_SECONDS = 2.0


class InProcessProcessor:
    """Background worker thread: batches -> statements -> deliveries, until stopped."""

    def __init__(
        self,
        settings: BankSettings,
        session_factory: Callable[[], Session],
        http_client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self._factory = session_factory
        self._client = http_client
        self._owns_client = http_client is None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._passes_started = 0
        self._last_idle_pass = 0
        self._pass_lock = threading.Lock()  # one pass at a time (thread or caller)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the daemon thread (no-op when already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="example-bank-processor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to finish its current pass and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Start the next pass now instead of after the polling interval."""
        self._wake.set()

    def run_until_idle(self, timeout: float = 30.0) -> bool:
        """Block until a pass that began after this call found nothing to do.

        Works with the thread running (waits for it) or stopped (runs passes in the
        calling thread). Returns False if ``timeout`` expired first.
        """
        deadline = time.monotonic() + timeout
        if not self.running:
            while time.monotonic() < deadline:
                if self.run_once() == 0:
                    return True
            return False
        with self._progress:
            target = self._passes_started
            self._wake.set()
            while self._last_idle_pass <= target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.5))
                self._wake.set()
        return True

    # ------------------------------------------------------------------ work

    def run_once(self) -> int:
        """One pass; returns how many things were done (0 = idle)."""
        with self._pass_lock:
            with self._progress:
                self._passes_started += 1
                number = self._passes_started
            work = self._process_batches() + self._write_statements() + self._deliver()
            if work == 0:
                with self._progress:
                    self._last_idle_pass = max(self._last_idle_pass, number)
                    self._progress.notify_all()
            return work

    def _process_batches(self) -> int:
        done = 0
        deadline = time.monotonic() + PROCESSING_BUDGET_SECONDS
        while time.monotonic() < deadline and not self._stop.is_set():
            batch_id: int | None = None
            try:
                with self._factory() as session, session.begin():
                    batch_id = claim_next_batch(session, self.settings.batch_lease_seconds)
                    if batch_id is None:
                        return done
                    outcome = process_batch(session, batch_id, self.settings)
                log.info("batch %s: %s paid, %s failed", batch_id, outcome.paid, outcome.failed)
            except Exception as exc:
                log.exception("processing batch %s failed", batch_id)
                if batch_id is None:
                    raise
                with self._factory() as session, session.begin():
                    mark_batch_error(session, batch_id, repr(exc), self.settings.batch_max_attempts)
            done += 1
        return done

    def _write_statements(self) -> int:
        with self._factory() as session, session.begin():
            return len(write_due_statements(session, self.settings))

    def _deliver(self) -> int:
        if self.settings.statement_channel == "sftp":
            return 0  # the file channel drops statements in the SFTP outbox instead
        if self._client is None:
            self._client = httpx.Client()
        report = deliver_pending_statements(self._factory, self.settings, self._client)
        return report.delivered + report.retried + report.failed

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                work = self.run_once()
            except Exception:
                log.exception("example bank processing pass failed")
                work = 0
            if work == 0:
                self._wake.wait(self.settings.processing_interval_seconds)
