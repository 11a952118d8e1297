"""What a worker process builds before its first task (core/context.py)."""

from __future__ import annotations

from typing import Any

from g2p_bridge.connectors.banks.example_bank import ExampleBankConnector
from g2p_bridge.core.context import Context
from g2p_bridge.settings import BankConnectorSettings, Settings


def test_warm_up_builds_each_configured_bank_and_the_callback_sender(
    database_url: str, session_factory: Any
) -> None:
    settings = Settings(
        database_url=database_url,
        bank_connectors={
            "EXAMPLE": BankConnectorSettings(base_url="http://127.0.0.1:9"),
        },
    )
    context = Context(settings, session_factory)
    context.warm_up()
    try:
        assert set(context._banks) == {"EXAMPLE"}
        assert isinstance(context.bank("EXAMPLE").wrapped, ExampleBankConnector)  # type: ignore[attr-defined]
        assert context._callbacks is not None
    finally:
        context.close()
