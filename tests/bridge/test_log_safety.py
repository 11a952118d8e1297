"""Logs as an attacker meets them: a value a client chose cannot forge a log line or recolour a
terminal (control characters escaped by the formatters), and a database error cannot put the
personal data its statement carried into the log (parameters hidden by the engines, what the
server quotes masked). Both hold for every process: API, Celery worker and beat, Example Bank."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from g2p_bridge.db import bulk_insert, make_engine, make_session_factory, transaction
from g2p_bridge.models import BeneficiaryAddress, ResolvedAddress
from g2p_bridge.observability import (
    JsonFormatter,
    TextFormatter,
    escape_control,
    log_handler,
    mask_text,
    route_celery_logging,
    setup_logging,
    task_id_var,
)

# What a PBMS can put in a mnemonic, an id or a narrative, to make the log say something else.
FORGERIES = [
    "PROG1\n:61:2611251125D100,00NTRFd-1//NONREF\n:86:paid",
    "PROG1\r\n2026-11-25 10:00:00,000 INFO g2p_bridge.api [-] FAKE LOG LINE",
    "PROG1\rFAKE LOG LINE",
    "PROG1\x1b[2K\x1b[1GFAKE LOG LINE",  # ANSI: erase the line, back to its start
    "PROG1\u2028FAKE LOG LINE",
    "PROG1\u2029FAKE LOG LINE",
    "PROG1\x85FAKE LOG LINE",  # NEL (C1)
    "PROG1\x0bFAKE\x0cLOG\x1cLINE\x1d\x1e",  # line breaks to str.splitlines
    "PROG1\x00FAKE",
    "PROG1\u202eENIL GOL EKAF",  # right-to-left override
    "PROG1\ud800FAKE",  # a lone surrogate: not encodable, logging would print its own error
]


def _emit(fmt: str, log: Any) -> str:
    """Runs ``log(logger)`` through the app's handler in ``fmt``; returns what was written."""
    stream = io.StringIO()
    logger = logging.getLogger(f"g2p_bridge.test_log_safety.{fmt}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = log_handler(fmt, stream)
    logger.addHandler(handler)
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def _one_line(output: str) -> str:
    # str.splitlines breaks at every separator a reader or a log shipper might: \r, \x0b, \x0c,
    # \x1c-\x1e, \x85, \u2028, \u2029 besides \n.
    lines = output.splitlines()
    assert len(lines) == 1, lines
    assert output.endswith("\n") and output.count("\n") == 1, repr(output)
    assert "\x1b" not in output and "\x00" not in output
    output.encode("utf-8")  # no lone surrogate left
    return lines[0]


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("forgery", FORGERIES, ids=range(len(FORGERIES)))
def test_a_forged_line_in_an_argument_stays_one_line(fmt: str, forgery: str) -> None:
    output = _emit(fmt, lambda log: log.info("program %s configured", forgery))
    line = _one_line(output)
    # Masked as ever (the forged date is a long digit run), and otherwise whole.
    expected = mask_text(f"program {forgery} configured")
    if fmt == "json":
        assert json.loads(line)["message"] == expected
    else:
        assert line.endswith(escape_control(expected))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_forged_line_in_the_message_itself_stays_one_line(fmt: str) -> None:
    _one_line(_emit(fmt, lambda log: log.warning(FORGERIES[1])))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_exception_and_stack_text_stay_on_the_record_s_line(fmt: str) -> None:
    def log(logger: logging.Logger) -> None:
        try:
            raise ValueError("bad narrative\r\nFAKE LOG LINE")
        except ValueError:
            logger.exception("step failed", stack_info=True)

    line = _one_line(_emit(fmt, log))
    if fmt == "json":
        entry = json.loads(line)
        assert "Traceback" in entry["exception"] and "\r\nFAKE LOG LINE" in entry["exception"]
        assert "Stack (most recent call last)" in entry["stack"]
    else:
        assert "Traceback (most recent call last):\\n" in line
        assert "bad narrative\\r\\nFAKE LOG LINE" in line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_correlation_and_extra_fields_are_escaped(fmt: str) -> None:
    # A task id holds the key of its row: an envelope id a PBMS chose.
    token = task_id_var.set("dispatch:env-1\nFAKE LOG LINE")
    try:
        line = _one_line(_emit(fmt, lambda log: log.info("batch sent")))
    finally:
        task_id_var.reset(token)
    if fmt == "text":
        assert "[dispatch:env-1\\nFAKE LOG LINE]" in line
    # Extra fields that a format string names are escaped as well.
    formatter = TextFormatter("%(message)s %(envelope)s")
    record = logging.LogRecord("g2p", logging.INFO, __file__, 1, "x", None, None)
    record.envelope = "env\nFAKE"
    assert formatter.format(record) == "x env\\nFAKE"


def test_escape_control_names_each_character_visibly() -> None:
    assert escape_control("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape_control("\x1b[31m") == "\\x1b[31m"
    assert escape_control("\x7f\x85\u2028\u2029\u202e") == "\\x7f\\x85\\u2028\\u2029\\u202e"
    assert escape_control("Amina Jüma — ok ✓") == "Amina Jüma — ok ✓"  # printable text stays


def test_setup_logging_installs_the_escaping_formatter_on_the_root() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        setup_logging("INFO", "text", stream)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, TextFormatter)
        # What uvicorn logs for a request whose percent-decoded path holds a line break.
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/x\nFAKE LOG LINE", "1.1", 404
        )
        setup_logging("INFO", "json", stream)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    _one_line(stream.getvalue())


# --- the servers hand their records to the app's handler ------------------------------------


def test_the_bridge_api_runs_uvicorn_without_its_own_logging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """uvicorn's own handlers write an unhandled exception's traceback (a database error with
    its parameters) and the access line unmasked and over many lines."""
    from g2p_bridge import cli
    from g2p_bridge.settings import Settings

    url = f"sqlite:///{tmp_path / 'b.db'}"
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda *_a, **kw: calls.append(kw))
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        # One process (embedded), and --workers N (each process builds its app from the env).
        for settings, argv in (
            (Settings(database_url=url), ["api"]),
            (Settings(database_url=url, broker_url="memory://"), ["api", "--workers", "2"]),
        ):
            monkeypatch.setattr(cli, "get_settings", lambda s=settings: s)
            result = CliRunner().invoke(cli.main, argv)
            assert result.exit_code == 0, result.output
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert len(calls) == 2
    assert all("log_config" in call and call["log_config"] is None for call in calls), calls


def test_the_example_bank_api_logs_through_the_same_handler(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from example_bank import cli

    monkeypatch.setenv("EXAMPLE_BANK_DATABASE_URL", f"sqlite:///{tmp_path / 'bank.db'}")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda *_a, **kw: calls.append(kw))
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        result = CliRunner().invoke(cli.main, ["api"])
        assert result.exit_code == 0, result.output
        (handler,) = root.handlers
        assert isinstance(handler.formatter, TextFormatter)
        stream = io.StringIO()
        handler.setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("example_bank.processing").error(
            "payment to %s failed", "holder_name=Amina Juma\nFAKE LOG LINE"
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert calls and calls[0]["log_config"] is None
    line = _one_line(stream.getvalue())
    assert "Amina" not in line


def test_celery_workers_log_through_the_app_s_handler() -> None:
    """A Celery worker otherwise installs its own root handler, unmasked and multi-line."""
    from celery import Celery, signals
    from celery.app.log import Logging

    app = Celery("log-safety", broker="memory://", set_as_current=False)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, list(signals.setup_logging.receivers))
    # Celery configures logging once per process; another test's worker may have done it.
    was_setup = Logging._setup
    Logging._setup = False
    try:
        route_celery_logging("text")
        app.log.setup(loglevel=logging.INFO)  # what the worker does at start
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, TextFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        signals.setup_logging.receivers[:] = saved[2]
        Logging._setup = was_setup


# --- database errors --------------------------------------------------------------------------

NAME = "Amina Wanjiru"
ACCOUNT = "7730041"  # seven digits: below the long-number rule, so only the fixes hide it
ADDRESS = f"account:{ACCOUNT}@NORTHBANK.BR01"
MOBILE = "0711555"


def _resolved(disbursement_id: str, **overrides: object) -> dict[str, object]:
    return {
        "disbursement_id": disbursement_id,
        "answered_address": ADDRESS,
        "address_type": "BANK_ACCOUNT",
        "bank_account_number": ACCOUNT,
        "bank_code": "NORTHBANK",
        "branch_code": "BR01",
        "mobile_number": MOBILE,
        "mobile_wallet_provider": NAME,
        "email_address": None,
        "email_wallet_provider": None,
        **overrides,
    }


def _failures(database_url: str) -> list[DBAPIError]:
    """Real errors from the app's engine, each carrying a financial address in its statement."""
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    errors: list[DBAPIError] = []
    attempts = [
        # A duplicate beneficiary (IntegrityError: the key is quoted back by PostgreSQL).
        lambda s: s.execute(
            insert(BeneficiaryAddress),
            [
                {"beneficiary_id": NAME, "financial_address": ADDRESS},
                {"beneficiary_id": NAME, "financial_address": f"mobile:{MOBILE}@MPESA"},
            ],
        ),
        # No such disbursement (a foreign key; on PostgreSQL the row is quoted back).
        lambda s: s.execute(insert(ResolvedAddress), [_resolved("d-1"), _resolved("d-2")]),
        # A missing NOT NULL value: "Failing row contains (...)" on PostgreSQL.
        lambda s: s.execute(insert(ResolvedAddress), [_resolved("d-3", address_type=None)]),
        # Longer than its column (a DataError on PostgreSQL; SQLite does not check lengths).
        lambda s: s.execute(
            insert(BeneficiaryAddress),
            [{"beneficiary_id": "NID-9", "financial_address": ADDRESS + "X" * 300}],
        ),
        # The same through COPY: PostgreSQL quotes the column's value in the error's CONTEXT.
        lambda s: bulk_insert(
            s,
            BeneficiaryAddress,
            [{"beneficiary_id": f"{NAME} {MOBILE}", "financial_address": ADDRESS + "X" * 300}],
        ),
    ]
    try:
        for attempt in attempts:
            try:
                with transaction(factory) as session:
                    attempt(session)
            except DBAPIError as exc:
                errors.append(exc)
    finally:
        engine.dispose()
    return errors


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_database_error_logged_by_the_app_shows_no_personal_data(
    database_url: str, fmt: str
) -> None:
    errors = _failures(database_url)
    assert len(errors) >= (5 if database_url.startswith("postgresql") else 3)
    for error in errors:

        def log(logger: logging.Logger, error: DBAPIError = error) -> None:
            try:
                raise error
            except DBAPIError as exc:
                logger.exception("step failed: %s", exc)

        output = _emit(fmt, log)
        _one_line(output)
        assert type(error).__name__ in output
        for secret in (ACCOUNT, MOBILE, NAME, "Amina", "NORTHBANK.BR01"):
            assert secret not in output, (secret, output)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("DETAIL:  Failing row contains (d-3, account:1@X, null, 0711555, Amina W).", "Amina"),
        ("DETAIL:  Key (beneficiary_id)=(Amina W) already exists.", "Amina"),
        ("DETAIL:  Key (lower(name))=(amina (w)) conflicts with existing key", "amina"),
        ('CONTEXT:  COPY beneficiary_addresses, line 1, column beneficiary_id: "Amina W"', "Amina"),
        ("[parameters: ('d-1', 'Amina W', '0711555')]\n(Background on this error at: x)", "0711"),
    ],
)
def test_what_a_database_quotes_back_is_masked(text: str, hidden: str) -> None:
    masked = mask_text(text)
    assert hidden not in masked, masked
    assert masked.split(":", 1)[0] == text.split(":", 1)[0]  # the kind of error stays readable


def test_engines_hide_statement_parameters(tmp_path: Path) -> None:
    from example_bank.db import make_engine as make_bank_engine

    for engine in (
        make_engine(f"sqlite:///{tmp_path / 'a.db'}"),
        make_bank_engine(f"sqlite:///{tmp_path / 'b.db'}"),
    ):
        assert engine.hide_parameters
        engine.dispose()
