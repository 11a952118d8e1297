"""Bank statements: receiving them, and reconciling their entries onto disbursements.

A debit (D) marks a disbursement remitted; a reversal (RD) marks it reversed with the bank's
reason. An entry that cannot be applied (unknown id, duplicate, wrong amount, reversal without a
remittance) becomes a reconciliation error and the rest of the statement is still applied. A
file that does not parse, or is for an account no program pays from, ends in ERROR with the
reason and nothing of it applied. Balances and statement-number continuity are checked and
reported as alarms, never as crashes.

Trust: a file is read once, by the parser reconciliation uses, at upload; the accounts it names
must all be accounts a program is paid from, and the uploader's token must hold each one's
sponsor bank code. The accounts and the uploader's authority are stored with the file and
checked again, page by page, before anything is applied. Every value a statement carries is
checked against the column it goes into (limits taken from the column types) before it is
written, so bad content becomes a reconciliation error or a rejected statement, never a
database error that would be retried for ever."""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from itertools import pairwise
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session

from g2p_bridge.auth import Principal
from g2p_bridge.connectors.banks.base import BankConnector
from g2p_bridge.core import audit, callbacks
from g2p_bridge.core.context import Context
from g2p_bridge.core.envelopes import bump_counters
from g2p_bridge.core.errors import (
    BridgeError,
    Conflict,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from g2p_bridge.core.reconciliation import (
    BankEntry,
    ChunkOutcome,
    ColumnLimits,
    KnownDisbursement,
    Mark,
    PageFacts,
    ProgramAccount,
    ReconWrite,
    decide,
    ids_to_load,
    too_long,
)
from g2p_bridge.core.statement_files import (
    CAMT,
    MT940,
    UNREADABLE,
    FileEntry,
    Page,
    describe,
    read_pages,
    sniff_format,
)
from g2p_bridge.core.work import claim
from g2p_bridge.db import (
    bulk_insert,
    get_required,
    is_database_outage,
    is_postgres,
    one_of,
    transaction,
)
from g2p_bridge.formats.iso20022 import ReconEntry
from g2p_bridge.models import (
    AccountStatement,
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    DisbursementRecon,
    ReconDayTotal,
    ReconError,
    StatementAccount,
    StatementPage,
)
from g2p_bridge.models.base import Amount, utcnow
from g2p_bridge.models.enums import DisbursementState, StatementState

CHUNK = 2000


def store_statement(
    session: Session,
    content: bytes,
    filename: str | None,
    uploader: Principal,
    max_bytes: int,
) -> AccountStatement:
    """Stores an uploaded file once it has been read and the uploader may reconcile every
    account it names. Refuses (nothing stored) a file that does not parse, names no account, or
    names one no program is paid from or whose sponsor bank the uploader does not hold."""
    if len(content) > max_bytes:
        raise PayloadTooLarge(
            ErrorCode.STATEMENT_TOO_LARGE,
            f"statement is {len(content)} bytes; the limit is {max_bytes}",
        )
    if not content.strip():
        raise InvalidRequest(ErrorCode.STATEMENT_UPLOAD_ERROR, "statement file is empty")
    if b"\x00" in content:
        raise InvalidRequest(ErrorCode.STATEMENT_NOT_TEXT, "statement file is not text")
    # Sniffed once, and stored: processing reads the file with the reader that authorizes it.
    fmt = sniff_format(content)
    # Read before the first query, so no connection is held while a large file is parsed.
    accounts = accounts_of(content, fmt)
    digest = hashlib.sha256(content).hexdigest()
    existing = session.scalar(
        select(AccountStatement.id).where(AccountStatement.content_sha256 == digest)
    )
    if existing:
        raise Conflict(
            ErrorCode.DUPLICATE_STATEMENT, f"this statement was already uploaded as {existing}"
        )
    banks = _sponsor_banks(session, accounts)
    unknown = sorted(a for a in accounts if a not in banks)
    if unknown:
        raise InvalidRequest(
            ErrorCode.INVALID_ACCOUNT_NUMBER,
            f"no benefit program is paid from account(s) {_shown(unknown)}",
        )
    uploader.require_role("bank")
    if not uploader.is_admin:
        # Named by account, not by the other bank's code: a bank learns nothing of who else
        # pays from an account it may not reconcile.
        refused = sorted(
            a for a, bank_code in banks.items() if bank_code not in uploader.bank_codes
        )
        if refused:
            raise Forbidden(
                ErrorCode.ACCESS_DENIED,
                f"client {uploader.client_id!r} may not upload statements of account(s) "
                f"{_shown(refused)}",
            )
    # Uploads take the statement lock too, and are stamped under it, so upload order is commit
    # order even when a bank sends two at once: reconciliation relies on it.
    _lock_statements(session)
    statement = AccountStatement(
        content_sha256=digest,
        content=content,
        filename=filename,
        size_bytes=len(content),
        format=fmt,
        uploaded_by=uploader.client_id,
        uploader_role=uploader.role,
        uploader_bank_codes=" ".join(sorted(uploader.bank_codes)),
        account_number=_summary(accounts),
        uploaded_at=utcnow(),
    )
    session.add(statement)
    session.flush()
    session.add_all(
        StatementAccount(statement_id=statement.id, account_number=a) for a in sorted(accounts)
    )
    session.flush()
    return statement


def accounts_of(content: bytes, fmt: str) -> set[str]:
    """The accounts a file's pages name, read by the reader that reconciliation uses for its
    format, so that what is authorized is what will be applied. Every page is read to the end
    (its entries are checked, not kept); a file that does not parse (hostile XML included),
    holds no page, or has a page whose header cannot be stored is refused."""
    accounts: set[str] = set()
    try:
        for page in read_pages(content, fmt, with_entries=False):
            problem = page_problem(page)
            if problem is not None:
                raise InvalidRequest(ErrorCode.STATEMENT_UNPARSEABLE, problem)
            accounts.add(page.account)
    except UNREADABLE as exc:
        raise InvalidRequest(
            ErrorCode.STATEMENT_UNPARSEABLE,
            f"the file is not a readable {describe(fmt)} statement: {exc}",
        ) from exc
    if not accounts:
        raise InvalidRequest(ErrorCode.STATEMENT_UNPARSEABLE, _no_statement(fmt))
    return accounts


def _no_statement(fmt: str) -> str:
    return f"no {describe(fmt)} statement found in the file"


def _sponsor_banks(session: Session, accounts: set[str]) -> dict[str, str]:
    """Account number -> sponsor bank code, for the accounts a program is paid from."""
    found: dict[str, str] = {}
    ordered = sorted(accounts)
    for start in range(0, len(ordered), CHUNK):
        rows = session.execute(
            select(
                BenefitProgram.sponsor_bank_account_number, BenefitProgram.sponsor_bank_code
            ).where(BenefitProgram.sponsor_bank_account_number.in_(ordered[start : start + CHUNK]))
        )
        found.update((account, bank_code) for account, bank_code in rows)
    return found


def _shown(values: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v[:_ACCOUNT_MAX]) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _summary(accounts: set[str]) -> str:
    return ", ".join(sorted(accounts))[: _length(AccountStatement.__table__.c.account_number)]


# What can be stored, from the column types themselves so the checks cannot drift from them.
def _length(column: Any) -> int:
    length = column.type.length
    if not isinstance(length, int):  # a column without a length is not one to check here
        raise TypeError(f"column {column} has no length")
    return length


_ACCOUNT_MAX = min(
    _length(StatementPage.__table__.c.account_number),
    _length(StatementAccount.__table__.c.account_number),
)
_STATEMENT_NUMBER_MAX = min(
    _length(StatementPage.__table__.c.statement_number),
    _length(ReconError.__table__.c.statement_number),
    _length(DisbursementRecon.__table__.c.remittance_statement_number),
)
_SEQUENCE_MAX = min(
    _length(StatementPage.__table__.c.sequence_number),
    _length(ReconError.__table__.c.statement_sequence),
    _length(DisbursementRecon.__table__.c.remittance_statement_sequence),
)
_DISBURSEMENT_ID_MAX = min(
    _length(Disbursement.__table__.c.id), _length(ReconError.__table__.c.disbursement_id)
)
_BANK_REFERENCE_MAX = min(
    _length(ReconError.__table__.c.bank_reference),
    _length(DisbursementRecon.__table__.c.remittance_reference_number),
)
_BENEFICIARY_NAME_MAX = _length(DisbursementRecon.__table__.c.beneficiary_name_from_bank)
_AMOUNT_TYPE = Amount.impl
_AMOUNT_PRECISION = int(_AMOUNT_TYPE.precision or 0)
_AMOUNT_SCALE = int(_AMOUNT_TYPE.scale or 0)


def _limits() -> ColumnLimits:
    # Read when used, not once: a test stands in a larger limit to reach the database's own.
    return ColumnLimits(
        disbursement_id=_DISBURSEMENT_ID_MAX,
        bank_reference=_BANK_REFERENCE_MAX,
        beneficiary_name=_BENEFICIARY_NAME_MAX,
        amount_precision=_AMOUNT_PRECISION,
        amount_scale=_AMOUNT_SCALE,
    )


# Where each format keeps what page_problem checks, for its messages.
_FIELDS = {
    MT940: {"account": ":25:", "number": ":28C:", "sequence": ":28C:"},
    CAMT: {"account": "Acct/Id", "number": "ElctrncSeqNb", "sequence": "-"},
}


def page_problem(page: Page) -> str | None:
    """Why a page's header cannot be stored, or None. Such a page rejects its statement: its
    entries cannot be attributed to an account and statement number."""
    where = f"statement {page.reference[:40]!r}"
    tags = _FIELDS[page.format]
    if not page.account:
        return f"{where} names no account ({tags['account']} is empty)"
    if len(page.account) > _ACCOUNT_MAX:
        what = f"the account ({tags['account']})"
        return f"{where}: " + too_long(what, page.account, _ACCOUNT_MAX)
    if len(page.statement_number) > _STATEMENT_NUMBER_MAX:
        what = f"the statement number ({tags['number']})"
        return f"{where}: " + too_long(what, page.statement_number, _STATEMENT_NUMBER_MAX)
    if page.sequence_number is not None and len(page.sequence_number) > _SEQUENCE_MAX:
        what = f"the sequence number ({tags['sequence']})"
        return f"{where}: " + too_long(what, page.sequence_number, _SEQUENCE_MAX)
    limits = _limits()
    for label, balance in (("opening", page.opening), ("closing", page.closing)):
        if balance is not None and not limits.amount_fits(balance):
            return (
                f"{where}: the {label} balance {str(balance)[:40]} has more digits than "
                f"can be stored ({_AMOUNT_PRECISION - _AMOUNT_SCALE} before and "
                f"{_AMOUNT_SCALE} after the decimal point)"
            )
    return None


def get_statement(session: Session, statement_id: str) -> AccountStatement:
    statement = session.get(AccountStatement, statement_id)
    if statement is None:
        raise NotFound(ErrorCode.STATEMENT_NOT_FOUND, f"no statement {statement_id!r}")
    return statement


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
    # What this pass recorded, by envelope: its callbacks report exactly these rows.
    remitted: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    reversed_ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


_RECON_COLUMNS = tuple(c.key for c in DisbursementRecon.__table__.columns)


def _entries_in_chunks(pages: Iterator[Page]) -> Iterator[tuple[int, Page, list[FileEntry]]]:
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
        except (StatementRejected, *UNREADABLE) as exc:
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
    if isinstance(exc, DBAPIError) and not is_database_outage(exc):
        # Any other refusal by the database of what this statement asked it to store.
        return True
    if _driver_refused_content(exc):
        return True
    # A statement that runs into the server's statement timeout or a size limit will again.
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ in ("QueryCanceled", "ProgramLimitExceeded")


def _driver_refused_content(exc: BaseException) -> bool:
    """psycopg's own error, as the COPY of bulk_insert may raise it unwrapped (a value longer
    than its column): the database refusing the content, unless the server or the connection
    is away (OperationalError) or the driver is misused (InterfaceError, not a DatabaseError)."""
    try:
        import psycopg
    except ImportError:  # an embedded (SQLite) installation without the driver
        return False
    return isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)


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


def _vouch_if_legacy(session: Session, statement: AccountStatement) -> bool:
    """A statement stored before migration 0003 has no recorded uploader authority nor
    accounts; the administrator acting on it vouches for it. True when it was such a one."""
    if statement.uploader_role is not None:
        return False
    statement.uploader_role = "admin"
    statement.uploader_bank_codes = ""
    with contextlib.suppress(BridgeError):  # unreadable: processing says why
        for account in sorted(accounts_of(statement.content, statement.format)):
            session.merge(StatementAccount(statement_id=statement.id, account_number=account))
    return True


def _operator_action(
    session: Session,
    statement_id: str,
    action: str,
    allowed: tuple[str, ...],
    reason: str | None,
) -> tuple[AccountStatement, dict[str, Any]]:
    """Takes the statement lock (so no worker is applying it meanwhile) and checks its state;
    returns the statement and its state before, for the audit event."""
    if reason is not None and (
        len(reason) > 512 or any(ord(c) < 32 or ord(c) == 127 for c in reason)
    ):
        # It goes into the statement's error reason and the audit trail, and from there into
        # logs and screens: one line of at most 512 characters.
        raise InvalidRequest(
            ErrorCode.INVALID_REQUEST, "reason: at most 512 characters, no control characters"
        )
    _lock_statements(session)
    statement = get_statement(session, statement_id)
    # A PROCESSING row under the lock is one whose worker died (claims commit with outcomes).
    if statement.state not in allowed:
        raise Conflict(
            ErrorCode.INVALID_STATEMENT_STATE,
            f"statement {statement_id} is {statement.state}; {action} applies to "
            f"{' or '.join(allowed)} statements",
        )
    before = {
        "state": statement.state,
        "attempts": statement.attempts,
        "error_reason": statement.error_reason,
        "entries_matched": statement.entries_matched,
        "entries_reversed": statement.entries_reversed,
        "entries_unmatched": statement.entries_unmatched,
    }
    return statement, before


def park_statement(session: Session, statement_id: str, reason: str | None = None) -> None:
    """Parks a waiting statement in ERROR, applying nothing of it, so that it no longer holds
    back the later statements of its accounts. ``retry`` queues it again."""
    waiting = (StatementState.PENDING, StatementState.PROCESSING)
    statement, before = _operator_action(session, statement_id, "park", waiting, reason)
    statement.state = StatementState.ERROR
    statement.error_reason = f"parked by an operator: {reason or 'no reason given'}"[:2000]
    statement.lease_until = None
    statement.processed_at = utcnow()
    audit.record(
        session,
        "statement.park",
        "statement",
        statement_id,
        detail={"before": before, "reason": reason},
    )


def retry_statement(session: Session, statement_id: str, reason: str | None = None) -> None:
    """Queues a statement in ERROR (given up after its attempts, rejected, or parked) again,
    with its attempts reset, in its place in its accounts' upload order. A failed pass applied
    nothing (one transaction); should an earlier pass have been applied (a re-process that then
    failed), its entries are found on record and become duplicate errors."""
    statement, before = _operator_action(
        session, statement_id, "retry", (StatementState.ERROR,), reason
    )
    vouched = _vouch_if_legacy(session, statement)
    _requeue(statement)
    audit.record(
        session,
        "statement.retry",
        "statement",
        statement_id,
        detail={"before": before, "reason": reason, "vouched_for_legacy_upload": vouched},
    )


def reprocess_statement(session: Session, statement_id: str, reason: str | None = None) -> None:
    """Applies a PROCESSED or ERROR statement again from its stored file. What its previous pass
    recorded for the statement itself (its pages, its reconciliation errors, its counts) is
    replaced by the new pass; what it did to disbursements stays: an entry whose remittance or
    reversal is already on record (by this statement or another) becomes a
    DUPLICATE_DISBURSEMENT / DUPLICATE_REVERSAL error, never a second state change. An entry
    that could not be applied before (its disbursement unknown then, its program's account
    since corrected) is applied now."""
    allowed = (StatementState.PROCESSED, StatementState.ERROR)
    statement, before = _operator_action(session, statement_id, "reprocess", allowed, reason)
    removed = session.execute(
        delete(ReconError).where(ReconError.statement_id == statement_id)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(delete(StatementPage).where(StatementPage.statement_id == statement_id))
    vouched = _vouch_if_legacy(session, statement)
    _requeue(statement)
    statement.entries_total = statement.entries_matched = 0
    statement.entries_reversed = statement.entries_unmatched = 0
    statement.balance_problems = statement.sequence_gaps = None
    audit.record(
        session,
        "statement.reprocess",
        "statement",
        statement_id,
        detail={
            "before": before,
            "errors_replaced": removed,
            "reason": reason,
            "vouched_for_legacy_upload": vouched,
        },
    )


def _requeue(statement: AccountStatement) -> None:
    statement.state = StatementState.PENDING
    statement.error_reason = None
    statement.attempts = 0
    statement.lease_until = None
    statement.next_attempt_at = utcnow()
    statement.processed_at = None


def _lock_statements(session: Session) -> None:
    """Takes the statement lock for the rest of the transaction. It relies on PostgreSQL's
    default READ COMMITTED: each query after it sees what the previous holder committed."""
    if is_postgres(session):
        # Bounded: a worker that cannot have it soon gives its slot back (the task is retried
        # as for any lock timeout) rather than sit blocked behind a long statement.
        session.execute(text("SET LOCAL lock_timeout = '30s'"))
        session.execute(select(func.pg_advisory_xact_lock(_STATEMENT_LOCK)))
    # On SQLite the transaction's BEGIN IMMEDIATE already serialises writers.


def _waiting() -> Any:
    pending, running = StatementState.PENDING, StatementState.PROCESSING
    return or_(
        AccountStatement.state == pending,
        and_(AccountStatement.state == running, AccountStatement.lease_until < utcnow()),
    )


def _next_in_upload_order(session: Session, statement_id: str) -> str | None:
    """Under the statement lock: the statement to apply before this one, or this one, or None
    when this one is no longer waiting (applied or in ERROR). Order is upload order per account:
    a statement waits for the older waiting statements of each account it names, and they for
    theirs, but never for another account's. A claim commits with the statement's outcome, so
    PROCESSING is only ever seen on rows of an older version."""
    target_waiting = select(AccountStatement.id).where(
        AccountStatement.id == statement_id, _waiting()
    )
    # Checked before queueing for the lock too, so a duplicate message does not wait for it.
    if session.execute(target_waiting).first() is None:
        return None
    _lock_statements(session)
    if session.execute(target_waiting).first() is None:
        return None
    current = statement_id
    # Upload times strictly decrease along the walk, so it ends.
    while (older := _older_of_its_accounts(session, current)) is not None:
        current = older
    return current


def _older_of_its_accounts(session: Session, statement_id: str) -> str | None:
    """The oldest waiting statement uploaded before this one that names one of its accounts."""
    mine = select(StatementAccount.account_number).where(
        StatementAccount.statement_id == statement_id
    )
    uploaded_at = (
        select(AccountStatement.uploaded_at)
        .where(AccountStatement.id == statement_id)
        .scalar_subquery()
    )
    return session.scalar(
        select(AccountStatement.id)
        .join(StatementAccount, StatementAccount.statement_id == AccountStatement.id)
        .where(
            StatementAccount.account_number.in_(mine),
            _waiting(),
            or_(
                AccountStatement.uploaded_at < uploaded_at,
                and_(
                    AccountStatement.uploaded_at == uploaded_at,
                    AccountStatement.id < statement_id,
                ),
            ),
        )
        .order_by(AccountStatement.uploaded_at, AccountStatement.id)
        .limit(1)
    )


def _reconcile(context: Context, session: Session, statement_id: str) -> None:
    statement = get_required(session, AccountStatement, statement_id)
    if statement.uploader_role is None:
        raise StatementRejected(
            "uploaded before the uploader's bank codes were recorded (migration 0003); an "
            "administrator can retry or re-process it, vouching for it"
        )
    named = set(
        session.scalars(
            select(StatementAccount.account_number).where(
                StatementAccount.statement_id == statement_id
            )
        )
    )
    bank_codes = set((statement.uploader_bank_codes or "").split())
    tally = _Tally()
    programs: dict[str, BenefitProgram] = {}
    seen_pages = 0
    last_page = -1
    accounts: set[str] = set()
    # The stored bytes, through the parser the upload's authorization used (the same rules,
    # the same decoding): one reading of the file for both.
    pages = read_pages(statement.content, statement.format)
    for page_index, page, entries in _entries_in_chunks(pages):
        program = programs.get(page.account)
        if program is None:
            # The upload's check, again: the program's bank may have changed since, and a file
            # must not apply to an account its upload did not name.
            if page.account not in named:
                raise StatementRejected(
                    f"account {page.account[:_ACCOUNT_MAX]!r} was not among the accounts read "
                    "from the file at upload"
                )
            program = _program_for(session, page.account)
            if statement.uploader_role != "admin" and program.sponsor_bank_code not in bank_codes:
                raise StatementRejected(
                    f"uploader {statement.uploaded_by!r} does not hold bank code "
                    f"{program.sponsor_bank_code!r} of account {page.account!r}"
                )
            programs[page.account] = program
        accounts.add(page.account)
        if page_index != last_page:
            problem = page_problem(page)
            if problem is not None:
                raise StatementRejected(problem)
            last_page = page_index
            seen_pages += 1
            problem = page.balance_problem
            if problem:
                tally.balance_problems.append(problem)
            session.add(
                StatementPage(
                    statement_id=statement_id,
                    page_index=page_index,
                    account_number=page.account,
                    statement_number=page.statement_number,
                    sequence_number=page.sequence_number,
                    opening_balance=page.opening,
                    closing_balance=page.closing,
                    entry_count=len(page.entries),
                    balance_problem=problem,
                )
            )
            if page.currency is not None and page.currency != program.sponsor_bank_account_currency:
                tally.balance_problems.append(
                    f"statement {page.reference} is in {page.currency}, program account is in "
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
        raise StatementRejected(_no_statement(statement.format))
    for envelope_id in sorted(tally.counters):
        bump_counters(session, envelope_id, **tally.counters[envelope_id])
    callbacks.statement_applied(
        session, context.settings, list(tally.counters), tally.remitted, tally.reversed_ids
    )
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
        raise StatementRejected(f"no benefit program is paid from account {account[:64]!r}")
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
    page: Page,
    entries: Sequence[FileEntry],
    tally: _Tally,
) -> None:
    """Applies up to CHUNK entries with a fixed number of queries: reads what the decision
    needs, decides (core/reconciliation.py), writes what it decided."""
    limits = _limits()
    facts = PageFacts(
        statement_id=statement_id,
        reference=page.reference,
        statement_number=page.statement_number,
        sequence_number=page.sequence_number,
        currencies=page.currencies,
    )
    account = ProgramAccount(
        program.mnemonic,
        program.sponsor_bank_account_number,
        program.sponsor_bank_account_currency,
    )
    neutral = [_bank_entry(bank, entry) for entry in entries]
    known = _load_known(session, ids_to_load(facts, neutral, account, limits))
    outcome = decide(facts, neutral, known, account, limits)
    _write_outcome(session, facts, outcome, tally)


def _bank_entry(bank: BankConnector, entry: FileEntry) -> BankEntry:
    """An entry as the pure core reads it: the bank connector's reading of where this bank puts
    our ids, names and reasons, taken only for the entries that use them."""
    mark: Mark = "D" if entry.mark == "D" else "RD" if entry.mark == "RD" else "C"
    return BankEntry(
        sequence=entry.sequence,
        mark=mark,
        amount=entry.amount,
        # A camt entry names its own currency; an MT940 one is in its page's.
        currency=entry.currency if isinstance(entry, ReconEntry) else None,
        disbursement_id=bank.disbursement_id(entry) if mark != "C" else None,
        bank_reference=entry.bank_reference,
        entry_date=entry.entry_date,
        value_date=entry.value_date,
        reversal_reason=bank.reversal_reason(entry) if mark == "RD" else None,
        beneficiary_name=bank.beneficiary_name(entry) if mark == "D" else None,
    )


def _load_known(session: Session, ids: Sequence[str]) -> dict[str, KnownDisbursement]:
    if not ids:
        return {}
    rows = session.execute(
        select(
            Disbursement.id,
            Disbursement.envelope_id,
            Disbursement.amount,
            Disbursement.reported_state.label("state"),
            Disbursement.bank_batch_id,
            Disbursement.shipped_at,
            DisbursementEnvelope.program_mnemonic,
        )
        .join(DisbursementEnvelope, DisbursementEnvelope.id == Disbursement.envelope_id)
        .where(one_of(session, Disbursement.id, ids))
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
                DisbursementRecon.reversal_statement_id,
            ).where(one_of(session, DisbursementRecon.disbursement_id, ids))
        )
    }
    known: dict[str, KnownDisbursement] = {}
    for row in rows:
        recon = stored.get(row.id)
        known[row.id] = KnownDisbursement(
            id=row.id,
            envelope_id=row.envelope_id,
            program_mnemonic=row.program_mnemonic,
            amount=row.amount,
            state=row.state,
            bank_batch_id=row.bank_batch_id,
            shipped=row.shipped_at is not None,
            has_recon=recon is not None,
            remitted=recon is not None and recon.remittance_statement_id is not None,
            reversed=recon is not None and recon.reversal_statement_id is not None,
        )
    return known


def _recon_columns(write: ReconWrite) -> dict[str, Any]:
    """A decided record as columns: all of them for a new one, only the changed ones (and the
    key) for a stored one."""
    columns: dict[str, Any] = {"disbursement_id": write.disbursement_id}
    if write.is_new:
        columns = dict.fromkeys(_RECON_COLUMNS)
        columns.update(disbursement_id=write.disbursement_id)
    if (paid := write.remittance) is not None:
        columns.update(
            beneficiary_name_from_bank=paid.beneficiary_name,
            remittance_reference_number=paid.bank_reference,
            remittance_statement_id=paid.statement_id,
            remittance_statement_number=paid.statement_number,
            remittance_statement_sequence=paid.statement_sequence,
            remittance_entry_sequence=paid.entry_sequence,
            remittance_entry_date=paid.entry_date,
            remittance_value_date=paid.value_date,
        )
    if (back := write.reversal) is not None:
        columns.update(
            reversal_statement_id=back.statement_id,
            reversal_statement_number=back.statement_number,
            reversal_statement_sequence=back.statement_sequence,
            reversal_entry_sequence=back.entry_sequence,
            reversal_entry_date=back.entry_date,
            reversal_value_date=back.value_date,
            reversal_reason=back.reason,
        )
    return columns


def _add_day_totals(session: Session, recons: Sequence[ReconWrite]) -> None:
    """Adds what the chunk remitted and reversed to the per-day totals: one upsert per
    (entry date, envelope, kind). Only statement processing writes them, under the statement
    lock, so the additions never race."""
    totals: dict[tuple[date, str, str], Decimal] = defaultdict(Decimal)
    for write in recons:
        if write.remittance is not None and write.remittance.entry_date is not None:
            totals[write.remittance.entry_date, write.envelope_id, "paid"] += write.amount
        if write.reversal is not None and write.reversal.entry_date is not None:
            totals[write.reversal.entry_date, write.envelope_id, "returned"] += write.amount
    if not totals:
        return
    dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
    rows = [
        {"entry_date": day, "envelope_id": envelope_id, "kind": kind, "amount": amount}
        for (day, envelope_id, kind), amount in sorted(totals.items())
    ]
    statement = dialect_insert(ReconDayTotal)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["entry_date", "envelope_id", "kind"],
            set_={"amount": ReconDayTotal.amount + statement.excluded.amount},
        ),
        rows,
    )


def _write_outcome(session: Session, page: PageFacts, outcome: ChunkOutcome, tally: _Tally) -> None:
    now = utcnow()
    # New records go in one COPY; stored ones get their changed columns, grouped so that rows
    # changing the same columns share one executemany.
    records = [_recon_columns(write) for write in outcome.recons]
    new = [r for write, r in zip(outcome.recons, records, strict=True) if write.is_new]
    if new:
        bulk_insert(session, DisbursementRecon, new)
    changed: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for write, record in zip(outcome.recons, records, strict=True):
        if not write.is_new:
            changed[tuple(sorted(record))].append(record)
    recons = cast(Table, DisbursementRecon.__table__)
    for columns, rows in changed.items():
        # Parameter names must differ from the column names they set.
        session.execute(
            update(recons)
            .where(recons.c.disbursement_id == bindparam("p_disbursement_id"))
            .values({c: bindparam(f"p_{c}") for c in columns if c != "disbursement_id"}),
            [{f"p_{c}": v for c, v in r.items()} for r in rows],
        )
    _add_day_totals(session, outcome.recons)
    for write in outcome.recons:
        if write.remittance is not None:
            tally.remitted[write.envelope_id].append(write.disbursement_id)
        if write.reversal is not None:
            tally.reversed_ids[write.envelope_id].append(write.disbursement_id)
    if outcome.errors:
        bulk_insert(
            session,
            ReconError,
            [
                {
                    "statement_id": page.statement_id,
                    "statement_number": page.statement_number,
                    "statement_sequence": page.sequence_number,
                    "entry_sequence": e.sequence,
                    "entry_date": e.entry_date,
                    "value_date": e.value_date,
                    "error_code": e.code.value,
                    "detail": e.detail,
                    "disbursement_id": e.disbursement_id,
                    "bank_reference": e.bank_reference,
                    "amount": e.amount,
                    "created_at": now,
                }
                for e in outcome.errors
            ],
        )
    by_state: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for change in outcome.state_changes:
        by_state[change.state, change.reason].append(change.disbursement_id)
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
    proven: dict[str, list[str]] = defaultdict(list)
    for envelope_id, disbursement_id in outcome.proven_shipped:
        proven[envelope_id].append(disbursement_id)
    for envelope_id, disbursement_ids in proven.items():
        # Guarded by shipped_at IS NULL so a dispatch that records the bank's answer at the same
        # moment and this statement count the disbursement once between them.
        tally.counters[envelope_id]["shipped_count"] += session.execute(
            update(Disbursement)
            .where(
                one_of(session, Disbursement.id, disbursement_ids),
                Disbursement.shipped_at.is_(None),
            )
            .values(shipped_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    for delta in outcome.counters:
        tally.counters[delta.envelope_id][delta.counter] += delta.delta
    tally.total += outcome.total
    tally.matched += outcome.matched
    tally.reversed += outcome.reversed
    tally.unmatched += outcome.unmatched
