"""Callbacks over the API and the CLI, on PostgreSQL and on the embedded SQLite: the callback
URL (administrators only, checked), the delivery status, the parked list, an operator's
re-send, and the public key set served without a token."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from bridge_support import disbursement_items, disbursements_request, envelope_request
from g2p_bridge import cli
from g2p_bridge.core import callbacks
from g2p_bridge.db import transaction
from g2p_bridge.models import AuditEvent, CallbackStream
from g2p_bridge.models.enums import WorkState
from g2p_bridge.settings import Settings


def _envelope(client, count: int = 3) -> str:  # type: ignore[no-untyped-def]
    body = envelope_request("env-1", count=count, total=f"{10 * count}.00")
    assert client.post("/create_disbursement_envelope", body).status_code == 200
    items = disbursement_items("env-1", count, amount="10.00")
    response = client.post("/create_disbursements", disbursements_request(items))
    assert response.status_code == 200, response.text
    return "env-1"


def test_an_administrator_sets_checks_and_removes_the_callback_url(client, program, token) -> None:  # type: ignore[no-untyped-def]
    url = "/programs/PROG1/callback"
    ok = client.http.put(url, json={"callback_url": "https://pbms.example.org/cb?token=t0p"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["callback_url"] == "https://pbms.example.org/cb?token=t0p"
    plain = client.http.put(url, json={"callback_url": "http://pbms.example.org/cb"})
    assert plain.status_code == 422
    assert plain.json()["header"]["meta"]["error_code"] == "INVALID_CALLBACK_URL"
    assert client.http.put(url, json={"callback_url": "x", "extra": 1}).status_code == 422
    unknown = client.http.put("/programs/NOPE/callback", json={"callback_url": None})
    assert unknown.status_code == 404
    hostile = client.http.put("/programs/a%27b/callback", json={"callback_url": None})
    assert hostile.status_code == 422
    pbms = client.http.put(
        url,
        json={"callback_url": None},
        headers={"authorization": f"Bearer {token('pbms-1', 'pbms', programs=['PROG1'])}"},
    )
    assert pbms.status_code == 403
    removed = client.http.put(url, json={"callback_url": None})
    assert removed.status_code == 200 and removed.json()["callback_url"] is None
    with transaction(client.http.app.state.session_factory) as session:
        details = list(
            session.scalars(
                select(AuditEvent.detail).where(AuditEvent.action == "program.callback_url")
            )
        )
    # The audit trail shows where, never the query a PBMS may keep a token in.
    assert details and not any("t0p" in (d or "") for d in details)


def test_status_parked_and_resend_over_the_api(client, program, token) -> None:  # type: ignore[no-untyped-def]
    settings = client.http.app.state.settings
    factory = client.http.app.state.session_factory
    assert client.http.get("/callbacks/env-1").status_code == 404
    client.http.put("/programs/PROG1/callback", json={"callback_url": "https://127.0.0.1:9/cb"})
    envelope_id = _envelope(client)
    with transaction(factory) as session:
        from g2p_bridge.models import Disbursement

        assert callbacks.record_results(
            session, settings, envelope_id, callbacks.SHIPPED, Disbursement.id.is_not(None)
        )
        stream = session.get(CallbackStream, envelope_id)
        assert stream is not None
        stream.state, stream.last_error = WorkState.FAILED, "HTTP 500"

    status = client.http.get(f"/callbacks/{envelope_id}")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["state"] == "FAILED" and body["last_sequence"] == 1
    assert body["events"][0]["event_type"] == "disbursements.shipped"
    assert body["events"][0]["result_count"] == 3 and body["events"][0]["delivered_at"] is None
    parked = client.http.get("/callbacks/parked").json()
    assert [p["disbursement_envelope_id"] for p in parked] == [envelope_id]
    other = token("pbms-2", "pbms", programs=["OTHER"])
    refused = client.http.get(
        f"/callbacks/{envelope_id}", headers={"authorization": f"Bearer {other}"}
    )
    assert refused.status_code == 403
    assert (
        client.http.post(f"/callbacks/{envelope_id}/resend", json={"from_sequence": 9}).status_code
        == 422
    )
    resent = client.http.post(f"/callbacks/{envelope_id}/resend", json={})
    assert resent.status_code == 200 and resent.json()["state"] == "PENDING"
    assert client.http.get("/callbacks/parked").json() == []


def test_the_key_set_is_public_and_cli_operates_callbacks(
    tmp_path: Path, sqlite_template: Path
) -> None:
    from fastapi.testclient import TestClient

    from g2p_bridge.api.app import create_app

    database = tmp_path / "bridge.db"
    shutil.copy(sqlite_template, database)
    settings = Settings(database_url=f"sqlite:///{database}")
    app = create_app(settings, wake=lambda *_: None)
    with TestClient(app) as http:
        keys = http.get("/.well-known/jwks.json")
    assert keys.status_code == 200
    (jwk,) = keys.json()["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk
    key_file = tmp_path / "g2p_bridge.callback-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    env = {"G2P_BRIDGE_DATABASE_URL": settings.database_url}
    runner = CliRunner(env=env)
    cli.get_settings.cache_clear()
    try:
        added = runner.invoke(
            cli.main,
            [
                "programs",
                "add",
                "--mnemonic",
                "PROG1",
                "--bank-code",
                "EXAMPLE",
                "--account",
                "1",
                "--currency",
                "USD",
            ],
        )
        assert added.exit_code == 0, added.output
        result = runner.invoke(
            cli.main, ["callbacks", "set-url", "PROG1", "https://pbms.example.org/cb?k=secret"]
        )
        assert result.exit_code == 0, result.output
        assert "secret" not in result.output and "https://pbms.example.org/cb?..." in result.output
        refused = runner.invoke(cli.main, ["callbacks", "set-url", "PROG1", "ftp://x/y"])
        assert refused.exit_code != 0 and "INVALID_CALLBACK_URL" in refused.output
        missing = runner.invoke(cli.main, ["callbacks", "resend", "env-x"])
        assert missing.exit_code != 0 and "CALLBACK_STREAM_NOT_FOUND" in missing.output
        parked = runner.invoke(cli.main, ["callbacks", "parked"])
        assert parked.exit_code == 0 and "no parked callbacks" in parked.output
        new_key = runner.invoke(cli.main, ["callbacks", "new-key"])
        assert new_key.output.startswith("-----BEGIN PRIVATE KEY-----")
    finally:
        cli.get_settings.cache_clear()
