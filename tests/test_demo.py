"""The README's first command: the whole flow on the embedded default (SQLite, in-process
workers, the Example Bank over loopback HTTP), and its --json summary."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal

import pytest

from example_bank.processing import FAILURE_REASONS
from g2p_bridge.demo import run_demo


def test_demo_settles_every_disbursement(tmp_path) -> None:
    summary = run_demo(250, Decimal("0.05"), tmp_path / "demo", quiet=True)
    assert summary["complete"], summary
    states = summary["disbursements_by_state"]
    assert sum(states.values()) == 250
    assert states.get("UNRESOLVED") == 2  # one beneficiary in a hundred has no known address
    assert 0 < states.get("REVERSED", 0) < 25  # about 5 % of payments to other banks
    status = summary["envelope_status"]
    assert status["number_of_disbursements_shipped"] == 248
    assert status["number_of_disbursements_reconciled"] == 248
    assert status["funds_blocked_with_bank"] == "FUNDS_BLOCK_SUCCESS"
    assert all(
        s["state"] == "PROCESSED" and not s["balance_problems"] and not s["sequence_gaps"]
        for s in summary["statements"]
    )
    account = summary["program_account"]
    assert Decimal(account["available_balance"]) == (
        Decimal(account["book_balance"]) - Decimal(account["blocked_amount"])
    )
    # The Example Bank writes OpenG2P's six-line :86: by default: each return's reason is read
    # from its sixth line, not the whole narrative.
    with sqlite3.connect(tmp_path / "demo" / "bridge.db") as db:
        reasons = [r for (r,) in db.execute("SELECT reversal_reason FROM disbursement_recons")]
    returned = [r for r in reasons if r is not None]
    assert len(returned) == states["REVERSED"]
    assert set(returned) <= set(FAILURE_REASONS), set(returned)
    # What the block did not spend went back: nothing stays held at the bank.
    assert account["blocked_amount"] == "0.00"
    assert status["funds_release_state"] == "DONE"
    assert status["funds_held_amount"] == "0.00"
    assert Decimal(status["funds_released_amount"]) > 0  # the two unresolved ones at least
    assert (
        Decimal(status["funds_blocked_amount"])
        == Decimal(summary["total_amount"])
        == sum(Decimal(status[f"funds_{k}_amount"]) for k in ("spent", "returned", "released"))
    )
    # The demo's PBMS got a signed result for every disbursement, in batched callbacks.
    received = summary["callbacks"]
    assert received["disbursements"] == 250 and received["bad_signatures"] == 0
    assert 0 < received["callbacks"] < received["results"]


def test_demo_over_sftp_settles_every_disbursement_through_files(tmp_path) -> None:
    summary = run_demo(150, Decimal("0.05"), tmp_path / "demo", quiet=True, channel="iso20022-sftp")
    assert summary["complete"], summary
    assert summary["channel"] == "iso20022-sftp"
    states = summary["disbursements_by_state"]
    assert sum(states.values()) == 150
    assert states.get("UNRESOLVED") == 1  # one beneficiary in a hundred has no known address
    assert states.get("RECONCILED", 0) + states.get("REVERSED", 0) == 149
    assert states.get("REVERSED", 0) > 0
    assert all(
        s["state"] == "PROCESSED" and not s["balance_problems"] and not s["sequence_gaps"]
        for s in summary["statements"]
    )
    # Everything went through files: the payment file was taken in, its answer and the camt.053
    # statements were fetched and archived by the bridge.
    root = tmp_path / "demo" / "bank-sftp"
    archived = sorted(p.name for p in (root / "archive").iterdir())
    assert any(n.endswith(".pain002.xml") for n in archived)
    assert any(n.endswith(".camt053.xml") for n in archived)
    assert list((root / "inbox").iterdir()) == [] and list((root / "outbox").iterdir()) == []
    account = summary["program_account"]
    assert Decimal(account["blocked_amount"]) == 0


@pytest.mark.slow
def test_demo_command_prints_json(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "g2p_bridge.cli",
            "demo",
            "--disbursements",
            "120",
            "--json",
            "--workdir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["complete"] and summary["disbursements"] == 120


def test_demo_serve_keeps_the_console_up_with_a_login(tmp_path) -> None:
    """``demo --serve``: once settled, the services still answer and the printed login works."""
    seen: dict[str, object] = {}

    def keep_serving(url: str, factory) -> None:  # type: ignore[no-untyped-def]
        import httpx

        from g2p_bridge.demo import console_login

        username, password = console_login(factory)
        with httpx.Client(base_url=url, follow_redirects=True) as http:
            page = http.get("/console/login").text
            nonce = page.split('name="nonce" value="')[1].split('"')[0]
            signed_in = http.post(
                "/console/login",
                data={"username": username, "password": password, "nonce": nonce},
            )
            seen["dashboard"] = signed_in.text
            seen["status"] = signed_in.status_code

    summary = run_demo(20, Decimal("0"), tmp_path / "demo", quiet=True, keep_serving=keep_serving)
    assert summary["complete"], summary
    assert seen["status"] == 200
    assert 'data-testid="stage-RECEIVING">0<' in str(seen["dashboard"])
    assert "demo-admin (admin)" in str(seen["dashboard"])
