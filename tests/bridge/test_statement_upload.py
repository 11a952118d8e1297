"""The MT940 upload's body (issue 10, item 4): nobody unauthenticated or unauthorized gets a
byte of it read, and it is bounded on Content-Length and on the stream, so no client can fill
the API's memory or temporary disk. The ASGI app is driven directly so that the test counts the
bytes the server actually pulled from the client."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridge_support import mt940, program_request
from conftest import TEST_SECRET, Client
from g2p_bridge.api.app import create_app
from g2p_bridge.api.upload import MULTIPART_OVERHEAD_BYTES
from g2p_bridge.auth import issue_token
from g2p_bridge.db import make_engine, make_session_factory
from g2p_bridge.settings import Settings

MIB = 1024 * 1024
BOUNDARY = "statementboundary"


@pytest.fixture
def api(tmp_path: Path, sqlite_template: Path) -> Iterator[tuple[Any, Settings]]:
    path = tmp_path / "bridge.db"
    shutil.copy(sqlite_template, path)
    settings = Settings(
        database_url=f"sqlite:///{path}", auth_secret_key=TEST_SECRET, max_statement_bytes=MIB
    )
    app = create_app(settings, make_session_factory(make_engine(settings.database_url)))
    with TestClient(app, raise_server_exceptions=False) as http:
        admin = Client(http, [], issue_token(settings, "pbms-1", "admin"))
        assert admin.post("/create_benefit_program_configuration", program_request()).status_code
    yield app, settings


class Body:
    """A client body produced lazily, counting what the server pulled."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def receive(self) -> dict[str, Any]:
        chunk = next(self.chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}


def multipart(content: bytes, extra: bytes = b"") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="statement_file"; '
            f'filename="s.mt940"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        + content
        + extra
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def endless(size: int, chunk: int = MIB) -> Iterator[bytes]:
    """``size`` bytes of a multipart body whose file part never ends."""
    head = multipart(b"")[: -len(f"\r\n--{BOUNDARY}--\r\n")]
    yield head
    sent = len(head)
    while sent < size:
        yield b"A" * chunk
        sent += chunk


def call(
    app: Any, body: Body, token: str | None, content_length: int | None
) -> tuple[int, dict[str, Any]]:
    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload_mt940",
        "raw_path": b"/upload_mt940",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, body.receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    import json

    return status, json.loads(payload)


def temp_dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Python's temporary directory, where a spooled form would land, made watchable."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    return spool


def test_an_unauthenticated_200_mb_upload_is_refused_before_a_byte_is_read(api, temp_dir) -> None:
    app, _ = api
    body = Body(endless(200 * MIB))
    status, answer = call(app, body, None, 200 * MIB)
    assert status == 401
    assert answer["header"]["meta"]["error_code"] == "AUTHENTICATION_REQUIRED"
    assert body.pulled == 0
    assert temp_dir_bytes(temp_dir) == 0


@pytest.mark.parametrize(
    "claims",
    [{"role": "pbms", "programs": ["PROG1"]}, {"role": "bank"}],  # a bank with no bank codes
)
def test_a_client_that_may_not_upload_gets_nothing_read_either(api, temp_dir, claims) -> None:
    app, settings = api
    body = Body(endless(200 * MIB))
    refused = issue_token(settings, "client-1", **claims)
    status, answer = call(app, body, refused, None)  # no Content-Length: chunked
    assert status == 403 and answer["header"]["meta"]["error_code"] == "ACCESS_DENIED"
    assert body.pulled == 0 and temp_dir_bytes(temp_dir) == 0


def test_an_oversized_authenticated_upload_is_refused_on_its_content_length(api, temp_dir) -> None:
    app, settings = api
    bank = issue_token(settings, "bank-1", "bank", bank_codes=["EXAMPLE"])
    body = Body(endless(200 * MIB))
    status, answer = call(app, body, bank, 200 * MIB)
    assert status == 413
    assert answer["header"]["status"] == "rjct"
    assert answer["header"]["meta"]["error_code"] == "STATEMENT_TOO_LARGE"
    assert body.pulled == 0 and temp_dir_bytes(temp_dir) == 0


@pytest.mark.parametrize("declared", [1000, None])
def test_a_body_that_lies_about_its_length_is_cut_on_the_stream(api, temp_dir, declared) -> None:
    app, settings = api
    bank = issue_token(settings, "bank-1", "bank", bank_codes=["EXAMPLE"])
    body = Body(endless(200 * MIB, chunk=64 * 1024))
    status, answer = call(app, body, bank, declared)
    assert status == 413, answer
    assert answer["header"]["meta"]["error_code"] == "STATEMENT_TOO_LARGE"
    # Read up to the limit and one chunk more, not the 200 MB.
    assert body.pulled <= MIB + MULTIPART_OVERHEAD_BYTES + 64 * 1024
    assert temp_dir_bytes(temp_dir) == 0


def test_a_statement_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not(api) -> None:
    app, settings = api
    bank = issue_token(settings, "bank-1", "bank", bank_codes=["EXAMPLE"])
    statement = mt940("1000000001", []).encode()
    padded = statement + b" " * (MIB - len(statement))  # trailing blanks the parser ignores
    exact = multipart(padded)
    status, answer = call(app, Body(iter([exact])), bank, len(exact))
    assert status == 200, answer
    assert answer["statement_id"]
    over = multipart(padded + b" ")
    status, answer = call(app, Body(iter([over])), bank, len(over))
    assert status == 413 and answer["header"]["meta"]["error_code"] == "STATEMENT_TOO_LARGE"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", f"multipart/form-data; boundary={BOUNDARY}", "closing boundary"),
        (multipart(b"x")[:60], f"multipart/form-data; boundary={BOUNDARY}", "closing boundary"),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n'
            f"--{BOUNDARY}--\r\n".encode(),
            f"multipart/form-data; boundary={BOUNDARY}",
            "no 'statement_file' field",
        ),
        (b":20:X\n", "text/plain", "multipart/form-data"),
        (b"garbage", "multipart/form-data", "multipart/form-data"),  # no boundary
    ],
)
def test_a_malformed_upload_is_a_rjct_not_a_500(api, body, content_type, message) -> None:
    app, settings = api
    bank = issue_token(settings, "bank-1", "bank", bank_codes=["EXAMPLE"])
    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.post(
            "/upload_mt940",
            content=body,
            headers={"authorization": f"Bearer {bank}", "content-type": content_type},
        )
    assert response.status_code == 422, response.text
    meta = response.json()["header"]["meta"]
    assert meta["error_code"] in ("STATEMENT_UPLOAD_ERROR", "STATEMENT_UNPARSEABLE")
    assert message in meta["error_message"]


def test_the_openapi_document_still_describes_the_statement_file_field(api) -> None:
    app, _ = api
    operation = app.openapi()["paths"]["/upload_mt940"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["statement_file"]
    assert schema["properties"]["statement_file"] == {
        "type": "string",
        "format": "binary",
        "title": "Statement File",
    }


def test_an_openg2p_style_multipart_upload_is_accepted(api) -> None:
    app, settings = api
    bank = issue_token(settings, "bank-1", "bank", bank_codes=["EXAMPLE"])
    with TestClient(app, raise_server_exceptions=False) as http:
        response = http.post(
            "/upload_mt940",
            files={"statement_file": ("day.mt940", mt940("1000000001", []).encode(), "text/plain")},
            data={"note": "extra fields are ignored"},
            headers={"authorization": f"Bearer {bank}"},
        )
        assert response.status_code == 200, response.text
        statement_id = response.json()["statement_id"]
        shown = http.get(
            f"/statements/{statement_id}", headers={"authorization": f"Bearer {bank}"}
        ).json()
    assert shown["filename"] == "day.mt940" and shown["account_number"] == "1000000001"
