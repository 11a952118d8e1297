"""Reading the MT940 upload's multipart body ourselves, after the caller is authenticated.

FastAPI's ``UploadFile = File(...)`` parses (and spools to the temporary directory) the whole
form before any dependency or route code runs, so an anonymous client could fill the disk. The
route therefore declares no body parameter; it authenticates first and only then reads the
request stream here, with python-multipart's streaming parser, bounded on ``Content-Length``
and again on the bytes that actually arrive. Nothing touches the disk: the statement is kept in
memory, at most ``max_statement_bytes`` of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from g2p_bridge.core.errors import ErrorCode, InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD = "statement_file"
# Room for the boundaries, part headers and any small extra form field beside the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

# The request body as OpenAPI describes it: unchanged from the reference G2P Bridge's.
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "title": "Body_upload_mt940_upload_mt940_post",
                    "properties": {
                        FIELD: {"type": "string", "format": "binary", "title": "Statement File"}
                    },
                    "required": [FIELD],
                }
            }
        },
    }
}


@dataclass
class StatementUpload:
    content: bytes
    filename: str | None


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: bytes | None = None
    filename: bytes | None = None


class _Collector:
    """Callbacks of the streaming parser: keeps the ``statement_file`` part, drops the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.content = bytearray()
        self.filename: str | None = None
        self.found = False
        self.ended = False
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._keep = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._part = _Part()
        self._keep = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = bytes(self._header_field).decode("latin-1").strip().lower()
        self._part.headers[name] = bytes(self._header_value).strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get("content-disposition"))
        self._part.name = options.get(b"name")
        self._part.filename = options.get(b"filename")
        self._keep = self._part.name == FIELD.encode() and not self.found
        if self._keep:
            self.found = True
            raw = self._part.filename
            self.filename = (raw.decode("utf-8", errors="replace")[:256] or None) if raw else None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keep:
            return
        if len(self.content) + (end - start) > self.limit:
            raise PayloadTooLarge(
                ErrorCode.STATEMENT_TOO_LARGE, f"statement is over the {self.limit}-byte limit"
            )
        self.content += data[start:end]

    def _on_end(self) -> None:
        self.ended = True


def _refused(message: str) -> InvalidRequest:
    return InvalidRequest(ErrorCode.STATEMENT_UPLOAD_ERROR, message)


async def read_statement_upload(request: Request, limit: int) -> StatementUpload:
    """The ``statement_file`` of a multipart/form-data body, at most ``limit`` bytes of it.
    Call it only once the caller is authenticated and authorized to upload."""
    body_limit = limit + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise _refused("Content-Length is not a number")
        if int(declared) > body_limit:
            raise PayloadTooLarge(
                ErrorCode.STATEMENT_TOO_LARGE,
                f"request body of {declared} bytes is over the {body_limit}-byte limit "
                f"(a {limit}-byte statement and its multipart framing)",
            )
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise _refused(f"the statement must be sent as multipart/form-data with field {FIELD!r}")
    collector = _Collector(limit)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
    except FormParserError as exc:
        raise _refused(f"the multipart boundary is not usable: {exc}") from exc
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        # Counted on what arrives, whatever Content-Length claimed (or if it was absent).
        if received > body_limit:
            raise PayloadTooLarge(
                ErrorCode.STATEMENT_TOO_LARGE, f"request body is over the {body_limit}-byte limit"
            )
        if collector.ended:
            continue  # an epilogue after the closing boundary carries nothing
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise _refused(f"the multipart body is malformed: {exc}") from exc
    if not collector.ended:
        raise _refused("the multipart body ends before its closing boundary")
    if not collector.found:
        raise _refused(f"the multipart body has no {FIELD!r} field")
    return StatementUpload(bytes(collector.content), collector.filename)
