"""Sponsor bank connectors: one interface, one implementation per bank, found by bank code."""

from g2p_bridge.connectors.banks.base import (
    BankConnector,
    BankRejected,
    BankUnavailable,
    BlockResult,
    FundsCheck,
    PaymentBatchResult,
    PaymentInstruction,
    ReleaseResult,
    load_bank_connector,
)

__all__ = [
    "BankConnector",
    "BankRejected",
    "BankUnavailable",
    "BlockResult",
    "FundsCheck",
    "PaymentBatchResult",
    "PaymentInstruction",
    "ReleaseResult",
    "load_bank_connector",
]
