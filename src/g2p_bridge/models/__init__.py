"""The bridge's tables. Importing this package registers every table on ``Base.metadata``."""

from g2p_bridge.models.audit import AuditEvent
from g2p_bridge.models.bank_file import BankFile, BankOutboxPoll
from g2p_bridge.models.base import Base
from g2p_bridge.models.callback import CallbackEvent, CallbackStream, CallbackSubscription
from g2p_bridge.models.console import (
    ConsoleSession,
    ConsoleUser,
    EnvelopeApproval,
    ReconErrorAck,
)
from g2p_bridge.models.disbursement import (
    BankBatch,
    BeneficiaryAddress,
    Disbursement,
    MapperBatch,
    ResolvedAddress,
)
from g2p_bridge.models.envelope import DisbursementEnvelope, EnvelopeStatus
from g2p_bridge.models.payroll import PayrollFile
from g2p_bridge.models.program import BenefitProgram
from g2p_bridge.models.release import FundsRelease
from g2p_bridge.models.statement import (
    AccountStatement,
    DisbursementRecon,
    ProcessedRequest,
    ReconDayTotal,
    ReconError,
    StatementAccount,
    StatementPage,
)

__all__ = [
    "AccountStatement",
    "AuditEvent",
    "BankBatch",
    "BankFile",
    "BankOutboxPoll",
    "Base",
    "BeneficiaryAddress",
    "BenefitProgram",
    "CallbackEvent",
    "CallbackStream",
    "CallbackSubscription",
    "ConsoleSession",
    "ConsoleUser",
    "Disbursement",
    "DisbursementEnvelope",
    "DisbursementRecon",
    "EnvelopeApproval",
    "EnvelopeStatus",
    "FundsRelease",
    "MapperBatch",
    "PayrollFile",
    "ProcessedRequest",
    "ReconDayTotal",
    "ReconError",
    "ReconErrorAck",
    "ResolvedAddress",
    "StatementAccount",
    "StatementPage",
]
