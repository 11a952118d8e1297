"""The callbacks for what the first cut did not report (cancellations, the release of the
unspent block, a refusal told once when it is final) and an operator's re-queue of a parked
release over the API and the CLI. On PostgreSQL and on the embedded SQLite."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from click.testing import CliRunner
from sqlalchemy import func, select
from test_pipeline import _plan, setup_envelope

from bridge_support import FakeBank, fake_context
from g2p_bridge import cli
from g2p_bridge.core import callbacks, disbursements, envelopes
from g2p_bridge.core.context import Context
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import AuditEvent, CallbackEvent, FundsRelease
from g2p_bridge.schemas import DisbursementPayload

# Nothing listens there: the outbox is what these tests read, deliveries just fail and retry.
URL = "http://127.0.0.1:9/on-disburse"


def _subscribe(context: Context) -> None:
    with transaction(context.session_factory) as session:
        callbacks.set_callback_url(session, "PROG1", URL, context.settings)


def _outbox(context: Context, envelope_id: str = "env-1") -> list[tuple[str, dict[str, Any]]]:
    with transaction(context.session_factory) as session:
        rows = session.execute(
            select(CallbackEvent.event_type, CallbackEvent.message)
            .where(CallbackEvent.envelope_id == envelope_id)
            .order_by(CallbackEvent.sequence)
        ).all()
    return [(kind, json.loads(message)) for kind, message in rows]


def _parked_release(session_factory, **settings: Any) -> tuple[Context, FakeBank]:  # type: ignore[no-untyped-def]
    # The deployment's own max_attempts (the API's and the CLI's settings): parked after it.
    bank = FakeBank()
    context = fake_context(session_factory, bank, **settings)
    attempts = context.settings.max_attempts
    bank.refuse_releases = attempts
    setup_envelope(context, 3)
    _subscribe(context)
    _plan(context)
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1", context.settings)
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    with transaction(session_factory) as session:
        row = session.get(FundsRelease, "env-1")
        assert row is not None and (row.state, row.attempts) == ("FAILED", attempts)
    assert "funds.released" not in [kind for kind, _ in _outbox(context)]
    return context, bank


def test_cancellations_are_pushed_as_rjct_then_one_summary_then_the_release(  # type: ignore[no-untyped-def]
    session_factory,
) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank, callback_batch_size=5)
    ids = setup_envelope(context, 10)
    _subscribe(context)
    _plan(context)  # funds blocked, nothing sent
    with transaction(session_factory) as session:
        items = [DisbursementPayload(disbursement_id=i) for i in ids[:7]]
        disbursements.cancel_disbursements(session, items, 100, context.settings)
    with transaction(session_factory) as session:
        # Without settings, as a rejected approval cancels: the service's own are used.
        envelopes.cancel_envelope(session, "env-1")
    assert EmbeddedRunner(context).run_until_idle(timeout=60)

    outbox = _outbox(context)
    kinds = [kind for kind, _ in outbox]
    # 7 cancelled in callbacks of at most 5, then the other 3 with the envelope; one summary;
    # the release last.
    assert kinds == [
        "funds.blocked",
        "disbursements.cancelled",
        "disbursements.cancelled",
        "disbursements.cancelled",
        "envelope.settled",
        "funds.released",
    ]
    cancelled = [m["disbursements_status"] for k, m in outbox if k == "disbursements.cancelled"]
    assert [len(c) for c in cancelled] == [5, 2, 3]
    assert sorted(i["reference_id"] for c in cancelled for i in c) == sorted(ids)
    first = cancelled[0][0]
    assert (first["status"], first["status_reason_code"]) == ("rjct", "rjct.disbursement.cancelled")
    assert first["status_reason_message"] == "cancelled by the program"
    assert cancelled[2][0]["status_reason_message"] == "envelope cancelled"
    assert first["amount"] == "10.00" and first["currency_code"] == "USD"
    summary = outbox[4][1]["envelope_status"]
    assert summary["number_of_disbursements_cancelled"] == 10
    assert summary["number_of_disbursements_received"] == 0
    released = outbox[5][1]["envelope_status"]
    ((block, amount, reference),) = bank.releases.values()
    assert released["released_amount"] == "100.00" == f"{amount:.2f}"
    assert released["release_reference"] == reference
    assert released["funds_block_reference"] == block
    assert released["currency_code"] == "USD"

    # More ticks: no second summary, no second release event.
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    assert [kind for kind, _ in _outbox(context)] == kinds


def test_a_cancellation_of_an_unsubscribed_program_queues_nothing(session_factory) -> None:  # type: ignore[no-untyped-def]
    context = fake_context(session_factory, FakeBank())
    ids = setup_envelope(context, 3)
    with transaction(session_factory) as session:
        items = [DisbursementPayload(disbursement_id=ids[0])]
        disbursements.cancel_disbursements(session, items, 100, context.settings)
        envelopes.cancel_envelope(session, "env-1", context.settings)
    with transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(CallbackEvent)) == 0


def test_funds_refused_is_pushed_once_when_the_last_attempt_is_refused(session_factory) -> None:  # type: ignore[no-untyped-def]
    bank = FakeBank(balance=Decimal("1.00"))
    context = fake_context(session_factory, bank, max_attempts=3, retry_backoff_seconds=0)
    setup_envelope(context, 3)
    _subscribe(context)
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    with transaction(session_factory) as session:
        checks = session.scalar(select(func.count()).where(AuditEvent.action == "funds.check"))
    assert checks == 3  # refused three times ...
    outbox = _outbox(context)
    assert [kind for kind, _ in outbox] == ["funds.refused"]  # ... told once
    detail = outbox[0][1]["envelope_status"]
    assert detail["attempts"] == 3
    assert detail["funds_available_state"] == "FUNDS_NOT_AVAILABLE"
    assert detail["reason"]


def test_an_administrator_requeues_a_parked_release_over_the_api(  # type: ignore[no-untyped-def]
    session_factory, client, token
) -> None:
    context, bank = _parked_release(session_factory)
    url = "/envelopes/env-1/release/retry"
    pbms = token("pbms-1", "pbms", programs=["PROG1"])
    refused = client.http.post(url, headers={"authorization": f"Bearer {pbms}"})
    assert refused.status_code == 403
    assert client.http.post("/envelopes/a%27b/release/retry").status_code == 422
    assert client.http.post("/envelopes/env-none/release/retry").status_code == 404

    ok = client.http.post(url)
    assert ok.status_code == 200, ok.text
    assert ok.json()["funds_release_state"] == "PENDING"
    assert ("funds_release_requeued",) in client.woken
    # Not parked any more: a second re-queue is refused, nothing changes.
    again = client.http.post(url)
    assert again.status_code == 409
    assert again.json()["header"]["meta"]["error_code"] == "RELEASE_NOT_PARKED"

    # The bank answers now (it refused every attempt): released once, told once.
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert [a for _, a, _ in bank.releases.values()] == [Decimal("30.00")]
    assert [kind for kind, _ in _outbox(context)].count("funds.released") == 1
    with transaction(session_factory) as session:
        audited = session.execute(
            select(AuditEvent.actor, AuditEvent.detail).where(
                AuditEvent.action == "funds_release.requeue"
            )
        ).all()
    assert len(audited) == 1 and audited[0][0] == "pbms-1"
    assert '"FAILED"' in (audited[0][1] or "")


def test_the_cli_requeues_a_parked_release(session_factory) -> None:  # type: ignore[no-untyped-def]
    context, bank = _parked_release(session_factory)
    engine = session_factory.kw["bind"]
    env = {"G2P_BRIDGE_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    cli.get_settings.cache_clear()
    try:
        runner = CliRunner(env=env)
        unknown = runner.invoke(cli.main, ["releases", "retry", "env-none"])
        assert unknown.exit_code != 0 and "DISBURSEMENT_ENVELOPE_NOT_FOUND" in unknown.output
        result = runner.invoke(cli.main, ["releases", "retry", "env-1"])
        assert result.exit_code == 0, result.output
        assert "funds release PENDING" in result.output
        again = runner.invoke(cli.main, ["releases", "retry", "env-1"])
        assert again.exit_code != 0 and "RELEASE_NOT_PARKED" in again.output
    finally:
        cli.get_settings.cache_clear()
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert len(bank.releases) == 1
    with transaction(session_factory) as session:
        actor = session.scalar(
            select(AuditEvent.actor).where(AuditEvent.action == "funds_release.requeue")
        )
    assert actor is not None and actor.startswith("cli:")
