"""Chaos soak: the bench's processes and workload under random kills and a hostile client.

    python -m bench.soak --minutes 20 --seed 1        (or: make soak SOAK_MINUTES=20)

For ``--minutes`` (default 20), ``--envelopes`` envelopes of ``--n`` disbursements (default
5 of 50,000), submitted one after another over the first ``--submit-fraction`` of the run,
flow through the bench's set-up (``bench/harness.py``: bridge API, beat and worker, Example Bank
API and worker, each its own OS process; the bridge on a private PostgreSQL cluster and a
private Redis broker, so both may be killed) with authentication on. Meanwhile:

* a scheduler SIGKILLs a random component every ``--kill-min``..``--kill-max`` seconds (bridge
  API, worker, beat, Example Bank API and worker, the bridge's Redis) and restarts the bridge's
  PostgreSQL ``--db-restarts`` times (a fast stop, then a crash); a supervisor starts each
  killed process again after a short random delay, and any process that died by itself, as
  Kubernetes would;
* a hostile client (its own thread, ``--hostile-rate`` requests a second at most) sends
  malformed bodies, replays of real requests, requests with another program's or an expired
  token, and forged MT940 statements.

When the time is up the chaos stops and the soak waits, up to ``--settle-timeout``, for
everything to settle. Then the bench's checks run, plus the soak's own: no hostile request
answered 5xx (but 503 with ``Retry-After`` while the database is away), replays answered as
specified, no forged statement applied, no disbursement reversed or reconciled that the bank
did not return or pay. Results: ``docs/bench/soak-<commit>-<minutes>min.json`` and ``.md``
(and the run directory under ``bench/results/``). Every process it started is stopped; the
shared PostgreSQL and Redis are never signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.checks import merge_compare
from bench.config import CURRENCY, OWN_BANK, PROGRAM_ACCOUNT, SENDER_ID, BenchConfig
from bench.harness import Bench
from bench.postgres import Db
from bench.processes import log
from bench.report import render_markdown
from bench.workload import bench_workload, expected_outcome
from g2p_bridge.pbms_client import DisbursementItem, disbursement_message, request_header
from g2p_bridge.workload import Workload

DOCS_OUT = Path(__file__).resolve().parent.parent / "docs" / "bench"
# What the scheduler may SIGKILL: the names bench/run.py gives the processes it starts. The
# bank's broker is the shared Redis (other runs use it) and is never signalled.
COMPONENTS = (
    "bridge-api",
    "bridge-worker-1",
    "bridge-beat",
    "bank-api",
    "bank-worker",
    "bridge-broker",
)
OTHER_PROGRAM, OTHER_ACCOUNT = "OTHER", "PRG-OTHER-0002"
OTHER_DISBURSEMENTS = 10
# Clients of the hostile side; statements they upload are told apart by ``uploaded_by``.
FORGERS = ("forger-example", "bank-north")
LEGIT_BANK_CLIENT = "example-bank"


@dataclass
class SoakConfig:
    minutes: float = 20.0
    seed: int = 1
    envelopes: int = 5
    n: int = 50_000
    batch: int = 5_000
    submit_fraction: float = 0.5
    kill_min: float = 30.0
    kill_max: float = 90.0
    restart_delay_min: float = 1.0
    restart_delay_max: float = 5.0
    db_restarts: int = 2
    hostile_rate: float = 2.0
    settle_timeout: float = 900.0
    redis_db_bank: int = 9
    out: Path = DOCS_OUT


class Soak(Bench):
    def __init__(self, sc: SoakConfig) -> None:
        if sc.envelopes < 1 or sc.minutes <= 0 or not 0 < sc.kill_min <= sc.kill_max:
            raise ValueError("envelopes, minutes and kill intervals must be positive")
        self.secret = secrets.token_urlsafe(48)
        cfg = BenchConfig(
            n=sc.n,
            batch=sc.batch,
            seed=sc.seed,
            # Their set-up only: a private broker and PostgreSQL cluster the soak may kill.
            # The soak's scheduler injects the faults, not the bench's fault threads.
            faults=("restart-broker", "restart-database"),
            timeout=sc.minutes * 60 + sc.settle_timeout + 600,
            stall_timeout=sc.settle_timeout,
            # A killed API refuses connections for seconds: the client keeps the same
            # message_id for up to this many attempts (about two minutes of back-off).
            ingest_attempts=60,
            ingest_retry_budget=300.0,
            outage_seconds=8.0,
            write_latest=False,
            # Not the bench's 12/13 nor the suite's 10, 11, 14 on the shared Redis: a bench or
            # a test run started beside the soak would flush its bank's queue (and it theirs).
            redis_db_bank=sc.redis_db_bank,
            extra_env=self._auth_env(),
        )
        super().__init__(cfg)
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.ingest_gate.set()  # the database restarts come from the scheduler instead
        self.n_total = sc.n * sc.envelopes
        self.http_headers = {"authorization": f"Bearer {self._token(SENDER_ID, 'admin')}"}
        self.chaos_stop = threading.Event()
        self.chaos_threads: list[threading.Thread] = []
        self.events: list[dict[str, Any]] = []
        self.hostile: list[dict[str, Any]] = []
        self.hostile_lock = threading.Lock()
        self.db_down = threading.Event()  # while set, 503 + Retry-After is the expected answer
        self.other_ids: list[str] = []
        self.envelope_idx: dict[str, int] = {}

    # ----------------------------------------------------------------- tokens

    def _token(
        self,
        client: str,
        role: str,
        programs: tuple[str, ...] = (),
        bank_codes: tuple[str, ...] = (),
        ttl: int = 6 * 3600,
    ) -> str:
        from g2p_bridge.auth import issue_token
        from g2p_bridge.settings import Settings

        return issue_token(Settings(), client, role, programs, bank_codes, ttl, self.secret)

    def _auth_env(self) -> dict[str, str]:
        bank = self._token(LEGIT_BANK_CLIENT, "bank", bank_codes=(OWN_BANK,))
        return {
            "G2P_BRIDGE_AUTH_DISABLED": "false",
            "G2P_BRIDGE_AUTH_SECRET_KEY": self.secret,
            "EXAMPLE_BANK_BRIDGE_TOKEN": bank,
        }

    def _settings_dict(self) -> dict[str, Any]:
        # The run's signing key and the bank's token go in the published result: never.
        data = super()._settings_dict()
        data["extra_env"] = dict.fromkeys(data.get("extra_env", {}), "***")
        return data

    # ----------------------------------------------------------------- phases

    def _configure(self) -> None:
        sc = self.sc
        self.total = bench_workload(sc.n, "soak0").total()
        self.deposit = self.total * sc.envelopes * 2
        self._open_accounts(self.deposit)
        self._configure_program("BENCH", PROGRAM_ACCOUNT)
        self.envelope_ids = [
            self._create_envelope(f"soak-envelope-{k}", sc.n, self.total)
            for k in range(sc.envelopes)
        ]
        self.envelope_idx = {e: k for k, e in enumerate(self.envelope_ids)}
        self.envelope_id = self.envelope_ids[0]
        self.result["envelope_ids"] = self.envelope_ids
        expected = Counter[str]()
        for k in range(sc.envelopes):
            workload = bench_workload(sc.n, soak_prefix(k))
            expected.update(expected_outcome(workload, sc.seed, self.cfg.failure_rate))
        self.expected = dict(expected)
        self.result["expected"] = dict(self.expected)
        self._other_program()

    def _other_program(self) -> None:
        """A second program on the same bank whose envelope never completes (more declared
        than sent): its disbursements exist, are never paid, and are what a forged
        statement of the first program's account names."""
        self._configure_program(OTHER_PROGRAM, OTHER_ACCOUNT)
        total = Workload(1000).total()
        envelope = self._create_envelope("soak-other", 1000, total, program=OTHER_PROGRAM)
        self.other_ids = [f"other-{i:04d}" for i in range(OTHER_DISBURSEMENTS)]
        items = [self._work_item(d, i) for i, d in enumerate(self.other_ids)]
        with self._client(60) as bridge:
            bridge.submit_disbursements(envelope, items)

    @staticmethod
    def _work_item(disbursement_id: str, i: int) -> DisbursementItem:
        return DisbursementItem(
            f"NID-{i:08d}",
            f"Beneficiary {i}",
            Workload.amount(i),
            disbursement_id,
            f"mobile:07{i:08d}@MPESA",
            narrative="Monthly cash transfer",
        )

    @classmethod
    def _item(cls, envelope: str, disbursement_id: str, i: int) -> dict[str, Any]:
        return disbursement_message(envelope, cls._work_item(disbursement_id, i))

    def _arm_faults(self) -> None:
        self.chaos_started = time.monotonic()
        self.chaos_end = self.chaos_started + self.sc.minutes * 60
        self._fault_thread(self._watch_progress)  # the bench's recovery-time figures
        for target in (self._scheduler, self._hostile_client):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self.chaos_threads.append(thread)

    def _ingest(self) -> None:
        """Each envelope's disbursements through the bench's own ingest, spread over the
        first part of the run so the faults meet ingest, funds, dispatch and statements."""
        sc = self.sc
        spacing = sc.minutes * 60 * sc.submit_fraction / sc.envelopes
        per_envelope: list[dict[str, Any]] = []
        self.result["ingest_by_envelope"] = per_envelope
        for k, envelope in enumerate(self.envelope_ids):
            at = self.chaos_started + k * spacing
            while time.monotonic() < at and not self.chaos_stop.is_set():
                time.sleep(min(1.0, at - time.monotonic()))
            self.envelope_id, self.id_prefix = envelope, soak_prefix(k)
            started = round(time.monotonic() - self.chaos_started, 1)
            super()._ingest()
            per_envelope.append(
                {
                    "envelope": envelope,
                    "started_at_s": started,
                    **{
                        key: self.result.get(key)
                        for key in ("ingest_s", "ingest_per_s", "ingest_failed_attempts")
                    },
                }
            )
        self.envelope_id = self.envelope_ids[0]

    def _start_faults(self) -> None:
        """The scheduler runs from ``_arm_faults`` on; the bench's own faults stay off."""

    def _wait_settled(self) -> None:
        while time.monotonic() < self.chaos_end:
            time.sleep(min(5.0, max(0.1, self.chaos_end - time.monotonic())))
            log(self.cfg, f"  chaos t+{time.monotonic() - self.chaos_started:.0f}s")
        self._stop_chaos()
        log(self.cfg, "time is up: chaos stopped, waiting for everything to settle")
        self.stall_reference = time.monotonic()
        super()._wait_settled()
        if self.result.get("reconciled_after_s") is None:
            self.result["stuck"] = self._stuck_report()

    def _stop_chaos(self) -> None:
        self.chaos_stop.set()
        for thread in self.chaos_threads:
            thread.join(timeout=120)
        # Whatever the scheduler was doing when stopped, every component runs again.
        self._ensure_running()

    def _ensure_running(self) -> None:
        pg = self.private_pg
        if pg is not None and pg.pid() is None:
            with contextlib.suppress(Exception):
                pg.start()
        self.db_down.clear()
        live = {p.name for p in self.procs.procs if p.popen.poll() is None}
        for name in COMPONENTS:
            if name not in live:
                self._restart(name, {"component": name, "kind": "final-restart"})

    def _finish(self, started: float) -> None:
        self.chaos_stop.set()
        with contextlib.suppress(Exception):
            self._ensure_running_db()
        try:
            super()._finish(started)
        finally:
            self._write_soak()

    def _ensure_running_db(self) -> None:
        """The checks read the private cluster: never leave it stopped by an outage."""
        pg = self.private_pg
        if pg is not None and pg.pid() is None:
            pg.start()

    # ----------------------------------------------------------------- the scheduler

    def _restart(self, name: str, entry: dict[str, Any]) -> None:
        try:
            if name == "bridge-broker":
                self._start_broker()
            else:
                self.procs.start(name, *self.procs.specs[name])
            self._returned(entry)
            entry["restarted_at_s"] = round(time.monotonic() - self.chaos_started, 1)
        except Exception as exc:
            entry["restart_error"] = f"{type(exc).__name__}: {exc}"

    def _kill(self, name: str) -> None:
        entry: dict[str, Any] = {
            "kind": "kill",
            "component": name,
            "at_s": round(time.monotonic() - self.chaos_started, 1),
        }
        self.events.append(entry)
        proc = next((p for p in self.procs.procs if p.name == name), None)
        if proc is None:
            entry["error"] = "not running"
            return
        self.procs.procs.remove(proc)  # first, so nothing sees it dead in the meantime
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=30)
        delay = self.rng.uniform(self.sc.restart_delay_min, self.sc.restart_delay_max)
        entry["down_s"] = round(delay, 1)
        self.chaos_stop.wait(delay)
        self._restart(name, entry)

    def _db_outage(self, mode: str, record: dict[str, Any]) -> None:
        pg = self.private_pg
        assert pg is not None
        self.db_down.set()
        try:
            self._outage(pg, mode, "soak", record)
        finally:
            # A Retry-After answer may still be in flight just after the start.
            threading.Timer(5.0, self.db_down.clear).start()
        record["restarts"][-1]["at_chaos_s"] = round(time.monotonic() - self.chaos_started, 1)

    def _supervise(self) -> None:
        """A process that died by itself (not killed by the scheduler) is started again."""
        for proc in list(self.procs.procs):
            if proc.name in COMPONENTS and proc.popen.poll() is not None:
                self.procs.procs.remove(proc)
                entry: dict[str, Any] = {
                    "kind": "crash",
                    "component": proc.name,
                    "exit": proc.popen.returncode,
                    "at_s": round(time.monotonic() - self.chaos_started, 1),
                }
                self.events.append(entry)
                self._restart(proc.name, entry)

    def _scheduler(self) -> None:
        sc, rng = self.sc, self.rng
        record: dict[str, Any] = {"fault": "restart-database", "restarts": []}
        self.result.setdefault("faults", []).append(record)
        span = sc.minutes * 60
        # The database restarts at even fractions of the run: a clean stop, then a crash.
        db_at = [span * (k + 1) / (sc.db_restarts + 1) for k in range(sc.db_restarts)]
        modes = ["fast" if k % 2 == 0 else "immediate" for k in range(sc.db_restarts)]
        next_kill = rng.uniform(sc.kill_min, sc.kill_max)
        try:
            for _ in range(100_000):  # bounded; the stop event ends it long before
                if self.chaos_stop.is_set():
                    break
                now = time.monotonic() - self.chaos_started
                if db_at and now >= db_at[0]:
                    db_at.pop(0)
                    self._db_outage(modes.pop(0), record)
                elif now >= next_kill:
                    self._kill(rng.choice(COMPONENTS))
                    next_kill = (time.monotonic() - self.chaos_started) + rng.uniform(
                        sc.kill_min, sc.kill_max
                    )
                else:
                    self._supervise()
                    self.chaos_stop.wait(0.5)
        except Exception as exc:  # reported; the checks still decide
            self.result["scheduler_error"] = f"{type(exc).__name__}: {exc}"

    # ----------------------------------------------------------------- the hostile client

    def _record(self, kind: str, response: httpx.Response | None, **extra: Any) -> None:
        entry: dict[str, Any] = {"kind": kind, "db_down": self.db_down.is_set(), **extra}
        if response is None:
            # Connection refused or dropped: the API was down (killed, restarting).
            entry["answer"] = f"no answer ({extra.get('error', '?')})"
        else:
            code = None
            with contextlib.suppress(Exception):
                meta = response.json()["header"].get("meta") or {}
                code = meta.get("error_code") or response.json()["header"].get("status")
            entry["status"] = response.status_code
            entry["answer"] = (
                f"{response.status_code} {code}" if code else str(response.status_code)
            )
            entry["retry_after"] = response.headers.get("retry-after")
        with self.hostile_lock:
            self.hostile.append(entry)

    def _hostile_client(self) -> None:
        kinds = [
            ("malformed", 6),
            ("replay_same", 2),
            ("replay_different", 2),
            ("foreign_program_token", 2),
            ("expired_token", 1),
            ("forged_other_bank", 3),
            ("forged_cross_program", 2),
            ("forged_reversal_other_bank", 2),
        ]
        names = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        rng = random.Random(self.sc.seed + 1)
        limit = int(self.sc.minutes * 60 * self.sc.hostile_rate) + 10
        gap = 1.0 / self.sc.hostile_rate
        with httpx.Client(timeout=60) as http:
            for i in range(limit):  # bounded in count; the stop event ends it in time
                if self.chaos_stop.wait(gap):
                    break
                kind = rng.choices(names, weights)[0]
                try:
                    getattr(self, f"_h_{kind}")(http, rng, i)
                except httpx.HTTPError as exc:
                    self._record(kind, None, error=type(exc).__name__)
                except Exception as exc:  # a bug of the soak, not of the bridge: reported
                    self._record(kind, None, error=f"soak: {type(exc).__name__}: {exc}")

    def _header(self, action: str, count: int = 1) -> dict[str, Any]:
        return request_header(action, count, SENDER_ID)

    def _post(
        self, http: httpx.Client, path: str, body: bytes, token: str | None = None
    ) -> httpx.Response:
        headers = {"content-type": "application/json", **self.http_headers}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return http.post(f"{self.bridge_url}/{path}", content=body, headers=headers)

    def _h_malformed(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        envelope = self.envelope_ids[0]
        item = self._item(envelope, f"hostile-{i}", i)
        variants: dict[str, Any] = {
            "bad_json": b'{"header": {"message_id": "x", "message_ts": ',
            "wrong_types": {
                "header": {**self._header("create_disbursements"), "total_count": "one"},
                "message": 42,
            },
            "control_characters": [{**item, "beneficiary_name": "Amina\x00\x1b[2J\u2028"}],
            "injected_id": [{**item, "disbursement_id": f"h-{i}\n:61:2611251125RD50,00NTRFx"}],
            "exponent_amount": [{**item, "disbursement_amount": "1e1"}],
            "over_long_string": [{**item, "narrative": "x" * 5000}],
            "total_count_lie": {
                "header": self._header("create_disbursements", 10_000),
                "message": [item],
            },
        }
        variant = rng.choice(sorted(variants))
        value = variants[variant]
        if isinstance(value, bytes):
            body = value
        elif isinstance(value, list):
            body = orjson.dumps(
                {"header": self._header("create_disbursements", 1), "message": value}
            )
        else:
            body = orjson.dumps(value)
        self._record("malformed", self._post(http, "create_disbursements", body), variant=variant)

    def _h_replay_same(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        if not self.ingest_answers:
            return
        body, status, first = rng.choice(self.ingest_answers)
        response = self._post(http, "create_disbursements", body)
        same = None
        if response.status_code < 500:
            a, b = orjson.loads(first), response.json()
            same = (
                response.status_code == status
                and a["message"] == b["message"]
                and a["header"]["status"] == b["header"]["status"]
            )
        self._record("replay_same", response, same_answer=same)

    def _h_replay_different(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        if not self.ingest_answers:
            return
        body, _, _ = rng.choice(self.ingest_answers)
        data = orjson.loads(body)
        data["message"] = data["message"][:-1]  # same message_id, one item fewer
        data["header"]["total_count"] = len(data["message"])
        response = self._post(http, "create_disbursements", orjson.dumps(data))
        code = None
        with contextlib.suppress(Exception):
            code = response.json()["header"]["status_reason_code"]
        self._record("replay_different", response, reason=code)

    def _h_foreign_program_token(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        token = self._token("pbms-other", "pbms", programs=(OTHER_PROGRAM,), ttl=600)
        head = {**self._header("create_disbursements", 1), "sender_id": "pbms-other"}
        item = self._item(rng.choice(self.envelope_ids), f"hostile-{i}", i)
        body = orjson.dumps({"header": head, "message": [item]})
        self._record("foreign_program_token", self._post(http, "create_disbursements", body, token))

    def _h_expired_token(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        token = self._token(SENDER_ID, "admin", ttl=-3600)
        body = orjson.dumps(
            {
                "header": self._header("get_disbursement_envelope_status"),
                "message": self.envelope_id,
            }
        )
        self._record(
            "expired_token", self._post(http, "get_disbursement_envelope_status", body, token)
        )

    def _upload(self, http: httpx.Client, kind: str, text: str, token: str, **extra: Any) -> None:
        response = http.post(
            f"{self.bridge_url}/upload_mt940",
            files={"statement_file": (f"forged-{kind}.txt", text.encode(), "text/plain")},
            headers={"authorization": f"Bearer {token}"},
        )
        statement = None
        with contextlib.suppress(Exception):
            statement = response.json()["message"]["statement_id"]
        self._record(kind, response, statement_id=statement, **extra)

    def _paid_ids(self, count: int) -> list[tuple[str, Decimal]]:
        """Some disbursements the bank has paid and the bridge reconciled, amounts read through
        the model (read each time, on a connection of its own: the database may restart)."""
        from sqlalchemy import select

        from g2p_bridge.db import make_engine
        from g2p_bridge.models import Disbursement
        from g2p_bridge.models.enums import DisbursementState

        engine = make_engine(self.bridge_db_url, pool_size=1)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Disbursement.id, Disbursement.amount)
                    .where(
                        Disbursement.envelope_id.in_(self.envelope_ids),
                        Disbursement.state == DisbursementState.RECONCILED,
                    )
                    .limit(count)
                ).all()
        except Exception:  # the database restarting: nothing to forge this time
            return []
        finally:
            engine.dispose()
        return [(str(r[0]), r[1]) for r in rows]

    def _h_forged_other_bank(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        framing = rng.choice(sorted(FRAMINGS))
        entries = [(f"soak0-{k:08d}", Workload.amount(k), "D") for k in range(3)]
        text = FRAMINGS[framing](mt940(PROGRAM_ACCOUNT, f"FORGED{i}", entries))
        token = self._token("bank-north", "bank", bank_codes=("NORTHBANK",), ttl=600)
        self._upload(http, "forged_other_bank", text, token, framing=framing)

    def _h_forged_cross_program(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        token = self._token("forger-example", "bank", bank_codes=(OWN_BANK,), ttl=600)
        if rng.random() < 0.5 or not (paid := self._paid_ids(3)):
            # The first program's account debited for the other program's disbursements.
            entries = [(d, Workload.amount(k), "D") for k, d in enumerate(self.other_ids)]
            text = mt940(PROGRAM_ACCOUNT, f"FORGEDX{i}", entries)
            variant = "debits_of_other_program"
        else:
            # The other program's account reversing the first program's paid disbursements.
            text = mt940(OTHER_ACCOUNT, f"FORGEDR{i}", [(d, a, "RD") for d, a in paid])
            variant = "reversals_on_other_account"
        self._upload(http, "forged_cross_program", text, token, variant=variant)

    def _h_forged_reversal_other_bank(self, http: httpx.Client, rng: random.Random, i: int) -> None:
        paid = self._paid_ids(3)
        if not paid:
            return
        text = mt940(PROGRAM_ACCOUNT, f"FORGEDRV{i}", [(d, a, "RD") for d, a in paid])
        no_codes = rng.random() < 0.3
        token = (
            self._token("bank-none", "bank", ttl=600)
            if no_codes
            else self._token("bank-north", "bank", bank_codes=("NORTHBANK",), ttl=600)
        )
        self._upload(http, "forged_reversal_other_bank", text, token, no_bank_codes=no_codes)

    # ----------------------------------------------------------------- checks and output

    def _checks(self) -> None:
        super()._checks()
        checks: dict[str, dict[str, Any]] = self.result["checks"]

        def check(name: str, passed: bool, **values: Any) -> None:
            checks[name] = {"passed": bool(passed), **values}

        hostile = list(self.hostile)
        answered = [h for h in hostile if "status" in h]
        server_errors = [
            h
            for h in answered
            if h["status"] >= 500 and not (h["status"] == 503 and h.get("retry_after"))
        ]
        check(
            "hostile_no_5xx",
            not server_errors,
            requests=len(hostile),
            answered=len(answered),
            unanswered_component_down=len(hostile) - len(answered),
            server_errors=server_errors[:10],
            answered_503_retry_after=sum(1 for h in answered if h["status"] == 503),
        )
        expected_refusal = {
            "malformed": {400, 413, 422},
            "foreign_program_token": {403},
            "expired_token": {401},
            "forged_other_bank": {403, 422},
            "forged_reversal_other_bank": {403, 422},
            "replay_different": {409},
        }
        wrong = [
            h
            for h in answered
            if h["kind"] in expected_refusal
            and h["status"] != 503
            and h["status"] not in expected_refusal[h["kind"]]
        ]
        wrong += [
            h
            for h in answered
            if h["kind"] == "replay_different"
            and h["status"] == 409
            and h.get("reason") != "rjct.message_id.duplicate"
        ]
        wrong += [h for h in answered if h["kind"] == "replay_same" and h["same_answer"] is False]
        check("hostile_answered_as_specified", not wrong, wrong=wrong[:10])

        bridge, bank = Db(self.bridge_db_url), Db(self.bank_db_url)
        try:
            where, ids = self._envelopes_where()
            stored_hostile = int(
                bridge.one("SELECT count(*) FROM disbursements WHERE id LIKE 'hostile-%%'") or 0
            )
            other_rows = int(
                bridge.one(
                    "SELECT count(*) FROM disbursements d JOIN disbursement_envelopes e"
                    " ON e.id = d.envelope_id WHERE e.program_mnemonic = %s",
                    OTHER_PROGRAM,
                )
                or 0
            )
            check(
                "no_hostile_disbursement_stored",
                stored_hostile == 0 and other_rows == OTHER_DISBURSEMENTS,
                hostile_rows=stored_hostile,
                other_program_rows=other_rows,
            )
            forged = [
                str(r[0])
                for r in bridge.rows(
                    "SELECT id FROM account_statements WHERE uploaded_by IN (%s, %s)", *FORGERS
                )
            ]
            applied = 0
            forged_states: dict[str, int] = {}
            if forged:
                marks = ", ".join(["%s"] * len(forged))
                applied = int(
                    bridge.one(
                        "SELECT count(*) FROM disbursement_recons WHERE"
                        f" remittance_statement_id IN ({marks})"
                        f" OR reversal_statement_id IN ({marks})",
                        *forged,
                        *forged,
                    )
                    or 0
                )
                forged_states = {
                    str(s): int(c)
                    for s, c in bridge.rows(
                        f"SELECT state, count(*) FROM account_statements WHERE id IN ({marks})"
                        " GROUP BY state",
                        *forged,
                    )
                }
            accepted = Counter(
                h["kind"] for h in answered if h["kind"].startswith("forged") and h["status"] < 300
            )
            check(
                "no_forged_statement_applied",
                applied == 0
                and not accepted.get("forged_other_bank")
                and not accepted.get("forged_reversal_other_bank"),
                forged_statements_stored=len(forged),
                forged_stored_by_state=forged_states,
                entries_applied_from_forged=applied,
                accepted_uploads_by_kind=dict(accepted),
            )
            # Reconciliation of the bank's own statements: the bench's check, without the
            # forged files (whose entries are reconciliation errors by design).
            legit_errors = int(
                bridge.one(
                    "SELECT count(*) FROM recon_errors r JOIN account_statements s"
                    " ON s.id = r.statement_id WHERE s.uploaded_by = %s",
                    LEGIT_BANK_CLIENT,
                )
                or 0
            )
            legit_states = {
                str(s): int(c)
                for s, c in bridge.rows(
                    "SELECT state, count(*) FROM account_statements WHERE uploaded_by = %s"
                    " GROUP BY state",
                    LEGIT_BANK_CLIENT,
                )
            }
            check(
                "statements_reconciled_cleanly",
                legit_errors == 0 and set(legit_states) <= {"PROCESSED"},
                recon_errors=legit_errors,
                statements_by_state=legit_states,
                note="the bank's own statements; forged ones are no_forged_statement_applied",
            )
            # Per disbursement: reversed only what the bank returned, reconciled only what
            # it paid.
            order = ' COLLATE "C"'
            for state, bank_state in (("REVERSED", "FAILED"), ("RECONCILED", "PAID")):
                missing, extra, duplicates, count = merge_compare(
                    bank.stream(
                        "SELECT payment_reference_number FROM payments WHERE state = %s"
                        f" ORDER BY payment_reference_number{order}",
                        bank_state,
                    ),
                    bridge.stream(
                        f"SELECT id FROM disbursements WHERE {where} AND state = %s"
                        f" ORDER BY id{order}",
                        *ids,
                        state,
                    ),
                )
                check(
                    f"{state.lower()}_exactly_what_the_bank_{bank_state.lower()}",
                    missing == extra == duplicates == 0,
                    bridge_rows=count,
                    bank_but_not_bridge=missing,
                    bridge_but_not_bank=extra,
                    duplicates=duplicates,
                )
        finally:
            bridge.close()
            bank.close()

    def _stuck_report(self) -> dict[str, Any]:
        """What had not settled at the hard deadline."""
        db = Db(self.bridge_db_url)
        try:
            where, ids = self._envelopes_where()
            return {
                "disbursements_by_envelope_and_state": [
                    list(r)
                    for r in db.rows(
                        f"SELECT envelope_id, state, count(*) FROM disbursements WHERE {where}"
                        " GROUP BY envelope_id, state ORDER BY 1, 2",
                        *ids,
                    )
                ],
                "open_bank_batches": [
                    list(r)
                    for r in db.rows(
                        f"SELECT state, count(*), max(attempts) FROM bank_batches WHERE {where}"
                        " AND state IN ('PENDING', 'RUNNING') GROUP BY state",
                        *ids,
                    )
                ],
                "statements_by_state": [
                    list(r)
                    for r in db.rows(
                        "SELECT state, count(*) FROM account_statements GROUP BY state"
                    )
                ],
            }
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            db.close()

    def _summary(self) -> dict[str, Any]:
        kills = Counter(e["component"] for e in self.events if e["kind"] == "kill")
        crashes = Counter(e["component"] for e in self.events if e["kind"] == "crash")
        hostile: dict[str, Counter[str]] = {}
        for h in self.hostile:
            key = h["kind"] + (f" ({h['framing']})" if "framing" in h else "")
            hostile.setdefault(key, Counter())[h["answer"]] += 1
        db = next(f for f in self.result.get("faults", []) if f["fault"] == "restart-database")
        recoveries = [
            e["recovered_after_s"]
            for e in self.events + db.get("restarts", [])
            if e.get("recovered_after_s") is not None
        ]
        # When the last counter moved: the pipeline's real end, which may come before the time
        # is up (the bench's reconciled_after_s is only seen once the chaos has stopped).
        last_move = self.progress_events[-1][0] if self.progress_events else None
        return {
            "minutes": self.sc.minutes,
            "last_counter_move_at_s": None
            if last_move is None
            else round(last_move - self.chaos_started, 1),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.sc).items()},
            "disbursements": self.n_total,
            "kills_by_component": dict(kills),
            "crashes_by_component": dict(crashes),
            "database_restarts": [
                {
                    k: r.get(k)
                    for k in (
                        "mode",
                        "at_chaos_s",
                        "down_s",
                        "api_ready_status",
                        "recovered_after_s",
                    )
                }
                for r in db.get("restarts", [])
            ],
            "hostile_requests": len(self.hostile),
            "hostile_by_kind": {k: dict(v) for k, v in sorted(hostile.items())},
            "recovered_after_s_max": max(recoveries) if recoveries else None,
            "recovered_after_s_median": sorted(recoveries)[len(recoveries) // 2]
            if recoveries
            else None,
            "events": self.events,
        }

    def _write_soak(self) -> None:
        self.result["soak"] = self._summary()
        commit = (self.result.get("git_commit") or "unknown")[:7]
        minutes = f"{self.sc.minutes:g}"
        out = Path(self.sc.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"soak-{commit}-{minutes}min"
        data = orjson.dumps(self.result, option=orjson.OPT_INDENT_2, default=str)
        markdown = render_soak(self.result)
        for target in (stem, self.run_dir / "soak"):
            target.with_suffix(".json").write_bytes(data)
            target.with_suffix(".md").write_text(markdown)
        self.result["soak_result"] = str(stem.with_suffix(".md"))


def soak_prefix(envelope: int) -> str:
    return f"soak{envelope}"


def soak_id(envelope: int, i: int) -> str:
    """The id of disbursement ``i`` of envelope ``envelope`` (the workload's, by its prefix)."""
    return bench_workload(i + 1, soak_prefix(envelope)).disbursement_id(i) or ""


# --------------------------------------------------------------------------- forged MT940


def mt940(account: str, reference: str, entries: list[tuple[str, Decimal, str]]) -> str:
    """One statement page naming ``account`` with entries (disbursement id, amount, D/RD)."""
    day = datetime.now(UTC).strftime("%y%m%d")
    opening = Decimal("1000000.00")
    closing = opening + sum((a if m == "RD" else -a for _, a, m in entries), Decimal(0))
    lines = [
        f":20:{reference}",
        f":25:{account}",
        ":28C:1/1",
        f":60F:C{day}{CURRENCY}{_m(opening)}",
    ]
    for disbursement_id, amount, mark in entries:
        lines.append(f":61:{day}{day[2:]}{mark}{_m(amount)}NTRF{disbursement_id}//{reference}")
        lines.append(f":86:/EREF/{disbursement_id}/REMI/Forged")
    lines += [f":62F:C{day}{CURRENCY}{_m(closing)}", "-"]
    return "\n".join(lines) + "\n"


def _m(amount: Decimal) -> str:
    return f"{amount:.2f}".replace(".", ",")


FRAMINGS: dict[str, Callable[[str], str]] = {
    "lf": lambda text: text,
    "cr_only": lambda text: text.replace("\n", "\r"),
    "swift_wrapper": lambda text: (
        "{1:F01FORGEDXXAXXX0000000000}{2:O940}{4:\r\n"
        + text.replace("\n", "\r\n").replace("-\r\n", "-}")
    ),
    "blank_in_tag": lambda text: text.replace(":25:", ": 25:"),
    "bom": lambda text: "\ufeff" + text,
}


def render_soak(r: dict[str, Any]) -> str:
    s = r.get("soak", {})
    lines = [
        f"# Soak {r.get('run_id')}: {s.get('minutes')} min, {s.get('disbursements')} disbursements",
        "",
        f"commit `{r.get('git_commit')}`; correct: **{r.get('correct')}**"
        + (f"; error: {r['error']}" if r.get("error") else ""),
        "",
        f"wall time {r.get('wall_s')} s; the last counter moved {s.get('last_counter_move_at_s')} s"
        f" after the chaos began; all settled seen {r.get('reconciled_after_s')} s after the last"
        f" ingest request; kills {s.get('kills_by_component')}; crashes by themselves"
        f" {s.get('crashes_by_component')}; recovery (restart -> next counter move) median"
        f" {s.get('recovered_after_s_median')} s, max {s.get('recovered_after_s_max')} s",
        "",
        "| database restart | at (s) | down (s) | /health/ready | recovered after (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d in s.get("database_restarts", []):
        lines.append(
            f"| {d.get('mode')} | {d.get('at_chaos_s')} | {d.get('down_s')} |"
            f" {d.get('api_ready_status')} | {d.get('recovered_after_s')} |"
        )
    lines += ["", "| hostile request | answers |", "| --- | --- |"]
    for kind, answers in s.get("hostile_by_kind", {}).items():
        lines.append(f"| {kind} | {', '.join(f'{a}: {c}' for a, c in sorted(answers.items()))} |")
    lines += ["", "| event | component | at (s) | down (s) | recovered after (s) |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for e in s.get("events", []):
        lines.append(
            f"| {e.get('kind')} | {e.get('component')} | {e.get('at_s')} | {e.get('down_s')} |"
            f" {e.get('recovered_after_s')} |"
        )
    if r.get("stuck"):
        lines += ["", f"stuck at the deadline: `{json.dumps(r['stuck'], default=str)}`"]
    lines += ["", render_markdown(r)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> SoakConfig:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    d = SoakConfig()
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--envelopes", type=int, default=d.envelopes)
    p.add_argument("--n", type=int, default=d.n, help="disbursements per envelope")
    p.add_argument("--batch", type=int, default=d.batch, help="disbursements per request")
    p.add_argument("--submit-fraction", type=float, default=d.submit_fraction)
    p.add_argument("--kill-min", type=float, default=d.kill_min, help="seconds between kills")
    p.add_argument("--kill-max", type=float, default=d.kill_max)
    p.add_argument("--db-restarts", type=int, default=d.db_restarts)
    p.add_argument("--hostile-rate", type=float, default=d.hostile_rate, help="requests/s")
    p.add_argument("--settle-timeout", type=float, default=d.settle_timeout)
    p.add_argument("--redis-db-bank", type=int, default=d.redis_db_bank)
    p.add_argument("--out", type=Path, default=d.out)
    a = p.parse_args(argv)
    return SoakConfig(
        minutes=a.minutes,
        seed=a.seed,
        envelopes=a.envelopes,
        n=a.n,
        batch=a.batch,
        submit_fraction=a.submit_fraction,
        kill_min=a.kill_min,
        kill_max=a.kill_max,
        db_restarts=a.db_restarts,
        hostile_rate=a.hostile_rate,
        settle_timeout=a.settle_timeout,
        redis_db_bank=a.redis_db_bank,
        out=a.out,
    )


def main(argv: list[str] | None = None) -> int:
    sc = parse_args(argv)

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    result = Soak(sc).run()
    print(render_soak(result))
    print(f"results: {result.get('soak_result')} and {result.get('run_dir')}")
    return 0 if result.get("correct") else 1


if __name__ == "__main__":
    sys.exit(main())
