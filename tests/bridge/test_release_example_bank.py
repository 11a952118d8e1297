"""The release against the real Example Bank, served by uvicorn on 127.0.0.1, through the real
connector: the bank releases and then drops the connection unanswered (its test-only fault
injection), the bridge asks again with the same key, and the bank's block is released once, to
zero. The bridge's database on PostgreSQL and on SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import func, select
from test_pipeline import ACCOUNT, _plan, setup_envelope

from bridge_support import fake_context
from example_bank.api import create_app
from example_bank.db import make_engine, make_session_factory, migrate
from example_bank.models import FundRelease
from example_bank.settings import BankSettings
from g2p_bridge.api import views
from g2p_bridge.connectors.banks.example_bank import ExampleBankConnector
from g2p_bridge.core import envelopes
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import FundsRelease
from g2p_bridge.settings import BankConnectorSettings


@contextmanager
def serve(settings: BankSettings) -> Iterator[str]:
    config = uvicorn.Config(
        create_app(settings, start_processor=False), host="127.0.0.1", port=0, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_a_dropped_answer_after_the_bank_released_releases_once(
    session_factory, tmp_path: Path
) -> None:
    bank_url = f"sqlite:///{tmp_path / 'bank.db'}"
    migrate(bank_url)
    settings = BankSettings(
        database_url=bank_url,
        broker_url=None,
        fault_mode="close-after-processing",
        fault_paths=["/release_funds"],
        fault_calls=1,
    )
    with serve(settings) as url, httpx.Client(base_url=url) as http:
        opened = http.post(
            "/accounts",
            json={
                "account_number": ACCOUNT,
                "holder_name": "Ministry",
                "currency": "USD",
                "initial_deposit": "1000.00",
            },
        )
        assert opened.status_code == 201, opened.text
        connector = ExampleBankConnector(BankConnectorSettings(base_url=url, timeout_seconds=10))
        context = fake_context(session_factory)
        context.use_bank("EXAMPLE", connector)
        try:
            setup_envelope(context, 4)  # 4 x 10.00
            _plan(context)
            assert http.get(f"/accounts/{ACCOUNT}").json()["blocked_amount"] == "40.00"
            with transaction(session_factory) as session:
                envelopes.cancel_envelope(session, "env-1")
            assert EmbeddedRunner(context).run_until_idle(timeout=60)
        finally:
            connector.close()
        account = http.get(f"/accounts/{ACCOUNT}").json()
        faults = http.get("/faults").json()
    assert faults["injected"] == {"/release_funds": 1}
    assert faults["calls"]["/release_funds"] == 2  # asked again after the dropped answer
    assert (account["blocked_amount"], account["available_balance"]) == ("0.00", "1000.00")
    engine = make_engine(bank_url)
    try:
        with make_session_factory(engine)() as s:
            releases = list(s.scalars(select(FundRelease)))
            assert s.scalar(select(func.count()).select_from(FundRelease)) == 1
    finally:
        engine.dispose()
    assert [(r.idempotency_key, r.amount) for r in releases] == [
        ("release-env-1", Decimal("40.00"))
    ]
    with transaction(session_factory) as session:
        row = session.get(FundsRelease, "env-1")
        assert row is not None
        assert (row.state, row.attempts, row.release_reference) == (
            "DONE",
            2,
            releases[0].release_reference,
        )
        status = views.envelope_status(session, "env-1")
    assert (status.funds_released_amount, status.funds_held_amount) == (
        Decimal("40.00"),
        Decimal("0.00"),
    )
