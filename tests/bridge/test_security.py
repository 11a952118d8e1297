"""Authentication and authorization over every route: no token, an expired or wrongly signed
token, a token for another program or the wrong role, and a sender that is not the client."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge_support import (
    disbursement_items,
    disbursements_request,
    envelope_request,
    header,
    mt940,
    program_request,
)
from conftest import TEST_SECRET, Client
from g2p_bridge.api.app import create_app
from g2p_bridge.auth import AuthConfigurationError, issue_token
from g2p_bridge.db import make_engine, make_session_factory, transaction
from g2p_bridge.models import AuditEvent
from g2p_bridge.models.base import utcnow
from g2p_bridge.settings import Settings

PUBLIC = {"/ping", "/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"}
PUBLIC |= {"/docs/oauth2-redirect", "/redoc"}
PUBLIC |= {"/.well-known/jwks.json"}  # the callbacks' public key set: public by design


def _protected_routes() -> list[tuple[str, str]]:
    """Every operation of the app's own OpenAPI document that is not public."""
    settings = Settings(database_url="sqlite:////nonexistent/x.db", auth_secret_key=TEST_SECRET)
    schema = create_app(settings, wake=lambda *_: None).openapi()
    return [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, operations in sorted(schema["paths"].items())
        if path not in PUBLIC
        for method in sorted(operations)
    ]


ROUTES = _protected_routes()


@pytest.fixture
def sqlite_client(tmp_path: Path, sqlite_template: Path) -> Iterator[tuple[Client, Settings]]:
    """The embedded SQLite only: these tests are about the HTTP layer, not the database."""
    path = tmp_path / "bridge.db"
    shutil.copy(sqlite_template, path)
    settings = Settings(
        database_url=f"sqlite:///{path}", auth_secret_key=TEST_SECRET, max_string_length=300
    )
    factory = make_session_factory(make_engine(settings.database_url))
    app = create_app(settings, factory, wake=lambda *_: None)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Client(http, [], issue_token(settings, "pbms-1", "admin")), settings


def _call(client: Client, method: str, path: str, token: str | None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    if token is None:
        client.http.headers.pop("authorization", None)
    if path == "/upload_mt940":
        files = {"statement_file": ("s.mt940", b":20:X\n", "text/plain")}
        return client.http.post(path, files=files, headers=headers)
    if method == "GET":
        return client.http.get(path, headers=headers)
    return client.http.request(method, path, content=b"{}", headers=headers)


def _expired(settings: Settings) -> str:
    return issue_token(settings, "pbms-1", "admin", ttl_seconds=-3600)


def _wrongly_signed(settings: Settings) -> str:
    claims = {"sub": "pbms-1", "role": "admin", "iss": settings.auth_issuer}
    claims |= {"aud": settings.auth_audience, "exp": int(utcnow().timestamp()) + 600}
    return jwt.encode(claims, "another-key-another-key-another-key-0123", algorithm="HS256")


def _unsigned(settings: Settings) -> str:
    claims = {"sub": "pbms-1", "role": "admin", "iss": settings.auth_issuer}
    claims |= {"aud": settings.auth_audience, "exp": int(utcnow().timestamp()) + 600}
    return jwt.encode(claims, None, algorithm="none")


def _wrong_audience(settings: Settings) -> str:
    claims = {"sub": "pbms-1", "role": "admin", "iss": settings.auth_issuer}
    claims |= {"aud": "someone-else", "exp": int(utcnow().timestamp()) + 600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def test_every_route_but_the_public_ones_is_protected() -> None:
    paths = {path for _, path in ROUTES}
    assert "/create_disbursements" in paths and "/audit" in paths and "/programs" in paths
    assert len(ROUTES) >= 16


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "make_token", [None, _expired, _wrongly_signed, _unsigned, _wrong_audience, lambda _: "junk"]
)
def test_route_refuses_a_missing_or_bad_token(sqlite_client, method, path, make_token) -> None:
    client, settings = sqlite_client
    token = make_token(settings) if make_token is not None else None
    response = _call(client, method, path, token)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["header"]["status"] == "rjct"
    expected = "AUTHENTICATION_REQUIRED" if token is None else "INVALID_TOKEN"
    assert body["header"]["meta"]["error_code"] == expected
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", sorted(PUBLIC - {"/docs/oauth2-redirect", "/redoc"}))
def test_public_routes_need_no_token(sqlite_client, path) -> None:
    client, _ = sqlite_client
    client.http.headers.pop("authorization", None)
    assert client.http.get(path).status_code == 200


def _envelope_with_disbursements(client: Client) -> tuple[str, list[str]]:
    assert (
        client.post("/create_benefit_program_configuration", program_request()).status_code == 200
    )
    second = client.post("/create_benefit_program_configuration", program_request("PROG2", "222"))
    assert second.status_code == 200, second.text
    pbms = {"authorization": f"Bearer {_pbms_token(client)}"}
    envelope = client.post("/create_disbursement_envelope", envelope_request(), headers=pbms)
    assert envelope.status_code == 200, envelope.text
    envelope_id = envelope.json()["message"]["disbursement_envelope_id"]
    items = disbursement_items(envelope_id, 3)
    created = client.post("/create_disbursements", disbursements_request(items), headers=pbms)
    assert created.status_code == 200, created.text
    return envelope_id, [i["disbursement_id"] for i in items]


def _pbms_token(client: Client, programs: tuple[str, ...] = ("PROG1",)) -> str:
    settings: Settings = client.http.app.state.settings  # type: ignore[attr-defined]
    return issue_token(settings, "pbms-1", "pbms", programs=programs)


def _refusals(client: Client) -> list[AuditEvent]:
    factory = client.http.app.state.session_factory  # type: ignore[attr-defined]
    with transaction(factory) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.outcome == "denied")))


def _requests_on_prog1(envelope_id: str, ids: list[str]) -> list[tuple[str, str, Any]]:
    cancel = envelope_request(envelope_id)
    cancel["header"]["action"] = "cancel_disbursement_envelope"
    status = {"header": header("status"), "message": envelope_id}
    more = disbursement_items(envelope_id, 1, prefix="new")
    return [
        ("POST", "/create_disbursement_envelope", envelope_request()),
        ("POST", "/get_disbursement_envelope_status", status),
        ("POST", "/create_disbursements", disbursements_request(more)),
        ("POST", "/cancel_disbursements", disbursements_request([{"disbursement_id": ids[0]}])),
        (
            "POST",
            "/get_disbursement_status",
            {"header": header("status", len(ids)), "message": ids},
        ),
        ("GET", "/envelopes?program=PROG1", None),
        ("GET", f"/envelopes/{envelope_id}/status", None),
        ("GET", f"/envelopes/{envelope_id}/batches", None),
        ("GET", f"/envelopes/{envelope_id}/disbursements", None),
        ("POST", "/cancel_disbursement_envelope", cancel),
    ]


def test_a_client_of_another_program_is_refused_and_recorded(client) -> None:
    envelope_id, ids = _envelope_with_disbursements(client)
    other = {"authorization": f"Bearer {_pbms_token(client, ('PROG2',))}"}
    requests = _requests_on_prog1(envelope_id, ids)
    for method, path, body in requests:
        if method == "GET":
            response = client.get(path, headers=other)
        else:
            response = client.post(path, body, headers=other)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["header"]["meta"]["error_code"] == "ACCESS_DENIED", path
    refusals = _refusals(client)
    assert len(refusals) == len(requests)
    assert {r.actor for r in refusals} == {"pbms-1"}
    assert all("PROG1" in (r.detail or "") for r in refusals)
    # The other program's listing holds nothing of PROG1's.
    assert client.get("/envelopes", headers=other).json()["total"] == 0


def test_a_granted_client_may_act_and_sees_only_its_programs(client) -> None:
    envelope_id, ids = _envelope_with_disbursements(client)
    mine = {"authorization": f"Bearer {_pbms_token(client)}"}
    for method, path, body in _requests_on_prog1(envelope_id, ids):
        if path in ("/create_disbursement_envelope", "/create_disbursements"):
            continue  # allowed, but the envelope already holds all it declared
        response = (
            client.get(path, headers=mine)
            if method == "GET"
            else client.post(path, body, headers=mine)
        )
        assert response.status_code == 200, (path, response.text)
    assert client.get("/envelopes", headers=mine).json()["total"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/create_benefit_program_configuration"),
        ("GET", "/programs"),
        ("GET", "/programs/PROG1"),
        ("PUT", "/programs/PROG1"),
        ("GET", "/audit"),
        ("GET", "/statements"),
    ],
)
@pytest.mark.parametrize("role", ["pbms", "bank"])
def test_admin_routes_refuse_other_roles(sqlite_client, method, path, role) -> None:
    client, settings = sqlite_client
    assert (
        client.post("/create_benefit_program_configuration", program_request()).status_code == 200
    )
    token = issue_token(settings, "pbms-1", role, programs=["PROG1"], bank_codes=["EXAMPLE"])
    headers = {"authorization": f"Bearer {token}"}
    if method == "GET" and not (role == "bank" and path == "/statements"):
        response = client.get(path, headers=headers)
    elif method == "GET":
        pytest.skip("a bank lists the statements it uploaded")
    elif method == "PUT":
        response = client.http.put(path, json={"sponsor_bank_branch_code": "X"}, headers=headers)
    else:
        response = client.post(path, program_request("PROG9", "999"), headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["header"]["meta"]["error_code"] == "ACCESS_DENIED"


def test_sender_must_be_the_authenticated_client(sqlite_client) -> None:
    client, settings = sqlite_client
    token = issue_token(settings, "pbms-2", "admin")
    response = client.post(
        "/create_benefit_program_configuration",
        program_request(),
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.json()["header"]["meta"]["error_code"] == "SENDER_MISMATCH"
    assert [e.action for e in _refusals(client)] == ["create_benefit_program_configuration"]


def test_statement_upload_needs_the_bank_of_the_account(sqlite_client) -> None:
    client, settings = sqlite_client
    assert (
        client.post("/create_benefit_program_configuration", program_request()).status_code == 200
    )
    content = mt940("1000000001", []).encode()

    def upload(role: str, bank_codes: list[str], body: bytes = content) -> Any:
        token = issue_token(settings, "bank-1", role, bank_codes=bank_codes, programs=["PROG1"])
        return client.http.post(
            "/upload_mt940",
            files={"statement_file": ("s.mt940", body, "text/plain")},
            headers={"authorization": f"Bearer {token}"},
        )

    assert upload("pbms", ["EXAMPLE"]).status_code == 403
    assert upload("bank", ["OTHER"]).status_code == 403
    # The accounts are the parser's reading, whatever the layout: CR-only line ends, a stray
    # blank in the tag, SWIFT blocks, a bank's header lines (issue 10).
    for variant in (
        content.replace(b"\n", b"\r"),
        content.replace(b":25:", b": 25:"),
        b"{1:F01BANKXXXX}{2:O940}{4:\r\n" + content.replace(b"\n", b"\r\n") + b"}",
        b"HEADER\n940\n" + content,
    ):
        assert upload("bank", ["OTHER"], variant).status_code == 403, variant[:40]
    accepted = upload("bank", ["EXAMPLE"])
    assert accepted.status_code == 200, accepted.text
    statement_id = accepted.json()["statement_id"]
    token = issue_token(settings, "bank-1", "bank", bank_codes=["EXAMPLE"])
    own = client.http.get(
        f"/statements/{statement_id}", headers={"authorization": f"Bearer {token}"}
    )
    assert own.status_code == 200
    stranger = issue_token(settings, "bank-2", "bank", bank_codes=["EXAMPLE"])
    theirs = client.http.get(
        f"/statements/{statement_id}", headers={"authorization": f"Bearer {stranger}"}
    )
    assert theirs.status_code == 403
    assert len(_refusals(client)) == 7


def test_request_id_is_taken_or_made_and_echoed(sqlite_client) -> None:
    client, _ = sqlite_client
    assert (
        client.http.get("/programs", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = client.http.get("/programs", headers={"x-request-id": "bad id\twith junk"})
    assert len(made.headers["x-request-id"]) == 32


def test_over_long_strings_are_refused_clearly(sqlite_client) -> None:
    client, _ = sqlite_client
    body = program_request()
    body["message"]["resolver"] = "x" * 301
    response = client.post("/create_benefit_program_configuration", body)
    assert response.status_code == 422
    meta = response.json()["header"]["meta"]
    assert meta["error_code"] == "STRING_TOO_LONG"
    assert "message.resolver" in meta["error_message"]


def test_outside_the_embedded_mode_an_unconfigured_api_refuses_to_start() -> None:
    settings = Settings(database_url="postgresql+psycopg://u@127.0.0.1/none")
    with pytest.raises(AuthConfigurationError, match="G2P_BRIDGE_AUTH_SECRET_KEY"):
        create_app(settings, wake=lambda *_: None)
    open_settings = Settings(database_url=settings.database_url, auth_disabled=True)
    assert create_app(open_settings, wake=lambda *_: None).state.authenticator.disabled


def test_embedded_key_file_is_made_once_private_and_signs_cli_tokens(
    tmp_path: Path, sqlite_template: Path
) -> None:
    from click.testing import CliRunner

    from g2p_bridge import cli

    database = tmp_path / "bridge.db"
    shutil.copy(sqlite_template, database)
    settings = Settings(database_url=f"sqlite:///{database}")
    app = create_app(settings, wake=lambda *_: None)
    key = tmp_path / "g2p_bridge.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_text()

    env = {"G2P_BRIDGE_DATABASE_URL": settings.database_url}
    cli.get_settings.cache_clear()
    try:
        result = CliRunner(env=env).invoke(
            cli.main, ["auth", "token", "--client", "ops", "--role", "admin", "--ttl", "60"]
        )
    finally:
        cli.get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert key.read_text() == first
    with TestClient(app) as http:
        response = http.get(
            "/programs", headers={"authorization": f"Bearer {result.output.strip()}"}
        )
    assert response.status_code == 200, response.text


def _rsa_pair() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


def _rs256(private: Any, settings: Settings, kid: str | None = None, **claims: Any) -> str:
    body = {"sub": "ops", "role": "admin", "iss": settings.auth_issuer}
    body |= {"aud": settings.auth_audience, "exp": int(utcnow().timestamp()) + 600, **claims}
    return jwt.encode(body, private, algorithm="RS256", headers={"kid": kid} if kid else None)


def test_rs256_public_key_verifies_and_refuses_hs256_confusion(tmp_path: Path) -> None:
    private, public_pem = _rsa_pair()
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}", auth_public_key=public_pem)
    authenticator = create_app(settings, wake=lambda *_: None).state.authenticator
    assert authenticator.verify(_rs256(private, settings)).role == "admin"
    # The public key used as an HMAC secret: the classic algorithm confusion.
    forged = jwt.encode(
        {
            "sub": "x",
            "role": "admin",
            "iss": settings.auth_issuer,
            "aud": settings.auth_audience,
            "exp": int(utcnow().timestamp()) + 600,
        },
        "k" * 40,
        algorithm="HS256",
    )
    with pytest.raises(Exception, match="not valid"):
        authenticator.verify(forged)


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, Any, list[int]]]:
    private, _ = _rsa_pair()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk |= {"kid": "k1", "use": "sig", "alg": "RS256"}
    body = json.dumps({"keys": [jwk]}).encode()
    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(1)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", private, hits
    server.shutdown()
    server.server_close()


def test_jwks_keys_are_fetched_cached_and_checked(tmp_path: Path, jwks_server) -> None:
    url, private, hits = jwks_server
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}", auth_jwks_url=url)
    authenticator = create_app(settings, wake=lambda *_: None).state.authenticator
    for _ in range(3):
        assert authenticator.verify(_rs256(private, settings, kid="k1")).client_id == "ops"
    assert len(hits) == 1
    other, _ = _rsa_pair()
    with pytest.raises(Exception, match=r"not valid|not known"):
        authenticator.verify(_rs256(other, settings, kid="k1"))
    with pytest.raises(Exception, match="expired"):
        authenticator.verify(_rs256(private, settings, kid="k1", exp=1))


def test_roles_and_claims_are_checked(sqlite_client) -> None:
    client, settings = sqlite_client
    claims = {"sub": "pbms-1", "iss": settings.auth_issuer, "aud": settings.auth_audience}
    claims |= {"exp": int(utcnow().timestamp()) + 600}
    for bad in ({"role": "root"}, {"role": "pbms", "programs": 5}, {"role": None}):
        token = jwt.encode(claims | bad, TEST_SECRET, algorithm="HS256")
        response = client.http.get("/envelopes", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 401, bad


def test_no_secret_is_echoed_in_errors(sqlite_client) -> None:
    client, _ = sqlite_client
    response = client.http.get("/programs", headers={"authorization": "Bearer x.y.z"})
    assert TEST_SECRET not in response.text
    assert os.environ.get("G2P_BRIDGE_AUTH_SECRET_KEY") is None


def test_api_with_several_workers_exits_on_a_configuration_error(postgres_url: str) -> None:
    """Outside the embedded default the API refuses to start without a key; with --workers it
    used to leave the parent running with its children dead, answering nothing."""
    from click.testing import CliRunner

    from g2p_bridge import cli

    env = {
        "G2P_BRIDGE_DATABASE_URL": postgres_url,
        "G2P_BRIDGE_BROKER_URL": "redis://127.0.0.1:6379/15",
        "G2P_BRIDGE_AUTH_SECRET_KEY": None,
        "G2P_BRIDGE_AUTH_PUBLIC_KEY": None,
        "G2P_BRIDGE_AUTH_JWKS_URL": None,
    }
    cli.get_settings.cache_clear()
    try:
        result = CliRunner(env=env).invoke(cli.main, ["api", "--workers", "2", "--port", "1"])
    finally:
        cli.get_settings.cache_clear()
    assert result.exit_code != 0
    assert "cannot start the API" in result.output, result.output
