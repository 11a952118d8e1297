"""Polling a file-channel bank's outbox: each file applied once, then moved to the archive.

A producer sweep wakes one poll row per bank whose connector has an outbox
(:func:`plan_outbox_polls`); one worker claims it and runs :func:`poll_bank_outbox`. Every
file is read, hashed, and applied in one transaction together with its :class:`BankFile`
record, whose unique (bank, name, content hash) makes the application happen once however
often the file is listed (a poll that died before its archive move, two pollers, the bank
listing it twice). The archive move comes after that commit; a file found recorded is only
moved.

* ``*.pain002.xml``: status reports, applied by :func:`apply_status_report`.
* ``*.camt053.xml``, ``*.camt054.xml``, ``*.sta`` (MT940): statements, stored exactly as an
  upload is (core/statements.py: the same parser, the same trust rule with this bank as the
  uploader, the same reconciliation afterwards).

Anything else is left where it is: the bank may use its outbox for more than us."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from g2p_bridge.auth import Principal
from g2p_bridge.connectors.banks.base import BankUnavailable, Outbox, RemoteFile
from g2p_bridge.core import audit, callbacks
from g2p_bridge.core.context import Context
from g2p_bridge.core.envelopes import bump_counters, lock_status
from g2p_bridge.core.errors import BridgeError, Conflict
from g2p_bridge.core.statements import _lock_statements, store_statement
from g2p_bridge.core.work import Lease, claim
from g2p_bridge.db import get_required, one_of, transaction
from g2p_bridge.formats.iso20022 import (
    GroupStatus,
    ISO20022Error,
    PaymentInformationStatus,
    StatusReason,
    TransactionStatus,
    iter_status_report,
)
from g2p_bridge.models import (
    BankBatch,
    BankFile,
    BankOutboxPoll,
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import DisbursementState, WorkState

log = logging.getLogger(__name__)

STATUS_REPORT = "pain.002"
STATEMENT = "statement"
_KINDS = (
    (".pain002.xml", STATUS_REPORT),
    (".camt053.xml", STATEMENT),
    (".camt054.xml", STATEMENT),
    (".sta", STATEMENT),
)
# Names a poll acts on: no path, no hidden files, nothing a column cannot hold.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

# ISO 20022 ExternalStatusReason1Code texts for the codes banks use most, for a reason that
# comes without AddtlInf: an operator reads "AC04 closed account number", not "AC04".
REASON_TEXTS = {
    "AC01": "incorrect account number",
    "AC03": "invalid creditor account number",
    "AC04": "closed account number",
    "AC06": "blocked account",
    "AG01": "transaction forbidden",
    "AM04": "insufficient funds",
    "AM05": "duplication",
    "BE01": "inconsistent with end customer",
    "DU01": "duplicate message id",
    "FF01": "invalid file format",
    "MS03": "not specified reason agent generated",
    "NARR": "narrative",
    "RC01": "bank identifier incorrect",
    "TM01": "invalid cut-off time",
}
_DUPLICATE_MESSAGE = "DU01"


def kind_of(name: str) -> str | None:
    return next((kind for suffix, kind in _KINDS if name.endswith(suffix)), None)


def file_banks(context: Context) -> list[str]:
    """The configured banks whose connector has an outbox to poll."""
    banks = []
    for code in sorted(context.settings.bank_connectors):
        try:
            connector = context.bank(code)
        except LookupError:
            continue  # configured but not installed: dispatch says so when it needs the bank
        if connector.poll_interval_seconds is not None:
            banks.append(code)
    return banks


def plan_outbox_polls(context: Context, session: Session, now: datetime) -> None:
    """Gives every file-channel bank its poll row (the first tick after configuration)."""
    banks = file_banks(context)
    if not banks:
        return
    known = set(session.scalars(select(BankOutboxPoll.id).where(BankOutboxPoll.id.in_(banks))))
    for code in banks:
        if code not in known:
            session.execute(
                insert(BankOutboxPoll).values(
                    id=code,
                    state=WorkState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    files_taken=0,
                )
            )


# -- the poll ------------------------------------------------------------------------------


def poll_bank_outbox(context: Context, bank_code: str) -> bool:
    """One poll of one bank's outbox. True when this call did the poll."""
    settings = context.settings
    with transaction(context.session_factory) as session:
        now = utcnow()
        token = claim(session, BankOutboxPoll, bank_code, settings, now)
        if token is None:
            return False
    bank = context.bank(bank_code)
    if bank.poll_interval_seconds is None:
        # The bank's profile changed to a channel without an outbox: nothing to poll any more
        # (the producer gives it a row again if it ever gets one back).
        with transaction(context.session_factory) as session:
            session.delete(get_required(session, BankOutboxPoll, bank_code))
        return False
    taken, error = 0, None
    with Lease(context.session_factory, settings, BankOutboxPoll.id, bank_code, token) as lease:
        try:
            with bank.open_outbox() as outbox:
                seen: set[str] = set()
                for remote in outbox.list():
                    if remote.name in seen or lease.lost:
                        continue
                    seen.add(remote.name)
                    taken += _take(context, bank_code, outbox, remote)
        except BankUnavailable as exc:
            error = str(exc)
            log.warning("outbox of bank %s: %s", bank_code, error)
        lease.stop()
        with transaction(context.session_factory) as session:
            if not lease.holds(session):
                return False
            now = utcnow()
            interval = bank.poll_interval_seconds or 60.0
            if error is not None:
                # A bank's server away is retried sooner than the next regular poll, but never
                # parked: the outbox must be read again whenever it is back.
                interval = min(interval, settings.retry_backoff_seconds or interval)
            row = get_required(session, BankOutboxPoll, bank_code)
            row.state, row.attempts, row.lease_until = WorkState.PENDING, 0, None
            row.next_attempt_at = now + timedelta(seconds=interval)
            row.last_error, row.last_polled_at = error, now
            row.files_taken = row.files_taken + taken
    return True


def _take(context: Context, bank_code: str, outbox: Outbox, remote: RemoteFile) -> int:
    """Applies one outbox file once and archives it. Returns 1 when it was applied now."""
    kind = kind_of(remote.name)
    if kind is None or not _SAFE_NAME.fullmatch(remote.name):
        return 0
    limit = context.bank(bank_code).settings.sftp.max_file_bytes
    too_large = remote.size > limit
    if too_large:
        content = b""
        digest = f"size-{remote.size}"  # never downloaded: recorded by its size instead
    else:
        content = outbox.read(remote.name)
        digest = hashlib.sha256(content).hexdigest()
    applied = 0
    try:
        with transaction(context.session_factory) as session:
            record = session.scalar(
                select(BankFile).where(
                    BankFile.bank_code == bank_code,
                    BankFile.name == remote.name,
                    BankFile.content_sha256 == digest,
                )
            )
            if record is None:
                if too_large:
                    outcome = _Outcome("refused", f"larger than the {limit}-byte limit")
                else:
                    outcome = _apply(context, session, bank_code, kind, remote.name, content)
                if outcome.deferred:
                    return 0
                session.add(
                    BankFile(
                        bank_code=bank_code,
                        name=remote.name,
                        content_sha256=digest,
                        size_bytes=remote.size if too_large else len(content),
                        kind=kind,
                        outcome=outcome.outcome,
                        detail=outcome.detail,
                        statement_id=outcome.statement_id,
                        bank_batch_id=outcome.batch_id,
                        received_at=utcnow(),
                    )
                )
                session.flush()
                applied = 1
                log.info(
                    "bank %s file %s: %s %s",
                    bank_code,
                    remote.name,
                    outcome.outcome,
                    outcome.detail or "",
                )
    except IntegrityError:
        # Another poller recorded (and applied) this very file first; ours rolled back.
        applied = 0
    archived_as = outbox.archive(remote.name, digest)
    with transaction(context.session_factory) as session:
        session.execute(
            update(BankFile)
            .where(
                BankFile.bank_code == bank_code,
                BankFile.name == remote.name,
                BankFile.content_sha256 == digest,
            )
            .values(archived_as=archived_as, archived_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return applied


@dataclass(frozen=True, slots=True)
class _Outcome:
    outcome: str  # applied, duplicate, refused
    detail: str | None = None
    statement_id: str | None = None
    batch_id: str | None = None
    deferred: bool = False  # not yet: leave the file for the next poll


def _apply(
    context: Context, session: Session, bank_code: str, kind: str, name: str, content: bytes
) -> _Outcome:
    if kind == STATUS_REPORT:
        return apply_status_report(context, session, bank_code, content)
    uploader = Principal(f"sftp:{bank_code}", "bank", bank_codes=frozenset({bank_code}))
    try:
        # A savepoint: a refused file leaves nothing of itself, and its record still commits.
        with session.begin_nested():
            statement = store_statement(
                session, content, name, uploader, context.settings.max_statement_bytes
            )
            statement_id = statement.id
    except Conflict as exc:
        return _Outcome("duplicate", exc.message)
    except BridgeError as exc:
        return _Outcome("refused", exc.message)
    return _Outcome("applied", "statement stored for reconciliation", statement_id=statement_id)


# -- pain.002 ------------------------------------------------------------------------------


def reason_text(reasons: tuple[StatusReason, ...]) -> str:
    """ "AC04 Account closed", with the code's ISO name where the bank gave no text."""
    parts = []
    for reason in reasons:
        text = reason.additional_info or REASON_TEXTS.get(reason.code or "")
        parts.append(" ".join(p for p in (reason.code, text) if p) or "no reason given")
    return "; ".join(parts) or "no reason given"


def apply_status_report(
    context: Context, session: Session, bank_code: str, content: bytes
) -> _Outcome:
    """Applies a pain.002: a rejected file or payment information block sends its batch again
    (a reason a resend cures) or parks it with the reason; a rejected transaction fails that
    disbursement with the ISO reason code and text. Acceptances change nothing: only a
    statement proves money moved. A report on a batch not of this bank is refused."""
    group: GroupStatus | None = None
    block_rejections: list[PaymentInformationStatus] = []
    rejected: dict[str, str] = {}  # disbursement id -> reason
    try:
        for item in iter_status_report(io.BytesIO(content)):
            if isinstance(item, GroupStatus):
                group = item
            elif isinstance(item, PaymentInformationStatus):
                if item.is_rejected:
                    block_rejections.append(item)
            elif (
                isinstance(item, TransactionStatus)
                and item.is_rejected
                and item.original_end_to_end_id
            ):
                rejected[item.original_end_to_end_id] = reason_text(item.reasons)
    except ISO20022Error as exc:
        return _Outcome("refused", f"not a readable pain.002: {exc.reason}")
    if group is None:
        return _Outcome("refused", "the pain.002 names no original message")
    batch_id = group.original_message_id
    # The statement lock first, as reconciliation takes it: a report and a statement touching
    # the same disbursements apply one after the other.
    _lock_statements(session)
    batch = session.get(BankBatch, batch_id[:36])
    if batch is None or batch.id != batch_id or not _of_bank(session, batch, bank_code):
        return _Outcome("refused", f"no payment batch {batch_id[:40]!r} sent to this bank")
    lock_status(session, batch.envelope_id)
    session.refresh(batch)
    if batch.state != WorkState.DONE and batch.state != WorkState.FAILED:
        # Our own record of the delivery has not committed yet (or a resend is under way):
        # read the report again at the next poll.
        return _Outcome("applied", deferred=True, batch_id=batch_id)
    file_reasons = (group.reasons if group.is_rejected else ()) + tuple(
        r for b in block_rejections for r in b.reasons
    )
    if group.is_rejected or block_rejections:
        return _reject_batch(context, session, bank_code, batch, file_reasons)
    failed, failed_at = _fail_transactions(session, batch, rejected)
    if failed:
        # The PBMS hears of each rejected payment, and of the envelope's close when the report
        # is the last thing to settle it (a statement may have come first).
        callbacks.record_results(
            session,
            context.settings,
            batch.envelope_id,
            callbacks.BANK_REFUSED,
            Disbursement.bank_batch_id == batch.id,
            Disbursement.state == DisbursementState.FAILED,
            Disbursement.updated_at == failed_at,
        )
    audit.record(
        session,
        "bank_batch.status_report",
        "bank_batch",
        batch.id,
        envelope_id=batch.envelope_id,
        outcome="ok" if not rejected else "failed",
        detail={"group_status": group.status, "rejected": len(rejected), "failed": failed},
    )
    return _Outcome(
        "applied",
        f"group {group.status or '-'}; {len(rejected)} transaction(s) rejected, {failed} failed",
        batch_id=batch.id,
    )


def _of_bank(session: Session, batch: BankBatch, bank_code: str) -> bool:
    sponsor = session.scalar(
        select(BenefitProgram.sponsor_bank_code)
        .join(
            DisbursementEnvelope, DisbursementEnvelope.program_mnemonic == BenefitProgram.mnemonic
        )
        .where(DisbursementEnvelope.id == batch.envelope_id)
    )
    return sponsor == bank_code


# Awaiting their outcome: shipped, or still BATCHED in this (sent) batch, which is what is
# reported as DISPATCHING (core/states.py).
_OPEN = (DisbursementState.SHIPPED, DisbursementState.BATCHED)


def _fail_transactions(
    session: Session, batch: BankBatch, rejected: dict[str, str]
) -> tuple[int, datetime]:
    """Fails the rejected disbursements still awaiting their outcome; set-based, grouped by
    reason. One a statement already reconciled keeps its state (the money moved). Returns how
    many failed and the ``updated_at`` they were given."""
    by_reason: dict[str, list[str]] = {}
    for disbursement_id, reason in rejected.items():
        by_reason.setdefault(reason, []).append(disbursement_id)
    failed = 0
    now = utcnow()
    for reason, ids in by_reason.items():
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            failed += session.execute(
                update(Disbursement)
                .where(
                    one_of(session, Disbursement.id, chunk),
                    Disbursement.bank_batch_id == batch.id,
                    Disbursement.state.in_(_OPEN),
                )
                .values(
                    state=DisbursementState.FAILED,
                    state_reason=f"rejected by the bank: {reason}"[:2000],
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
    bump_counters(session, batch.envelope_id, failed_count=failed)
    return failed, now


def _reject_batch(
    context: Context,
    session: Session,
    bank_code: str,
    batch: BankBatch,
    reasons: tuple[StatusReason, ...],
) -> _Outcome:
    settings = context.settings
    text = reason_text(reasons)
    codes = {r.code for r in reasons if r.code}
    if batch.state != WorkState.DONE:
        return _Outcome(
            "applied", f"batch is {batch.state}; rejection noted: {text}", batch_id=batch.id
        )
    if codes and codes <= {_DUPLICATE_MESSAGE}:
        # A resend after a crash that the bank recognised: the first delivery stands.
        return _Outcome(
            "applied",
            f"duplicate delivery refused by the bank ({text}); the first stands",
            batch_id=batch.id,
        )
    now = utcnow()
    resend_on = set(context.bank(bank_code).settings.resend_on_reasons)
    resend = bool(codes) and codes <= resend_on and batch.attempts < settings.max_attempts
    if resend:
        # The bank registered nothing of a file it refused whole: the same file goes again.
        moved = session.execute(
            update(Disbursement)
            .where(
                Disbursement.bank_batch_id == batch.id,
                Disbursement.state == DisbursementState.SHIPPED,
            )
            .values(
                state=DisbursementState.BATCHED,  # reported DISPATCHING: its batch is held
                shipped_at=None,
                state_reason=f"payment file refused by the bank, sent again: {text}"[:2000],
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        bump_counters(session, batch.envelope_id, shipped_count=-moved)
        due = now + timedelta(
            seconds=settings.retry_backoff_seconds * 2 ** max(batch.attempts - 1, 0)
        )
        # Held (RUNNING, its lease the backoff) as a retry is: the envelope's money is still
        # in the bank's hands, so it cannot be cancelled meanwhile.
        batch.state, batch.lease_until, batch.next_attempt_at = WorkState.RUNNING, due, due
        batch.last_error = f"file rejected by the bank: {text}"[:2000]
        outcome, action = "retry", "sent again"
    else:
        failed = session.execute(
            update(Disbursement)
            .where(Disbursement.bank_batch_id == batch.id, Disbursement.state.in_(_OPEN))
            .values(
                state=DisbursementState.FAILED,
                state_reason=f"payment file rejected by the bank: {text}"[:2000],
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        bump_counters(session, batch.envelope_id, failed_count=failed)
        callbacks.bank_batch_changed(session, settings, batch.envelope_id, batch.id, "refused", now)
        batch.state, batch.lease_until = WorkState.FAILED, None
        batch.last_error = batch.bank_response = f"file rejected by the bank: {text}"[:2000]
        outcome, action = "failed", "parked"
    audit.record(
        session,
        "bank_batch.status_report",
        "bank_batch",
        batch.id,
        envelope_id=batch.envelope_id,
        outcome=outcome,
        detail={"file_rejected": text, "action": action},
    )
    return _Outcome("applied", f"file rejected ({text}): batch {action}", batch_id=batch.id)
