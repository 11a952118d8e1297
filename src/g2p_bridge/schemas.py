"""Wire formats: G2P Connect request/response envelopes and the payloads of the bridge's API,
compatible with OpenG2P G2P Bridge 1.x. Shared by the API, the CLI and the tests."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from g2p_bridge.models.base import utcnow


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
    message_id: str = Field(min_length=1, max_length=128)
    message_ts: str
    action: str = Field(max_length=64)
    sender_id: str = Field(min_length=1, max_length=128)
    sender_uri: str | None = ""
    receiver_id: str | None = ""
    total_count: int
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
    disbursement_envelope_id: str | None = Field(default=None, max_length=64)
    benefit_program_mnemonic: str | None = None
    disbursement_frequency: str | None = None
    cycle_code_mnemonic: str | None = None
    number_of_beneficiaries: int | None = None
    number_of_disbursements: int | None = None
    total_disbursement_amount: Decimal | None = None
    disbursement_currency_code: str | None = None
    disbursement_schedule_date: date | None = None
    cancellation_status: CancellationStatus | None = None
    cancellation_timestamp: datetime | None = None
    created_timestamp: datetime | None = None


class DisbursementPayload(WireModel):
    id: str | None = None
    mis_reference_number: str | None = None
    disbursement_id: str | None = None
    disbursement_envelope_id: str | None = None
    beneficiary_id: str | None = None
    beneficiary_name: str | None = None
    disbursement_amount: Decimal | None = None
    narrative: str | None = None
    # Ours: a financial address given inline, for programs whose resolver is "inline".
    financial_address: str | None = None
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
    program_mnemonic: str | None = Field(default=None, max_length=64)
    sponsor_bank_code: str | None = Field(default=None, max_length=32)
    sponsor_bank_account_number: str | None = Field(default=None, max_length=64)
    sponsor_bank_branch_code: str | None = Field(default=None, max_length=32)
    sponsor_bank_account_currency: str | None = None
    id_mapper_resolution_required: bool | None = None
    resolver: str | None = Field(default=None, max_length=64)


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


class DisbursementEnvelopeStatusRequest(Request[str]):
    pass


class DisbursementEnvelopeStatusResponse(Response[EnvelopeStatusPayload]):
    pass


class DisbursementRequest(Request[list[DisbursementPayload]]):
    pass


class DisbursementResponse(Response[list[DisbursementPayload]]):
    pass


class DisbursementStatusRequest(Request[list[str]]):
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
