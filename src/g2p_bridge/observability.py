"""Correlation ids, structured logs with personal data masked, and the Prometheus metrics.

Request and task ids live in context variables, so every log line and audit event written while
handling a request or running a step carries them without being passed around."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

request_id_var: ContextVar[str | None] = ContextVar("g2p_request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("g2p_task_id", default=None)
actor_var: ContextVar[str | None] = ContextVar("g2p_actor", default=None)
role_var: ContextVar[str | None] = ContextVar("g2p_role", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(given: str | None = None) -> str:
    """The client's id when it is a sane token (so it can be logged safely), else a new one."""
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


# --- metrics ---------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "g2p_bridge_http_requests_total",
    "HTTP requests by route and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "g2p_bridge_http_request_duration_seconds", "HTTP request duration", ["method", "route"]
)
BANK_CALL_SECONDS = Histogram(
    "g2p_bridge_bank_call_duration_seconds",
    "Calls to sponsor banks, by bank and operation",
    ["bank", "operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BANK_CALL_ERRORS = Counter(
    "g2p_bridge_bank_call_errors_total",
    "Calls to sponsor banks that raised, by bank, operation and error",
    ["bank", "operation", "error"],
)
TASK_SECONDS = Histogram(
    "g2p_bridge_task_duration_seconds",
    "Pipeline steps, by step and outcome (done, skipped, error)",
    ["task", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
TASK_RETRIES = Counter(
    "g2p_bridge_task_retries_total",
    "Work rows put back for a later attempt, and parked as failed after the last one",
    ["work", "result"],
)
STATEMENTS_PROCESSED = Counter(
    "g2p_bridge_statements_processed_total", "Statements processed, by outcome", ["outcome"]
)
CALLBACK_DELIVERIES = Counter(
    "g2p_bridge_callback_deliveries_total",
    "Callbacks POSTed to a PBMS, by outcome (delivered, retry, parked)",
    ["outcome"],
)
CALLBACK_RESULTS_DELIVERED = Counter(
    "g2p_bridge_callback_results_delivered_total",
    "Disbursement results in callbacks a PBMS acknowledged",
)
AUTH_REFUSALS = Counter(
    "g2p_bridge_auth_refusals_total",
    "Requests refused by authentication or authorization",
    ["status"],
)


def instrument_step(name: str, step: Callable[[Any, str], bool]) -> Callable[[Any, str], bool]:
    """Times a pipeline step and gives its log lines and audit events a task correlation id."""

    def run(context: Any, key: str) -> bool:
        token = task_id_var.set(f"{name}:{key}")
        started = time.perf_counter()
        outcome = "error"
        try:
            done = step(context, key)
            outcome = "done" if done else "skipped"
            return done
        finally:
            TASK_SECONDS.labels(name, outcome).observe(time.perf_counter() - started)
            task_id_var.reset(token)

    run.__name__ = getattr(step, "__name__", name)
    run.__doc__ = step.__doc__
    return run


class InstrumentedBank:
    """Wraps a bank connector: latency and errors of each call; everything else passes through."""

    _CALLS = frozenset(
        {"check_funds", "block_funds", "release_funds", "initiate_payment", "initiate_batch"}
    )

    def __init__(self, bank_code: str, connector: Any) -> None:
        self._bank_code = bank_code
        self._connector = connector

    @property
    def wrapped(self) -> Any:
        return self._connector

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._connector, name)
        if name not in self._CALLS or not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            except Exception as exc:
                BANK_CALL_ERRORS.labels(self._bank_code, name, type(exc).__name__).inc()
                raise
            finally:
                BANK_CALL_SECONDS.labels(self._bank_code, name).observe(
                    time.perf_counter() - started
                )

        return call


class DisbursementStates(Collector):
    """Disbursements by state, counted with one GROUP BY when scraped, cached a few seconds."""

    def __init__(self, session_factory: sessionmaker[Session], cache_seconds: float) -> None:
        self._session_factory = session_factory
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._at = 0.0
        self._counts: dict[str, int] = {}
        self._streams: dict[str, int] = {}

    def _current(self) -> tuple[dict[str, int], dict[str, int]]:
        from g2p_bridge.core.states import breakdown
        from g2p_bridge.models import CallbackStream

        with self._lock:
            if time.monotonic() - self._at > self._cache_seconds:
                with self._session_factory() as session:
                    found = breakdown(session)
                    streams = session.execute(
                        select(CallbackStream.state, func.count()).group_by(CallbackStream.state)
                    ).all()
                self._counts = {state: count for state, (count, _) in found.items()}
                self._streams = {str(state): int(count) for state, count in streams}
                self._at = time.monotonic()
            return dict(self._counts), dict(self._streams)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, streams = self._current()
        gauge = GaugeMetricFamily(
            "g2p_bridge_disbursements", "Disbursements by state", labels=["state"]
        )
        for state, count in sorted(counts.items()):
            gauge.add_metric([state], count)
        yield gauge
        # FAILED: parked after the last retry, waiting for an operator's re-send.
        callbacks = GaugeMetricFamily(
            "g2p_bridge_callback_streams",
            "Envelopes' callback streams by state (FAILED is parked)",
            labels=["state"],
        )
        for state in ("PENDING", "RUNNING", "DONE", "FAILED"):
            callbacks.add_metric([state], streams.get(state, 0))
        yield callbacks


def render_metrics(extra: Collector | None = None) -> tuple[bytes, str]:
    """The process's metrics plus this app's database gauges, in the text exposition format."""
    body = generate_latest()
    if extra is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(extra)
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


class MetricsServer:
    """``GET /metrics`` on a port of its own, in a thread of the API process; anything else is
    404. Kept apart from the API's port so that routing the API (an Ingress) cannot publish it.
    ``SO_REUSEPORT`` lets each process of ``api --workers N`` bind it, as they share the API's
    port; a scrape then reads one process's counters, as it did on the API's port."""

    def __init__(self, host: str, port: int, extra: Collector | None = None) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self._answer(404, b'{"detail": "not found"}', "application/json")
                    return
                body, content_type = render_metrics(extra)
                self._answer(200, body, content_type)

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # Scrapes every few seconds are not worth a log line each.
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_port = True

        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="g2p-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- logs ------------------------------------------------------------------------------------

# Fields whose values are personal data wherever they appear as key=value or "key": "value".
PERSONAL_FIELDS = (
    "beneficiary_name",
    "beneficiary_name_from_bank",
    "holder_name",
    "account_number",
    "bank_account_number",
    "sponsor_bank_account_number",
    "financial_address",
    "answered_address",
    "mobile_number",
    "phone",
    "email",
    "email_address",
)
_FIELDS = "|".join(PERSONAL_FIELDS)
_FIELD_VALUE = re.compile(
    r"""(?P<key>["']?\b(?:""" + _FIELDS + r""")\b["']?\s*[:=]\s*)(?P<quote>["']?)"""
    r"""(?P<value>[^"',;}\s][^"',;}]*?)(?P=quote)(?=[\s,;}]|$)""",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_ADDRESS = re.compile(r"\b(account|mobile|email):[^@\s]+(@[^\s\"',;]+)?", re.IGNORECASE)
# Runs of 8+ digits (spaces, dashes or a leading + allowed): account and phone numbers.
_LONG_NUMBER = re.compile(r"(?<![\w.])\+?\d(?:[ -]?\d){7,}(?![\w.])")


# What PostgreSQL itself puts in an error's DETAIL and CONTEXT: the offending row or key values,
# whatever the column (names, financial addresses). SQLAlchemy's hide_parameters cannot hide
# these, because they are part of the server's message, not the statement's parameters.
_PG_FAILING_ROW = re.compile(r"(Failing row contains ).*")
# "Key (disbursement_id)=(d-1) already exists", "... conflicts with existing key (...)=(...)":
# the column list stays (it says which constraint), everything after it on the line goes.
_PG_KEY_VALUE = re.compile(r"(\bKey \([^=\n]*?\)=\().*")
_PG_COPY_VALUE = re.compile(r"(\bCOPY [\w.\"]+, line \d+(?:, column [\w\"]+)?: ).*")
# A statement's bound parameters as SQLAlchemy prints them (on one line) when an engine does not
# hide them: one built outside make_engine (a migration, a script, a test).
_SQL_PARAMETERS = re.compile(r"(\[parameters: ).*")


def _keep_tail(value: str) -> str:
    return "***" + value[-2:] if len(value) > 6 else "***"


def mask_text(text: str) -> str:
    """Masks personal data in a log message: known fields' values, e-mail addresses,
    financial addresses, long digit runs (account and phone numbers), and the values a database
    error quotes (its parameters, a failing row, a key)."""
    text = _SQL_PARAMETERS.sub(r"\1***]", text)
    text = _PG_FAILING_ROW.sub(r"\1(***)", text)
    text = _PG_KEY_VALUE.sub(r"\1***)", text)
    text = _PG_COPY_VALUE.sub(r"\1***", text)
    text = _FIELD_VALUE.sub(
        lambda m: f"{m.group('key')}{m.group('quote')}***{m.group('quote')}", text
    )
    text = _ADDRESS.sub(lambda m: f"{m.group(1)}:***", text)
    text = _EMAIL.sub("***@***", text)
    return _LONG_NUMBER.sub(lambda m: _keep_tail(re.sub(r"\D", "", m.group(0))), text)


def mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {
            k: "***" if str(k).lower() in PERSONAL_FIELDS else mask_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(mask_value(v) for v in value)
    return value


class MaskingFilter(logging.Filter):
    """Renders the message with its arguments, then masks it; exceptions' and stacks' text too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what we have rather than nothing
            message = str(record.msg)
        record.msg = mask_text(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


class CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.task_id = task_id_var.get()
        record.actor = actor_var.get()
        record.correlation = request_id_var.get() or task_id_var.get() or "-"
        return True


# Everything that can end a line or rewrite a terminal: C0 and C1 controls (CR, LF, VT, FF, NEL,
# ESC of ANSI sequences...), DEL, the Unicode line and paragraph separators, the bidirectional
# overrides that make a line read differently from what it holds, and lone surrogates (a stream
# cannot encode them, and logging would print its own multi-line error instead of the record).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\n``, ``\\x1b``,
    ``\\u2028``), so that whatever a client put in a value, it stays on its own log line and
    cannot forge another one or recolour the terminal."""
    return _CONTROL.sub(_escape_one, text)


class TextFormatter(logging.Formatter):
    """The text log: one record is one line, whatever its message, arguments, extra fields,
    exception or stack hold. The whole rendered line is escaped, not only the message, because
    every part of it can carry client data (a task id holds an envelope id; a traceback quotes
    values); a traceback's own line breaks become ``\\n`` too."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_control(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line. ``json.dumps`` escapes every control character and (with
    ``ensure_ascii``) every non-ASCII one, U+2028/2029 and lone surrogates included, so no field
    can break the line; nothing is written around it raw."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "task_id", "actor"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=True)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation)s] %(message)s"


def log_handler(fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A handler that adds correlation ids, masks personal data, and writes one line per record
    in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(CorrelationFilter())
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    return handler


def setup_logging(
    level: int | str = "INFO", fmt: str = "text", stream: IO[str] | None = None
) -> None:
    """Configures the root logger: correlation ids, masking, and text or JSON lines. Servers
    (uvicorn, Celery) must be started without their own logging configuration, so that their
    records (an unhandled exception's traceback among them) reach this handler too."""
    handler = log_handler(fmt, stream)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


def route_celery_logging(fmt: str = "text") -> None:
    """Has a Celery worker started in this process log through :func:`setup_logging`. Celery
    otherwise installs its own root handler, which neither masks nor keeps a record on one line
    (a failed task's traceback, quoting the database error, went out so); it leaves logging alone
    when a receiver of its ``setup_logging`` signal configures it instead."""
    from celery import signals

    def configure(loglevel: int | str | None = None, **_: Any) -> None:
        setup_logging(loglevel or "INFO", fmt)

    signals.setup_logging.connect(configure, weak=False)
