"""/metrics on a port of its own (G2P_BRIDGE_METRICS_PORT): the Ingress routes the API's port,
so metrics served anywhere else cannot be published by it."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from conftest import TEST_SECRET
from g2p_bridge.api.app import create_app
from g2p_bridge.settings import Settings


def test_metrics_leave_the_api_port_for_their_own(session_factory, database_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database_url, auth_secret_key=TEST_SECRET, metrics_port=0)
    app = create_app(settings, session_factory, wake=lambda *_: None)
    with TestClient(app, raise_server_exceptions=False) as api:
        assert api.get("/health/live").status_code == 200
        # Not on the API's port, whatever the path looks like.
        for path in ("/metrics", "/metrics/", "/Metrics"):
            response = api.get(path)
            assert response.status_code == 404, (path, response.text)
            assert "g2p_bridge_http_requests_total" not in response.text
        port = app.state.metrics_server.port
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'g2p_bridge_http_requests_total{method="GET",route="/health/live"' in metrics.text
        assert "# HELP g2p_bridge_disbursements " in metrics.text  # the database gauge too
        # The metrics port serves nothing else: not the API, not its documents.
        for path in ("/", "/docs", "/openapi.json", "/health/ready", "/envelopes"):
            assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 404
    # Stopped with the app.
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("the metrics listener outlived the app")


def test_without_a_metrics_port_metrics_stay_on_the_api(session_factory, database_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database_url, auth_secret_key=TEST_SECRET)
    app = create_app(settings, session_factory, wake=lambda *_: None)
    with TestClient(app) as api:
        assert api.get("/metrics").status_code == 200
        assert not hasattr(app.state, "metrics_server")
