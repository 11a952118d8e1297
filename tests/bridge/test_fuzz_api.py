"""A short schemathesis run over the app's own OpenAPI document with an admin token: whatever
the body, the API answers without a 5xx. ``G2P_FUZZ_EXAMPLES`` lengthens it (``make fuzz``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from conftest import TEST_SECRET
from g2p_bridge.api.app import create_app
from g2p_bridge.auth import issue_token
from g2p_bridge.db import make_engine, make_session_factory
from g2p_bridge.settings import Settings

EXAMPLES = int(os.environ.get("G2P_FUZZ_EXAMPLES", "5"))
_DB = Path(os.environ.get("TMPDIR", "/tmp")) / f"g2p-fuzz-{os.getpid()}.db"


def _app():  # type: ignore[no-untyped-def]
    from g2p_bridge.migrations import upgrade

    if not _DB.exists():
        upgrade(f"sqlite:///{_DB}")
    bridge_settings = Settings(database_url=f"sqlite:///{_DB}", auth_secret_key=TEST_SECRET)
    factory = make_session_factory(make_engine(bridge_settings.database_url))
    return create_app(bridge_settings, factory, wake=lambda *_: None), bridge_settings


APP, SETTINGS = _app()
TOKEN = issue_token(SETTINGS, "fuzzer", "admin")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
if "G2P_FUZZ_EXAMPLES" not in os.environ:
    # The short run: random examples only; the coverage phase's hundreds of edge cases per
    # operation belong to the long run.
    schema.config.phases.coverage.enabled = False
    schema.config.phases.stateful.enabled = False


@pytest.fixture(scope="module", autouse=True)
def _cleanup():  # type: ignore[no-untyped-def]
    yield
    for suffix in ("", "-wal", "-shm"):
        Path(f"{_DB}{suffix}").unlink(missing_ok=True)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case) -> None:  # type: ignore[no-untyped-def]
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
