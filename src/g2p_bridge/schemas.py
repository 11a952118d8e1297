"""Wire formats: G2P Connect request/response envelopes and the payloads of the bridge's API,
compatible with OpenG2P G2P Bridge 1.x. Shared by the API, the CLI and the tests."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    computed_field,
    model_validator,
)

from g2p_bridge.models import (
    BenefitProgram,
    Disbursement,
    DisbursementEnvelope,
    ProcessedRequest,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.money import quantize


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
# No identifier or text of a request holds these: control characters (NUL above all, which
# PostgreSQL's text cannot hold), lone surrogates, and the Unicode line separators.
_FORBIDDEN_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def forbidden_character(value: str) -> str | None:
    """The first character of ``value`` that no identifier or text of a request may hold."""
    match = _FORBIDDEN_CHARACTERS.search(value)
    return None if match is None else f"U+{ord(match.group()):04X}"


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


# Answers: wire models of stored rows, built at the API edge with ``model_validate(row)``
# (``from_attributes``; an alias names the row's attribute). They check nothing a stored value
# could fail (an id that predates the safe character set is answered as stored), and every
# amount carries its currency's minor units (the database keeps four decimals).


def _cancellation(value: Any) -> Any:
    if isinstance(value, bool):
        return CancellationStatus.CANCELLED if value else CancellationStatus.NOT_CANCELLED
    return value


def _as_datetime(value: Any) -> Any:
    # The reference types these dates as date-times; midnight UTC says the same thing.
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=UTC)
    return value


def _as_text(value: Any) -> Any:
    return None if value is None else str(value)


def _or_empty(value: Any) -> Any:
    # The reference types these as strings that are always there.
    return "" if value is None else value


Cancellation = Annotated[CancellationStatus, BeforeValidator(_cancellation)]
DateTime = Annotated[datetime, BeforeValidator(_as_datetime)]
Text = Annotated[str, BeforeValidator(_as_text)]
Always = Annotated[str, BeforeValidator(_or_empty)]


def _read(part: str, attribute: str) -> Any:
    """A view field read from ``part.attribute`` of what it is built from (e.g. the status row
    of ``core.envelopes.EnvelopeFigures``), under the wire name it is declared with."""
    return Field(validation_alias=AliasPath(part, attribute))


class View(BaseModel):
    """An answer built from rows. Its amounts are given the minor units of the currency named
    by ``currency_field``, or else of ``currency`` in the validation context."""

    model_config = ConfigDict(from_attributes=True, validate_by_name=True)
    currency_field: ClassVar[str | None] = None

    @model_validator(mode="after")
    def _in_minor_units(self, info: ValidationInfo) -> Self:
        field = type(self).currency_field
        currency = getattr(self, field) if field else (info.context or {}).get("currency")
        if currency:
            for name in type(self).model_fields:
                value = getattr(self, name)
                if isinstance(value, Decimal):
                    setattr(self, name, quantize(value, currency))
        return self


class EnvelopeView(View):
    """A stored envelope (``DisbursementEnvelope``)."""

    currency_field = "disbursement_currency_code"

    id: str
    disbursement_envelope_id: str = Field(validation_alias="id")
    benefit_program_mnemonic: str = Field(validation_alias="program_mnemonic")
    disbursement_frequency: str
    cycle_code_mnemonic: str
    number_of_beneficiaries: int
    number_of_disbursements: int
    total_disbursement_amount: Decimal
    disbursement_currency_code: str = Field(validation_alias="currency")
    disbursement_schedule_date: date = Field(validation_alias="schedule_date")
    cancellation_status: Cancellation = Field(validation_alias="cancelled")
    cancellation_timestamp: datetime | None = Field(validation_alias="cancelled_at")
    created_timestamp: datetime | None = Field(validation_alias="created_at")


class DisbursementView(View):
    """A stored disbursement; its currency (its envelope's) comes in the context."""

    id: str
    mis_reference_number: str | None
    disbursement_id: str = Field(validation_alias="id")
    disbursement_envelope_id: str = Field(validation_alias="envelope_id")
    beneficiary_id: str | None
    beneficiary_name: str | None
    disbursement_amount: Decimal = Field(validation_alias="amount")
    narrative: str | None
    financial_address: str | None
    receipt_time_stamp: datetime | None = Field(validation_alias="receipt_at")
    cancellation_status: Cancellation = Field(validation_alias="cancelled")
    cancellation_time_stamp: datetime | None = Field(validation_alias="cancelled_at")
    state: str = Field(validation_alias=AliasChoices("reported_state", "state"))
    state_reason: str | None
    response_error_codes: list[str] | None = None


class EnvelopeStatusPayload(View):
    """Built from ``core.envelopes.EnvelopeFigures``: the envelope, its status row and program."""

    currency_field = "currency"

    disbursement_envelope_id: str = _read("envelope", "id")
    number_of_disbursements_received: int = _read("status", "received_count")
    total_disbursement_amount_received: Decimal = _read("status", "received_amount")
    funds_available_with_bank: str = _read("status", "funds_available_state")
    funds_available_latest_timestamp: datetime | None = _read("status", "funds_available_at")
    funds_available_latest_error_code: str | None = _read("status", "funds_available_error")
    funds_available_attempts: int = _read("status", "funds_available_attempts")
    funds_blocked_with_bank: str = _read("status", "funds_blocked_state")
    funds_blocked_latest_timestamp: datetime | None = _read("status", "funds_blocked_at")
    funds_blocked_latest_error_code: str | None = _read("status", "funds_blocked_error")
    funds_blocked_attempts: int = _read("status", "funds_blocked_attempts")
    funds_blocked_reference_number: str | None = _read("status", "funds_block_reference")
    id_mapper_resolution_required: bool | None = _read("program", "id_mapper_resolution_required")
    number_of_disbursements_shipped: int = _read("status", "shipped_count")
    number_of_disbursements_reconciled: int = _read("status", "reconciled_count")
    number_of_disbursements_reversed: int = _read("status", "reversed_count")
    # Ours.
    number_of_disbursements_cancelled: int = _read("status", "cancelled_count")
    number_of_disbursements_failed: int = _read("status", "failed_count")
    number_of_disbursements_declared: int | None = _read("envelope", "number_of_disbursements")
    total_disbursement_amount_declared: Decimal | None = _read(
        "envelope", "total_disbursement_amount"
    )
    currency: str | None = _read("envelope", "currency")
    cancelled: bool = _read("envelope", "cancelled")
    disbursements_by_state: dict[str, int] = Field(validation_alias="by_state")
    # Where the block went (core/release.py): blocked = spent + returned + released + held,
    # and held is 0 once every disbursement is final and the rest was released.
    funds_blocked_amount: Decimal = Field(validation_alias=AliasPath("funds", "blocked"))
    funds_spent_amount: Decimal = Field(validation_alias=AliasPath("funds", "spent"))
    funds_returned_amount: Decimal = Field(validation_alias=AliasPath("funds", "returned"))
    funds_released_amount: Decimal = Field(validation_alias=AliasPath("funds", "released"))
    funds_held_amount: Decimal = Field(validation_alias=AliasPath("funds", "held"))
    funds_release_state: str | None = Field(validation_alias=AliasPath("funds", "release_state"))
    funds_release_attempts: int = Field(validation_alias=AliasPath("funds", "release_attempts"))
    funds_release_latest_error_code: str | None = Field(
        validation_alias=AliasPath("funds", "release_error")
    )
    funds_release_reference_number: str | None = Field(
        validation_alias=AliasPath("funds", "release_reference")
    )
    funds_released_timestamp: datetime | None = Field(
        validation_alias=AliasPath("funds", "released_at")
    )

    # Ours, beside the reference's fields rather than in them: an envelope held for four-eyes
    # approval still says funds_blocked_with_bank PENDING_CHECK (the reference's enum has no
    # room for it, and an OpenG2P client validating that enum must keep working); this field,
    # which such a client ignores, says why it is not moving: NOT_REQUIRED, REQUIRED (not all
    # disbursements arrived yet), AWAITING_APPROVAL, APPROVED or REJECTED.
    approval_status: str = Field(validation_alias="approval")


class BatchStatusView(View):
    """One mapper or bank batch of an envelope (``core.batches.BatchStatus``); the envelope's
    currency comes in the context."""

    kind: str
    batch_id: str
    state: str
    stage: str
    attempts: int
    last_error: str | None
    disbursement_count: int
    total_amount: Decimal | None
    destination: str | None
    resolver: str | None
    bank_response: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    lease_until: datetime | None
    sent_at: datetime | None


class EnvelopeBatchesPage(WireModel):
    disbursement_envelope_id: str
    # Batches per state, per kind ("mapper", "bank"), over the whole envelope.
    counts: dict[str, dict[str, int]]
    items: list[BatchStatusView]
    # Pass as ``after`` for the next page; null on the last one.
    next_cursor: str | None


class ReconPayload(View):
    """A stored ``DisbursementRecon``."""

    bank_disbursement_batch_id: Always = Field(validation_alias="bank_batch_id")
    disbursement_id: str
    disbursement_envelope_id: str | None = Field(validation_alias="envelope_id")
    beneficiary_name_from_bank: str | None
    remittance_reference_number: str | None
    remittance_statement_id: str | None
    remittance_statement_number: str | None
    remittance_statement_sequence: str | None
    remittance_entry_sequence: Text | None
    remittance_entry_date: DateTime | None
    remittance_value_date: DateTime | None
    reversal_found: bool | None
    reversal_statement_id: str | None
    reversal_statement_number: str | None
    reversal_statement_sequence: str | None
    reversal_entry_sequence: Text | None
    reversal_entry_date: DateTime | None
    reversal_value_date: DateTime | None
    reversal_reason: str | None


class ErrorReconPayload(View):
    """A stored ``ReconError``."""

    statement_id: str | None
    statement_number: str | None
    statement_sequence: str | None
    entry_sequence: Text | None
    entry_date: DateTime | None
    value_date: DateTime | None
    error_reason: str | None = Field(validation_alias="error_code")
    disbursement_id: Always
    bank_reference_number: str | None = Field(validation_alias="bank_reference")


class ReconRecords(View):
    disbursement_recon_payloads: list[ReconPayload] | None = None
    disbursement_error_recon_payloads: list[ErrorReconPayload] | None = None


class DisbursementStatusPayload(View):
    """A disbursement's state: from its row (currency in the context), or only its id."""

    disbursement_id: str = Field(validation_alias=AliasChoices("disbursement_id", "id"))
    disbursement_recon_records: ReconRecords | None = None
    # Ours: where the disbursement is now, and why when it failed or was reversed.
    state: str = Field(default="UNKNOWN", validation_alias=AliasChoices("reported_state", "state"))
    state_reason: str | None = None
    disbursement_envelope_id: str | None = Field(
        default=None, validation_alias=AliasChoices("disbursement_envelope_id", "envelope_id")
    )
    disbursement_amount: Decimal | None = Field(
        default=None, validation_alias=AliasChoices("disbursement_amount", "amount")
    )
    cancellation_status: Cancellation | None = Field(
        default=None, validation_alias=AliasChoices("cancellation_status", "cancelled")
    )


class ProgramView(View):
    """A stored ``BenefitProgram``, with both spellings of its mnemonic (see ProgramPayload)."""

    program_mnemonic: str = Field(validation_alias="mnemonic")
    benefit_program_name: str | None
    funding_org_code: str | None
    funding_org_name: str | None
    sponsor_bank_code: str | None
    sponsor_bank_account_number: str | None
    sponsor_bank_branch_code: str | None
    sponsor_bank_account_currency: str | None
    id_mapper_resolution_required: bool | None
    resolver: str | None = Field(validation_alias="resolver_name")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def benefit_program_mnemonic(self) -> str:
        return self.program_mnemonic


class StatementPayload(View):
    """A stored ``AccountStatement``; its reconciliation errors are given beside it."""

    statement_id: str = Field(validation_alias=AliasChoices("statement_id", "id"))
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


class DisbursementEnvelopeResponse(Response[EnvelopeView]):
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


class ProgramResponse(Response[ProgramView]):
    pass


class AccountStatementResponse(Response[Any]):
    statement_id: str | None = None
    response_error_code: str | None = None
