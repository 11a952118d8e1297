"""States of the bridge's rows; values are stored as strings and appear on the wire."""

from __future__ import annotations

from enum import StrEnum


class DisbursementFrequency(StrEnum):
    DAILY = "Daily"
    WEEKLY = "Weekly"
    FORTNIGHTLY = "Fortnightly"
    MONTHLY = "Monthly"
    BIMONTHLY = "BiMonthly"
    QUARTERLY = "Quarterly"
    SEMIANNUALLY = "SemiAnnually"
    ANNUALLY = "Annually"
    ONDEMAND = "OnDemand"


class FundsAvailable(StrEnum):
    PENDING_CHECK = "PENDING_CHECK"
    FUNDS_AVAILABLE = "FUNDS_AVAILABLE"
    FUNDS_NOT_AVAILABLE = "FUNDS_NOT_AVAILABLE"
    ERROR = "ERROR"


class FundsBlocked(StrEnum):
    PENDING_CHECK = "PENDING_CHECK"
    # Intent recorded, bank called; a crash here is recovered by asking again with the same key.
    BLOCKING = "BLOCKING"
    FUNDS_BLOCK_SUCCESS = "FUNDS_BLOCK_SUCCESS"
    FUNDS_BLOCK_FAILURE = "FUNDS_BLOCK_FAILURE"
    ERROR = "ERROR"


class DisbursementState(StrEnum):
    RECEIVED = "RECEIVED"
    CANCELLED = "CANCELLED"
    RESOLVING = "RESOLVING"
    RESOLVED = "RESOLVED"
    UNRESOLVED = "UNRESOLVED"
    BATCHED = "BATCHED"
    # In a payment batch whose sending has started: no longer cancellable.
    DISPATCHING = "DISPATCHING"
    SHIPPED = "SHIPPED"
    RECONCILED = "RECONCILED"
    REVERSED = "REVERSED"
    FAILED = "FAILED"


# Money may still be stopped in these states (nothing has gone to the bank).
CANCELLABLE_STATES = (
    DisbursementState.RECEIVED,
    DisbursementState.RESOLVING,
    DisbursementState.RESOLVED,
    DisbursementState.UNRESOLVED,
    DisbursementState.BATCHED,
)
FAILED_STATES = (DisbursementState.UNRESOLVED, DisbursementState.FAILED)


class WorkState(StrEnum):
    """Life of a unit of work (mapper batch, payment batch, statement)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


class StatementState(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    ERROR = "ERROR"


class FinancialAddressType(StrEnum):
    BANK_ACCOUNT = "BANK_ACCOUNT"
    MOBILE_WALLET = "MOBILE_WALLET"
    EMAIL_WALLET = "EMAIL_WALLET"
