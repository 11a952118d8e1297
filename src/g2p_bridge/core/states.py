"""The state a disbursement is reported in. DISPATCHING ("in a payment batch whose sending has
started: no longer cancellable") is not written on each row: it is a BATCHED row whose bank
batch has left PENDING, so starting a batch changes one batch row instead of rewriting a
thousand wide disbursement rows (each with its index entries) to say what the batch already
says. Claiming the batch happens under the envelope's status row lock, as cancelling does, so
the two still exclude each other."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import ColumnElement, func, literal, literal_column, select
from sqlalchemy.orm import Session

from g2p_bridge.models import BankBatch, Disbursement
from g2p_bridge.models.enums import DisbursementState, WorkState


def started_batches(session: Session, batch_ids: set[str]) -> set[str]:
    """Those of the given bank batches whose sending has started (or ended)."""
    if not batch_ids:
        return set()
    return set(
        session.scalars(
            select(BankBatch.id).where(
                BankBatch.id.in_(sorted(batch_ids)), BankBatch.state != WorkState.PENDING
            )
        )
    )


def breakdown(
    session: Session, *where: ColumnElement[bool], amounts: bool = False
) -> dict[str, tuple[int, Decimal]]:
    """Disbursements (count, amount; the amount 0 unless ``amounts``) by reported state, of the
    rows matching ``where``: one GROUP BY on the stored state, and for BATCHED rows, if any, one
    join with their batches to tell DISPATCHING apart."""
    d = Disbursement
    total = func.sum(d.amount) if amounts else literal(0)
    found: dict[str, tuple[int, Decimal]] = {
        str(state): (int(count), _amount(amount))
        for state, count, amount in session.execute(
            select(d.state, func.count(), total).where(*where).group_by(d.state)
        )
    }
    batched = found.get(DisbursementState.BATCHED)
    if batched is None:
        return found
    count, amount = session.execute(
        select(func.count(), func.sum(d.amount) if amounts else literal(0))
        .select_from(d)
        .join(BankBatch, BankBatch.id == d.bank_batch_id)
        # A literal, as in the partial index ix_disbursements_batched, so a prepared
        # statement's plan can use it.
        .where(
            *where,
            d.state == literal_column(f"'{DisbursementState.BATCHED.value}'"),
            BankBatch.state != WorkState.PENDING,
        )
    ).one()
    if count:
        found[DisbursementState.DISPATCHING] = (int(count), _amount(amount))
        left = (batched[0] - int(count), batched[1] - _amount(amount))
        if left[0]:
            found[DisbursementState.BATCHED] = left
        else:
            del found[DisbursementState.BATCHED]
    return found


def _amount(value: object) -> Decimal:
    # A SUM of amounts arrives as Decimal (the Amount type); the placeholder as the integer 0.
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if value is None:  # SUM over no rows
        return Decimal(0)
    raise TypeError(f"an amount sum arrived as {type(value).__name__}")
