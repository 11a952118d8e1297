"""ISO 20022 messages: pain.001 out; pain.002, camt.053 and camt.054 in (and, for a bank such as
the Example Bank, the other way round: pain.001 in, pain.002 and camt.053 out).

A pure layer, as MT940 is: it reads and writes files and knows nothing of envelopes,
disbursements or the database. Everything it refuses is an :class:`ISO20022Error`.
docs/banks.md maps our fields to ISO 20022 elements and back.
"""

from ._xml import ISO20022Error, Limits
from .camt import CAMT_VERSIONS, CamtBalance, CamtEntry, CamtStatement, CamtTransaction, iter_camt
from .camt053_writer import (
    CAMT053_WRITE_VERSIONS,
    StatementHeader,
    StatementLine,
    write_camt053,
)
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
from .pain001_reader import (
    PAIN001_READ_VERSIONS,
    Pain001GroupHeader,
    Pain001Item,
    Pain001PaymentInformation,
    Pain001Refused,
    Pain001Transaction,
    iter_pain001,
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
from .pain002_writer import (
    PAIN002_WRITE_VERSIONS,
    StatusReportHeader,
    TransactionStatusLine,
    write_pain002,
)
from .reconciliation import (
    ReconBalance,
    ReconEntry,
    ReconStatement,
    sequence_gaps,
    to_recon_statement,
)

__all__ = [
    "CAMT053_WRITE_VERSIONS",
    "CAMT_VERSIONS",
    "PAIN001_READ_VERSIONS",
    "PAIN001_VERSIONS",
    "PAIN002_VERSIONS",
    "PAIN002_WRITE_VERSIONS",
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
    "Pain001GroupHeader",
    "Pain001Item",
    "Pain001PaymentInformation",
    "Pain001Profile",
    "Pain001Refused",
    "Pain001Transaction",
    "PaymentBatch",
    "PaymentInformationStatus",
    "ReconBalance",
    "ReconEntry",
    "ReconStatement",
    "StatementHeader",
    "StatementLine",
    "StatusReason",
    "StatusReportHeader",
    "StatusReportItem",
    "TransactionStatus",
    "TransactionStatusLine",
    "iter_camt",
    "iter_pain001",
    "iter_status_report",
    "sequence_gaps",
    "to_recon_statement",
    "write_camt053",
    "write_pain001",
    "write_pain001_file",
    "write_pain002",
]
