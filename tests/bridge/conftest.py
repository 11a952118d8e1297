from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bridge_support import dumps, program_request
from g2p_bridge.api.app import create_app
from g2p_bridge.settings import Settings


class Client:
    """A test client that sends bodies with exact decimal numbers, as a PBMS would."""

    def __init__(self, client: TestClient, woken: list[tuple[str, ...]]) -> None:
        self.http = client
        self.woken = woken

    def post(self, path: str, body: object, **kwargs: object):  # type: ignore[no-untyped-def]
        return self.http.post(
            path, content=dumps(body), headers={"content-type": "application/json"}, **kwargs
        )

    def get(self, path: str, **kwargs: object):  # type: ignore[no-untyped-def]
        return self.http.get(path, **kwargs)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, max_disbursements_per_request=100)


@pytest.fixture
def client(settings: Settings, session_factory) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    woken: list[tuple[str, ...]] = []
    app = create_app(settings, session_factory, wake=lambda *a: woken.append(a))
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Client(http, woken)


@pytest.fixture
def program(client: Client) -> dict[str, object]:
    response = client.post("/create_benefit_program_configuration", program_request())
    assert response.status_code == 200, response.text
    return response.json()["message"]
