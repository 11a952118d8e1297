from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from g2p_bridge.api.app import create_app
from g2p_bridge.settings import Settings

TEST_SECRET = "test-secret-key-for-the-console-suite-0123456789"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, auth_secret_key=TEST_SECRET, max_attempts=2)


@pytest.fixture
def app_client(settings: Settings, session_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    app = create_app(settings, session_factory, wake=lambda *a: None)
    # https: outside the embedded default the session cookie is Secure.
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=True) as http:
        yield http


@pytest.fixture
def browser_factory(app_client: TestClient):  # type: ignore[no-untyped-def]
    """Another signed-out client on the same app (a second person's browser)."""

    def make() -> TestClient:
        return TestClient(app_client.app, base_url="https://testserver")

    return make
