"""Read models for the operators' console: where the money is, per envelope and today.

Everything here is read through indexes and counters: stage counts come from the envelopes'
status counters (one row per envelope, never per disbursement), lists page by keyset (the last
row's key, never OFFSET, which would read and discard every earlier row), and today's sums are
read from covering indexes. ``programs`` is the caller's grant: None for every program."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from time import monotonic
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, tuple_
from sqlalchemy.orm import Session

from g2p_bridge.core import approvals, states
from g2p_bridge.models import (
    AccountStatement,
    BankBatch,
    Disbursement,
    DisbursementEnvelope,
    DisbursementRecon,
    EnvelopeApproval,
    EnvelopeStatus,
    FundsRelease,
    MapperBatch,
    ReconDayTotal,
    ReconError,
    ReconErrorAck,
    ResolvedAddress,
)
from g2p_bridge.models.console import FAILED_ROWS
from g2p_bridge.models.enums import (
    FAILED_STATES,
    FundsAvailable,
    FundsBlocked,
    StatementState,
    WorkState,
)

PAGE = 50


class Stage(StrEnum):
    RECEIVING = "RECEIVING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    FUNDING = "FUNDING"
    PAYING = "PAYING"
    SETTLED = "SETTLED"
    CANCELLED = "CANCELLED"


IN_FLIGHT = (Stage.RECEIVING, Stage.AWAITING_APPROVAL, Stage.FUNDING, Stage.PAYING)


def stage_expression() -> ColumnElement[str]:
    """An envelope's stage in SQL, so that lists filter and the dashboard groups by it."""
    e, s = DisbursementEnvelope, EnvelopeStatus
    return case(
        (e.cancelled.is_(True), Stage.CANCELLED.value),
        (s.received_count < e.number_of_disbursements, Stage.RECEIVING.value),
        (approvals.awaiting_clause(), Stage.AWAITING_APPROVAL.value),
        (s.funds_blocked_state != FundsBlocked.FUNDS_BLOCK_SUCCESS, Stage.FUNDING.value),
        (s.reconciled_count + s.failed_count < s.received_count, Stage.PAYING.value),
        else_=Stage.SETTLED.value,
    )


_Q = TypeVar("_Q", bound=Select[*tuple[Any, ...]])


def _granted(query: _Q, column: Any, programs: Collection[str] | None) -> _Q:
    """Only the caller's programs (None: every program)."""
    if programs is None:
        return query
    return query.where(column.in_(sorted(programs)))


def _day(today: date) -> datetime:
    return datetime.combine(today, time(), tzinfo=UTC)


@dataclass
class Alert:
    kind: str
    message: str
    link: str


@dataclass
class Dashboard:
    stages: dict[str, int]
    # Per currency: blocked at the bank today, paid (booked debits) today, returned today.
    today: dict[str, dict[str, Decimal]]
    alerts: list[Alert] = field(default_factory=list)
    unacknowledged_errors: int = 0


def dashboard(
    session: Session, programs: Collection[str] | None, today: date, max_attempts: int
) -> Dashboard:
    e, s = DisbursementEnvelope, EnvelopeStatus
    stage = stage_expression()
    query = select(stage, func.count()).select_from(e).join(s, s.envelope_id == e.id)
    query = _granted(query, e.program_mnemonic, programs).group_by(stage)
    stages = {str(k): int(v) for k, v in session.execute(query).all()}

    money: dict[str, dict[str, Decimal]] = {}

    def add(currency: str, what: str, amount: Decimal | None) -> None:
        slot = money.setdefault(
            currency, {"blocked": Decimal(0), "paid": Decimal(0), "returned": Decimal(0)}
        )
        slot[what] += Decimal(amount or 0)

    blocked = (
        select(e.currency, func.sum(e.total_disbursement_amount))
        .join(s, s.envelope_id == e.id)
        .where(
            s.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS,
            s.funds_blocked_at >= _day(today),
        )
        .group_by(e.currency)
    )
    for currency, amount in session.execute(_granted(blocked, e.program_mnemonic, programs)):
        add(currency, "blocked", amount)
    # Per envelope from the day's totals (kept as statements are applied), then per currency:
    # summing the recon rows here would read every one of the day's.
    currencies = _envelope_currencies(session, programs)
    t = ReconDayTotal
    rows = session.execute(
        select(t.envelope_id, t.kind, t.amount)
        .where(t.entry_date == today)
        .order_by(t.kind, t.envelope_id)
    )
    for envelope_id, kind, summed in rows:
        if envelope_id in currencies:
            add(currencies[envelope_id], kind, summed)
    return Dashboard(
        stages=stages,
        today=money,
        alerts=alerts(session, programs, max_attempts),
        unacknowledged_errors=count_recon_errors(session, programs, unacknowledged=True),
    )


def _envelope_currencies(session: Session, programs: Collection[str] | None) -> dict[str, str]:
    e = DisbursementEnvelope
    query = _granted(select(e.id, e.currency), e.program_mnemonic, programs)
    return {i: c for i, c in session.execute(query)}


def alerts(session: Session, programs: Collection[str] | None, max_attempts: int) -> list[Alert]:
    """Work that waits for a person: parked batches, failed statements, gaps, funds stuck."""
    found: list[Alert] = []
    e = DisbursementEnvelope
    parked = (
        select(BankBatch.id, BankBatch.envelope_id, BankBatch.attempts, BankBatch.last_error)
        .join(e, e.id == BankBatch.envelope_id)
        .where(BankBatch.state == WorkState.FAILED, e.cancelled.is_(False))
        .limit(PAGE)
    )
    for batch_id, envelope_id, attempts, error in session.execute(
        _granted(parked, e.program_mnemonic, programs)
    ):
        why = "past its attempts" if attempts >= max_attempts else "refused by the bank"
        found.append(
            Alert(
                "bank_batch",
                f"payment batch {batch_id} of {envelope_id} is parked ({why}): {error or ''}",
                f"/console/envelopes/{envelope_id}#batches",
            )
        )
    mapper = (
        select(MapperBatch.id, MapperBatch.envelope_id, MapperBatch.last_error)
        .join(e, e.id == MapperBatch.envelope_id)
        .where(MapperBatch.state == WorkState.FAILED, e.cancelled.is_(False))
        .limit(PAGE)
    )
    for batch_id, envelope_id, error in session.execute(
        _granted(mapper, e.program_mnemonic, programs)
    ):
        found.append(
            Alert(
                "mapper_batch",
                f"ID-mapper batch {batch_id} of {envelope_id} failed: {error or ''}",
                f"/console/envelopes/{envelope_id}#batches",
            )
        )
    a = AccountStatement
    troubled = (
        select(a.id, a.state, a.account_number, a.error_reason, a.sequence_gaps, a.balance_problems)
        .where(
            or_(
                a.state == StatementState.ERROR,
                a.sequence_gaps.is_not(None),
                a.balance_problems.is_not(None),
            )
        )
        .order_by(a.uploaded_at.desc())
        .limit(PAGE)
    )
    for statement_id, state, account, error, gaps, balance in session.execute(
        _granted(troubled, a.program_mnemonic, programs)
    ):
        link = f"/console/statements?account={account or ''}"
        if state == StatementState.ERROR:
            found.append(Alert("statement", f"statement {statement_id} in ERROR: {error}", link))
        if gaps:
            found.append(Alert("sequence_gap", f"account {account}: {gaps}", link))
        if balance:
            found.append(Alert("balance", f"account {account}: {balance}", link))
    s = EnvelopeStatus
    stuck = (
        select(e.id, s.funds_available_state, s.funds_available_error, s.funds_blocked_error)
        .join(s, s.envelope_id == e.id)
        .where(
            e.cancelled.is_(False),
            s.funds_blocked_state != FundsBlocked.FUNDS_BLOCK_SUCCESS,
            or_(
                s.funds_available_state.in_(
                    [FundsAvailable.FUNDS_NOT_AVAILABLE, FundsAvailable.ERROR]
                ),
                s.funds_blocked_state.in_([FundsBlocked.FUNDS_BLOCK_FAILURE, FundsBlocked.ERROR]),
                s.funds_blocked_attempts >= max_attempts,
            ),
        )
        .limit(PAGE)
    )
    for envelope_id, available, available_error, blocked_error in session.execute(
        _granted(stuck, e.program_mnemonic, programs)
    ):
        found.append(
            Alert(
                "funds",
                f"funds of {envelope_id}: {available} {available_error or blocked_error or ''}",
                f"/console/envelopes/{envelope_id}",
            )
        )
    return found


@dataclass
class EnvelopeRow:
    id: str
    program: str
    cycle: str
    schedule_date: date
    currency: str
    declared_count: int
    declared_total: Decimal
    received_count: int
    stage: str
    created_at: datetime


def list_envelopes(
    session: Session,
    programs: Collection[str] | None,
    program: str | None = None,
    stage: str | None = None,
    schedule_date: date | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = PAGE,
) -> tuple[list[EnvelopeRow], tuple[datetime, str] | None]:
    """Newest first; ``after`` is the (created_at, id) of the last row of the previous page."""
    e, s = DisbursementEnvelope, EnvelopeStatus
    stage_column = stage_expression().label("stage")
    query = select(e, s.received_count, stage_column).join(s, s.envelope_id == e.id)
    query = _granted(query, e.program_mnemonic, programs)
    if program:
        query = query.where(e.program_mnemonic == program)
    if stage:
        query = query.where(stage_expression() == stage)
    if schedule_date is not None:
        query = query.where(e.schedule_date == schedule_date)
    if after is not None:
        query = query.where(tuple_(e.created_at, e.id) < tuple_(*after))
    rows = session.execute(query.order_by(e.created_at.desc(), e.id.desc()).limit(limit + 1)).all()
    page = [
        EnvelopeRow(
            id=env.id,
            program=env.program_mnemonic,
            cycle=env.cycle_code_mnemonic,
            schedule_date=env.schedule_date,
            currency=env.currency,
            declared_count=env.number_of_disbursements,
            declared_total=env.total_disbursement_amount,
            received_count=received,
            stage=stage_value,
            created_at=env.created_at,
        )
        for env, received, stage_value in rows[:limit]
    ]
    cursor = (page[-1].created_at, page[-1].id) if len(rows) > limit and page else None
    return page, cursor


@dataclass
class EnvelopeDetail:
    envelope: DisbursementEnvelope
    status: EnvelopeStatus
    stage: str
    approval: approvals.ApprovalState
    decided_by: str | None
    makers: set[str]
    # state -> (count, amount)
    by_state: dict[str, tuple[int, Decimal]]
    amounts: dict[str, Decimal]
    bank_batches: list[BankBatch]
    bank_batch_counts: dict[str, int]
    mapper_batches: list[MapperBatch]
    mapper_batch_counts: dict[str, int]


class Breakdowns:
    """Disbursements by state (count and amount) of an envelope: the one read of an envelope
    page that grows with its size (a GROUP BY over its rows, about 40 ms per 100,000). For an
    envelope of more than ``exact_below`` rows it is kept ``seconds`` per process, so a page that
    polls, or many people watching a 1,000,000-disbursement payroll, cost one such read per
    interval; smaller envelopes are always read as they are."""

    def __init__(self, seconds: float = 10.0, exact_below: int = 20_000) -> None:
        self.seconds, self.exact_below = seconds, exact_below
        self._kept: dict[str, tuple[float, dict[str, tuple[int, Decimal]]]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, envelope_id: str, rows: int) -> dict[str, tuple[int, Decimal]]:
        now = monotonic()
        if rows >= self.exact_below:
            with self._lock:
                kept = self._kept.get(envelope_id)
            if kept is not None and kept[0] > now:
                return kept[1]
        found = states.breakdown(session, Disbursement.envelope_id == envelope_id, amounts=True)
        if rows >= self.exact_below:
            with self._lock:
                if len(self._kept) > 1000:
                    self._kept.clear()
                self._kept[envelope_id] = (now + self.seconds, found)
        return found


breakdowns = Breakdowns()


def envelope_detail(session: Session, envelope_id: str) -> EnvelopeDetail | None:
    e, s = DisbursementEnvelope, EnvelopeStatus
    row = session.execute(
        select(e, s, stage_expression()).join(s, s.envelope_id == e.id).where(e.id == envelope_id)
    ).first()
    if row is None:
        return None
    envelope, status, stage = row
    by_state = breakdowns.get(session, envelope.id, status.received_count + status.cancelled_count)

    def total(*states: str) -> Decimal:
        return sum((by_state.get(x, (0, Decimal(0)))[1] for x in states), Decimal(0))

    blocked = (
        envelope.total_disbursement_amount
        if status.funds_blocked_state == FundsBlocked.FUNDS_BLOCK_SUCCESS
        else Decimal(0)
    )
    amounts = {
        "declared": envelope.total_disbursement_amount,
        "received": status.received_amount,
        "blocked": blocked,
        # Paid: debits the bank's statements booked (a reversed one was paid, then returned).
        "paid": total("RECONCILED", "REVERSED"),
        "returned": total("REVERSED"),
        "failed": total(*FAILED_STATES),
        "cancelled": total("CANCELLED"),
        "in_progress": total("RECEIVED", "RESOLVING", "RESOLVED", "BATCHED", "DISPATCHING")
        + total("SHIPPED"),
    }
    # The rest of the block given back once the envelope was final (core/release.py); what the
    # block still holds is then 0.
    release = session.get(FundsRelease, envelope.id)
    released = release.amount if release is not None and release.state == WorkState.DONE else 0
    amounts["released"] = Decimal(released)
    amounts["held"] = blocked - amounts["paid"] - amounts["released"] if blocked else Decimal(0)
    decision = session.get(EnvelopeApproval, envelope.id)

    def batches(model: Any) -> tuple[list[Any], dict[str, int]]:
        counts = {
            k: int(v)
            for k, v in session.execute(
                select(model.state, func.count())
                .where(model.envelope_id == envelope.id)
                .group_by(model.state)
            )
        }
        # What needs a look first (not DONE), then the latest; a 1M envelope has 1,000 batches.
        rows = session.scalars(
            select(model)
            .where(model.envelope_id == envelope.id)
            .order_by(case((model.state == WorkState.DONE, 1), else_=0), model.created_at.desc())
            .limit(PAGE)
        )
        return list(rows), counts

    bank_rows, bank_counts = batches(BankBatch)
    mapper_rows, mapper_counts = batches(MapperBatch)
    return EnvelopeDetail(
        envelope=envelope,
        status=status,
        stage=stage,
        approval=approvals.approval_state(session, envelope, status),
        decided_by=decision.decided_by if decision is not None else None,
        makers=approvals.makers(session, envelope),
        by_state=by_state,
        amounts=amounts,
        bank_batches=bank_rows,
        bank_batch_counts=bank_counts,
        mapper_batches=mapper_rows,
        mapper_batch_counts=mapper_counts,
    )


def search_disbursements(
    session: Session, programs: Collection[str] | None, term: str, limit: int = PAGE
) -> list[tuple[Disbursement, str]]:
    """By disbursement id, beneficiary id or the bank's reference: each an indexed equality."""
    term = term.strip()
    if not term:
        return []
    d, e = Disbursement, DisbursementEnvelope
    by_reference = select(DisbursementRecon.disbursement_id).where(
        DisbursementRecon.remittance_reference_number == term
    )
    query = (
        select(d, e.program_mnemonic)
        .join(e, e.id == d.envelope_id)
        .where(or_(d.id == term, d.beneficiary_id == term, d.id.in_(by_reference)))
        .order_by(d.id)
        .limit(limit)
    )
    return [
        (row, program)
        for row, program in session.execute(_granted(query, e.program_mnemonic, programs))
    ]


@dataclass
class Story:
    disbursement: Disbursement
    program: str
    currency: str
    address: ResolvedAddress | None
    mapper_batch: MapperBatch | None
    bank_batch: BankBatch | None
    recon: DisbursementRecon | None
    errors: list[ReconError]


def disbursement_story(session: Session, disbursement_id: str) -> Story | None:
    row = session.get(Disbursement, disbursement_id)
    if row is None:
        return None
    envelope = session.get(DisbursementEnvelope, row.envelope_id)
    if envelope is None:
        return None
    return Story(
        disbursement=row,
        program=envelope.program_mnemonic,
        currency=envelope.currency,
        address=session.get(ResolvedAddress, row.id),
        mapper_batch=session.get(MapperBatch, row.mapper_batch_id) if row.mapper_batch_id else None,
        bank_batch=session.get(BankBatch, row.bank_batch_id) if row.bank_batch_id else None,
        recon=session.get(DisbursementRecon, row.id),
        errors=list(
            session.scalars(
                select(ReconError)
                .where(ReconError.disbursement_id == row.id)
                .order_by(ReconError.id)
            )
        ),
    )


def failures(
    session: Session,
    programs: Collection[str] | None,
    after: str | None = None,
    limit: int = PAGE,
) -> tuple[list[tuple[Disbursement, str, str]], str | None]:
    """Failed and unresolved disbursements with their reasons, by id (ix_disbursements_failed_id,
    which holds only those)."""
    d, e = Disbursement, DisbursementEnvelope
    query = (
        select(d, e.program_mnemonic, e.currency).join(e, e.id == d.envelope_id).where(FAILED_ROWS)
    )
    if after:
        query = query.where(d.id > after)
    query = _granted(query, e.program_mnemonic, programs).order_by(d.id).limit(limit + 1)
    rows = [(r, p, c) for r, p, c in session.execute(query)]
    cursor = rows[limit - 1][0].id if len(rows) > limit else None
    return rows[:limit], cursor


def iter_failures(
    session: Session, programs: Collection[str] | None, chunk: int = 1000
) -> Iterator[tuple[Disbursement, str, str]]:
    """Every failure, a chunk at a time: an export of 100,000 holds 1,000 in memory."""
    after: str | None = None
    while True:
        rows, after = failures(session, programs, after, chunk)
        yield from rows
        session.expunge_all()
        if after is None:
            return


def _recon_errors_query(
    programs: Collection[str] | None, unacknowledged: bool
) -> Select[ReconError, ReconErrorAck, str | None, str | None]:
    r, a = ReconError, AccountStatement
    query = (
        select(r, ReconErrorAck, a.account_number, a.program_mnemonic)
        .join(a, a.id == r.statement_id)
        .outerjoin(ReconErrorAck, ReconErrorAck.recon_error_id == r.id)
    )
    if unacknowledged:
        query = query.where(ReconErrorAck.recon_error_id.is_(None))
    return _granted(query, a.program_mnemonic, programs)


def recon_errors(
    session: Session,
    programs: Collection[str] | None,
    unacknowledged: bool = False,
    after: int | None = None,
    limit: int = PAGE,
) -> tuple[list[Any], int | None]:
    """Newest first, keyset on id."""
    query = _recon_errors_query(programs, unacknowledged)
    if after is not None:
        query = query.where(ReconError.id < after)
    rows = list(session.execute(query.order_by(ReconError.id.desc()).limit(limit + 1)))
    cursor = rows[limit - 1][0].id if len(rows) > limit else None
    return rows[:limit], cursor


def iter_recon_errors(
    session: Session, programs: Collection[str] | None, chunk: int = 1000
) -> Iterator[Any]:
    after: int | None = None
    while True:
        rows, after = recon_errors(session, programs, False, after, chunk)
        yield from rows
        session.expunge_all()
        if after is None:
            return


def count_recon_errors(
    session: Session, programs: Collection[str] | None, unacknowledged: bool
) -> int:
    query = _recon_errors_query(programs, unacknowledged).with_only_columns(func.count())
    return int(session.scalar(query) or 0)


def statements(
    session: Session,
    programs: Collection[str] | None,
    account: str | None = None,
    state: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = PAGE,
) -> tuple[list[AccountStatement], tuple[datetime, str] | None]:
    a = AccountStatement
    query = select(a)
    if account:
        query = query.where(a.account_number == account)
    if state:
        query = query.where(a.state == state)
    if after is not None:
        query = query.where(tuple_(a.uploaded_at, a.id) < tuple_(*after))
    query = _granted(query, a.program_mnemonic, programs)
    rows = list(session.scalars(query.order_by(a.uploaded_at.desc(), a.id.desc()).limit(limit + 1)))
    cursor = (rows[limit - 1].uploaded_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], cursor


__all__ = ["IN_FLIGHT", "PAGE", "Stage", "and_"]
