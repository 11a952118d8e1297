"""Reading G2P Connect requests and writing G2P Connect answers, including refusals.

JSON numbers become Decimal exactly (never float), every string of a request is checked for
control characters and length before validation, and every problem becomes a ``rjct``; the
FastAPI side of it is api/g2p_connect.py."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from g2p_bridge.core.errors import BridgeError, ErrorCode, InvalidRequest
from g2p_bridge.schemas import (
    NonPlainNumber,
    RequestHeader,
    ResponseHeader,
    Status,
    forbidden_character,
)

# The reference's reason codes, for the refusals it has one for.
_REASON_CODES = {
    ErrorCode.TOO_MANY_ITEMS: "rjct.total_count.limit_exceeded",
    ErrorCode.REQUEST_TOO_LARGE: "rjct.total_count.limit_exceeded",
    ErrorCode.AUTHENTICATION_REQUIRED: "rjct.auth.missing",
    ErrorCode.INVALID_TOKEN: "rjct.auth.invalid",
    ErrorCode.ACCESS_DENIED: "rjct.auth.forbidden",
    ErrorCode.SENDER_MISMATCH: "rjct.sender_id.invalid",
    ErrorCode.SERVICE_UNAVAILABLE: "rjct.service.unavailable",
    ErrorCode.MESSAGE_ID_DUPLICATE: "rjct.message_id.duplicate",
    ErrorCode.INVALID_MESSAGE_ID: "rjct.message_id.invalid",
    ErrorCode.INVALID_TOTAL_COUNT: "rjct.total_count.invalid",
}

# A field that fails validation is refused with the reference's code for that field, where it
# has one, so a client built for the reference reads the same code from us.
_FIELD_CODES = {
    "disbursement_envelope_id": ErrorCode.INVALID_DISBURSEMENT_ENVELOPE_ID,
    "benefit_program_mnemonic": ErrorCode.INVALID_PROGRAM_MNEMONIC,
    "program_mnemonic": ErrorCode.INVALID_PROGRAM_MNEMONIC,
    "disbursement_frequency": ErrorCode.INVALID_DISBURSEMENT_FREQUENCY,
    "cycle_code_mnemonic": ErrorCode.INVALID_CYCLE_CODE_MNEMONIC,
    "number_of_beneficiaries": ErrorCode.INVALID_NO_OF_BENEFICIARIES,
    "number_of_disbursements": ErrorCode.INVALID_NO_OF_DISBURSEMENTS,
    "total_disbursement_amount": ErrorCode.INVALID_TOTAL_DISBURSEMENT_AMOUNT,
    "disbursement_currency_code": ErrorCode.INVALID_DISBURSEMENT_CURRENCY_CODE,
    "disbursement_schedule_date": ErrorCode.INVALID_DISBURSEMENT_SCHEDULE_DATE,
    "disbursement_id": ErrorCode.INVALID_DISBURSEMENT_ID,
    "disbursement_amount": ErrorCode.INVALID_DISBURSEMENT_AMOUNT,
    "beneficiary_id": ErrorCode.INVALID_BENEFICIARY_ID,
    "beneficiary_name": ErrorCode.INVALID_BENEFICIARY_NAME,
    "narrative": ErrorCode.INVALID_NARRATIVE,
    "message_id": ErrorCode.INVALID_MESSAGE_ID,
    "total_count": ErrorCode.INVALID_TOTAL_COUNT,
    "sponsor_bank_code": ErrorCode.INVALID_PROGRAM_CONFIGURATION,
    "sponsor_bank_account_number": ErrorCode.INVALID_PROGRAM_CONFIGURATION,
    "sponsor_bank_branch_code": ErrorCode.INVALID_PROGRAM_CONFIGURATION,
    "sponsor_bank_account_currency": ErrorCode.INVALID_PROGRAM_CONFIGURATION,
    "resolver": ErrorCode.INVALID_PROGRAM_CONFIGURATION,
}


def json_response(body: BaseModel | dict[str, Any] | list[Any], status_code: int = 200) -> Response:
    content = (
        body.model_dump_json(exclude_none=False)
        if isinstance(body, BaseModel)
        else json.dumps(body, default=str)
    )
    return Response(content=content, status_code=status_code, media_type="application/json")


_PLAIN_NUMBER = re.compile(r"-?[0-9]+\.[0-9]+", re.ASCII)


def _json_number(text: str) -> Decimal:
    """Every JSON number with a fraction or exponent, exactly; one with an exponent is marked
    so that an amount or count refuses it (see schemas.Money)."""
    if _PLAIN_NUMBER.fullmatch(text):
        return Decimal(text)
    return NonPlainNumber(text)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=_json_number, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, "body is nested too deeply") from exc


# C0 and C1 controls (line breaks, NUL, escape), lone surrogates (not text at all; PostgreSQL
# and UTF-8 refuse them) and the Unicode line and paragraph separators. Each of them can end a
# line in a bank file or a log, or break the database's text type.


_ITEM = re.compile(r"message\[(\d+)\]")


def check_strings(data: Any, limit: int) -> None:
    """Refuses a body holding any string (value or key) longer than ``limit`` characters or
    holding a control character, naming where it is; fields with a narrower column are checked
    again by their schema, derived from the column."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if len(value) > limit:
                raise InvalidRequest(
                    ErrorCode.STRING_TOO_LONG,
                    f"{where or 'body'}: {len(value)} characters; at most {limit} are accepted",
                )
            bad = forbidden_character(value)
            if bad is not None:
                code = _FIELD_CODES.get(where.rsplit(".", 1)[-1], ErrorCode.INVALID_CHARACTER)
                item = _ITEM.match(where)
                raise InvalidRequest(
                    code,
                    f"{where or 'body'}: holds the control character {bad}, which is not "
                    "accepted in any field",
                    {item.group(1): [code.value]} if item else None,
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if len(key) > limit or forbidden_character(key) is not None:
                    raise InvalidRequest(
                        ErrorCode.INVALID_REQUEST,
                        f"{where or 'body'}: a key is too long or holds a control character",
                    )
                stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def validation_message(errors: Sequence[Any]) -> str:
    parts = []
    for error in errors[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(errors) - 10
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def refusal_of(errors: Sequence[Any]) -> InvalidRequest:
    """The reference's code of the first field that failed validation, and per-item codes for
    the items of a list message (``message[3].disbursement_amount``), as the domain's own
    checks give. ``errors`` are pydantic's, located from the body's root."""
    codes: list[ErrorCode] = []
    item_errors: dict[str, list[str]] = {}
    for error in errors:
        location = error["loc"]
        names = [part for part in location if isinstance(part, str)]
        code = _FIELD_CODES.get(names[-1] if names else "", ErrorCode.INVALID_REQUEST)
        codes.append(code)
        if len(location) >= 2 and location[0] == "message" and isinstance(location[1], int):
            item = item_errors.setdefault(str(location[1]), [])
            if code.value not in item:
                item.append(code.value)
    first = next((c for c in codes if c != ErrorCode.INVALID_REQUEST), ErrorCode.INVALID_REQUEST)
    return InvalidRequest(first, validation_message(errors), item_errors or None)


def echo_items(data: Any, error: BridgeError) -> list[Any] | None:
    """For a list message refused item by item: its items as sent, each with its own codes,
    as the reference answers (and as the domain's refusals do)."""
    items = data.get("message") if isinstance(data, dict) else None
    if not error.item_errors or not isinstance(items, list):
        return None
    return [
        {**item, "response_error_codes": error.item_errors.get(str(index), [])}
        if isinstance(item, dict)
        else item
        for index, item in enumerate(items)
    ]


def header_hint(data: Any) -> dict[str, Any]:
    """Whatever of the request header could be read, to echo in an answer to a bad request."""
    header = data.get("header") if isinstance(data, dict) else None
    if not isinstance(header, dict):
        return {}
    # Echoed only when it is something an answer can carry: a lone surrogate cannot even be
    # encoded, and a line break would travel on into the client's logs.
    return {
        k: header[k]
        for k in ("message_id", "action", "sender_id")
        if isinstance(header.get(k), str)
        and len(header[k]) <= 128
        and forbidden_character(header[k]) is None
    }


def success_header(header: RequestHeader, completed: int | None = None) -> ResponseHeader:
    return ResponseHeader(
        message_id=header.message_id,
        action=header.action,
        status=Status.SUCCESS,
        status_reason_message="",
        total_count=header.total_count,
        completed_count=completed if completed is not None else header.total_count,
        sender_id=header.sender_id,
        receiver_id=header.receiver_id,
    )


def refusal(error: BridgeError, hint: dict[str, Any], message: Any = None) -> Response:
    header = ResponseHeader(
        message_id=hint.get("message_id", ""),
        action=hint.get("action", ""),
        sender_id=hint.get("sender_id"),
        status=Status.REJECTED,
        status_reason_code=_REASON_CODES.get(error.code),
        status_reason_message=error.code.value,
        meta={
            "error_code": error.code.value,
            "error_message": error.message,
            "item_errors": error.item_errors,
        },
    )
    body: dict[str, Any] = {
        "signature": None,
        "header": header.model_dump(mode="json"),
        "message": message,
    }
    response = Response(
        content=json.dumps(body, default=str),
        status_code=error.http_status,
        media_type="application/json",
    )
    if error.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response
