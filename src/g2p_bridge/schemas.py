"""Wire formats: G2P Connect request/response envelopes and the payloads of the bridge's API,
compatible with OpenG2P G2P Bridge 1.x. Shared by the API, the CLI and the tests."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    computed_field,
)

from g2p_bridge.models import (
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    ProcessedRequest,
)
from g2p_bridge.models.base import utcnow


def column_length(column: Any) -> int:
    """The length of a String column, so that the wire's limits are the database's."""
    length = getattr(getattr(column, "type", None), "length", None)
    if not isinstance(length, int):
        raise TypeError(f"{column} has no length")
    return length


# Identifiers a client chooses (envelope, disbursement and message ids, sender ids, mnemonics,
# bank codes and accounts) travel into bank files (MT940, ISO 20022), log lines and URLs. They
# are kept to a character set that no format gives a meaning to at any position: no blanks, no
# line breaks, no "/" (MT940's reference separator is "//"), no quotes or angle brackets.
SAFE_ID_CHARACTERS = "A-Z a-z 0-9 . _ : -"
SAFE_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
INT32_MAX = 2**31 - 1


def _safe_id(column: Any) -> StringConstraints:
    return StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=column_length(column),
        pattern=SAFE_ID_PATTERN,
    )


def _fits(column: Any) -> StringConstraints:
    # Control characters are refused in every string of a request before validation
    # (api.wire.check_strings); here only the column's length.
    return StringConstraints(max_length=column_length(column))


_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_PLAIN_INTEGER = re.compile(r"[0-9]+", re.ASCII)


class NonPlainNumber(Decimal):
    """A JSON number written with an exponent (``1e1``): kept apart so that an amount or a
    count refuses it, while a number nobody reads (in ``meta``) does not fail the request."""


def _plain_decimal(value: Any) -> Any:
    """Amounts in plain decimal notation only: a JSON number without exponent, or a string of
    ASCII digits with an optional fraction. ``"1_0.0_0"``, ``"1e1"``, full-width or
    Arabic-Indic digits, NaN, infinities, booleans and floats are refused, never guessed."""
    if isinstance(value, bool | NonPlainNumber):
        raise ValueError("an amount must be written in plain decimal notation (e.g. 100.25)")
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value.strip()):
        return Decimal(value.strip())
    raise ValueError("an amount must be written in plain decimal notation (e.g. 100.25)")


def _plain_integer(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a count must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _PLAIN_INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError("a count must be a whole number written with ASCII digits")


Money = Annotated[Decimal, BeforeValidator(_plain_decimal)]
# Counts are stored in 32-bit integer columns.
Count = Annotated[int, BeforeValidator(_plain_integer), Field(ge=0, le=INT32_MAX)]

EnvelopeId = Annotated[str, _safe_id(DisbursementEnvelope.id)]
DisbursementId = Annotated[str, _safe_id(Disbursement.id)]
ProgramMnemonic = Annotated[str, _safe_id(BenefitProgram.mnemonic)]
CycleCode = Annotated[str, _safe_id(DisbursementEnvelope.cycle_code_mnemonic)]
MessageId = Annotated[str, _safe_id(ProcessedRequest.message_id)]
SenderId = Annotated[str, _safe_id(ProcessedRequest.sender_id)]
BankCode = Annotated[str, _safe_id(BenefitProgram.sponsor_bank_code)]
AccountNumber = Annotated[str, _safe_id(BenefitProgram.sponsor_bank_account_number)]
BranchCode = Annotated[str, _safe_id(BenefitProgram.sponsor_bank_branch_code)]
ResolverName = Annotated[str, _safe_id(BenefitProgram.resolver)]
MisReference = Annotated[str, _fits(Disbursement.mis_reference_number)]
BeneficiaryId = Annotated[str, _fits(Disbursement.beneficiary_id)]
BeneficiaryName = Annotated[str, _fits(Disbursement.beneficiary_name)]
Narrative = Annotated[str, _fits(Disbursement.narrative)]
FinancialAddress = Annotated[str, _fits(Disbursement.financial_address)]


class Status(StrEnum):
    RECEIVED = "rcvd"
    PENDING = "pdng"
    SUCCESS = "succ"
    REJECTED = "rjct"


class CancellationStatus(StrEnum):
    NOT_CANCELLED = "Not_Cancelled"
    CANCELLED = "Cancelled"


class WireModel(BaseModel):
    # Unknown fields are ignored, as G2P Connect peers add their own.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class RequestHeader(WireModel):
    version: str | None = "1.0.0"
    message_id: MessageId
    message_ts: str = Field(max_length=64)
    action: str = Field(max_length=64)
    sender_id: SenderId
    sender_uri: str | None = ""
    receiver_id: str | None = ""
    total_count: Count
    is_msg_encrypted: bool | None = False
    meta: Any = None


class ResponseHeader(WireModel):
    version: str | None = "1.0.0"
    message_id: str
    message_ts: str = Field(default_factory=lambda: utcnow().isoformat())
    action: str
    status: Status
    status_reason_code: str | None = None
    status_reason_message: str | None = ""
    total_count: int | None = None
    completed_count: int | None = None
    sender_id: str | None = None
    receiver_id: str | None = None
    is_msg_encrypted: bool | None = False
    meta: dict[str, Any] | None = Field(default_factory=dict)


M = TypeVar("M")


class Request(WireModel, Generic[M]):
    signature: str | None = None
    header: RequestHeader
    message: M


class Response(WireModel, Generic[M]):
    signature: str | None = None
    header: ResponseHeader
    message: M | None = None


class EnvelopePayload(WireModel):
    id: str | None = None
    disbursement_envelope_id: EnvelopeId | None = None
    benefit_program_mnemonic: ProgramMnemonic | None = None
    disbursement_frequency: str | None = Field(default=None, max_length=16)
    cycle_code_mnemonic: CycleCode | None = None
    number_of_beneficiaries: Count | None = None
    number_of_disbursements: Count | None = None
    total_disbursement_amount: Money | None = None
    disbursement_currency_code: str | None = Field(default=None, max_length=3)
    disbursement_schedule_date: date | None = None
    cancellation_status: CancellationStatus | None = None
    cancellation_timestamp: datetime | None = None
    created_timestamp: datetime | None = None


class EnvelopeAmendPayload(WireModel):
    """What an amendment may change (OpenG2P 1.x ``amend_disbursement_envelope``); a field
    left out keeps its value."""

    disbursement_envelope_id: EnvelopeId
    number_of_beneficiaries: Count | None = None
    number_of_disbursements: Count | None = None
    total_disbursement_amount: Money | None = None
    disbursement_schedule_date: date | None = None


class DisbursementPayload(WireModel):
    id: str | None = None
    mis_reference_number: MisReference | None = None
    disbursement_id: DisbursementId | None = None
    disbursement_envelope_id: EnvelopeId | None = None
    beneficiary_id: BeneficiaryId | None = None
    beneficiary_name: BeneficiaryName | None = None
    disbursement_amount: Money | None = None
    narrative: Narrative | None = None
    # Ours: a financial address given inline, for programs whose resolver is "inline".
    financial_address: FinancialAddress | None = None
    receipt_time_stamp: datetime | None = None
    cancellation_status: CancellationStatus | None = None
    cancellation_time_stamp: datetime | None = None
    state: str | None = None
    state_reason: str | None = None
    response_error_codes: list[str] | None = None


class EnvelopeStatusPayload(WireModel):
    disbursement_envelope_id: str
    number_of_disbursements_received: int
    total_disbursement_amount_received: Decimal
    funds_available_with_bank: str
    funds_available_latest_timestamp: datetime | None = None
    funds_available_latest_error_code: str | None = None
    funds_available_attempts: int
    funds_blocked_with_bank: str
    funds_blocked_latest_timestamp: datetime | None = None
    funds_blocked_latest_error_code: str | None = None
    funds_blocked_attempts: int
    funds_blocked_reference_number: str | None = None
    id_mapper_resolution_required: bool | None = None
    number_of_disbursements_shipped: int
    number_of_disbursements_reconciled: int
    number_of_disbursements_reversed: int
    # Ours.
    number_of_disbursements_cancelled: int = 0
    number_of_disbursements_failed: int = 0
    number_of_disbursements_declared: int | None = None
    total_disbursement_amount_declared: Decimal | None = None
    currency: str | None = None
    cancelled: bool = False
    disbursements_by_state: dict[str, int] = Field(default_factory=dict)


class ReconPayload(WireModel):
    bank_disbursement_batch_id: str
    disbursement_id: str
    disbursement_envelope_id: str | None = None
    beneficiary_name_from_bank: str | None = None
    remittance_reference_number: str | None = None
    remittance_statement_id: str | None = None
    remittance_statement_number: str | None = None
    remittance_statement_sequence: str | None = None
    remittance_entry_sequence: str | None = None
    remittance_entry_date: datetime | None = None
    remittance_value_date: datetime | None = None
    reversal_found: bool | None = None
    reversal_statement_id: str | None = None
    reversal_statement_number: str | None = None
    reversal_statement_sequence: str | None = None
    reversal_entry_sequence: str | None = None
    reversal_entry_date: datetime | None = None
    reversal_value_date: datetime | None = None
    reversal_reason: str | None = None


class ErrorReconPayload(WireModel):
    statement_id: str | None = None
    statement_number: str | None = None
    statement_sequence: str | None = None
    entry_sequence: str | None = None
    entry_date: datetime | None = None
    value_date: datetime | None = None
    error_reason: str | None = None
    disbursement_id: str
    bank_reference_number: str | None = None


class ReconRecords(WireModel):
    disbursement_recon_payloads: list[ReconPayload] | None = None
    disbursement_error_recon_payloads: list[ErrorReconPayload] | None = None


class DisbursementStatusPayload(WireModel):
    disbursement_id: str
    disbursement_recon_records: ReconRecords | None = None
    # Ours: where the disbursement is now, and why when it failed or was reversed.
    state: str = "UNKNOWN"
    state_reason: str | None = None
    disbursement_envelope_id: str | None = None
    disbursement_amount: Decimal | None = None
    cancellation_status: CancellationStatus | None = None


class ProgramPayload(WireModel):
    """A program's configuration. Accepts OpenG2P 1.1.0's field names (``benefit_program_*``,
    ``funding_org_*``) and our earlier ``program_mnemonic``; answers carry both spellings."""

    program_mnemonic: ProgramMnemonic | None = Field(
        default=None,
        validation_alias=AliasChoices("program_mnemonic", "benefit_program_mnemonic"),
    )
    benefit_program_name: Annotated[str, _fits(BenefitProgram.benefit_program_name)] | None = None
    funding_org_code: Annotated[str, _fits(BenefitProgram.funding_org_code)] | None = None
    funding_org_name: Annotated[str, _fits(BenefitProgram.funding_org_name)] | None = None
    sponsor_bank_code: BankCode | None = None
    sponsor_bank_account_number: AccountNumber | None = None
    sponsor_bank_branch_code: BranchCode | None = None
    sponsor_bank_account_currency: str | None = Field(default=None, max_length=3)
    id_mapper_resolution_required: bool | None = None
    # Ours: the resolver plug-in; unset picks g2p-connect when resolution is required, else
    # inline.
    resolver: ResolverName | None = None
    # Ours: four-eyes approval of envelopes declaring at least the threshold (0: all of them).
    approval_required: bool | None = None
    approval_threshold: Money | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def benefit_program_mnemonic(self) -> str | None:
        return self.program_mnemonic


class StatementPayload(WireModel):
    statement_id: str
    state: str
    error_reason: str | None = None
    account_number: str | None = None
    program_mnemonic: str | None = None
    filename: str | None = None
    size_bytes: int
    entries_total: int
    entries_matched: int
    entries_reversed: int
    entries_unmatched: int
    balance_problems: str | None = None
    sequence_gaps: str | None = None
    uploaded_at: datetime
    processed_at: datetime | None = None
    errors: list[ErrorReconPayload] = Field(default_factory=list)


class Page(WireModel, Generic[M]):
    items: list[M]
    total: int
    offset: int
    limit: int


# Concrete G2P Connect messages, named as in the reference OpenAPI document.
class DisbursementEnvelopeRequest(Request[EnvelopePayload]):
    pass


class DisbursementEnvelopeResponse(Response[EnvelopePayload]):
    pass


class DisbursementEnvelopeAmendRequest(Request[EnvelopeAmendPayload]):
    pass


class DisbursementEnvelopeStatusRequest(Request[EnvelopeId]):
    pass


class DisbursementEnvelopeStatusResponse(Response[EnvelopeStatusPayload]):
    pass


class DisbursementRequest(Request[list[DisbursementPayload]]):
    pass


class DisbursementResponse(Response[list[DisbursementPayload]]):
    pass


class DisbursementStatusRequest(Request[list[DisbursementId]]):
    pass


class DisbursementStatusResponse(Response[list[DisbursementStatusPayload]]):
    pass


class ProgramRequest(Request[ProgramPayload]):
    pass


class ProgramResponse(Response[ProgramPayload]):
    pass


class AccountStatementResponse(Response[Any]):
    statement_id: str | None = None
    response_error_code: str | None = None
