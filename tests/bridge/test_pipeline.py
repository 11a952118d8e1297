"""The pipeline end to end against a fake bank, on PostgreSQL and on the embedded SQLite:
exactly once under duplicates, crashes, timeouts and cancellations; counters equal rows."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from bridge_support import (
    FakeBank,
    counters_match_rows,
    disbursement_items,
    envelope_request,
    fake_context,
    mt940,
    states,
)
from g2p_bridge.api import views
from g2p_bridge.auth import Principal
from g2p_bridge.core import disbursements, envelopes, programs
from g2p_bridge.core.context import Context
from g2p_bridge.core.dispatch import send_bank_batch
from g2p_bridge.core.errors import BridgeError
from g2p_bridge.core.statements import process_statement, store_statement
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import (
    AccountStatement,
    BankBatch,
    Disbursement,
    EnvelopeStatus,
    ReconError,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload

ACCOUNT = "1000000001"


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it in the worker runs, no handler catches it."""


def setup_envelope(
    context: Context,
    count: int,
    envelope_id: str = "env-1",
    amount: str = "10.00",
    resolver: str = "inline",
) -> list[str]:
    total = Decimal(amount) * count
    with transaction(context.session_factory) as session:
        if session.get(programs.BenefitProgram, "PROG1") is None:
            programs.create_program(
                session,
                ProgramPayload(
                    program_mnemonic="PROG1",
                    sponsor_bank_code="EXAMPLE",
                    sponsor_bank_account_number=ACCOUNT,
                    sponsor_bank_account_currency="USD",
                    resolver=resolver,
                    id_mapper_resolution_required=resolver != "inline",
                ),
            )
        body = envelope_request(envelope_id, count=count, total=str(total))["message"]
        envelopes.create_envelope(session, EnvelopePayload(**body), "pbms-1", utcnow().date())
        items = [
            DisbursementPayload(**i) for i in disbursement_items(envelope_id, count, amount=amount)
        ]
        stored = disbursements.create_disbursements(session, items, 100_000)
    return [d.disbursement_id or "" for d in stored]


BANK = Principal("bank", "bank", bank_codes=frozenset({"EXAMPLE"}))


def upload(context: Context, text: str, uploader: Principal = BANK) -> str:
    with transaction(context.session_factory) as session:
        return store_statement(session, text.encode(), "s.mt940", uploader, 10**7).id


def statement_row(context: Context, statement_id: str) -> AccountStatement:
    with transaction(context.session_factory) as session:
        row = session.get(AccountStatement, statement_id)
        assert row is not None
        return row


def test_happy_path_pays_each_once_and_reconciles(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 120)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=60)
    assert sorted(bank.payments) == sorted(ids)
    assert bank.payment_calls == 3  # batches of 50
    assert bank.block_calls == 1
    assert states(session_factory, "env-1") == {"SHIPPED": 120}
    counters_match_rows(session_factory)

    reversed_ids = ids[:5]
    entries = [("D", i, Decimal("10.00"), f"/EREF/{i}/BENM//NAME/Person {i}") for i in ids]
    entries += [("RD", i, Decimal("10.00"), f"/EREF/{i}/RTRN/ACCOUNT_CLOSED") for i in reversed_ids]
    statement_id = upload(context, mt940(ACCOUNT, entries))
    assert runner.run_until_idle(timeout=60)
    row = statement_row(context, statement_id)
    assert row.state == "PROCESSED", row.error_reason
    assert (
        row.entries_total,
        row.entries_matched,
        row.entries_reversed,
        row.entries_unmatched,
    ) == (125, 120, 5, 0)
    assert row.balance_problems is None
    assert states(session_factory, "env-1") == {"RECONCILED": 115, "REVERSED": 5}
    with transaction(session_factory) as session:
        status = views.envelope_status(session, "env-1")
        (reversed_status,) = views.disbursement_statuses(session, [reversed_ids[0]])
    assert (
        status.number_of_disbursements_shipped,
        status.number_of_disbursements_reconciled,
        status.number_of_disbursements_reversed,
    ) == (120, 120, 5)
    assert reversed_status.state == "REVERSED"
    recon = reversed_status.disbursement_recon_records.disbursement_recon_payloads[0]
    assert recon.reversal_found and recon.reversal_reason == "ACCOUNT_CLOSED"
    assert recon.beneficiary_name_from_bank == f"Person {reversed_ids[0]}"
    counters_match_rows(session_factory)

    # The same statement again: refused at upload; processing the stored one again: nothing.
    with pytest.raises(BridgeError) as refused:
        upload(context, mt940(ACCOUNT, entries))
    assert refused.value.code == "DUPLICATE_STATEMENT"
    assert process_statement(context, statement_id) is False
    counters_match_rows(session_factory)


def _batches(context: Context) -> list[BankBatch]:
    with transaction(context.session_factory) as session:
        return list(session.scalars(select(BankBatch)))


def _plan(context: Context) -> None:
    """Runs producer ticks (and the funds step) but sends no payment batch."""
    from g2p_bridge.core.funds import secure_funds
    from g2p_bridge.core.mapper_resolution import resolve_mapper_batch
    from g2p_bridge.producers import find_due_work

    for _ in range(5):
        for work in find_due_work(context):
            if work.task == "resolve_mapper_batch":
                resolve_mapper_batch(context, work.key)
            elif work.task == "secure_funds":
                secure_funds(context, work.key)


def _time_passes(context: Context) -> None:
    """Leases and enqueue marks run out, as they do when a message was lost."""
    with transaction(context.session_factory) as session:
        session.execute(update(BankBatch).values(lease_until=utcnow(), next_attempt_at=utcnow()))


def test_same_task_delivered_twice_sends_once(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)
    assert send_bank_batch(context, batch.id) is True
    assert send_bank_batch(context, batch.id) is False
    assert bank.payment_calls == 1 and len(bank.payments) == 10
    counters_match_rows(session_factory)


def test_worker_killed_after_the_bank_paid_is_recovered_without_paying_twice(
    session_factory,
) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 10)
    _plan(context)
    (batch,) = _batches(context)

    real = bank.initiate_payment

    def pay_then_die(payments):  # type: ignore[no-untyped-def]
        real(payments)
        raise WorkerKilled

    bank.initiate_payment = pay_then_die  # type: ignore[method-assign]
    with pytest.raises(WorkerKilled):
        send_bank_batch(context, batch.id)
    bank.initiate_payment = real  # type: ignore[method-assign]
    assert states(session_factory, "env-1") == {"DISPATCHING": 10}
    # A duplicate message while the dead worker's lease runs finds the batch taken.
    assert send_bank_batch(context, batch.id) is False
    _time_passes(context)
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    assert states(session_factory, "env-1") == {"SHIPPED": 10}
    assert sorted(bank.payments) == sorted(ids)
    assert bank.payment_calls == 2  # re-sent once, de-duplicated by payment reference
    counters_match_rows(session_factory)


def test_bank_timeout_after_processing_is_retried_and_paid_once(session_factory) -> None:
    bank = FakeBank(timeout_after_processing=1)
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 10)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    assert states(session_factory, "env-1") == {"SHIPPED": 10}
    assert bank.payment_calls == 2 and sorted(bank.payments) == sorted(ids)
    (batch,) = _batches(context)
    assert batch.attempts == 2 and "1 of" not in (batch.bank_response or "")
    counters_match_rows(session_factory)


def test_statement_before_the_retry_counts_the_timed_out_batch_as_shipped(
    session_factory,
) -> None:
    """The bank paid but the bridge timed out; its statement arrives before the retry runs."""
    bank = FakeBank(timeout_after_processing=1)
    context = fake_context(session_factory, bank, retry_backoff_seconds=3600)
    ids = setup_envelope(context, 6)
    _plan(context)
    (batch,) = _batches(context)
    assert send_bank_batch(context, batch.id)  # the bank holds the payments; the answer is lost
    assert states(session_factory, "env-1") == {"DISPATCHING": 6}
    entries = [("D", i, Decimal("10.00"), f"/EREF/{i}") for i in ids]
    entries.append(("RD", ids[0], Decimal("10.00"), f"/EREF/{ids[0]}/RTRN/ACCOUNT_CLOSED"))
    statement_id = upload(context, mt940(ACCOUNT, entries))
    assert process_statement(context, statement_id)
    assert states(session_factory, "env-1") == {"RECONCILED": 5, "REVERSED": 1}
    with transaction(session_factory) as session:
        status = views.envelope_status(session, "env-1")
    assert status.number_of_disbursements_shipped == 6
    counters_match_rows(session_factory)

    _time_passes(context)  # the retry comes due: nothing left to send, nothing counted twice
    assert send_bank_batch(context, batch.id)
    assert bank.payment_calls == 1 and sorted(bank.payments) == sorted(ids)
    (batch,) = _batches(context)
    assert batch.state == "DONE"
    assert states(session_factory, "env-1") == {"RECONCILED": 5, "REVERSED": 1}
    counters_match_rows(session_factory)


def test_statements_apply_in_upload_order_whichever_message_comes_first(
    session_factory,
) -> None:
    """The reversal's statement reaches a worker before the debit's: the debit is applied
    first anyway, so no false 'reversal without remittance' error."""
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 4)
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    debits = upload(
        context, mt940(ACCOUNT, [("D", i, Decimal("10.00"), f"/EREF/{i}") for i in ids], number=1)
    )
    reversal = upload(
        context,
        mt940(
            ACCOUNT,
            [("RD", ids[0], Decimal("10.00"), f"/EREF/{ids[0]}/RTRN/ACCOUNT_CLOSED")],
            number=2,
            opening=Decimal("1000000.00") - Decimal("40.00"),
        ),
    )
    assert process_statement(context, reversal)
    assert statement_row(context, debits).state == "PROCESSED"
    row = statement_row(context, reversal)
    assert row.state == "PROCESSED" and (row.entries_reversed, row.entries_unmatched) == (1, 0)
    assert process_statement(context, debits) is False
    with transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(ReconError)) == 0
    assert states(session_factory, "env-1") == {"RECONCILED": 3, "REVERSED": 1}
    counters_match_rows(session_factory)


def test_a_statement_that_keeps_failing_is_parked_and_stops_holding_back_later_ones(
    session_factory, monkeypatch
) -> None:
    from g2p_bridge.core import statements

    bank = FakeBank()
    context = fake_context(session_factory, bank, max_attempts=3)
    ids = setup_envelope(context, 2)
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    poison = upload(context, mt940(ACCOUNT, [("D", ids[0], Decimal("10.00"), "p")], number=1))
    later = upload(
        context,
        mt940(
            ACCOUNT,
            [("D", ids[1], Decimal("10.00"), "l")],
            number=2,
            opening=Decimal("1000000.00") - Decimal("10.00"),
        ),
    )
    real = statements._reconcile
    failure: list[Exception] = [RuntimeError("a time limit, not the statement's fault")]

    def reconcile(context, session, statement_id):  # type: ignore[no-untyped-def]
        if statement_id == poison:
            raise failure[0]
        real(context, session, statement_id)

    monkeypatch.setattr(statements, "_reconcile", reconcile)
    for _ in range(5):  # not counted: retried for as long as it lasts
        with pytest.raises(RuntimeError):
            process_statement(context, later)
    assert statement_row(context, poison).state == "PENDING"
    failure[0] = TypeError("a defect meeting this statement's content")
    for _ in range(3):  # each try of the later statement first retries the older one
        with pytest.raises(TypeError):
            process_statement(context, later)
    row = statement_row(context, poison)
    assert row.state == "ERROR" and "gave up after 3 attempts" in (row.error_reason or "")
    assert process_statement(context, later)
    assert statement_row(context, later).state == "PROCESSED"
    assert states(session_factory, "env-1") == {"SHIPPED": 1, "RECONCILED": 1}
    counters_match_rows(session_factory)


@pytest.mark.postgres
def test_a_statement_waits_for_a_dispatch_failing_the_same_payment(
    session_factory, database_url
) -> None:
    """The bank refused a batch it had in fact paid: dispatch marks the disbursement FAILED
    while a statement holding its debit is being applied. The statement reads the row only once
    the dispatch committed, so it takes the failure back out of the counters."""
    if not database_url.startswith("postgresql"):
        pytest.skip("two writers at once need PostgreSQL")
    from g2p_bridge.core.envelopes import bump_counters

    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 2)
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    with transaction(session_factory) as session:  # as if still waiting for the bank's answer
        session.execute(update(Disbursement).values(state="BATCHED"))
        session.execute(update(BankBatch).values(state="RUNNING"))
    statement_id = upload(
        context, mt940(ACCOUNT, [("D", i, Decimal("10.00"), f"/EREF/{i}") for i in ids])
    )
    dispatch = session_factory()
    dispatch.execute(  # the dispatch's transaction: the row is locked until it commits
        update(Disbursement)
        .where(Disbursement.id == ids[0])
        .values(state="FAILED", state_reason="bank refused the batch")
    )
    done: list[bool] = []
    worker = threading.Thread(target=lambda: done.append(process_statement(context, statement_id)))
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive()  # waiting for the row, not reading the stale DISPATCHING
    bump_counters(dispatch, "env-1", failed_count=1)
    dispatch.commit()
    dispatch.close()
    worker.join(timeout=30)
    assert done == [True]
    assert states(session_factory, "env-1") == {"RECONCILED": 2}
    counters_match_rows(session_factory)


def test_bank_down_beyond_retries_is_parked_visibly(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank, max_attempts=2)
    setup_envelope(context, 5)
    _plan(context)
    _time_passes(context)
    bank.fail_next = 10
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    (batch,) = _batches(context)
    assert batch.state == "FAILED" and "connection refused" in (batch.last_error or "")
    assert states(session_factory, "env-1") == {"DISPATCHING": 5}
    assert bank.payments == {}
    counters_match_rows(session_factory)


def test_bank_refusal_fails_the_disbursements(session_factory) -> None:
    bank = FakeBank(reject_payments=True)
    context = fake_context(session_factory, bank)
    setup_envelope(context, 5)
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    assert states(session_factory, "env-1") == {"FAILED": 5}
    with transaction(session_factory) as session:
        assert session.get(EnvelopeStatus, "env-1").failed_count == 5  # type: ignore[union-attr]
    counters_match_rows(session_factory)


def test_insufficient_funds_waits_and_sends_nothing(session_factory) -> None:
    bank = FakeBank(balance=Decimal("1.00"))
    context = fake_context(session_factory, bank, max_attempts=2)
    setup_envelope(context, 5)
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    with transaction(session_factory) as session:
        status = session.get(EnvelopeStatus, "env-1")
        assert status is not None
        assert status.funds_available_state == "FUNDS_NOT_AVAILABLE"
        assert status.funds_available_attempts == 2  # parked after the last attempt
    assert bank.payments == {} and bank.block_calls == 0
    assert states(session_factory, "env-1") == {"RESOLVED": 5}


def test_cancellation_before_and_after_dispatch(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 10)
    _plan(context)
    with transaction(session_factory) as session:  # batched but not sent: still cancellable
        disbursements.cancel_disbursements(
            session, [DisbursementPayload(disbursement_id=ids[0])], 100
        )
    (batch,) = _batches(context)
    send_bank_batch(context, batch.id)
    assert ids[0] not in bank.payments and len(bank.payments) == 9
    with pytest.raises(BridgeError) as late, transaction(session_factory) as session:
        disbursements.cancel_disbursements(
            session, [DisbursementPayload(disbursement_id=ids[1])], 100
        )
    assert late.value.item_errors == {"0": ["DISBURSEMENT_ALREADY_DISPATCHED"]}
    with pytest.raises(BridgeError) as envelope_late, transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    assert envelope_late.value.code == "ENVELOPE_ALREADY_DISPATCHED"
    assert states(session_factory, "env-1") == {"CANCELLED": 1, "SHIPPED": 9}
    counters_match_rows(session_factory)


def test_cancelled_envelope_is_never_paid(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 10)
    _plan(context)
    with transaction(session_factory) as session:
        envelopes.cancel_envelope(session, "env-1")
    _time_passes(context)
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    assert bank.payments == {}
    assert states(session_factory, "env-1") == {"CANCELLED": 10}
    counters_match_rows(session_factory)


def test_two_workers_racing_on_one_batch_send_it_once(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 20)
    _plan(context)
    (batch,) = _batches(context)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(send_bank_batch(context, batch.id))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert bank.payment_calls == 1 and len(bank.payments) == 20
    counters_match_rows(session_factory)


def test_unresolvable_beneficiaries_fail_with_a_reason(session_factory, tmp_path) -> None:
    from g2p_bridge.connectors.mappers.local import load_mapping_csv

    bank = FakeBank()
    context = fake_context(session_factory, bank)
    csv = tmp_path / "map.csv"
    csv.write_text(
        "beneficiary_id,financial_address\nben-0,account:111@OTHERBANK.B1\n"
        "ben-1,mobile:0711000000@MPESA\nben-2,nonsense\n"
    )
    with transaction(session_factory) as session:
        assert load_mapping_csv(session, csv) == 3
    setup_envelope(context, 4, resolver="table")
    assert EmbeddedRunner(context).run_until_idle(timeout=30)
    assert states(session_factory, "env-1") == {"SHIPPED": 2, "UNRESOLVED": 2}
    with transaction(session_factory) as session:
        statuses = views.disbursement_statuses(session, ["d-env-1-000002", "d-env-1-000003"])
    assert "matches no known format" in (statuses[0].state_reason or "")
    assert "not in the mapping table" in (statuses[1].state_reason or "")
    paid = {p.payment_reference: p for p in bank.payments.values()}
    assert paid["d-env-1-000001"].beneficiary_phone == "0711000000"
    assert paid["d-env-1-000001"].beneficiary_mobile_wallet_provider == "MPESA"
    assert paid["d-env-1-000000"].beneficiary_bank_code == "OTHERBANK"
    counters_match_rows(session_factory)


def test_statement_problems_become_errors_and_alarms(session_factory) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 5)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    entries = [
        ("D", ids[0], Decimal("10.00"), "ok"),
        ("D", ids[0], Decimal("10.00"), "duplicate"),
        ("D", "no-such-id", Decimal("10.00"), "unknown"),
        ("D", ids[1], Decimal("9.99"), "wrong amount"),
        ("RD", ids[2], Decimal("10.00"), "/RTRN/ACCOUNT_DORMANT"),
        ("C", "deposit", Decimal("500.00"), "top-up"),
    ]
    first = upload(context, mt940(ACCOUNT, entries, number=1, balanced=False))
    third = upload(context, mt940(ACCOUNT, [("D", ids[3], Decimal("10.00"), "x")], number=3))
    assert runner.run_until_idle(timeout=30)
    row = statement_row(context, first)
    assert row.state == "PROCESSED"
    assert (row.entries_total, row.entries_matched, row.entries_unmatched) == (6, 1, 4)
    assert "difference" in (row.balance_problems or "")
    with transaction(session_factory) as session:
        codes = sorted(
            e.error_code
            for e in session.scalars(select(ReconError).where(ReconError.statement_id == first))
        )
    assert codes == [
        "AMOUNT_MISMATCH",
        "DUPLICATE_DISBURSEMENT",
        "INVALID_DISBURSEMENT_ID",
        "INVALID_REVERSAL",
    ]
    assert "missing: 2" in (statement_row(context, third).sequence_gaps or "")
    assert states(session_factory, "env-1") == {"RECONCILED": 2, "SHIPPED": 3}
    counters_match_rows(session_factory)
    # Asking for the id the bank named but we never had shows what the statement said of it.
    with transaction(session_factory) as session:
        (unknown,) = views.disbursement_statuses(session, ["no-such-id"])
    assert unknown.state == "UNKNOWN"
    assert unknown.disbursement_recon_records is not None
    (record,) = unknown.disbursement_recon_records.disbursement_error_recon_payloads or []
    assert record.error_reason == "INVALID_DISBURSEMENT_ID"
    assert record.statement_id == first


def test_a_bank_dialect_reconciles_like_the_plain_layout(session_factory) -> None:
    """SWIFT blocks, a bank's header line, CR-only line ends, :NS: and an expected entry: the
    money read is the same, so the reconciliation is the same."""
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 2)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    plain = mt940(ACCOUNT, [("D", i, Decimal("10.00"), f"/EREF/{i}/NAME/P {i}") for i in ids])
    lines = plain.removesuffix("-\n").splitlines()
    day = lines[3][6:12]  # the :60F: date
    body = [*lines[:6], ":NS:22Kontoinhaber", *lines[6:-1]]
    body += [f":61:{day}EC99,00NTRFNONREF", lines[-1]]
    text = "EXPORT 940 BANKXXXX\r{1:F01BANKXXXX0000000000}{2:O940}{4:\r" + "\r".join(body)
    statement_id = upload(context, text + "\r-}{5:{CHK:1}}\r")
    assert runner.run_until_idle(timeout=30)
    row = statement_row(context, statement_id)
    assert row.state == "PROCESSED", row.error_reason
    assert (row.entries_matched, row.entries_unmatched, row.balance_problems) == (2, 0, None)
    assert states(session_factory, "env-1") == {"RECONCILED": 2}
    counters_match_rows(session_factory)


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        (
            mt940("999", [("D", "x", Decimal("1.00"), "n")]),
            "INVALID_ACCOUNT_NUMBER",
            "no benefit program is paid from",
        ),
        (
            ":20:X\n:25:1000000001\n:28C:1\n:60F:C261125USD10,00\n:61:garbage\n",
            "STATEMENT_UNPARSEABLE",
            "MT940",
        ),
        ("hello, this is not a statement", "STATEMENT_UNPARSEABLE", "no MT940 statement"),
        ("{1:F01BANK}\n", "STATEMENT_UNPARSEABLE", "ends inside the SWIFT message"),
    ],
)
def test_unusable_statement_is_refused_at_upload_with_nothing_stored(
    session_factory, text, code, reason
) -> None:
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 2)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    good = mt940(ACCOUNT, [("D", ids[0], Decimal("10.00"), "n")])
    with pytest.raises(BridgeError) as refused:
        upload(context, text + "\n" + good if "garbage" in text else text)
    assert refused.value.code == code and reason in refused.value.message
    with transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(AccountStatement)) == 0
    assert states(session_factory, "env-1") == {"SHIPPED": 2}
    counters_match_rows(session_factory)


def test_inline_addresses_are_resolved_at_ingest(session_factory) -> None:
    """Given the parser, ingest takes inline addresses apart itself: no mapper batch, no
    RESOLVING rewrite; an unparseable address fails at once, with its reason, and is counted."""
    from g2p_bridge.connectors.mappers.base import AddressParser
    from g2p_bridge.models import MapperBatch, ResolvedAddress

    bank = FakeBank()
    context = fake_context(session_factory, bank)
    setup_envelope(context, 1)  # the program; this envelope's one row goes the mapper's way
    with transaction(session_factory) as session:
        body = envelope_request("env-2", count=3, total="30.00")["message"]
        envelopes.create_envelope(session, EnvelopePayload(**body), "pbms-1", utcnow().date())
        items = [DisbursementPayload(**i) for i in disbursement_items("env-2", 3, amount="10.00")]
        items[2] = items[2].model_copy(update={"financial_address": "not an address"})
        stored = disbursements.create_disbursements(
            session, items, 100, AddressParser(context.settings)
        )
    assert [d.state for d in stored] == ["RESOLVED", "RESOLVED", "UNRESOLVED"]
    assert stored[2].state_reason
    assert states(session_factory, "env-2") == {"RESOLVED": 2, "UNRESOLVED": 1}
    with transaction(session_factory) as session:
        addresses = session.scalars(
            select(ResolvedAddress).where(
                ResolvedAddress.disbursement_id.in_([d.disbursement_id for d in stored])
            )
        ).all()
        status = session.get(EnvelopeStatus, "env-2")
        assert status is not None and status.failed_count == 1
    assert {(a.bank_account_number, a.bank_code) for a in addresses} == {
        ("ACC00000000", "OTHERBANK"),
        ("ACC00000001", "OTHERBANK"),
    }
    counters_match_rows(session_factory)

    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert states(session_factory, "env-2") == {"SHIPPED": 2, "UNRESOLVED": 1}
    assert states(session_factory, "env-1") == {"SHIPPED": 1}
    with transaction(session_factory) as session:
        mapped = session.scalars(select(MapperBatch.envelope_id)).all()
    assert mapped == ["env-1"]
    assert len(bank.payments) == 3
    counters_match_rows(session_factory)


def test_a_started_batch_is_dispatching_and_cannot_be_cancelled(session_factory) -> None:
    """Starting a batch rewrites no disbursement row: its rows are answered DISPATCHING from the
    batch's state, and a cancellation arriving while the bank is called is refused."""
    bank = FakeBank()
    context = fake_context(session_factory, bank)
    ids = setup_envelope(context, 4)
    _plan(context)
    (batch,) = _batches(context)
    seen: dict[str, object] = {}
    real = bank.initiate_payment

    def cancel_while_sending(payments):  # type: ignore[no-untyped-def]
        seen["states"] = states(session_factory, "env-1")
        with transaction(session_factory) as session:
            stored = session.scalars(
                select(Disbursement.state).where(Disbursement.envelope_id == "env-1")
            ).all()
            seen["stored"] = sorted(set(stored))
            try:
                disbursements.cancel_disbursements(
                    session, [DisbursementPayload(disbursement_id=ids[0])], 100
                )
            except BridgeError as exc:
                seen["refused"] = exc.item_errors
        return real(payments)

    bank.initiate_payment = cancel_while_sending  # type: ignore[method-assign]
    assert send_bank_batch(context, batch.id) is True
    assert seen == {
        "states": {"DISPATCHING": 4},
        "stored": ["BATCHED"],
        "refused": {"0": ["DISBURSEMENT_ALREADY_DISPATCHED"]},
    }
    assert sorted(bank.payments) == sorted(ids)
    assert states(session_factory, "env-1") == {"SHIPPED": 4}
    counters_match_rows(session_factory)
