"""ISO 20022 messages: pain.001 out; pain.002, camt.053 and camt.054 in.

A pure layer, as MT940 is: it reads and writes files and knows nothing of envelopes,
disbursements or the database. Everything it refuses is an :class:`ISO20022Error`.
docs/banks.md maps our fields to ISO 20022 elements and back.
"""

from ._xml import ISO20022Error, Limits
from .camt import CAMT_VERSIONS, CamtBalance, CamtEntry, CamtStatement, CamtTransaction, iter_camt
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
from .pain002 import (
    PAIN002_VERSIONS,
    GroupStatus,
    PaymentInformationStatus,
    StatusReason,
    StatusReportItem,
    TransactionStatus,
    iter_status_report,
)
from .reconciliation import (
    ReconBalance,
    ReconEntry,
    ReconStatement,
    sequence_gaps,
    to_recon_statement,
)

__all__ = [
    "CAMT_VERSIONS",
    "PAIN001_VERSIONS",
    "PAIN002_VERSIONS",
    "CamtBalance",
    "CamtEntry",
    "CamtStatement",
    "CamtTransaction",
    "CreditTransfer",
    "FinancialInstitution",
    "GroupStatus",
    "ISO20022Error",
    "IbanAccount",
    "Limits",
    "MobileWallet",
    "OtherAccount",
    "Pain001Profile",
    "PaymentBatch",
    "PaymentInformationStatus",
    "ReconBalance",
    "ReconEntry",
    "ReconStatement",
    "StatusReason",
    "StatusReportItem",
    "TransactionStatus",
    "iter_camt",
    "iter_status_report",
    "sequence_gaps",
    "to_recon_statement",
    "write_pain001",
    "write_pain001_file",
]
