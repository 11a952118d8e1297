"""The lean wire path of ``POST /create_disbursements``: a request of thousands of plain items
read straight into tuples, without a pydantic model per item.

``lean_request`` accepts only what it can tell, field by field, that the schema
(``schemas.DisbursementRequest``) and the string guard (``wire.check_strings``) accept as it is,
and gives exactly the values they would give. Anything else (a field over its column, an
identifier outside the safe set, an amount that is not plain decimal notation, a string that
the schema would strip, a control character, a field the lean path does not carry, a body
nested in a way it does not know) makes it answer ``None``, and the request takes the full
path: the string guard, then FastAPI's validation against the model. A refusal therefore
always comes from the very code that gave it before; tests/bridge/test_lean_ingest.py feeds
the same hostile items to both and checks that they agree.

What the lean path saves, per 5,000-item request: the model per item (validation and a copy
for the answer), the walk of every string of the body, and json's canonical dump for the
replay digest (done by orjson, byte for byte the same)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, NamedTuple

from pydantic import ValidationError

from g2p_bridge.api.wire import check_strings
from g2p_bridge.core.errors import InvalidRequest
from g2p_bridge.models import Disbursement
from g2p_bridge.schemas import (
    SAFE_ID_PATTERN,
    DisbursementRequest,
    RequestHeader,
    column_length,
    forbidden_character,
)


class LeanDisbursement(NamedTuple):
    """One item of a create request, with the values ``DisbursementPayload`` would hold."""

    disbursement_id: str | None
    disbursement_envelope_id: str | None
    mis_reference_number: str | None
    beneficiary_id: str | None
    beneficiary_name: str | None
    disbursement_amount: Decimal | None
    narrative: str | None
    financial_address: str | None


class LeanRequest(NamedTuple):
    """A create request read by the lean path: its header and signature validated by the
    schema's own models, its items as tuples."""

    signature: str | None
    header: RequestHeader
    message: list[LeanDisbursement]


# Safe identifiers (schemas.SAFE_ID_PATTERN: "^[...]+$") of at most the column's length.
_SAFE_ID = re.compile(SAFE_ID_PATTERN.removeprefix("^").removesuffix("$"), re.ASCII)
# schemas._plain_decimal's notation, with nothing around it (it would strip blanks).
_PLAIN_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_ID_FIELDS = ("disbursement_id", "disbursement_envelope_id")
_TEXT_COLUMNS = {
    "mis_reference_number": column_length(Disbursement.mis_reference_number),
    "beneficiary_id": column_length(Disbursement.beneficiary_id),
    "beneficiary_name": column_length(Disbursement.beneficiary_name),
    "narrative": column_length(Disbursement.narrative),
    "financial_address": column_length(Disbursement.financial_address),
}
_ID_COLUMNS = {
    "disbursement_id": column_length(Disbursement.id),
    "disbursement_envelope_id": column_length(Disbursement.envelope_id),
}
# Fields of DisbursementPayload the lean path carries only when they are absent or null (a
# create request has no use for them; one that sends them takes the full path).
_NULL_ONLY = frozenset(
    {
        "receipt_time_stamp",
        "cancellation_status",
        "cancellation_time_stamp",
        "state",
        "state_reason",
        "response_error_codes",
    }
)
_KNOWN = frozenset({"id", "disbursement_amount", *_ID_FIELDS, *_TEXT_COLUMNS, *_NULL_ONLY})


def _clean_text(value: str) -> bool:
    """``value`` holds no character any request refuses (``schemas.forbidden_character``) and
    nothing the schema's ``str_strip_whitespace`` would strip: kept exactly as it is."""
    if value.isascii():
        # ASCII's printable characters are 0x20-0x7E: no C0 control, no DEL; of them only the
        # blank is whitespace.
        return value.isprintable() and (not value or (value[0] != " " and value[-1] != " "))
    # Python's str.strip() strips every character pydantic's does (Unicode White_Space), and
    # more: a value it leaves alone, pydantic leaves alone.
    return forbidden_character(value) is None and value.strip() == value


def _item(raw: Any, limits: dict[str, int], string_limit: int) -> LeanDisbursement | None:
    """One item as ``DisbursementPayload`` would read it, or None when in doubt."""
    if type(raw) is not dict or not raw.keys() <= _KNOWN:
        return None
    for name in _NULL_ONLY:
        if raw.get(name) is not None:
            return None
    identifier = raw.get("id")
    if identifier is not None and (
        type(identifier) is not str
        or len(identifier) > string_limit
        or forbidden_character(identifier) is not None
    ):
        # Free text, overwritten in the answer; the string guard still reads it.
        return None
    values: list[Any] = []
    for name in _ID_FIELDS:
        value = raw.get(name)
        if value is not None and (
            type(value) is not str or len(value) > limits[name] or _SAFE_ID.fullmatch(value) is None
        ):
            return None
        values.append(value)
    for name in ("mis_reference_number", "beneficiary_id", "beneficiary_name"):
        value = raw.get(name)
        if value is not None and (
            type(value) is not str or len(value) > limits[name] or not _clean_text(value)
        ):
            return None
        values.append(value)
    amount = raw.get("disbursement_amount")
    if amount is None:
        values.append(None)
    elif type(amount) is str:
        if len(amount) > string_limit or _PLAIN_AMOUNT.fullmatch(amount) is None:
            return None
        values.append(Decimal(amount))
    elif type(amount) is int or type(amount) is Decimal:
        # A JSON number: an integer, or plain decimal notation (one written with an exponent is
        # a wire.NonPlainNumber, which the schema refuses).
        values.append(Decimal(amount))
    else:
        return None
    for name in ("narrative", "financial_address"):
        value = raw.get(name)
        if value is not None and (
            type(value) is not str or len(value) > limits[name] or not _clean_text(value)
        ):
            return None
        values.append(value)
    return LeanDisbursement(*values)


def _limits(string_limit: int) -> dict[str, int]:
    # A field is accepted only within both its column and the string guard's limit.
    return {
        name: min(length, string_limit) for name, length in {**_TEXT_COLUMNS, **_ID_COLUMNS}.items()
    }


def lean_request(data: Any, string_limit: int) -> LeanRequest | None:
    """The create request in ``data`` (parsed by ``wire.parse_json``), when the lean path can
    tell that the string guard and the schema take it as it is; else None (the full path)."""
    if type(data) is not dict:
        return None
    items = data.get("message")
    if type(items) is not list or max(map(len, _KNOWN)) > string_limit:
        return None
    limits = _limits(string_limit)
    message = []
    for raw in items:
        item = _item(raw, limits, string_limit)
        if item is None:
            return None
        message.append(item)
    rest = {key: value for key, value in data.items() if key != "message"}
    try:
        # The rest of the body (header, signature, whatever else) as the full path reads it:
        # the string guard, then the schema's own models.
        check_strings(rest, string_limit)
        envelope = DisbursementRequest.model_validate({**rest, "message": []})
    except (InvalidRequest, ValidationError):
        return None
    return LeanRequest(envelope.signature, envelope.header, message)
