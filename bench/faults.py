"""Fault injection: kill, stop or slow a component at the worst moment, and time the recovery."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.config import REDIS_HOST
from bench.postgres import Db, PrivatePostgres
from bench.processes import Proc
from bench.state import RunState


class FaultInjection(RunState):
    """The faults of ``FAULTS``: armed before ingest, started after it, figures after the run."""

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
