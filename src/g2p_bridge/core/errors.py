"""The domain's error codes and the one exception hierarchy that carries them to the API."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Codes of the reference G2P Bridge 1.x (their spelling, typos included, is on the wire).
    INVALID_PROGRAM_MNEMONIC = "INVALID_PROGRAM_MNEMONIC"
    INVALID_DISBURSEMENT_FREQUENCY = "INVALID_DISBURSEMENT_FREQUENCY"
    INVALID_CYCLE_CODE_MNEMONIC = "INVALID_CYCLE_CODE_MNEMONIC"
    INVALID_NO_OF_BENEFICIARIES = "INVALID_NO_OF_BENEFICIARIES"
    INVALID_NO_OF_DISBURSEMENTS = "INVALID_NO_OF_DISBURSEMENTS"
    INVALID_TOTAL_DISBURSEMENT_AMOUNT = "INVALID_TOTAL_DISBURSEMENT_AMOUNT"
    INVALID_DISBURSEMENT_CURRENCY_CODE = "INVALID_DISBURSEMENT_CURRENCY_CODE"
    INVALID_DISBURSEMENT_SCHEDULE_DATE = "INVALID_DISBURSEMENT_SCHEDULE_DATE"
    DISBURSEMENT_ENVELOPE_NOT_FOUND = "DISBURSEMENT_ENVELOPE_NOT_FOUND"
    DISBURSEMENT_ENVELOPE_ALREADY_CANCELED = "DISBURSEMENT_ENVELOPE_ALREADY_CANCELED"
    DISBURSEMENT_ENVELOPE_DATE_PASSED = "DISBURSEMENT_ENVELOPE_DATE_PASSED"
    BENEFIT_PROGRAM_CONFIGURATION_ALREADY_EXISTS = "BENEFIT_PROGRAM_CONFIGURATION_ALREADY_EXISTS"
    INVALID_DISBURSEMENT_ENVELOPE_ID = "INVALID_DISBURSEMENT_ENVELOPE_ID"
    INVALID_DISBURSEMENT_AMOUNT = "INVALID_DISBURSEMENT_AMOUNT"
    INVALID_BENEFICIARY_ID = "INVALID_BENEFICIARY_ID"
    INVALID_BENEFICIARY_NAME = "INVALID_BENEFICIARY_NAME"
    INVALID_NARRATIVE = "INVALID_NARRATIVE"
    INVALID_DISBURSEMENT_ID = "INVALID_DISBURSEMENT_ID"
    INVALID_DISBURSEMENT_PAYLOAD = "INVALID_DISBURSEMENT_PAYLOAD"
    ENVELOPE_ALREADY_CANCELLED = "ENVELOPE_ALREADY_CANCELLED"
    NO_OF_DISBURSEMENTS_EXCEEDS_DECLARED = "NO_OF_DISBUESEMENTS_EXCEEDS_DECLARED"
    TOTAL_DISBURSEMENT_AMOUNT_EXCEEDS_DECLARED = "TOTAL_DISBURSEMENT_AMOUNT_EXCEEDS_DECLARED"
    MULTIPLE_ENVELOPES_FOUND = "MULTIPLE_ENVELOPES_FOUND"
    DISBURSEMENT_ALREADY_CANCELED = "DISBURSEMENT_ALREADY_CANCELED"
    STATEMENT_UPLOAD_ERROR = "STATEMENT_UPLOAD_ERROR"
    DUPLICATE_DISBURSEMENT = "DUPLICATE_DISBURSEMENT"
    INVALID_REVERSAL = "INVALID_REVERSAL"
    INVALID_ACCOUNT_NUMBER = "INVALID_ACCOUNT_NUMBER"
    # Ours: what the reference could not say.
    INVALID_REQUEST = "INVALID_REQUEST"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    TOO_MANY_ITEMS = "TOO_MANY_ITEMS"
    INVALID_PROGRAM_CONFIGURATION = "INVALID_PROGRAM_CONFIGURATION"
    DUPLICATE_ENVELOPE = "DUPLICATE_ENVELOPE"
    ENVELOPE_ALREADY_DISPATCHED = "ENVELOPE_ALREADY_DISPATCHED"
    # An amendment after the funds check started: the bank may already hold the old total.
    ENVELOPE_FUNDS_CHECK_STARTED = "ENVELOPE_FUNDS_CHECK_STARTED"
    DISBURSEMENT_ALREADY_DISPATCHED = "DISBURSEMENT_ALREADY_DISPATCHED"
    DISBURSEMENT_NOT_FOUND = "DISBURSEMENT_NOT_FOUND"
    STATEMENT_NOT_FOUND = "STATEMENT_NOT_FOUND"
    DUPLICATE_STATEMENT = "DUPLICATE_STATEMENT"
    STATEMENT_TOO_LARGE = "STATEMENT_TOO_LARGE"
    STATEMENT_NOT_TEXT = "STATEMENT_NOT_TEXT"
    STATEMENT_UNPARSEABLE = "STATEMENT_UNPARSEABLE"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    DUPLICATE_REVERSAL = "DUPLICATE_REVERSAL"
    UNKNOWN_ENTRY_TYPE = "UNKNOWN_ENTRY_TYPE"
    DISBURSEMENT_NOT_SHIPPED = "DISBURSEMENT_NOT_SHIPPED"
    WRONG_ACCOUNT = "WRONG_ACCOUNT"
    # A statement entry holding a value longer (or an amount with more digits) than its column.
    FIELD_TOO_LONG = "FIELD_TOO_LONG"
    # An operator's park/retry/re-process of a statement in a state it does not apply to.
    INVALID_STATEMENT_STATE = "INVALID_STATEMENT_STATE"
    # Authentication and authorization.
    AUTHENTICATION_REQUIRED = "AUTHENTICATION_REQUIRED"
    INVALID_TOKEN = "INVALID_TOKEN"  # noqa: S105 (an error code, not a secret)
    ACCESS_DENIED = "ACCESS_DENIED"
    SENDER_MISMATCH = "SENDER_MISMATCH"
    STRING_TOO_LONG = "STRING_TOO_LONG"
    INVALID_CHARACTER = "INVALID_CHARACTER"
    # G2P Connect headers: a message id reused for another request, a count that is not the
    # message's.
    INVALID_MESSAGE_ID = "INVALID_MESSAGE_ID"
    MESSAGE_ID_DUPLICATE = "MESSAGE_ID_DUPLICATE"
    INVALID_TOTAL_COUNT = "INVALID_TOTAL_COUNT"
    # Four-eyes approval of an envelope (core/approvals.py).
    APPROVAL_NOT_REQUIRED = "APPROVAL_NOT_REQUIRED"
    APPROVAL_NOT_READY = "APPROVAL_NOT_READY"
    APPROVAL_ALREADY_DECIDED = "APPROVAL_ALREADY_DECIDED"
    # Operator actions of the console.
    BATCH_NOT_PARKED = "BATCH_NOT_PARKED"
    RELEASE_NOT_PARKED = "RELEASE_NOT_PARKED"
    RECON_ERROR_NOT_FOUND = "RECON_ERROR_NOT_FOUND"
    # Payroll files (core/payroll_files.py): a file with faulty lines, one over the size limit.
    PAYROLL_FILE_INVALID = "PAYROLL_FILE_INVALID"
    PAYROLL_FILE_TOO_LARGE = "PAYROLL_FILE_TOO_LARGE"
    # Callbacks to the PBMS.
    INVALID_CALLBACK_URL = "INVALID_CALLBACK_URL"
    CALLBACK_STREAM_NOT_FOUND = "CALLBACK_STREAM_NOT_FOUND"
    # The bridge itself: its database is away (stopped, restarting, unreachable).
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class BridgeError(Exception):
    """A refusal the client can act on: rendered as a G2P Connect ``rjct`` with this code."""

    http_status = 400
    # Seconds a client should wait before sending the same request again (``Retry-After``).
    retry_after: int | None = None

    def __init__(
        self, code: ErrorCode, message: str, item_errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Per-item codes, keyed by the item's position or id, for requests with many items.
        self.item_errors = item_errors or {}


class NotFound(BridgeError):
    http_status = 404


class Conflict(BridgeError):
    http_status = 409


class InvalidRequest(BridgeError):
    http_status = 422


class PayloadTooLarge(BridgeError):
    http_status = 413


class Unauthenticated(BridgeError):
    http_status = 401


class Forbidden(BridgeError):
    http_status = 403


class ServiceUnavailable(BridgeError):
    """Not the request's fault: try again, with the same ``message_id``, after a moment."""

    http_status = 503
    retry_after = 5
