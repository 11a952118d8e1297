"""Configuration from the environment, as deployments set it."""

from __future__ import annotations

import pytest

from g2p_bridge.settings import Settings


def test_bank_connector_settings_come_from_nested_env(monkeypatch) -> None:
    monkeypatch.setenv("G2P_BRIDGE_BANK_CONNECTORS__EXAMPLE__BASE_URL", "http://bank:9000")
    monkeypatch.setenv("G2P_BRIDGE_BANK_CONNECTORS__EXAMPLE__TIMEOUT_SECONDS", "5")
    settings = Settings()
    assert settings.bank_connectors["EXAMPLE"].base_url == "http://bank:9000"
    assert settings.bank_connectors["EXAMPLE"].timeout_seconds == 5


def test_bank_connector_from_json_and_nested_env_keeps_both(monkeypatch) -> None:
    """Nested variables arrive lower-cased, the JSON form keeps its case: one bank, two keys.
    The fields each one set are combined, none silently dropped."""
    monkeypatch.setenv(
        "G2P_BRIDGE_BANK_CONNECTORS",
        '{"EXAMPLE": {"base_url": "http://json:1", "timeout_seconds": 2}, "OTHER": {}}',
    )
    monkeypatch.setenv("G2P_BRIDGE_BANK_CONNECTORS__EXAMPLE__BASE_URL", "http://nested:2")
    connectors = Settings().bank_connectors
    assert set(connectors) == {"EXAMPLE", "OTHER"}
    assert connectors["EXAMPLE"].base_url == "http://nested:2"
    assert connectors["EXAMPLE"].timeout_seconds == 2


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="dispatch_batch_size"):
        Settings(dispatch_batch_size=0)
    with pytest.raises(ValueError, match="lease_seconds"):
        Settings(lease_seconds=0)
    # A heartbeat renews the lease up to the step time limit: a shorter limit makes no sense.
    with pytest.raises(ValueError, match="step_time_limit_seconds"):
        Settings(lease_seconds=60, step_time_limit_seconds=30)


def test_api_workers_need_a_broker_and_each_builds_its_app_from_the_environment(
    monkeypatch, tmp_path
) -> None:
    from click.testing import CliRunner

    from g2p_bridge.cli import api_app_from_environment, main
    from g2p_bridge.settings import get_settings

    monkeypatch.chdir(tmp_path)
    for name in ("G2P_BRIDGE_DATABASE_URL", "G2P_BRIDGE_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    refused = CliRunner().invoke(main, ["api", "--workers", "2"])
    assert refused.exit_code != 0 and "--workers needs G2P_BRIDGE_BROKER_URL" in refused.output

    monkeypatch.setenv("G2P_BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'bridge.db'}")
    monkeypatch.setenv("G2P_BRIDGE_BROKER_URL", "memory://")
    monkeypatch.setenv("G2P_BRIDGE_AUTH_SECRET_KEY", "a-secret-for-this-test-0123456789abcdef")
    get_settings.cache_clear()
    monkeypatch.setattr("g2p_bridge.cli._setup_logging", lambda: None)  # the suite's logging stays
    try:
        app = api_app_from_environment()
        assert app.state.settings.broker_url == "memory://"
    finally:
        get_settings.cache_clear()
