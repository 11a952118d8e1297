"""While the database is away (stopped, restarting) the API answers 503 with Retry-After and a
G2P Connect ``rjct``, not a plain-text 500; errors that are not an outage stay what they were."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import ProgrammingError as SAProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bridge_support import envelope_request
from conftest import TEST_SECRET, Client
from g2p_bridge.api.app import create_app
from g2p_bridge.auth import issue_token
from g2p_bridge.db import is_database_outage, make_engine, make_session_factory
from g2p_bridge.settings import Settings

# Nothing listens on port 1: the connection is refused at once.
NOWHERE = "postgresql+psycopg://postgres@127.0.0.1:1/g2p_bridge?connect_timeout=1"
PERSONAL = "Amina Juma"


def _settings() -> Settings:
    return Settings(database_url=NOWHERE, auth_secret_key=TEST_SECRET)


def _client(settings: Settings, factory: Callable[[], object]) -> Iterator[Client]:
    app = create_app(settings, factory, wake=lambda *_: None)  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Client(http, [], issue_token(settings, "pbms-1", "admin"))


@pytest.fixture
def down() -> Iterator[Client]:
    """The API in front of a PostgreSQL server that is not there."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        yield from _client(settings, make_session_factory(engine))
    finally:
        engine.dispose()


def _assert_unavailable(response, action: str = "") -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    header = response.json()["header"]
    assert header["status"] == "rjct"
    assert header["status_reason_code"] == "rjct.service.unavailable"
    assert header["meta"]["error_code"] == "SERVICE_UNAVAILABLE"
    assert header["action"] == action
    return header  # type: ignore[no-any-return]


def test_g2p_connect_request_answers_503_rjct_while_the_database_is_down(
    down: Client, caplog: pytest.LogCaptureFixture
) -> None:
    body = envelope_request("env-outage")
    body["message"]["narrative"] = PERSONAL
    with caplog.at_level(logging.WARNING, logger="g2p_bridge"):
        response = down.post(
            "/create_disbursement_envelope", body, headers={"x-request-id": "outage-req-1"}
        )
    header = _assert_unavailable(response, "create_disbursement_envelope")
    # The request's own header is echoed, so the client knows which message to send again.
    assert header["message_id"] == body["header"]["message_id"]
    assert header["sender_id"] == "pbms-1"
    assert response.headers["x-request-id"] == "outage-req-1"
    warnings = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert warnings and warnings[0].levelno == logging.WARNING
    assert "outage-req-1" in warnings[0].getMessage()
    assert PERSONAL not in caplog.text


def test_listing_routes_answer_503_json_while_the_database_is_down(down: Client) -> None:
    for path in ("/envelopes", "/programs", "/statements", "/audit"):
        _assert_unavailable(down.get(path))


def test_readiness_still_answers_503_while_the_database_is_down(down: Client) -> None:
    response = down.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unreachable"}


def _failing(exc: Exception) -> Callable[[], object]:
    def factory() -> object:
        raise exc

    return factory


def _orig(kind: type[psycopg.Error] = psycopg.OperationalError) -> psycopg.Error:
    return kind("server closed the connection unexpectedly")


_PARAMS = {"beneficiary_name": PERSONAL}
OUTAGES = [
    OperationalError("INSERT INTO t VALUES (%(beneficiary_name)s)", _PARAMS, _orig()),
    InterfaceError("SELECT 1", {}, _orig(psycopg.InterfaceError)),
    DBAPIError("SELECT 1", {}, _orig(psycopg.DatabaseError), connection_invalidated=True),
    PoolTimeout("QueuePool limit of size 10 overflow 10 reached"),
]
NOT_OUTAGES = [
    IntegrityError("INSERT", _PARAMS, _orig(psycopg.IntegrityError)),
    SAProgrammingError("SELEC 1", {}, _orig(psycopg.ProgrammingError)),
    DBAPIError("SELECT 1", {}, _orig(psycopg.DatabaseError), connection_invalidated=False),
]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
def test_each_kind_of_outage_answers_503(exc: Exception, caplog: pytest.LogCaptureFixture) -> None:
    assert is_database_outage(exc)
    for client in _client(_settings(), _failing(exc)):
        _assert_unavailable(
            client.post("/create_disbursement_envelope", envelope_request("env-1")),
            "create_disbursement_envelope",
        )
        _assert_unavailable(client.get("/envelopes"))
    assert PERSONAL not in caplog.text


@pytest.mark.parametrize("exc", NOT_OUTAGES, ids=lambda e: type(e).__name__)
def test_other_database_errors_are_not_turned_into_503(exc: Exception) -> None:
    assert not is_database_outage(exc)
    for client in _client(_settings(), _failing(exc)):
        response = client.post("/create_disbursement_envelope", envelope_request("env-1"))
        assert response.status_code == 500
        assert "retry-after" not in response.headers
        assert client.get("/envelopes").status_code == 500
