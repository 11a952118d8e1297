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
from functools import cache
from itertools import repeat
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


_SAFE_CHARACTERS = SAFE_ID_PATTERN.removeprefix("^").removesuffix("+$")  # "[A-Za-z0-9._:-]"
# schemas._plain_decimal's notation, with nothing around it (it would strip blanks).
_PLAIN_AMOUNT = r"-?[0-9]+(?:\.[0-9]+)?"
# A column's values are checked at once, joined by NUL: no value the lean path takes holds one
# (the string guard refuses it; ``_joined`` makes sure), so each value is exactly one piece
# between separators.
_SEP = "\x00"
_PLAIN_AMOUNTS = re.compile(f"{_PLAIN_AMOUNT}(?:{_SEP}{_PLAIN_AMOUNT})*")
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
_LONGEST_KEY = max(map(len, _KNOWN))


@cache
def _safe_ids(limit: int) -> re.Pattern[str]:
    """Safe identifiers of 1 to ``limit`` characters, joined by the separator."""
    one = f"{_SAFE_CHARACTERS}{{1,{limit}}}"
    return re.compile(f"{one}(?:{_SEP}{one})*")


def _strings(column: list[Any], limit: int) -> list[str] | None:
    """The column's values that are given, when every one is a string of at most ``limit``
    characters (None is an absent field)."""
    values = [value for value in column if value is not None]
    if not values:
        return values
    if set(map(type, values)) != {str} or max(map(len, values)) > limit:
        return None
    return values


def _joined(values: list[str]) -> str | None:
    """The values joined by the separator, or None when one of them holds it."""
    joined = _SEP.join(values)
    return joined if joined.count(_SEP) == max(len(values) - 1, 0) else None


def _clean_text(value: str) -> bool:
    """``value`` holds no character any request refuses (``schemas.forbidden_character``) and
    nothing the schema's ``str_strip_whitespace`` would strip: kept exactly as it is."""
    # Python's str.strip() strips every character pydantic's does (Unicode White_Space), and
    # more: a value it leaves alone, pydantic leaves alone.
    return forbidden_character(value) is None and value.strip() == value


def _clean_texts(values: list[str]) -> bool:
    """``_clean_text`` of every value; for ASCII, all at once."""
    joined = _joined(values)
    if joined is None:
        return False
    if not joined.isascii():
        return all(_clean_text(value) for value in values)
    # ASCII's printable characters are 0x20-0x7E: no C0 control, no DEL; of them only the
    # blank is whitespace, so none may start or end a value.
    return (
        joined.replace(_SEP, "").isprintable()
        and not joined.startswith(" ")
        and not joined.endswith(" ")
        and f" {_SEP}" not in joined
        and f"{_SEP} " not in joined
    )


def _amounts(column: list[Any], string_limit: int) -> list[Decimal | None] | None:
    """The amounts as ``schemas.Money`` reads them, or None when in doubt."""
    if column and set(map(type, column)) == {str}:
        # Strings in plain decimal notation (the usual: pbms_client sends them so).
        joined = _joined(column)
        if max(map(len, column)) > string_limit or joined is None:
            return None
        if _PLAIN_AMOUNTS.fullmatch(joined) is None:
            return None
        return list(map(Decimal, column))
    amounts: list[Decimal | None] = []
    for amount in column:
        if amount is None:
            amounts.append(None)
        elif type(amount) is str:
            if len(amount) > string_limit or re.fullmatch(_PLAIN_AMOUNT, amount) is None:
                return None
            amounts.append(Decimal(amount))
        elif type(amount) is int or type(amount) is Decimal:
            # A JSON number: an integer, or plain decimal notation (one written with an
            # exponent is a wire.NonPlainNumber, which the schema refuses).
            amounts.append(Decimal(amount))
        else:
            return None
    return amounts


def _limits(string_limit: int) -> dict[str, int]:
    # A field is accepted only within both its column and the string guard's limit.
    return {
        name: min(length, string_limit) for name, length in {**_TEXT_COLUMNS, **_ID_COLUMNS}.items()
    }


def _column(items: list[dict[str, Any]], name: str) -> list[Any]:
    """``[item.get(name) for item in items]``, the loop in C."""
    return list(map(dict.get, items, repeat(name)))


def _items(items: list[Any], string_limit: int) -> list[LeanDisbursement] | None:
    """The items as ``DisbursementPayload`` would read them, column by column, or None."""
    if items and set(map(type, items)) != {dict}:
        return None
    keys: set[str] = set().union(*items)
    if not keys <= _KNOWN:
        return None
    for name in keys & _NULL_ONLY:
        if any(raw.get(name) is not None for raw in items):
            return None
    if "id" in keys:
        # Free text, overwritten in the answer; the string guard still reads it.
        given = _strings(_column(items, "id"), string_limit)
        if given is None or not all(forbidden_character(value) is None for value in given):
            return None
    limits = _limits(string_limit)
    columns: dict[str, list[Any]] = {}
    for name in _ID_FIELDS:
        columns[name] = column = _column(items, name)
        values = _strings(column, limits[name])
        if values is None:
            return None
        joined = _joined(values)
        if joined is None or (values and not _safe_ids(limits[name]).fullmatch(joined)):
            return None
    for name in _TEXT_COLUMNS:
        columns[name] = column = _column(items, name)
        values = _strings(column, limits[name])
        if values is None or (values and not _clean_texts(values)):
            return None
    amounts = _amounts(_column(items, "disbursement_amount"), string_limit)
    if amounts is None:
        return None
    columns["disbursement_amount"] = amounts
    rows = zip(*(columns[field] for field in _FIELDS), strict=True)
    # LeanDisbursement._make without its call per row: tuple.__new__ straight from C.
    return list(map(tuple.__new__, repeat(LeanDisbursement), rows))


_FIELDS = LeanDisbursement._fields


def lean_request(data: Any, string_limit: int) -> LeanRequest | None:
    """The create request in ``data`` (parsed by ``wire.parse_json``), when the lean path can
    tell that the string guard and the schema take it as it is; else None (the full path)."""
    if type(data) is not dict:
        return None
    items = data.get("message")
    if type(items) is not list or string_limit < _LONGEST_KEY:
        return None
    message = _items(items, string_limit)
    if message is None:
        return None
    rest = {key: value for key, value in data.items() if key != "message"}
    try:
        # The rest of the body (header, signature, whatever else) as the full path reads it:
        # the string guard, then the schema's own models.
        check_strings(rest, string_limit)
        envelope = DisbursementRequest.model_validate({**rest, "message": []})
    except (InvalidRequest, ValidationError):
        return None
    return LeanRequest(envelope.signature, envelope.header, message)
