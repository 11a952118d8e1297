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


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="dispatch_batch_size"):
        Settings(dispatch_batch_size=0)
