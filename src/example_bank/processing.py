"""Asynchronous side of the bank: paying accepted batches, writing and delivering statements.

Plain functions taking a :class:`~sqlalchemy.orm.Session`; callers own the transaction
(the embedded thread and the Celery tasks both do "open session, call, commit").

Processing is set-based: a batch is read in id-ordered chunks, ledger rows are written
with multi-row INSERTs, and balance/block/payment updates are grouped statements. Account
and block balances are applied once per batch, in sorted key order, so concurrent workers
on PostgreSQL cannot deadlock on the hot clearing and program accounts.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session

from example_bank.models import (
    BATCH_FAILED,
    CLEARING,
    CREDIT,
    CUSTOMER,
    DEBIT,
    DELIVERED,
    DELIVERY_FAILED,
    PAID,
    PAYMENT_FAILED,
    PENDING,
    PROCESSED,
    PROCESSING,
    RECEIVED,
    REVERSAL_CREDIT,
    REVERSAL_DEBIT,
    SUSPENSE,
    Account,
    FundBlock,
    LedgerEntry,
    Payment,
    PaymentBatch,
    Statement,
    accounts_table,
    fund_blocks_table,
    ledger_table,
    payments_table,
    utcnow,
)
from example_bank.mt940_writer import (
    StatementEntry,
    StatementPage,
    render_statement,
    six_line_details,
    structured_details,
)
from example_bank.services import ZERO, bulk_insert, insert_ignore, matching
from example_bank.settings import BankSettings

log = logging.getLogger(__name__)

FAILURE_REASONS = ("ACCOUNT_CLOSED", "ACCOUNT_NOT_FOUND", "ACCOUNT_DORMANT", "BENEFICIARY_DECEASED")
NOT_FOUND = "ACCOUNT_NOT_FOUND"
CURRENCY_MISMATCH = "ACCOUNT_CURRENCY_MISMATCH"
RETURN_NARRATIVE = "Payment returned"
# Line 1 of the six-line layout when the payment has no narrative: an empty tag line is read as
# ":86:" with the text below it, which would move every later line up by one.
PAYMENT_NARRATIVE = "Payment"

_accounts = accounts_table
_blocks = fund_blocks_table
_payments = payments_table
_ledger = ledger_table

# Core statements executed with a list of parameter sets (one executemany round trip).
_APPLY_ACCOUNT = (
    update(_accounts)
    .where(_accounts.c.account_number == bindparam("acc"))
    .values(
        book_balance=_accounts.c.book_balance + bindparam("book_delta"),
        blocked_amount=_accounts.c.blocked_amount - bindparam("unblocked"),
    )
)
_APPLY_BLOCK = (
    update(_blocks)
    .where(_blocks.c.block_reference == bindparam("ref"))
    .values(remaining=_blocks.c.remaining - bindparam("used"))
)
_FAIL_PAYMENT = (
    update(_payments)
    .where(_payments.c.id == bindparam("pid"))
    .values(state=PAYMENT_FAILED, failure_reason=bindparam("reason"), processed_at=bindparam("at"))
)


def simulated_failure(seed: int, payment_reference: str, failure_rate: float) -> str | None:
    """The downstream failure reason of a payment to another bank, or None if it succeeds.

    Derived from a hash of seed + reference, so the same seed fails the same payments
    in every run, on every machine and in any processing order.
    """
    if failure_rate <= 0:
        return None
    digest = hashlib.blake2b(f"{seed}:{payment_reference}".encode(), digest_size=8).digest()
    draw = int.from_bytes(digest[:6], "big") / float(1 << 48)
    if draw >= failure_rate:
        return None
    return FAILURE_REASONS[digest[6] % len(FAILURE_REASONS)]


def clearing_account_number(destination: str, currency: str) -> str:
    return f"CLEARING-{destination}-{currency}"


def suspense_account_number(bank_code: str, currency: str) -> str:
    return f"SUSPENSE-{bank_code}-{currency}"


def claim_next_batch(session: Session, lease_seconds: float = 300.0) -> int | None:
    """Mark the oldest unprocessed batch PROCESSING (with a lease) and return its id.

    A PROCESSING batch whose lease expired (its worker died after committing the claim)
    is claimable again. Callers normally process the batch in the same transaction, so
    on PostgreSQL the row lock from ``FOR UPDATE SKIP LOCKED`` keeps other workers away.
    """
    now = utcnow()
    claimable = or_(
        PaymentBatch.state == RECEIVED,
        and_(PaymentBatch.state == PROCESSING, PaymentBatch.lease_until < now),
    )
    values: dict[Any, Any] = {
        PaymentBatch.state: PROCESSING,
        PaymentBatch.attempts: PaymentBatch.attempts + 1,
        PaymentBatch.lease_until: now + timedelta(seconds=lease_seconds),
    }
    if session.get_bind().dialect.name == "postgresql":
        batch_id = session.scalar(
            select(PaymentBatch.id)
            .where(claimable)
            .order_by(PaymentBatch.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if batch_id is None:
            return None
        session.execute(
            update(PaymentBatch).where(PaymentBatch.id == batch_id).values(values),
            execution_options={"synchronize_session": False},
        )
        return batch_id
    # SQLite serialises writers, so a single UPDATE ... RETURNING is an atomic claim.
    oldest = select(PaymentBatch.id).where(claimable).order_by(PaymentBatch.id).limit(1)
    return session.scalar(
        update(PaymentBatch)
        .where(PaymentBatch.id.in_(oldest.scalar_subquery()))
        .values(values)
        .returning(PaymentBatch.id),
        execution_options={"synchronize_session": False},
    )


@dataclass
class BatchOutcome:
    batch_id: int
    processed: bool  # False: already processed (or unknown), nothing changed
    paid: int = 0
    failed: int = 0
    remitting_accounts: set[str] = field(default_factory=set)


_PAYMENT_COLUMNS = (
    Payment.id,
    Payment.payment_reference_number,
    Payment.remitting_account,
    Payment.remitting_account_currency,
    Payment.payment_amount,
    Payment.funds_blocked_reference_number,
    Payment.beneficiary_name,
    Payment.beneficiary_account,
    Payment.beneficiary_bank_code,
    Payment.beneficiary_mobile_wallet_provider,
    Payment.beneficiary_email_wallet_provider,
    Payment.narrative_1,
    Payment.narrative_2,
    Payment.narrative_3,
    Payment.narrative_4,
    Payment.narrative_5,
    Payment.narrative_6,
)


def process_batch(session: Session, batch_id: int, settings: BankSettings) -> BatchOutcome:
    """Pay every payment of a batch: debit, credit, and reverse the simulated failures.

    Idempotent: the batch state moves to PROCESSED with a compare-and-set at the start,
    so a second call (redelivered task, crash after commit) changes nothing; bank
    references derived from payment ids are unique as a second line of defence.
    """
    now = utcnow()
    cas = session.execute(
        update(PaymentBatch)
        .where(PaymentBatch.id == batch_id, PaymentBatch.state.in_([RECEIVED, PROCESSING]))
        .values(state=PROCESSED, processed_at=now, lease_until=None, last_error=None),
        execution_options={"synchronize_session": False},
    )
    if cas.rowcount != 1:  # type: ignore[attr-defined]
        return BatchOutcome(batch_id, processed=False)

    totals = _Totals()
    outcome = BatchOutcome(batch_id, processed=True)
    last_id = 0
    while True:
        rows = session.execute(
            select(*_PAYMENT_COLUMNS)
            .where(Payment.batch_id == batch_id, Payment.state == RECEIVED, Payment.id > last_id)
            .order_by(Payment.id)
            .limit(settings.processing_chunk_size)
        ).all()
        if not rows:
            break
        _process_chunk(session, batch_id, rows, settings, now, totals, outcome)
        last_id = rows[-1].id
    _apply_totals(session, totals)
    return outcome


@dataclass
class _Totals:
    """Balance movements of a whole batch, applied once at its end."""

    book: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    unblocked: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    block_used: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    internal_accounts: dict[str, dict[str, Any]] = field(default_factory=dict)


def _process_chunk(
    session: Session,
    batch_id: int,
    rows: Sequence[Any],
    settings: BankSettings,
    now: datetime,
    totals: _Totals,
    outcome: BatchOutcome,
) -> None:
    own_code = settings.bank_code.upper()
    six_lines = settings.mt940_narrative_layout == "openg2p"
    today = now.date()
    own_accounts = _own_beneficiary_accounts(session, rows, own_code)
    entries: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []

    for row in rows:
        ref: str = row.payment_reference_number
        amount: Decimal = row.payment_amount
        currency: str = row.remitting_account_currency
        reason: str | None
        if (row.beneficiary_bank_code or "").upper() == own_code:
            account_currency = own_accounts.get(row.beneficiary_account or "")
            if account_currency == currency:
                counterparty, reason = row.beneficiary_account, None
            else:
                # Unknown here: park the credit in suspense, then return it.
                counterparty = suspense_account_number(own_code, currency)
                reason = NOT_FOUND if account_currency is None else CURRENCY_MISMATCH
                _need_internal(totals, counterparty, SUSPENSE, currency, f"{own_code} suspense")
        else:
            destination = (
                row.beneficiary_bank_code
                or row.beneficiary_mobile_wallet_provider
                or row.beneficiary_email_wallet_provider
                or "UNKNOWN"
            ).upper()
            counterparty = clearing_account_number(destination, currency)
            _need_internal(totals, counterparty, CLEARING, currency, f"{destination} clearing")
            reason = simulated_failure(settings.seed, ref, settings.failure_rate)

        base = f"EB{row.id:012d}"  # 16 chars with the longest suffix: fits MT940 16x
        # narrative, program, cycle, beneficiary id (narrative_5/6 are the layout's empty line
        # and its return reason, so a payment's own are not written).
        payment_lines = (row.narrative_1, row.narrative_2, row.narrative_3, row.narrative_4)
        if six_lines:
            debit_details = credit_details = six_line_details(
                (payment_lines[0] or PAYMENT_NARRATIVE, *payment_lines[1:])
            )
        else:
            debit_details, credit_details = _subfield_details(row)
        remitter = row.remitting_account
        entries.append(_row(remitter, -amount, DEBIT, ref, base + "D", debit_details, today, now))
        entries.append(
            _row(counterparty, amount, CREDIT, ref, base + "C", credit_details, today, now)
        )
        totals.book[remitter] -= amount
        totals.book[counterparty] += amount
        totals.unblocked[remitter] += amount
        totals.block_used[row.funds_blocked_reference_number] += amount
        outcome.remitting_accounts.add(remitter)
        if reason is None:
            outcome.paid += 1
            continue
        # Downstream failure: the money comes back to the program account.
        outcome.failed += 1
        failures.append({"pid": row.id, "reason": reason, "at": now})
        if six_lines:
            return_details = six_line_details(
                (payment_lines[0] or RETURN_NARRATIVE, *payment_lines[1:], None, reason)
            )
        else:
            return_details = structured_details(
                [("EREF", ref), ("RTRN", reason), ("REMI", RETURN_NARRATIVE)]
            )
        back = _row(remitter, amount, REVERSAL_DEBIT, ref, base + "RD", return_details, today, now)
        back["return_reason"] = reason
        entries.append(back)
        undo = _row(
            counterparty, -amount, REVERSAL_CREDIT, ref, base + "RC", return_details, today, now
        )
        undo["return_reason"] = reason
        entries.append(undo)
        totals.book[remitter] += amount
        totals.book[counterparty] -= amount

    bulk_insert(session, _ledger, entries)
    if failures:
        session.execute(_FAIL_PAYMENT, failures)
    session.execute(
        update(_payments)
        .where(
            _payments.c.batch_id == batch_id,
            _payments.c.state == RECEIVED,
            _payments.c.id.between(rows[0].id, rows[-1].id),
        )
        .values(state=PAID, processed_at=now)
    )


def _subfield_details(row: Any) -> tuple[str, str]:
    """The /CODE/value layout of a payment's debit and of its credit."""
    ref = row.payment_reference_number
    debit = structured_details(
        [
            ("EREF", ref),
            ("BENM", ""),
            ("NAME", row.beneficiary_name),
            ("REMI", row.narrative_1),
            ("PROG", row.narrative_2),
            ("CYCL", row.narrative_3),
            # Codes the bridge's parser knows; narrative_4 is the beneficiary id.
            ("ULTB", row.narrative_4),
            ("PURP", row.narrative_5),
            ("INST", row.narrative_6),
        ]
    )
    return debit, structured_details([("EREF", ref), ("REMI", row.narrative_1)])


def _row(
    account: str,
    amount: Decimal,
    mark: str,
    payment_ref: str,
    bank_ref: str,
    details: str,
    on: date,
    now: datetime,
) -> dict[str, Any]:
    return {
        "account_number": account,
        "amount": amount,
        "mark": mark,
        "payment_reference": payment_ref,
        "bank_reference": bank_ref,
        "return_reason": None,
        "details": details,
        "value_date": on,
        "entry_date": on,
        "created_at": now,
    }


def _need_internal(
    totals: _Totals, number: str, account_type: str, currency: str, holder: str
) -> None:
    if number not in totals.internal_accounts:
        totals.internal_accounts[number] = {
            "account_number": number,
            "holder_name": holder,
            "currency": currency,
            "account_type": account_type,
            "book_balance": ZERO,
            "blocked_amount": ZERO,
        }


def _own_beneficiary_accounts(
    session: Session, rows: Sequence[Any], own_code: str
) -> dict[str, str]:
    """Customer accounts of this bank named as beneficiaries in ``rows``: number -> currency."""
    wanted = sorted(
        {
            r.beneficiary_account
            for r in rows
            if r.beneficiary_account and (r.beneficiary_bank_code or "").upper() == own_code
        }
    )
    found: dict[str, str] = {}
    for clause in matching(session, Account.account_number, wanted):
        stmt = select(Account.account_number, Account.currency).where(
            clause, Account.account_type == CUSTOMER
        )
        found.update((number, currency) for number, currency in session.execute(stmt))
    return found


def _apply_totals(session: Session, totals: _Totals) -> None:
    """Apply a batch's balance movements, locking rows in a fixed (sorted) order."""
    insert_ignore(
        session, _accounts, [totals.internal_accounts[k] for k in sorted(totals.internal_accounts)]
    )
    account_params = [
        {
            "acc": number,
            "book_delta": totals.book.get(number, ZERO),
            "unblocked": totals.unblocked.get(number, ZERO),
        }
        for number in sorted(set(totals.book) | set(totals.unblocked))
        if totals.book.get(number) or totals.unblocked.get(number)
    ]
    if account_params:
        session.execute(_APPLY_ACCOUNT, account_params)
    block_params = [
        {"ref": ref, "used": totals.block_used[ref]} for ref in sorted(totals.block_used)
    ]
    if block_params:
        session.execute(_APPLY_BLOCK, block_params)


def mark_batch_error(session: Session, batch_id: int, error: str, max_attempts: int) -> None:
    """Record why a batch raised; park it as FAILED once it has used up its attempts."""
    batch = session.get(PaymentBatch, batch_id)
    if batch is None or batch.state == PROCESSED:
        return
    batch.attempts += 1
    batch.last_error = error[:2000]
    batch.lease_until = None
    batch.state = BATCH_FAILED if batch.attempts >= max_attempts else RECEIVED


# --------------------------------------------------------------------------- statements


def write_statements(
    session: Session, account_number: str, settings: BankSettings, *, allow_empty: bool = False
) -> list[int]:
    """Write the next MT940 statement of an account from its not-yet-reported entries.

    Returns the ids of the statement pages written (empty list when there was nothing
    to report and ``allow_empty`` is false). Pages share the statement number and have
    increasing sequence numbers; each page's opening + entries = its closing, and the
    next page (or statement) opens with that closing.

    The account row is locked first: every transaction that books entries on an account
    also updates its balance, so while the lock is held no other entry of the account
    can commit, and the id range marked as reported is exactly what was written.
    """
    account = session.scalars(
        select(Account).where(Account.account_number == account_number).with_for_update()
    ).one_or_none()
    if account is None:
        raise LookupError(f"account {account_number} not found")
    unreported = and_(
        LedgerEntry.account_number == account_number, LedgerEntry.statement_id.is_(None)
    )
    count, max_id = session.execute(
        select(func.count(), func.max(LedgerEntry.id)).where(unreported)
    ).one()
    if count == 0 and not allow_empty:
        return []
    previous = session.execute(
        select(Statement.statement_number, Statement.closing_balance)
        .where(Statement.account_number == account_number)
        .order_by(Statement.statement_number.desc(), Statement.sequence_number.desc())
        .limit(1)
    ).first()
    number = previous[0] + 1 if previous else 1
    opening: Decimal = previous[1] if previous else ZERO
    page_size = settings.statement_max_entries
    pages = max(1, math.ceil(count / page_size))
    today = utcnow().date()
    written: list[int] = []
    last_id = 0
    for sequence in range(1, pages + 1):
        rows = (
            session.execute(
                select(
                    LedgerEntry.id,
                    LedgerEntry.amount,
                    LedgerEntry.mark,
                    LedgerEntry.payment_reference,
                    LedgerEntry.bank_reference,
                    LedgerEntry.details,
                    LedgerEntry.value_date,
                    LedgerEntry.entry_date,
                )
                .where(unreported, LedgerEntry.id > last_id, LedgerEntry.id <= max_id)
                .order_by(LedgerEntry.id)
                .limit(page_size)
            ).all()
            if count
            else []
        )
        entries = [
            StatementEntry(
                r.value_date,
                r.entry_date,
                r.mark,
                r.amount,
                r.payment_reference or "",
                r.bank_reference,
                r.details,
            )
            for r in rows
        ]
        closing = opening + sum((e.amount for e in entries), ZERO)
        statement = Statement(
            account_number=account_number,
            statement_number=number,
            sequence_number=sequence,
            is_last_page=sequence == pages,
            currency=account.currency,
            opening_balance=opening,
            closing_balance=closing,
            entry_count=len(entries),
            mt940="",
            delivery_state=PENDING,
            attempts=0,
            next_attempt_at=utcnow(),
        )
        session.add(statement)
        session.flush()
        statement.mt940 = render_statement(
            StatementPage(
                transaction_reference=f"EB{statement.id:014d}",
                account_number=account_number,
                statement_number=number,
                sequence_number=sequence,
                currency=account.currency,
                opening_balance=opening,
                closing_balance=closing,
                opening_date=today,
                closing_date=today,
                first_page=sequence == 1,
                last_page=sequence == pages,
            ),
            entries,
        )
        if rows:
            session.execute(
                update(_ledger)
                .where(
                    _ledger.c.account_number == account_number,
                    _ledger.c.statement_id.is_(None),
                    _ledger.c.id.between(rows[0].id, rows[-1].id),
                )
                .values(statement_id=statement.id)
            )
            last_id = rows[-1].id
        written.append(statement.id)
        opening = closing
    if opening != account.book_balance:
        log.error(
            "statement %s of %s closes at %s but the book balance is %s",
            number,
            account_number,
            opening,
            account.book_balance,
        )
    session.flush()
    return written


def statement_accounts_due(session: Session) -> list[str]:
    """Program accounts (those that ever blocked funds) with entries not yet reported.

    One indexed probe per program account (there are few): as one join the planner may hash
    every unreported entry of every account, and clearing and customer accounts are never
    reported, so that set only grows."""
    programs = session.scalars(
        select(FundBlock.account_number).distinct().order_by(FundBlock.account_number)
    ).all()
    return [
        account
        for account in programs
        if session.scalar(
            select(LedgerEntry.id)
            .where(LedgerEntry.account_number == account, LedgerEntry.statement_id.is_(None))
            .limit(1)
        )
        is not None
    ]


def write_due_statements(session: Session, settings: BankSettings) -> list[int]:
    """Write statements for every program account with unreported entries."""
    written: list[int] = []
    for account_number in statement_accounts_due(session):
        written.extend(write_statements(session, account_number, settings))
    return written


# --------------------------------------------------------------------------- delivery


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def statement_filename(account_number: str, number: int, sequence: int) -> str:
    return f"{account_number}-{number:05d}-{sequence:03d}.mt940"


def _post_statement(
    client: httpx.Client, settings: BankSettings, filename: str, text: str
) -> str | None:
    """POST one statement; None on success, else the error text."""
    headers = {}
    if settings.bridge_token is not None:
        headers["Authorization"] = f"Bearer {settings.bridge_token.get_secret_value()}"
    try:
        response = client.post(
            settings.bridge_statement_url,
            files={"statement_file": (filename, text.encode(), "text/plain")},
            headers=headers,
            timeout=settings.delivery_timeout_seconds,
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    # 409: the bridge already has this statement (an earlier attempt got through).
    if response.is_success or response.status_code == 409:
        return None
    return f"HTTP {response.status_code}: {response.text[:500]}"


def deliver_pending_statements(
    session_factory: Callable[[], Session],
    settings: BankSettings,
    http_client: httpx.Client,
    limit: int = 200,
) -> DeliveryReport:
    """Deliver due PENDING statements in order, one short transaction per step.

    No transaction is open during the HTTP call: a statement is first claimed by moving
    its ``next_attempt_at`` forward (a lease), then posted, then its outcome recorded.
    Statements of one account go out in order: after a failure (or a not-yet-due retry)
    the later statements of that account wait.
    """
    report = DeliveryReport()
    # Statements written while this delivery ran (by another worker child that found the
    # account's earlier statement in this one's hands, and so left) are this one's to send:
    # look again while the last look delivered something, rather than leave them to the sweep.
    for _ in range(DELIVERY_ROUNDS):
        delivered = report.delivered
        _deliver_round(session_factory, settings, http_client, limit, report)
        if report.delivered == delivered:
            break
    return report


# A bound on the rounds of one delivery call; the sweep goes on from where it stopped.
DELIVERY_ROUNDS = 20


def _deliver_round(
    session_factory: Callable[[], Session],
    settings: BankSettings,
    http_client: httpx.Client,
    limit: int,
    report: DeliveryReport,
) -> None:
    now = utcnow()
    with session_factory() as session, session.begin():
        candidates = session.execute(
            select(Statement.id, Statement.account_number, Statement.next_attempt_at)
            .where(Statement.delivery_state == PENDING)
            .order_by(Statement.id)
            .limit(limit)
        ).all()
    held_back: set[str] = set()
    lease = timedelta(seconds=settings.delivery_timeout_seconds + 30)
    for statement_id, account_number, due in candidates:
        if account_number in held_back:
            continue
        if due > now:
            held_back.add(account_number)
            continue
        with session_factory() as session, session.begin():
            claimed = session.execute(
                update(Statement)
                .where(
                    Statement.id == statement_id,
                    Statement.delivery_state == PENDING,
                    Statement.next_attempt_at <= now,
                )
                .values(next_attempt_at=now + lease),
                execution_options={"synchronize_session": False},
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                held_back.add(account_number)
                continue
            number, sequence, text, attempts = session.execute(
                select(
                    Statement.statement_number,
                    Statement.sequence_number,
                    Statement.mt940,
                    Statement.attempts,
                ).where(Statement.id == statement_id)
            ).one()
        error = _post_statement(
            http_client, settings, statement_filename(account_number, number, sequence), text
        )
        attempts += 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if error is None:
            values.update(delivery_state=DELIVERED, delivered_at=utcnow())
            report.delivered += 1
        else:
            held_back.add(account_number)
            report.errors.append(f"statement {statement_id}: {error}")
            if attempts >= settings.delivery_max_attempts:
                values["delivery_state"] = DELIVERY_FAILED
                report.failed += 1
                log.error("giving up delivering statement %s: %s", statement_id, error)
            else:
                backoff = min(settings.delivery_retry_seconds * 2 ** (attempts - 1), 300.0)
                values["next_attempt_at"] = utcnow() + timedelta(seconds=backoff)
                report.retried += 1
                log.warning("statement %s not delivered (retrying): %s", statement_id, error)
        with session_factory() as session, session.begin():
            session.execute(
                update(Statement).where(Statement.id == statement_id).values(values),
                execution_options={"synchronize_session": False},
            )


def has_due_work(session: Session) -> bool:
    """Whether batches, statements or deliveries are waiting (used to detect idleness)."""
    now = utcnow()
    batch_due = session.scalar(
        select(
            exists().where(
                or_(
                    PaymentBatch.state == RECEIVED,
                    and_(PaymentBatch.state == PROCESSING, PaymentBatch.lease_until < now),
                )
            )
        )
    )
    delivery_due = session.scalar(
        select(
            exists().where(Statement.delivery_state == PENDING, Statement.next_attempt_at <= now)
        )
    )
    return bool(batch_due or delivery_due or statement_accounts_due(session))
