"""Bank statements: receiving them, and reconciling their entries onto disbursements.

A debit (D) marks a disbursement remitted; a reversal (RD) marks it reversed with the bank's
reason. An entry that cannot be applied (unknown id, duplicate, wrong amount, reversal without a
remittance) becomes a reconciliation error and the rest of the statement is still applied. A
file that does not parse, or is for an account no program pays from, ends in ERROR with the
reason and nothing of it applied. Balances and statement-number continuity are checked and
reported as alarms, never as crashes."""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, text, update
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session

from g2p_bridge.connectors.banks.base import BankConnector
from g2p_bridge.core import audit
from g2p_bridge.core.context import Context
from g2p_bridge.core.envelopes import bump_counters
from g2p_bridge.core.errors import Conflict, ErrorCode, InvalidRequest, NotFound, PayloadTooLarge
from g2p_bridge.core.work import claim
from g2p_bridge.db import bulk_insert, get_required, is_postgres, one_of, transaction
from g2p_bridge.formats.mt940 import (
    Entry,
    MT940Error,
    Statement,
    iter_statements,
)
from g2p_bridge.models import (
    AccountStatement,
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    DisbursementRecon,
    ReconError,
    StatementPage,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import DisbursementState, StatementState
from g2p_bridge.schemas import StatementPayload

CHUNK = 2000
# A remittance may be found for money whose sending we have not yet recorded as done: the bank
# paid it before our commit (a crash, or a slow answer).
_REMITTABLE = (DisbursementState.DISPATCHING, DisbursementState.SHIPPED, DisbursementState.FAILED)


def store_statement(
    session: Session,
    content: bytes,
    filename: str | None,
    uploaded_by: str | None,
    max_bytes: int,
) -> AccountStatement:
    if len(content) > max_bytes:
        raise PayloadTooLarge(
            ErrorCode.STATEMENT_TOO_LARGE,
            f"statement is {len(content)} bytes; the limit is {max_bytes}",
        )
    if not content.strip():
        raise InvalidRequest(ErrorCode.STATEMENT_UPLOAD_ERROR, "statement file is empty")
    if b"\x00" in content:
        raise InvalidRequest(ErrorCode.STATEMENT_NOT_TEXT, "statement file is not text")
    digest = hashlib.sha256(content).hexdigest()
    existing = session.scalar(
        select(AccountStatement.id).where(AccountStatement.content_sha256 == digest)
    )
    if existing:
        raise Conflict(
            ErrorCode.DUPLICATE_STATEMENT, f"this statement was already uploaded as {existing}"
        )
    # Uploads take the statement lock too, and are stamped under it, so upload order is commit
    # order even when a bank sends two at once: reconciliation relies on it.
    _lock_statements(session)
    statement = AccountStatement(
        content_sha256=digest,
        content=content,
        filename=filename,
        size_bytes=len(content),
        uploaded_by=uploaded_by,
        uploaded_at=utcnow(),
    )
    session.add(statement)
    session.flush()
    return statement


def get_statement(session: Session, statement_id: str) -> AccountStatement:
    statement = session.get(AccountStatement, statement_id)
    if statement is None:
        raise NotFound(ErrorCode.STATEMENT_NOT_FOUND, f"no statement {statement_id!r}")
    return statement


def statement_payload(
    session: Session, statement: AccountStatement, error_limit: int = 1000
) -> StatementPayload:
    from g2p_bridge.core.disbursements import error_payload

    errors = session.scalars(
        select(ReconError)
        .where(ReconError.statement_id == statement.id)
        .order_by(ReconError.id)
        .limit(error_limit)
    )
    return StatementPayload(
        statement_id=statement.id,
        state=statement.state,
        error_reason=statement.error_reason,
        account_number=statement.account_number,
        program_mnemonic=statement.program_mnemonic,
        filename=statement.filename,
        size_bytes=statement.size_bytes,
        entries_total=statement.entries_total,
        entries_matched=statement.entries_matched,
        entries_reversed=statement.entries_reversed,
        entries_unmatched=statement.entries_unmatched,
        balance_problems=statement.balance_problems,
        sequence_gaps=statement.sequence_gaps,
        uploaded_at=statement.uploaded_at,
        processed_at=statement.processed_at,
        errors=[error_payload(e) for e in errors],
    )


class StatementRejected(Exception):
    """The whole statement is unusable; the reason goes on the statement row."""


@dataclass
class _Tally:
    total: int = 0
    matched: int = 0
    reversed: int = 0
    unmatched: int = 0
    balance_problems: list[str] = field(default_factory=list)
    # Envelope counter moves, applied once at the end: the envelope's status row is the one
    # row every step updates, so it is locked as briefly as possible.
    counters: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )


@dataclass
class _Recon:
    """What is known of one disbursement while a chunk is applied. ``recon`` holds the
    disbursement's reconciliation columns: all of them for a record this chunk creates, only the
    changed ones (plus the key) for a record already stored."""

    disbursement: Any
    recon: dict[str, Any] | None
    is_new: bool = False
    remitted: bool = False
    reversed: bool = False


_RECON_COLUMNS = tuple(c.key for c in DisbursementRecon.__table__.columns)


def _entries_in_chunks(pages: Iterator[Statement]) -> Iterator[tuple[int, Statement, list[Entry]]]:
    for index, page in enumerate(pages):
        entries = list(page.entries)
        if not entries:
            yield index, page, []
        for start in range(0, len(entries), CHUNK):
            yield index, page, entries[start : start + CHUNK]


# Names "statement reconciliation" among PostgreSQL advisory locks.
_STATEMENT_LOCK = 0x6232_7073


def process_statement(context: Context, statement_id: str) -> bool:
    """Reconciles one uploaded statement. True when this call did the work.

    Statements are applied one at a time and in upload order, whichever worker a message
    reaches: a bank reports a reversal in a later statement than the debit it reverses, and a
    reversal read before its debit would be a false reconciliation error. So this first
    applies every statement uploaded before this one that is still waiting."""
    did_work = False
    while True:
        current: str | None = None
        try:
            with transaction(context.session_factory) as session:
                current = _next_in_upload_order(session, statement_id)
                if current is None:
                    return did_work
                if not claim(session, AccountStatement, current, context.settings, utcnow()):
                    return did_work  # cannot happen under the lock; never apply unclaimed
                _reconcile(context, session, current)
                audit.statement_processed(session, current)
        except (StatementRejected, MT940Error) as exc:
            # Nothing of it was applied (the transaction rolled back); say why on the row.
            if current is None:  # raised before a statement was chosen: nothing to record on
                raise
            _record_failure(context, current, str(exc), final=True)
        except Exception as exc:
            # A failure that will recur for this statement (a defect meeting its content): count
            # it, and after the last attempt park the statement in ERROR, so that it cannot hold
            # back every later statement for ever. Anything else (the database away, a lock or
            # time limit reached while older statements were applied) is not its fault: the
            # task is retried and nothing is counted.
            if current is not None and _recurs_with_content(exc):
                with contextlib.suppress(Exception):
                    reason = f"failed {type(exc).__name__}: {str(exc)[:300]}"
                    _record_failure(context, current, reason, final=False)
            raise
        did_work = True
        if current == statement_id:
            return True


# Errors that the same statement would raise again: defects in handling its content.
_RECURRING = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    LookupError,
    TypeError,
    ValueError,
    DataError,
    IntegrityError,
    ProgrammingError,
)


def _recurs_with_content(exc: BaseException) -> bool:
    if isinstance(exc, _RECURRING):
        return True
    # A statement that runs into the server's statement timeout or a size limit will again.
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ in ("QueryCanceled", "ProgramLimitExceeded")


def _record_failure(context: Context, statement_id: str, reason: str, final: bool) -> None:
    with transaction(context.session_factory) as session:
        _lock_statements(session)
        statement = session.get(AccountStatement, statement_id)
        if statement is None or statement.state not in (
            StatementState.PENDING,
            StatementState.PROCESSING,
        ):
            return
        if not final:
            statement.attempts += 1
            if statement.attempts < context.settings.max_attempts:
                return
            reason = f"{reason}; gave up after {statement.attempts} attempts"
        statement.state = StatementState.ERROR
        statement.error_reason = reason
        statement.lease_until = None
        statement.processed_at = utcnow()
        audit.statement_processed(session, statement_id, reason)


def _lock_statements(session: Session) -> None:
    """Takes the statement lock for the rest of the transaction. It relies on PostgreSQL's
    default READ COMMITTED: each query after it sees what the previous holder committed."""
    if is_postgres(session):
        # Bounded: a worker that cannot have it soon gives its slot back (the task is retried
        # as for any lock timeout) rather than sit blocked behind a long statement.
        session.execute(text("SET LOCAL lock_timeout = '30s'"))
        session.execute(select(func.pg_advisory_xact_lock(_STATEMENT_LOCK)))
    # On SQLite the transaction's BEGIN IMMEDIATE already serialises writers.


def _next_in_upload_order(session: Session, statement_id: str) -> str | None:
    """Under the statement lock: the oldest waiting statement uploaded no later than this one,
    or None when this one is no longer waiting (applied or in ERROR). A claim commits with the
    statement's outcome, so PROCESSING is only ever seen on rows of an older version."""
    pending, running = StatementState.PENDING, StatementState.PROCESSING
    waiting = or_(
        AccountStatement.state == pending,
        and_(AccountStatement.state == running, AccountStatement.lease_until < utcnow()),
    )
    target_waiting = select(AccountStatement.uploaded_at).where(
        AccountStatement.id == statement_id, waiting
    )
    # Checked before queueing for the lock too, so a duplicate message does not wait for it.
    if session.execute(target_waiting).first() is None:
        return None
    _lock_statements(session)
    target = session.execute(target_waiting).first()
    if target is None:
        return None
    return session.scalar(
        select(AccountStatement.id)
        .where(
            waiting,
            or_(
                AccountStatement.uploaded_at < target.uploaded_at,
                and_(
                    AccountStatement.uploaded_at == target.uploaded_at,
                    AccountStatement.id <= statement_id,
                ),
            ),
        )
        .order_by(AccountStatement.uploaded_at, AccountStatement.id)
        .limit(1)
    )


def _reconcile(context: Context, session: Session, statement_id: str) -> None:
    statement = get_required(session, AccountStatement, statement_id)
    tally = _Tally()
    programs: dict[str, BenefitProgram] = {}
    seen_pages = 0
    last_page = -1
    accounts: set[str] = set()
    # The bytes as uploaded, through the entry point the upload's authorization used
    # (statement_accounts): one reading of the file for both.
    for page_index, page, entries in _entries_in_chunks(iter_statements(statement.content)):
        program = programs.get(page.account) or _program_for(session, page.account)
        programs[page.account] = program
        accounts.add(page.account)
        if page_index != last_page:
            last_page = page_index
            seen_pages += 1
            problem = page.balance_problem()
            if problem:
                tally.balance_problems.append(problem)
            session.add(
                StatementPage(
                    statement_id=statement_id,
                    page_index=page_index,
                    account_number=page.account,
                    statement_number=page.statement_number,
                    sequence_number=page.sequence_number,
                    opening_balance=page.opening_balance.signed_amount,
                    closing_balance=page.closing_balance.signed_amount,
                    entry_count=len(page.entries),
                    balance_problem=problem,
                )
            )
            if page.opening_balance.currency != program.sponsor_bank_account_currency:
                tally.balance_problems.append(
                    f"statement {page.transaction_reference} is in "
                    f"{page.opening_balance.currency}, program account is in "
                    f"{program.sponsor_bank_account_currency}"
                )
        if entries:
            _apply_chunk(
                session,
                context.bank(program.sponsor_bank_code),
                program,
                statement_id,
                page,
                entries,
                tally,
            )
    if seen_pages == 0:
        raise StatementRejected("no MT940 statement found in the file")
    for envelope_id in sorted(tally.counters):
        bump_counters(session, envelope_id, **tally.counters[envelope_id])
    session.flush()
    gaps = [gap for account in sorted(accounts) if (gap := _sequence_gaps(session, account))]
    statement.account_number = ", ".join(sorted(accounts))[:64]
    statement.program_mnemonic = ", ".join(sorted({p.mnemonic for p in programs.values()}))[:64]
    statement.entries_total = tally.total
    statement.entries_matched = tally.matched
    statement.entries_reversed = tally.reversed
    statement.entries_unmatched = tally.unmatched
    statement.balance_problems = "\n".join(tally.balance_problems) or None
    statement.sequence_gaps = "\n".join(gaps) or None
    statement.state = StatementState.PROCESSED
    statement.error_reason = None
    statement.lease_until = None
    statement.processed_at = utcnow()


def _program_for(session: Session, account: str) -> BenefitProgram:
    program = session.scalar(
        select(BenefitProgram).where(BenefitProgram.sponsor_bank_account_number == account)
    )
    if program is None:
        raise StatementRejected(f"no benefit program is paid from account {account!r}")
    return program


def _sequence_gaps(session: Session, account: str) -> str | None:
    numbers = sorted(
        {
            int(n)
            for n in session.scalars(
                select(StatementPage.statement_number)
                .where(StatementPage.account_number == account)
                .distinct()
            )
            if n.isdigit()
        }
    )
    missing = [n for a, b in pairwise(numbers) for n in range(a + 1, b)]
    if not missing:
        return None
    shown = ", ".join(str(n) for n in missing[:20]) + (" ..." if len(missing) > 20 else "")
    return f"account {account}: statement numbers missing: {shown}"


def _apply_chunk(
    session: Session,
    bank: BankConnector,
    program: BenefitProgram,
    statement_id: str,
    page: Statement,
    entries: Sequence[Entry],
    tally: _Tally,
) -> None:
    """Applies up to CHUNK entries with a fixed number of queries."""
    ids = {bank.disbursement_id(e) or "" for e in entries if e.mark in ("D", "RD")}
    ids.discard("")
    known: dict[str, _Recon] = {}
    if ids:
        rows = session.execute(
            select(
                Disbursement.id,
                Disbursement.envelope_id,
                Disbursement.amount,
                Disbursement.state,
                Disbursement.bank_batch_id,
                Disbursement.shipped_at,
                DisbursementEnvelope.program_mnemonic,
            )
            .join(DisbursementEnvelope, DisbursementEnvelope.id == Disbursement.envelope_id)
            .where(one_of(session, Disbursement.id, sorted(ids)))
            .order_by(Disbursement.id)
            # Locked, and so read as last committed: a dispatch that marks one FAILED at the
            # same moment is either seen (and its failed count taken back) or waits for us.
            .with_for_update(of=Disbursement)
        ).all()
        stored = {
            r.disbursement_id: r
            for r in session.execute(
                select(
                    DisbursementRecon.disbursement_id,
                    DisbursementRecon.remittance_statement_id,
                    DisbursementRecon.reversal_found,
                ).where(one_of(session, DisbursementRecon.disbursement_id, sorted(ids)))
            )
        }
        for row in rows:
            recon = stored.get(row.id)
            known[row.id] = (
                _Recon(row, None)
                if recon is None
                else _Recon(
                    row,
                    {"disbursement_id": row.id},
                    remitted=recon.remittance_statement_id is not None,
                    reversed=bool(recon.reversal_found),
                )
            )

    now = utcnow()
    errors: list[dict[str, Any]] = []
    state_changes: dict[str, tuple[str, str | None]] = {}
    # A remittance proves the bank holds the payment even when the bridge never heard its answer
    # (a timeout whose retry has not run yet, or a batch the bank said it refused).
    proven_shipped: dict[str, list[str]] = defaultdict(list)
    counter_deltas: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def error(entry: Entry, code: ErrorCode, detail: str, disbursement_id: str | None) -> None:
        tally.unmatched += 1
        errors.append(
            {
                "statement_id": statement_id,
                "statement_number": page.statement_number,
                "statement_sequence": page.sequence_number,
                "entry_sequence": entry.sequence,
                "entry_date": entry.entry_date,
                "value_date": entry.value_date,
                "error_code": code.value,
                "detail": detail,
                "disbursement_id": disbursement_id,
                "bank_reference": entry.bank_reference,
                "amount": entry.amount,
                "created_at": utcnow(),
            }
        )

    for entry in entries:
        tally.total += 1
        if entry.mark not in ("D", "RD"):
            continue  # credits (deposits, returns of others' money) are not disbursements
        disbursement_id = bank.disbursement_id(entry)
        item = known.get(disbursement_id or "")
        if item is None:
            error(
                entry,
                ErrorCode.INVALID_DISBURSEMENT_ID,
                f"no disbursement {disbursement_id!r}",
                disbursement_id,
            )
            continue
        row = item.disbursement
        if row.program_mnemonic != program.mnemonic:
            error(
                entry,
                ErrorCode.WRONG_ACCOUNT,
                f"disbursement belongs to program {row.program_mnemonic}, not to this account's",
                row.id,
            )
            continue
        if entry.amount != row.amount:
            error(
                entry,
                ErrorCode.AMOUNT_MISMATCH,
                f"entry amount {entry.amount} != disbursement amount {row.amount}",
                row.id,
            )
            continue
        if entry.mark == "D":
            if item.remitted:
                error(
                    entry,
                    ErrorCode.DUPLICATE_DISBURSEMENT,
                    "remittance already recorded for this disbursement",
                    row.id,
                )
                continue
            current = state_changes.get(row.id, (row.state, None))[0]
            if current not in _REMITTABLE:
                error(
                    entry,
                    ErrorCode.DISBURSEMENT_NOT_SHIPPED,
                    f"disbursement is {current}; it was never sent to the bank",
                    row.id,
                )
                continue
            if item.recon is None:
                item.recon = dict.fromkeys(_RECON_COLUMNS)
                item.recon.update(
                    disbursement_id=row.id,
                    envelope_id=row.envelope_id,
                    reversal_found=False,
                    created_at=now,
                )
                item.is_new = True
            item.remitted = True
            item.recon.update(
                bank_batch_id=row.bank_batch_id,
                beneficiary_name_from_bank=bank.beneficiary_name(entry),
                remittance_reference_number=entry.bank_reference,
                remittance_statement_id=statement_id,
                remittance_statement_number=page.statement_number,
                remittance_statement_sequence=page.sequence_number,
                remittance_entry_sequence=entry.sequence,
                remittance_entry_date=entry.entry_date,
                remittance_value_date=entry.value_date,
                remittance_amount=entry.amount,
                updated_at=now,
            )
            state_changes[row.id] = (DisbursementState.RECONCILED, None)
            if row.shipped_at is None:
                proven_shipped[row.envelope_id].append(row.id)
            counter_deltas[row.envelope_id]["reconciled_count"] += 1
            if current == DisbursementState.FAILED:
                counter_deltas[row.envelope_id]["failed_count"] -= 1
            tally.matched += 1
        else:
            if item.recon is None or not item.remitted:
                error(
                    entry,
                    ErrorCode.INVALID_REVERSAL,
                    "reversal of a disbursement with no remittance on record",
                    row.id,
                )
                continue
            if item.reversed:
                error(
                    entry,
                    ErrorCode.DUPLICATE_REVERSAL,
                    "reversal already recorded for this disbursement",
                    row.id,
                )
                continue
            reason = bank.reversal_reason(entry)
            item.reversed = True
            item.recon.update(
                reversal_found=True,
                reversal_statement_id=statement_id,
                reversal_statement_number=page.statement_number,
                reversal_statement_sequence=page.sequence_number,
                reversal_entry_sequence=entry.sequence,
                reversal_entry_date=entry.entry_date,
                reversal_value_date=entry.value_date,
                reversal_reason=reason,
                updated_at=now,
            )
            state_changes[row.id] = (DisbursementState.REVERSED, reason)
            counter_deltas[row.envelope_id]["reversed_count"] += 1
            tally.reversed += 1

    # New records go in one COPY; stored ones get their changed columns, grouped so that rows
    # changing the same columns share one executemany.
    new = [i.recon for i in known.values() if i.is_new and i.recon is not None]
    if new:
        bulk_insert(session, DisbursementRecon, new)
    changed: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for item in known.values():
        if not item.is_new and item.recon is not None and len(item.recon) > 1:
            changed[tuple(sorted(item.recon))].append(item.recon)
    recons = cast(Table, DisbursementRecon.__table__)
    for columns, records in changed.items():
        # Parameter names must differ from the column names they set.
        session.execute(
            update(recons)
            .where(recons.c.disbursement_id == bindparam("p_disbursement_id"))
            .values({c: bindparam(f"p_{c}") for c in columns if c != "disbursement_id"}),
            [{f"p_{c}": v for c, v in r.items()} for r in records],
        )
    if errors:
        bulk_insert(session, ReconError, errors)
    by_state: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for disbursement_id, change in state_changes.items():
        by_state[change].append(disbursement_id)
    for (state, reason), disbursement_ids in by_state.items():
        values: dict[str, object] = {"state": state, "updated_at": now}
        if state == DisbursementState.REVERSED:
            values["state_reason"] = f"reversed by the bank: {reason or 'no reason given'}"
        session.execute(
            update(Disbursement)
            .where(one_of(session, Disbursement.id, disbursement_ids))
            .values(values)
            .execution_options(synchronize_session=False)
        )
    for envelope_id, disbursement_ids in proven_shipped.items():
        # Guarded by shipped_at IS NULL so a dispatch that records the bank's answer at the same
        # moment and this statement count the disbursement once between them.
        counter_deltas[envelope_id]["shipped_count"] += session.execute(
            update(Disbursement)
            .where(
                one_of(session, Disbursement.id, disbursement_ids),
                Disbursement.shipped_at.is_(None),
            )
            .values(shipped_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    for envelope_id, deltas in counter_deltas.items():
        for name, delta in deltas.items():
            tally.counters[envelope_id][name] += delta
