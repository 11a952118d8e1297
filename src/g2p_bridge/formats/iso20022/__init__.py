"""ISO 20022 messages: pain.001 out; pain.002, camt.053 and camt.054 in.

A pure layer, as MT940 is: it reads and writes files and knows nothing of envelopes,
disbursements or the database. Everything it refuses is an :class:`ISO20022Error`.
docs/banks.md maps our fields to ISO 20022 elements and back.
"""

from ._xml import ISO20022Error, Limits
from .pain001 import (
    PAIN001_VERSIONS,
    CreditTransfer,
    FinancialInstitution,
    IbanAccount,
    MobileWallet,
    OtherAccount,
    Pain001Profile,
    PaymentBatch,
    write_pain001,
    write_pain001_file,
)

__all__ = [
    "PAIN001_VERSIONS",
    "CreditTransfer",
    "FinancialInstitution",
    "ISO20022Error",
    "IbanAccount",
    "Limits",
    "MobileWallet",
    "OtherAccount",
    "Pain001Profile",
    "PaymentBatch",
    "write_pain001",
    "write_pain001_file",
]
