"""Test support for the bridge: request builders, a fake sponsor bank, an MT940 writer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.connectors.banks.base import (
    BankConnector,
    BankUnavailable,
    BlockResult,
    FundsCheck,
    PaymentBatchResult,
    PaymentInstruction,
    ReleaseResult,
)
from g2p_bridge.core.context import Context
from g2p_bridge.db import transaction
from g2p_bridge.models import Base, Disbursement, EnvelopeStatus
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import FAILED_STATES, DisbursementState
from g2p_bridge.pbms_client import (
    DisbursementItem,
    EnvelopeSpec,
    ProgramConfig,
    disbursement_message,
    request_header,
)
from g2p_bridge.settings import BankConnectorSettings, Settings

TODAY = utcnow().date()


def header(
    action: str, count: int = 1, message_id: str | None = None, sender: str = "pbms-1"
) -> dict[str, Any]:
    return request_header(action, count, sender, message_id)


def program_request(
    mnemonic: str = "PROG1",
    account: str = "1000000001",
    currency: str = "USD",
    resolver: str = "inline",
) -> dict[str, Any]:
    config = ProgramConfig(
        mnemonic,
        "EXAMPLE",
        account,
        currency,
        resolver,
        sponsor_bank_branch_code="BR1",
        id_mapper_resolution_required=resolver != "inline",
    )
    return {"header": header("create_benefit_program_configuration"), "message": config.message()}


def envelope_request(
    envelope_id: str | None = None,
    count: int = 3,
    total: str = "300.00",
    program: str = "PROG1",
    currency: str = "USD",
    schedule: date | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    spec = EnvelopeSpec(
        program,
        count,
        Decimal(total),
        currency,
        schedule or TODAY,
        cycle_code="2026-11",
        envelope_id=envelope_id,
    )
    message = {"disbursement_envelope_id": envelope_id, **spec.message(), **overrides}
    return {"header": header("create_disbursement_envelope"), "message": message}


def disbursement_items(
    envelope_id: str,
    count: int = 3,
    amount: str = "100.00",
    prefix: str | None = None,
    bank: str = "OTHERBANK",
) -> list[dict[str, Any]]:
    prefix = prefix or f"d-{envelope_id[:8]}"
    return [
        disbursement_message(
            envelope_id,
            DisbursementItem(
                f"ben-{i}",
                f"Beneficiary {i}",
                Decimal(amount),
                f"{prefix}-{i:06d}",
                f"account:ACC{i:08d}@{bank}.BR{i % 3}",
                f"mis-{i}",
                "November cash transfer",
            ),
        )
        for i in range(count)
    ]


def disbursements_request(
    items: list[dict[str, Any]], message_id: str | None = None, action: str = "create_disbursements"
) -> dict[str, Any]:
    return {"header": header(action, len(items), message_id), "message": items}


def dumps(body: Any) -> str:
    """Serialises with Decimals as JSON numbers (not strings, not floats)."""
    import json

    class _Encoder(json.JSONEncoder):
        def default(self, o: Any) -> Any:
            if isinstance(o, Decimal):
                return _RawNumber(str(o))
            return super().default(o)

    text = json.dumps(body, cls=_Encoder, default=str)
    return text.replace('"__num__', "").replace('__num__"', "")


class _RawNumber(str):
    def __new__(cls, value: str) -> _RawNumber:
        return super().__new__(cls, f"__num__{value}__num__")


@dataclass
class FakeBank(BankConnector):
    """An in-memory sponsor bank that de-duplicates payment references as a real one must, and
    can be told to fail in the ways real ones do."""

    balance: Decimal = Decimal("1000000000")
    payments: dict[str, PaymentInstruction] = field(default_factory=dict)
    payment_calls: int = 0
    blocks: dict[str, str] = field(default_factory=dict)
    block_calls: int = 0
    fail_next: int = 0
    timeout_after_processing: int = 0
    reject_payments: bool = False
    # Releases by idempotency key: (block reference, amount, release reference).
    releases: dict[str, tuple[str, Decimal, str]] = field(default_factory=dict)
    release_calls: int = 0
    refuse_releases: int = 0
    release_timeout_after_processing: int = 0
    group_payments_by: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        super().__init__(BankConnectorSettings())

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise BankUnavailable("simulated: connection refused")

    def check_funds(self, account_number: str, currency: str, amount: Decimal) -> FundsCheck:
        with self.lock:
            self._maybe_fail()
            return FundsCheck(sufficient=self.balance >= amount)

    def block_funds(
        self, account_number: str, currency: str, amount: Decimal, idempotency_key: str
    ) -> BlockResult:
        with self.lock:
            self._maybe_fail()
            self.block_calls += 1
            reference = self.blocks.setdefault(idempotency_key, f"BLK-{len(self.blocks) + 1}")
            return BlockResult(blocked=True, reference=reference)

    def release_funds(
        self,
        account_number: str,
        currency: str,
        amount: Decimal,
        block_reference: str,
        idempotency_key: str,
    ) -> ReleaseResult:
        with self.lock:
            self.release_calls += 1
            self._maybe_fail()
            if self.refuse_releases > 0:
                self.refuse_releases -= 1
                return ReleaseResult(False, None, "simulated: more than the block holds")
            if idempotency_key not in self.releases:
                reference = f"REL-{len(self.releases) + 1}"
                self.releases[idempotency_key] = (block_reference, amount, reference)
            if self.release_timeout_after_processing > 0:
                self.release_timeout_after_processing -= 1
                raise BankUnavailable("simulated: read timeout after the bank released")
            return ReleaseResult(True, self.releases[idempotency_key][2])

    def initiate_payment(self, payments: list[PaymentInstruction]) -> PaymentBatchResult:
        with self.lock:
            self.payment_calls += 1
            self._maybe_fail()
            if self.reject_payments:
                return PaymentBatchResult(accepted=False, detail="simulated: account frozen")
            duplicates = tuple(
                p.payment_reference for p in payments if p.payment_reference in self.payments
            )
            for p in payments:
                self.payments.setdefault(p.payment_reference, p)
            if self.timeout_after_processing > 0:
                self.timeout_after_processing -= 1
                raise BankUnavailable("simulated: read timeout after the bank processed it")
            return PaymentBatchResult(accepted=True, duplicates=duplicates)


def fake_context(
    session_factory: sessionmaker[Session], bank: FakeBank | None = None, **settings: Any
) -> Context:
    defaults: dict[str, Any] = {
        "database_url": "sqlite://",
        "retry_backoff_seconds": 0,
        "lease_seconds": 60,
        "mapper_batch_size": 50,
        "dispatch_batch_size": 50,
    }
    defaults.update(settings)
    context = Context(Settings(**defaults), session_factory)
    context.use_bank("EXAMPLE", bank or FakeBank())
    return context


def mt940(
    account: str,
    entries: list[tuple[str, str, Decimal, str]],
    number: int = 1,
    opening: Decimal = Decimal("1000000.00"),
    currency: str = "USD",
    balanced: bool = True,
) -> str:
    """A statement with (mark, disbursement id, amount, narrative) entries."""
    day = TODAY.strftime("%y%m%d")
    lines = [
        f":20:TEST{number:06d}",
        f":25:{account}",
        f":28C:{number}/1",
        f":60F:{'C' if opening >= 0 else 'D'}{day}{currency}{_amt(abs(opening))}",
    ]
    balance = opening
    for i, (mark, ref, amount, narrative) in enumerate(entries):
        lines.append(
            f":61:{day}{TODAY.strftime('%m%d')}{mark}{_amt(amount)}NTRF{ref}//B{number}-{i}"
        )
        lines.append(f":86:{narrative}")
        balance += amount if mark in ("C", "RD") else -amount
    if not balanced:
        balance += Decimal("0.01")
    lines.append(f":62F:{'C' if balance >= 0 else 'D'}{day}{currency}{_amt(abs(balance))}")
    lines.append("-")
    return "\n".join(lines) + "\n"


def _amt(value: Decimal) -> str:
    return f"{value:.2f}".replace(".", ",")


def clear_tables(engine: Engine) -> None:
    # DELETE beats TRUNCATE on the few rows a test leaves: TRUNCATE rewrites every table file.
    # Not on the 100,000 of a scale test: each deleted disbursement's foreign-key check then
    # reads the rows deleted before it from the narrow recon table (seq scan, the planner's
    # choice for a table that looks empty), quadratic: minutes.
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        many = "SELECT EXISTS (SELECT 1 FROM disbursements OFFSET 5000)"
        if postgres and conn.exec_driver_sql(many).scalar():
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.exec_driver_sql(f"TRUNCATE {names}")
            return
        if postgres:
            # The audit trail refuses DELETE (a trigger); TRUNCATE is how a test wipes it.
            conn.exec_driver_sql("TRUNCATE audit_events")
        for table in reversed(Base.metadata.sorted_tables):
            if not (postgres and table.name == "audit_events"):
                conn.execute(table.delete())


def counters_match_rows(session_factory: sessionmaker[Session]) -> None:
    """The envelope counters always equal what the rows say."""
    with transaction(session_factory) as session:
        for status in session.scalars(select(EnvelopeStatus)):
            rows = (
                select(func.count())
                .select_from(Disbursement)
                .where(Disbursement.envelope_id == status.envelope_id)
            )
            count = lambda *conds, rows=rows: session.scalar(rows.where(*conds))  # noqa: E731
            amount = session.scalar(
                select(func.coalesce(func.sum(Disbursement.amount), 0)).where(
                    Disbursement.envelope_id == status.envelope_id,
                    Disbursement.cancelled.is_(False),
                )
            )
            actual = {
                "received_count": count(Disbursement.cancelled.is_(False)),
                "received_amount": Decimal(amount),
                "cancelled_count": count(Disbursement.cancelled.is_(True)),
                "shipped_count": count(Disbursement.shipped_at.is_not(None)),
                "reconciled_count": count(
                    Disbursement.state.in_(
                        [DisbursementState.RECONCILED, DisbursementState.REVERSED]
                    )
                ),
                "reversed_count": count(Disbursement.state == DisbursementState.REVERSED),
                "failed_count": count(Disbursement.state.in_(FAILED_STATES)),
            }
            stored = {k: getattr(status, k) for k in actual}
            assert stored == actual, f"envelope {status.envelope_id}: {stored} != {actual}"


def states(session_factory: sessionmaker[Session], envelope_id: str) -> dict[str, int]:
    with transaction(session_factory) as session:
        return dict(
            session.execute(
                select(Disbursement.reported_state, func.count())
                .where(Disbursement.envelope_id == envelope_id)
                .group_by(Disbursement.reported_state)
            ).all()
        )


def yesterday() -> date:
    return TODAY - timedelta(days=1)
