"""What the bridge needs from a sponsor bank, and how a connector is found for a bank code."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib.metadata import entry_points
from typing import Protocol

from g2p_bridge.settings import BankConnectorSettings

ENTRY_POINT_GROUP = "g2p_bridge.bank_connectors"


class BankUnavailable(Exception):
    """The bank could not be reached or failed (timeout, connection error, 5xx): retry later."""


class BankRejected(Exception):
    """The bank answered and refused; retrying the same request will not help."""


@dataclass(frozen=True, slots=True)
class FundsCheck:
    sufficient: bool
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class BlockResult:
    blocked: bool
    reference: str | None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentInstruction:
    # The disbursement id: the bank's de-duplication key, so a re-sent batch never pays twice.
    payment_reference: str
    remitting_account: str
    remitting_currency: str
    amount: Decimal
    block_reference: str | None
    beneficiary_name: str
    beneficiary_account: str | None
    beneficiary_account_type: str
    beneficiary_bank_code: str | None
    beneficiary_branch_code: str | None
    beneficiary_mobile_wallet_provider: str | None
    beneficiary_phone: str | None
    beneficiary_email: str | None
    beneficiary_email_wallet_provider: str | None
    narratives: tuple[str, ...]
    payment_date: date


@dataclass(frozen=True, slots=True)
class PaymentBatchInfo:
    """The batch a set of payments travels in, for channels that send it as one file: every
    value comes from stored rows, so a resend after a crash writes the very same file."""

    batch_id: str
    created_at: datetime
    execution_date: date
    debtor_name: str
    debtor_account: str
    debtor_branch_code: str | None
    currency: str
    block_reference: str | None


@dataclass(frozen=True, slots=True)
class RemoteFile:
    name: str
    size: int


class Outbox(Protocol):
    """A file channel's outbox, open for one poll: list it, read a file, move it to the
    archive once what it said is committed."""

    def list(self) -> list[RemoteFile]: ...

    def read(self, name: str) -> bytes: ...

    def archive(self, name: str, content_sha256: str) -> str: ...


@dataclass(frozen=True, slots=True)
class PaymentBatchResult:
    accepted: bool
    detail: str | None = None
    # References the bank already had: a replay after a crash, paid once.
    duplicates: tuple[str, ...] = field(default_factory=tuple)


class StatementEntry(Protocol):
    """What the reading rules below use of a statement entry: an MT940 ``Entry`` and a camt
    ``ReconEntry`` (formats/iso20022/reconciliation.py) both have it, under the same names."""

    @property
    def customer_reference(self) -> str: ...

    @property
    def details(self) -> str: ...

    def subfields(self) -> dict[str, str]: ...


class BankConnector(ABC):
    """One sponsor bank. Calls may raise BankUnavailable (retryable) or BankRejected."""

    # Destination key to split payment batches by ("bank" or "provider"), when the bank asks.
    group_payments_by: str | None = None

    def __init__(self, settings: BankConnectorSettings) -> None:
        self.settings = settings

    @abstractmethod
    def check_funds(self, account_number: str, currency: str, amount: Decimal) -> FundsCheck: ...

    @abstractmethod
    def block_funds(
        self, account_number: str, currency: str, amount: Decimal, idempotency_key: str
    ) -> BlockResult: ...

    @abstractmethod
    def initiate_payment(self, payments: list[PaymentInstruction]) -> PaymentBatchResult: ...

    def initiate_batch(
        self, batch: PaymentBatchInfo, payments: list[PaymentInstruction]
    ) -> PaymentBatchResult:
        """Sends one bank batch. API connectors send its payments; a file channel writes the
        batch as one file named by its id."""
        return self.initiate_payment(payments)

    # A file channel also answers through files (status reports, statements) that the bridge
    # fetches; connectors without an outbox keep these defaults.
    poll_interval_seconds: float | None = None

    def open_outbox(self) -> AbstractContextManager[Outbox]:
        raise NotImplementedError(f"{type(self).__name__} has no outbox to poll")

    # Reading a statement entry: where this bank puts our ids and its reasons.
    def disbursement_id(self, entry: StatementEntry) -> str | None:
        return entry.customer_reference or None

    def beneficiary_name(self, entry: StatementEntry) -> str | None:
        return entry.subfields().get("NAME")

    def reversal_reason(self, entry: StatementEntry) -> str | None:
        fields = entry.subfields()
        return fields.get("RTRN") or fields.get("REMI") or (entry.details or None)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections; connectors without any need not override it."""


@cache
def _registered() -> dict[str, type[BankConnector]]:
    return {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_bank_connector(bank_code: str, settings: BankConnectorSettings) -> BankConnector:
    """The connector a bank's profile names as its channel, else the one registered under the
    bank's code: the configuration chooses, never a switch on bank codes."""
    name = settings.channel or bank_code
    connector_class = _registered().get(name)
    if connector_class is None:
        raise LookupError(
            f"no bank connector {name!r} for sponsor bank {bank_code!r}; "
            f"installed: {sorted(_registered())}"
        )
    return connector_class(settings)
