"""Schemathesis over the app's own OpenAPI document, on the embedded SQLite and on PostgreSQL:
whatever the request, the API answers with JSON and never a 5xx.

The token is an administrator's for client ``fuzzer``, and every generated G2P Connect body's
``header.sender_id`` is rewritten to that client (a ``map_body`` hook): with random senders every
such route answered 403 ``SENDER_MISMATCH`` and its handler never ran. Each G2P Connect route
must show requests that got past authorization, so that cannot come back unnoticed.

PostgreSQL matters: SQLite does not enforce column lengths or integer ranges and takes NUL
characters, so the bodies that break the bridge there pass on SQLite. The short run (a few
examples per operation, derandomized) is part of ``make test``; ``G2P_FUZZ_EXAMPLES=N`` lengthens
it, randomizes it and adds schemathesis's negative mode (``make fuzz``). NUL characters are
generated too: the edge refuses them (and every control character) before PostgreSQL sees them;
``G2P_FUZZ_ALLOW_X00=0`` leaves them out, to look at what else a body holds."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.schemas import BaseSchema

from bridge_support import clear_tables
from conftest import TEST_SECRET
from g2p_bridge.api.app import create_app
from g2p_bridge.auth import issue_token
from g2p_bridge.core.errors import ErrorCode
from g2p_bridge.db import make_engine, make_session_factory
from g2p_bridge.settings import Settings

LONG_RUN = "G2P_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("G2P_FUZZ_EXAMPLES", "10"))
CLIENT = "fuzzer"


@dataclass(frozen=True)
class Route:
    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _app(database_url: str) -> FastAPI:
    bridge_settings = Settings(database_url=database_url, auth_secret_key=TEST_SECRET)
    factory = make_session_factory(make_engine(bridge_settings.database_url))
    return create_app(bridge_settings, factory, wake=lambda *_: None)


def _schema_routes() -> list[Route]:
    """Every operation of the OpenAPI document, read from the app itself (so a new route is
    fuzzed without anyone listing it)."""
    document = _app("sqlite://").openapi()
    return [
        Route(method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


ROUTES = _schema_routes()


def _is_g2p_connect(schema: BaseSchema, route: Route) -> bool:
    """An operation whose JSON body has a G2P Connect ``header`` with a ``sender_id``."""
    operation = schema[route.path][route.method].definition.raw
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is None:
        return False
    ref = body["schema"].get("$ref", "")
    components = schema.raw_schema["components"]["schemas"]
    properties = components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
    return "header" in properties


def _sender_matches_token(_context: Any, body: Any) -> Any:
    """The generated body with its header's sender set to the token's client; anything that is
    not a header object is left as generated (it is refused before authorization anyway)."""
    if isinstance(body, dict) and isinstance(body.get("header"), dict):
        body["header"]["sender_id"] = CLIENT
    return body


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, BaseSchema]]:
    """(name, schema of an app on that database), built once per module for each database."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        clear_tables(engine)
    else:
        from g2p_bridge.migrations import upgrade

        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'bridge.db'}"
        upgrade(url)
        engine = None
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app(url))
    schema.hook("map_body")(_sender_matches_token)
    if os.environ.get("G2P_FUZZ_ALLOW_X00") == "0":
        # NUL characters are refused first and hide what else a body holds: look past them.
        schema.config.generation.update(allow_x00=False)
    yield request.param, schema
    if engine is not None:
        clear_tables(engine)
        engine.dispose()


def _strategy(schema: BaseSchema, route: Route) -> st.SearchStrategy[Any]:
    operation = schema[route.path][route.method]
    positive = operation.as_strategy(GenerationMode.POSITIVE)
    if not LONG_RUN:
        return positive
    # Bodies that break the schema find the validation paths; valid ones reach the handlers.
    return st.one_of(positive, operation.as_strategy(GenerationMode.NEGATIVE))


# Refusals answered before, or by, the sender and role check: validation of the body, the edge's
# limits, authentication and authorization. Any other answer (a 200, a domain rjct such as
# INVALID_PROGRAM_MNEMONIC or DISBURSEMENT_ENVELOPE_NOT_FOUND) came from the route's handler.
BEFORE_THE_HANDLER = {
    ErrorCode.INVALID_REQUEST,
    ErrorCode.REQUEST_TOO_LARGE,
    ErrorCode.TOO_MANY_ITEMS,
    "STRING_TOO_LONG",
    ErrorCode.AUTHENTICATION_REQUIRED,
    ErrorCode.INVALID_TOKEN,
    ErrorCode.ACCESS_DENIED,
    ErrorCode.SENDER_MISMATCH,
}


def _past_authorization(response: Any) -> bool:
    if response.status_code in (401, 403):
        return False
    try:
        header = json.loads(response.content).get("header") or {}
    except (ValueError, AttributeError):
        return False
    if header.get("status") != "rjct":
        return response.status_code == 200
    return header.get("status_reason_message") not in BEFORE_THE_HANDLER


def _request_of(case: Any) -> dict[str, Any]:
    return {
        key: value
        for key, value in (
            ("path_parameters", case.path_parameters),
            ("query", case.query),
            ("body", case.body),
        )
        if value
    }


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_no_server_errors_and_always_json(backend: tuple[str, BaseSchema], route: Route) -> None:
    name, schema = backend
    token = issue_token(Settings(auth_secret_key=TEST_SECRET), CLIENT, "admin")
    statuses: Counter[int | str] = Counter()

    @given(case=_strategy(schema, route))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        # The short run in `make test` is the same every time (a share of requests that must
        # get past authorization cannot make it flaky); the long run explores.
        derandomize=not LONG_RUN,
    )
    def exercise(case: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        response = case.call()
        statuses[response.status_code] += 1
        if _past_authorization(response):
            statuses["past authorization"] += 1
        where = (name, str(route), _request_of(case))
        assert response.status_code < 500, (*where, response.status_code, response.text[:500])
        content_type = ",".join(response.headers.get("content-type", []))
        assert content_type.startswith("application/json"), (*where, content_type)
        json.loads(response.content)

    exercise()
    if _is_g2p_connect(schema, route):
        # None would mean the token is wrong (401), the sender rewrite stopped working (403), or
        # generation no longer makes bodies that the validation lets through.
        assert statuses["past authorization"] > 0, (name, str(route), dict(statuses))


def test_g2p_connect_routes_are_recognised() -> None:
    """The authorization share above is only checked where it applies; make sure that is the
    G2P Connect routes, found from the document, not none of them."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app("sqlite://"))
    found = {str(route) for route in ROUTES if _is_g2p_connect(schema, route)}
    assert {
        "POST /create_disbursement_envelope",
        "POST /cancel_disbursement_envelope",
        "POST /get_disbursement_envelope_status",
        "POST /create_disbursements",
        "POST /cancel_disbursements",
        "POST /get_disbursement_status",
    } <= found
    assert "POST /upload_mt940" not in found and "GET /envelopes" not in found


def test_the_sender_rewrite_applies_to_generated_bodies() -> None:
    body = {"header": {"sender_id": "someone-else", "message_id": "m"}, "message": {}}
    assert _sender_matches_token(None, body)["header"]["sender_id"] == CLIENT
    assert _sender_matches_token(None, [1, 2]) == [1, 2]
