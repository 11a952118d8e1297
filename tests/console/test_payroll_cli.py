"""``g2p-bridge envelopes submit``, run as the installed command against a bridge served over
HTTP with its pipeline running (the embedded runner, a fake sponsor bank): a faulty file is
refused with each line printed; a clean one is uploaded with a progress line, waits for a
second person's approval, and is followed stage by stage to settled once the bank's statement
comes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import make_program

from bridge_support import FakeBank, mt940
from g2p_bridge.api.app import create_app
from g2p_bridge.auth import issue_token
from g2p_bridge.core import approvals
from g2p_bridge.core.context import Context
from g2p_bridge.db import make_engine, make_session_factory, transaction
from g2p_bridge.demo import _free_socket, _serve
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import EnvelopeStatus
from g2p_bridge.settings import Settings

SECRET = "test-secret-key-for-the-payroll-cli-0123456789abcdef"
COMMAND = str(Path(sys.executable).with_name("g2p-bridge"))
CSV = (
    "beneficiary_id,beneficiary_name,amount,narrative,financial_address,disbursement_id\n"
    "NID-1,Amina,120.50,December transfer,account:1000001@NORTHBANK.BR01,cli-d1\n"
    "NID-2,Juma,80.25,December transfer,account:1000002@NORTHBANK.BR01,cli-d2\n"
)


@dataclass
class Served:
    url: str
    settings: Settings
    factory: Any


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Served]:
    path = tmp_path_factory.mktemp("cli") / "bridge.db"
    shutil.copy(sqlite_template, path)
    settings = Settings(
        database_url=f"sqlite:///{path}",
        auth_secret_key=SECRET,
        retry_backoff_seconds=0,
        beat_interval_seconds=0.1,
    )
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    context = Context(settings, factory)
    context.use_bank("EXAMPLE", FakeBank())
    runner = EmbeddedRunner(context)
    app = create_app(settings, factory, wake=runner.wake)
    make_program(factory, "CLIPAY", "5000000001")
    runner.start()
    try:
        with _serve(app, _free_socket()) as url:
            yield Served(url, settings, factory)
    finally:
        runner.stop()
        engine.dispose()


def _submit(served: Served, file: Path, *options: str) -> subprocess.Popen[str]:
    token = issue_token(served.settings, "clerk-cli", "pbms", programs=["CLIPAY"])
    env = {**os.environ, "G2P_BRIDGE_API_URL": served.url, "G2P_BRIDGE_API_TOKEN": token}
    args = [COMMAND, "envelopes", "submit", str(file), "--program", "CLIPAY", "--cycle", "c1"]
    return subprocess.Popen(
        [*args, *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_a_faulty_file_is_refused_with_each_line(served: Served, tmp_path: Path) -> None:
    faulty = tmp_path / "faulty.csv"
    faulty.write_text(CSV.replace("80.25", "80.255").replace("Amina", ""))
    done = _submit(served, faulty, "--no-wait")
    out, err = done.communicate(timeout=60)
    assert done.returncode == 1, err
    assert "refused (HTTP 422)" in err
    assert "line 2, beneficiary_name: is required" in err
    assert "line 3, amount: must be more than 0" in err
    assert out == ""


def test_a_clean_file_is_followed_from_upload_to_settled(served: Served, tmp_path: Path) -> None:
    clean = tmp_path / "december.csv"
    clean.write_text(CSV)
    # First without waiting long: it stops at the approval, which is nobody's at the terminal.
    first = _submit(served, clean, "--timeout", "0")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 3, err
    assert "uploading december.csv [########################]" in err
    assert "accepted; envelope" in err and "200.75 USD" in err
    assert "AWAITING_APPROVAL" in err
    envelope_id = out.split()[0]
    assert out.strip() == f"{envelope_id} AWAITING_APPROVAL"

    # The same file again: recognised, and followed while a second person approves and the
    # bank pays and books it.
    follow = _submit(served, clean, "--timeout", "120", "--json")
    with transaction(served.factory) as session:
        approvals.decide(session, envelope_id, "checker-1", "approver", approve=True)

    def shipped() -> bool:
        with transaction(served.factory) as session:
            status = session.get(EnvelopeStatus, envelope_id)
            return status is not None and status.shipped_count == 2

    wait_until(shipped)
    statement = mt940(
        "5000000001",
        [
            ("D", "cli-d1", Decimal("120.50"), "December transfer"),
            ("D", "cli-d2", Decimal("80.25"), "December transfer"),
        ],
    )
    token = issue_token(served.settings, "bank-1", "bank", bank_codes=["EXAMPLE"])
    uploaded = httpx.post(
        served.url + "/upload_mt940",
        files={"statement_file": ("day.sta", statement.encode(), "text/plain")},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert uploaded.status_code == 200, uploaded.text
    out, err = follow.communicate(timeout=150)
    assert follow.returncode == 0, err
    assert "this file was submitted before" in err
    assert "SETTLED" in err
    assert '"stage": "SETTLED"' in out
    assert f'"disbursement_envelope_id": "{envelope_id}"' in out
