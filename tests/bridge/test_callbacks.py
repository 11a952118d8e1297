"""Results pushed to the PBMS, on PostgreSQL and on the embedded SQLite: every result once
(by event id) in order per envelope, signed, whatever the receiver on 127.0.0.1 does (times
out, answers 500, drops the connection, is down and comes back) and whatever kills a worker."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bridge_support import FakeBank, disbursement_items, envelope_request, fake_context, mt940
from g2p_bridge.core import callbacks, disbursements, envelopes, programs
from g2p_bridge.core.context import Context
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import AuditEvent, CallbackEvent, CallbackStream, Disbursement
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import DisbursementState, WorkState
from g2p_bridge.pbms_receiver import ReceivingPBMS
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload
from g2p_bridge.signing import CallbackSigner, generate_private_pem, load_signer

ACCOUNT = "1000000001"


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it in the worker runs, no handler catches it."""


class FaultyPBMS(ReceivingPBMS):
    """Answers the first requests with the given faults, then normally."""

    def __init__(self, jwks: dict[str, Any], faults: list[str], port: int = 0) -> None:
        super().__init__(jwks, port)
        self.faults = list(faults)
        self.calls = 0

    def answer(self, body: bytes) -> str:
        with self.lock:
            self.calls += 1
            return self.faults.pop(0) if self.faults else "ok"


def _context(session_factory, tmp_path, **overrides: Any) -> Context:  # type: ignore[no-untyped-def]
    settings: dict[str, Any] = {
        "callback_signing_key_file": str(tmp_path / "callback-key.pem"),
        "callback_retry_backoff_seconds": 0,
        "callback_timeout_seconds": 2.0,
    }
    settings.update(overrides)
    return fake_context(session_factory, FakeBank(), **settings)


def _signer(context: Context) -> CallbackSigner:
    return load_signer(context.settings)


def _setup(context: Context, count: int, url: str | None, envelope_id: str = "env-1") -> list[str]:
    with transaction(context.session_factory) as session:
        if session.get(programs.BenefitProgram, "PROG1") is None:
            programs.create_program(
                session,
                ProgramPayload(
                    program_mnemonic="PROG1",
                    sponsor_bank_code="EXAMPLE",
                    sponsor_bank_account_number=ACCOUNT,
                    sponsor_bank_account_currency="USD",
                    resolver="inline",
                    id_mapper_resolution_required=False,
                ),
            )
            if url is not None:
                callbacks.set_callback_url(session, "PROG1", url, context.settings)
        total = Decimal("10.00") * count
        body = envelope_request(envelope_id, count=count, total=str(total))["message"]
        envelopes.create_envelope(session, EnvelopePayload(**body), "pbms-1", utcnow().date())
    ids: list[str] = []
    items = disbursement_items(envelope_id, count, amount="10.00")
    for start in range(0, count, 10_000):
        with transaction(context.session_factory) as session:
            chunk = [DisbursementPayload(**i) for i in items[start : start + 10_000]]
            stored = disbursements.create_disbursements(session, chunk, 100_000)
            ids += [d.disbursement_id or "" for d in stored]
    return ids


def _statement(context: Context, ids: list[str], reversed_ids: list[str]) -> None:
    from g2p_bridge.auth import Principal
    from g2p_bridge.core.statements import store_statement

    entries = [("D", i, Decimal("10.00"), f"/EREF/{i}/BENM//NAME/Person {i}") for i in ids]
    entries += [("RD", i, Decimal("10.00"), f"/EREF/{i}/RTRN/ACCOUNT_CLOSED") for i in reversed_ids]
    bank = Principal("bank", "bank", bank_codes=frozenset({"EXAMPLE"}))
    with transaction(context.session_factory) as session:
        store_statement(session, mt940(ACCOUNT, entries).encode(), "s.mt940", bank, 10**7)


def _events(context: Context, envelope_id: str = "env-1") -> list[CallbackEvent]:
    with transaction(context.session_factory) as session:
        return list(
            session.scalars(
                select(CallbackEvent)
                .where(CallbackEvent.envelope_id == envelope_id)
                .order_by(CallbackEvent.sequence)
            )
        )


def _stream(context: Context, envelope_id: str = "env-1") -> CallbackStream:
    with transaction(context.session_factory) as session:
        stream = session.get(CallbackStream, envelope_id)
        assert stream is not None
        return stream


def _state(context: Context, envelope_id: str = "env-1") -> str | None:
    with transaction(context.session_factory) as session:
        return session.scalar(select(CallbackStream.state).where(CallbackStream.id == envelope_id))


def _until(condition: Callable[[], bool], runner: EmbeddedRunner, seconds: float = 60) -> None:
    """Producer ticks until the condition holds; fails at the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        if runner.run_once() == 0:
            time.sleep(0.02)  # pacing idle ticks while a backoff runs out, not a condition


def _all_delivered(context: Context) -> Callable[[], bool]:
    def check() -> bool:
        events = _events(context)
        return bool(events) and all(e.delivered_at is not None for e in events)

    return check


def _leases_run_out(context: Context) -> None:
    """A dead worker's claim expires, as it would after lease_seconds."""
    with transaction(context.session_factory) as session:
        session.execute(
            update(CallbackStream).values(lease_until=utcnow(), next_attempt_at=utcnow())
        )


def _check_in_order(pbms: ReceivingPBMS, context: Context, envelope_id: str = "env-1") -> None:
    """The receiver saw sequence numbers 1..n, each new one only after the one before."""
    last = _stream(context, envelope_id).last_sequence
    assert pbms.received.sequences[envelope_id] == list(range(1, last + 1))
    # Arrivals (duplicates included) never run ahead of the next undelivered number.
    high = 0
    for message in pbms.received.requests:
        assert message["sequence"] <= high + 1
        high = max(high, message["sequence"])


@pytest.fixture
def receiver(session_factory, tmp_path) -> Iterator[tuple[Context, FaultyPBMS]]:  # type: ignore[no-untyped-def]
    context = _context(session_factory, tmp_path)
    with FaultyPBMS(_signer(context).jwks(), []) as pbms:
        yield context, pbms


def test_every_result_is_pushed_once_in_order_and_signed(session_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    context = _context(session_factory, tmp_path, callback_batch_size=40)
    with FaultyPBMS(_signer(context).jwks(), []) as pbms:
        ids = _setup(context, 120, pbms.url)
        runner = EmbeddedRunner(context)
        assert runner.run_until_idle(timeout=60)
        _statement(context, ids, ids[:5])
        _until(lambda: _stream(context).summary_written, runner)
        _until(lambda: "funds.released" in [e.event_type for e in _events(context)], runner)
        _until(_all_delivered(context), runner)
        _until(lambda: _stream(context).state == WorkState.DONE, runner)

    got = pbms.received
    assert got.bad_signatures == 0 and got.duplicates == 0
    kinds = [json.loads(b)["message"]["event_type"] for b in got.bodies.values()]
    assert kinds[0] == "funds.blocked"
    # The summary once, then the release of the block's rest: nothing here (all was paid).
    assert kinds[-2:] == ["envelope.settled", "funds.released"]
    assert kinds.count("envelope.settled") == 1 and kinds.count("funds.released") == 1
    # Callbacks of at most 40 results: bank batches of 50, 50 and 20 ship in 2 + 2 + 1, the
    # one statement's 120 remittances in 3.
    assert kinds.count("disbursements.shipped") == 5
    assert kinds.count("disbursements.reconciled") == 3
    assert kinds.count("disbursements.reversed") == 1
    assert sorted(got.results) == sorted(ids)
    for disbursement_id, statuses in got.results.items():
        expected = ["pdng", "succ", "rjct"] if disbursement_id in ids[:5] else ["pdng", "succ"]
        assert statuses == expected, disbursement_id
    _check_in_order(pbms, context)

    bodies = [json.loads(b) for b in got.bodies.values()]
    reversal = next(b for b in bodies if b["message"]["event_type"] == "disbursements.reversed")
    item = reversal["message"]["disbursements_status"][0]
    assert item["status_reason_code"] == "rjct.bank.reversed"
    assert item["reversal_reason"] == "ACCOUNT_CLOSED"
    assert item["amount"] == "10.00" and item["currency_code"] == "USD"
    assert reversal["header"]["action"] == "on-disburse"
    assert reversal["header"]["message_id"] == reversal["message"]["event_id"]
    summary = bodies[-2]["message"]["envelope_status"]
    assert bodies[-1]["message"]["envelope_status"]["released_amount"] == "0.00"
    assert summary["number_of_disbursements_paid"] == 115
    assert summary["number_of_disbursements_reversed"] == 5
    assert summary["total_amount_paid"] == "1150.00"
    assert summary["total_amount_reversed"] == "50.00"

    events = _events(context)
    assert all(e.delivered_at is not None for e in events)
    with transaction(context.session_factory) as session:
        delivered = session.scalar(
            select(func.count()).where(AuditEvent.action == "callback.delivered")
        )
    assert delivered == len(events)


@pytest.mark.parametrize("fault", ["500", "close", "hang"])
def test_a_failing_receiver_gets_everything_once_it_answers(  # type: ignore[no-untyped-def]
    session_factory, tmp_path, fault: str
) -> None:
    # "hang": the receiver answers only after the bridge's timeout (0.5 s) has given up on it.
    context = _context(session_factory, tmp_path, callback_timeout_seconds=0.5)
    with FaultyPBMS(_signer(context).jwks(), [fault] * 3) as pbms:
        ids = _setup(context, 30, pbms.url)
        runner = EmbeddedRunner(context)
        _until(_all_delivered(context), runner)
        _until(lambda: _stream(context).state == WorkState.DONE, runner)
        pbms.release()
    assert pbms.calls >= 4
    assert sorted(pbms.received.results) == sorted(ids)
    assert all(statuses == ["pdng"] for statuses in pbms.received.results.values())
    _check_in_order(pbms, context)
    first = _events(context)[0]
    assert first.attempts == 4 and first.last_error is None
    with transaction(context.session_factory) as session:
        failures = session.scalar(
            select(func.count()).where(AuditEvent.action == "callback.failed")
        )
    assert failures == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_receiver_down_for_the_whole_pipeline_gets_everything_when_back(  # type: ignore[no-untyped-def]
    session_factory, tmp_path
) -> None:
    port = _free_port()
    context = _context(
        session_factory,
        tmp_path,
        callback_retry_backoff_seconds=0.05,
        callback_retry_backoff_max_seconds=0.2,
        callback_max_attempts=10_000,
    )
    ids = _setup(context, 60, f"http://127.0.0.1:{port}/callbacks")
    runner = EmbeddedRunner(context)
    runner.run_until_idle(timeout=60)
    _statement(context, ids, [])
    _until(lambda: _stream(context).summary_written, runner)
    _until(lambda: _stream(context).attempts >= 3, runner)
    assert all(e.delivered_at is None for e in _events(context))
    with FaultyPBMS(_signer(context).jwks(), [], port=port) as pbms:
        _until(_all_delivered(context), runner)
    assert sorted(pbms.received.results) == sorted(ids)
    assert pbms.received.duplicates == 0
    _check_in_order(pbms, context)


def test_a_stream_that_keeps_failing_is_parked_and_an_operator_resends_it(  # type: ignore[no-untyped-def]
    session_factory, tmp_path
) -> None:
    from g2p_bridge.observability import DisbursementStates

    port = _free_port()
    context = _context(session_factory, tmp_path, callback_max_attempts=2)
    ids = _setup(context, 20, f"http://127.0.0.1:{port}/callbacks")
    runner = EmbeddedRunner(context)
    _until(lambda: _state(context) == WorkState.FAILED, runner)
    stream = _stream(context)
    assert stream.delivered_sequence == 0 and stream.last_error
    with transaction(context.session_factory) as session:
        assert [s.id for s in callbacks.parked_streams(session)] == ["env-1"]
    gauges = {
        sample.labels["state"]: sample.value
        for family in DisbursementStates(context.session_factory, 0).collect()
        if family.name == "g2p_bridge_callback_streams"
        for sample in family.samples
    }
    assert gauges["FAILED"] == 1
    # Parked stays parked: the producers leave it to the operator.
    assert runner.run_until_idle(timeout=30)
    assert _stream(context).state == WorkState.FAILED

    with FaultyPBMS(_signer(context).jwks(), [], port=port) as pbms:
        with transaction(context.session_factory) as session:
            callbacks.resend(session, "env-1")
        _until(_all_delivered(context), runner)
        assert sorted(pbms.received.results) == sorted(ids)
        # A re-send of what was delivered, from sequence 1: the same event ids again.
        with transaction(context.session_factory) as session:
            callbacks.resend(session, "env-1", from_sequence=1)
        before = len(pbms.received.requests)
        _until(lambda: len(pbms.received.requests) >= before * 2, runner)
    assert pbms.received.duplicates == before
    with transaction(context.session_factory) as session:
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"callback.failed", "callback.resend", "callback.delivered"} <= actions


def test_a_worker_killed_around_the_post_loses_nothing(receiver) -> None:  # type: ignore[no-untyped-def]
    context, pbms = receiver
    ids = _setup(context, 30, pbms.url)
    # The state changes commit, their outbox rows with them, and every sender dies: before its
    # POST the first time, after the PBMS got it (but before recording that) the second.
    sender = context.callbacks()
    real = sender.post
    deaths = ["before", "after"]

    def post_then_die(url: str, body: bytes, event_id: str, sequence: int) -> str | None:
        if deaths:
            when = deaths.pop(0)
            if when == "after":
                real(url, body, event_id, sequence)
            raise WorkerKilled
        return real(url, body, event_id, sequence)

    sender.post = post_then_die  # type: ignore[method-assign]
    runner = EmbeddedRunner(context)
    for _ in range(2):
        with pytest.raises(WorkerKilled):
            _until(lambda: False, runner, seconds=30)
        assert _stream(context).delivered_sequence == 0
        _leases_run_out(context)
    _until(_all_delivered(context), runner)
    assert sorted(pbms.received.results) == sorted(ids)
    # The one the PBMS had before the worker died came again: same id, same bytes.
    assert pbms.received.duplicates == 1
    first = pbms.received.requests[0]
    assert pbms.received.requests[1]["event_id"] == first["event_id"]
    _check_in_order(pbms, context)


def test_100000_results_arrive_in_batches_none_missing_none_twice(receiver) -> None:  # type: ignore[no-untyped-def]
    """Step level: 100,000 disbursements are marked reconciled in one transaction beside
    :func:`callbacks.record_results` (as a statement's step does), then delivered over HTTP by
    the real sender, one 500 on the way. The whole pipeline at this size is the bench's job."""
    context, pbms = receiver
    pbms.faults = ["ok"] * 37 + ["500"]
    ids = _setup(context, 100_000, pbms.url)
    with transaction(context.session_factory) as session:
        session.execute(update(Disbursement).values(state=DisbursementState.RECONCILED))
        queued = callbacks.record_results(
            session,
            context.settings,
            "env-1",
            callbacks.RECONCILED,
            Disbursement.state == DisbursementState.RECONCILED,
        )
    assert queued == 100
    # Only the delivery step: the runner would also block this envelope's funds.
    deadline = time.monotonic() + 300
    while not _all_delivered(context)():
        assert time.monotonic() < deadline
        callbacks.deliver_callbacks(context, "env-1")
    got = pbms.received
    assert len(got.bodies) == 100 and got.duplicates == 0
    sizes = [len(json.loads(b)["message"]["disbursements_status"]) for b in got.bodies.values()]
    assert sizes == [1000] * 100
    assert len(got.results) == 100_000 and set(got.results) == set(ids)
    assert all(statuses == ["succ"] for statuses in got.results.values())
    _check_in_order(pbms, context)


def test_no_callback_url_means_no_outbox(session_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    context = _context(session_factory, tmp_path)
    _setup(context, 10, None)
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert _events(context) == []


def test_callback_urls_are_checked(session_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    context = _context(session_factory, tmp_path)
    _setup(context, 1, None)
    refused = [
        "ftp://example.org/x",
        "http://example.org/callbacks",  # plain http off this machine
        "https://user:secret@example.org/x",
        "https://exa mple.org/x",
        "https:///nohost",
        "https://example.org/" + "a" * 2048,
    ]
    from g2p_bridge.core.errors import BridgeError

    for url in refused:
        with pytest.raises(BridgeError) as error, transaction(context.session_factory) as session:
            callbacks.set_callback_url(session, "PROG1", url, context.settings)
        assert error.value.code == "INVALID_CALLBACK_URL", url
    with transaction(context.session_factory) as session:
        subscription = callbacks.set_callback_url(
            session, "PROG1", "https://pbms.example.org/cb?token=abc", context.settings
        )
        assert subscription is not None
    assert callbacks.display_url(subscription.url) == "https://pbms.example.org/cb?..."


def test_signatures_verify_against_the_published_key_only() -> None:
    from cryptography.hazmat.primitives import serialization

    from g2p_bridge.signing import verify

    key = serialization.load_pem_private_key(generate_private_pem().encode(), password=None)
    other = serialization.load_pem_private_key(generate_private_pem().encode(), password=None)
    signer = CallbackSigner(key)  # type: ignore[arg-type]
    body = b'{"header":{},"message":{}}'
    signature = signer.sign(body)
    _protected, payload, _ = signature.split(".")
    assert payload == ""  # detached
    assert verify(signature, body, signer.jwks())
    assert not verify(signature, body + b" ", signer.jwks())
    assert not verify(signature, body, CallbackSigner(other).jwks())  # type: ignore[arg-type]


def test_a_statement_reports_the_rows_its_own_pass_recorded(session_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Re-processing a statement reports nothing it had already recorded (its entries are
    duplicates now); a later statement reports its own remittances and the reversal of an
    earlier statement's remittance, each once."""
    from g2p_bridge.core.statements import reprocess_statement
    from g2p_bridge.models import AccountStatement

    context = _context(session_factory, tmp_path)
    with FaultyPBMS(_signer(context).jwks(), []) as pbms:
        ids = _setup(context, 6, pbms.url)
        runner = EmbeddedRunner(context)
        assert runner.run_until_idle(timeout=60)

        def results() -> list[tuple[str, list[str]]]:
            return [
                (
                    e.event_type,
                    [i["reference_id"] for i in json.loads(e.message)["disbursements_status"]],
                )
                for e in _events(context)
                if e.event_type in (callbacks.RECONCILED, callbacks.REVERSED)
            ]

        _statement(context, ids[:3], [])
        assert runner.run_until_idle(timeout=60)
        assert results() == [(callbacks.RECONCILED, ids[:3])]
        with transaction(context.session_factory) as session:
            (first,) = session.scalars(select(AccountStatement.id))
            reprocess_statement(session, first, "test")
        assert runner.run_until_idle(timeout=60)
        assert results() == [(callbacks.RECONCILED, ids[:3])]
        _statement(context, ids[3:], ids[:1])
        assert runner.run_until_idle(timeout=60)
        assert results() == [
            (callbacks.RECONCILED, ids[:3]),
            (callbacks.RECONCILED, ids[3:]),
            (callbacks.REVERSED, ids[:1]),
        ]
