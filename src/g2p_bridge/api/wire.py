"""Reading G2P Connect requests and writing G2P Connect answers, including refusals.

Bodies are parsed here rather than by FastAPI so that JSON numbers become Decimal exactly (never
float), oversize bodies are refused before parsing, and every problem becomes a ``rjct``."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter, ValidationError

from g2p_bridge.core.errors import BridgeError, ErrorCode, InvalidRequest, PayloadTooLarge
from g2p_bridge.schemas import RequestHeader, ResponseHeader, Status

T = TypeVar("T")

# The reference's reason codes, for the refusals it has one for.
_REASON_CODES = {
    ErrorCode.TOO_MANY_ITEMS: "rjct.total_count.limit_exceeded",
    ErrorCode.REQUEST_TOO_LARGE: "rjct.total_count.limit_exceeded",
    ErrorCode.AUTHENTICATION_REQUIRED: "rjct.auth.missing",
    ErrorCode.INVALID_TOKEN: "rjct.auth.invalid",
    ErrorCode.ACCESS_DENIED: "rjct.auth.forbidden",
    ErrorCode.SENDER_MISMATCH: "rjct.sender_id.invalid",
    ErrorCode.SERVICE_UNAVAILABLE: "rjct.service.unavailable",
}


def json_response(body: BaseModel | dict[str, Any] | list[Any], status_code: int = 200) -> Response:
    content = (
        body.model_dump_json(exclude_none=False)
        if isinstance(body, BaseModel)
        else json.dumps(body, default=str)
    )
    return Response(content=content, status_code=status_code, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(ErrorCode.REQUEST_TOO_LARGE, f"request body over {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(ErrorCode.REQUEST_TOO_LARGE, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, "body is nested too deeply") from exc


def check_string_lengths(data: Any, limit: int) -> None:
    """Refuses a body holding any string (value or key) longer than ``limit`` characters, naming
    where it is; fields with a narrower column are checked again by the domain."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if len(value) > limit:
                raise InvalidRequest(
                    ErrorCode.STRING_TOO_LONG,
                    f"{where or 'body'}: {len(value)} characters; at most {limit} are accepted",
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if len(key) > limit:
                    raise InvalidRequest(ErrorCode.STRING_TOO_LONG, f"{where}: a key is too long")
                stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 10
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(data: Any, adapter: TypeAdapter[T]) -> T:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise InvalidRequest(ErrorCode.INVALID_REQUEST, validation_message(exc)) from exc


def header_hint(data: Any) -> dict[str, Any]:
    """Whatever of the request header could be read, to echo in an answer to a bad request."""
    header = data.get("header") if isinstance(data, dict) else None
    if not isinstance(header, dict):
        return {}
    return {
        k: header[k]
        for k in ("message_id", "action", "sender_id")
        if isinstance(header.get(k), str)
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


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body this module parses itself; the app adds the schema to components."""
    REQUEST_MODELS[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


REQUEST_MODELS: dict[str, type[BaseModel]] = {}


def add_request_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, model in REQUEST_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(def_name, definition)
        schemas[name] = schema
    return openapi
