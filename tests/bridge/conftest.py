from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bridge_support import dumps, program_request
from g2p_bridge.api.app import create_app
from g2p_bridge.auth import issue_token
from g2p_bridge.settings import Settings

# A test key: the API accepts tokens signed with it (HS256).
TEST_SECRET = "test-secret-key-for-the-bridge-suite-0123456789"


class Client:
    """A test client that sends bodies with exact decimal numbers, as a PBMS would."""

    def __init__(self, client: TestClient, woken: list[tuple[str, ...]], token: str) -> None:
        self.http = client
        self.woken = woken
        # By default an administrator whose client id is the sender the request builders use;
        # a request's own Authorization header overrides it.
        client.headers["authorization"] = f"Bearer {token}"

    def post(self, path: str, body: object, **kwargs: object):  # type: ignore[no-untyped-def]
        headers = {"content-type": "application/json", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return self.http.post(path, content=dumps(body), headers=headers, **kwargs)

    def get(self, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
        return self.http.get(path, **kwargs)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, max_disbursements_per_request=100, auth_secret_key=TEST_SECRET
    )


@pytest.fixture
def token(settings: Settings):  # type: ignore[no-untyped-def]
    """``token(client_id, role, programs=..., bank_codes=..., ttl_seconds=...)``"""

    def make(client_id: str = "pbms-1", role: str = "admin", **claims: object) -> str:
        return issue_token(settings, client_id, role, **claims)  # type: ignore[arg-type]

    return make


@pytest.fixture
def client(settings: Settings, session_factory) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    woken: list[tuple[str, ...]] = []
    app = create_app(settings, session_factory, wake=lambda *a: woken.append(a))
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Client(http, woken, issue_token(settings, "pbms-1", "admin"))


@pytest.fixture
def program(client: Client) -> dict[str, object]:
    response = client.post("/create_benefit_program_configuration", program_request())
    assert response.status_code == 200, response.text
    return response.json()["message"]
