"""Statements in either :86: layout the Example Bank writes reconcile alike (issue 14, section 5):
OpenG2P's six lines (narrative, program, cycle, beneficiary id, "", reason), read by line
number, and the /EREF/.../RTRN/ subfields. A return's reason is the reason, never the block."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from test_pipeline import ACCOUNT, setup_envelope, statement_row, upload

from bridge_support import FakeBank, counters_match_rows, fake_context, states
from example_bank.mt940_writer import (
    StatementEntry,
    StatementPage,
    render_statement,
    six_line_details,
    structured_details,
)
from g2p_bridge.connectors.banks.example_bank import ExampleBankConnector
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import DisbursementRecon
from g2p_bridge.models.base import utcnow
from g2p_bridge.settings import BankConnectorSettings

TEN = Decimal("10.00")
REASONS = ("ACCOUNT_CLOSED", "BENEFICIARY_DECEASED")


def _details(layout: str, disbursement_id: str, reason: str | None) -> str:
    """The :86: as the Example Bank writes it for a payment (reason None) or its return."""
    if layout == "openg2p":
        return six_line_details(
            ("Cash transfer", "PROG1", "2026-11", f"ben-{disbursement_id}", None, reason)
        )
    if reason is None:
        return structured_details(
            [("EREF", disbursement_id), ("BENM", ""), ("NAME", "Jane Doe"), ("REMI", "Cash")]
        )
    return structured_details(
        [("EREF", disbursement_id), ("RTRN", reason), ("REMI", "Payment returned")]
    )


def _statement(layout: str, ids: list[str]) -> str:
    today = utcnow().date()
    entries = [
        StatementEntry(today, today, "D", -TEN, i, f"EB{n:04d}D", _details(layout, i, None))
        for n, i in enumerate(ids)
    ]
    entries += [
        StatementEntry(today, today, "RD", TEN, i, f"EB{n:04d}RD", _details(layout, i, reason))
        for n, (i, reason) in enumerate(zip(ids, REASONS, strict=False))
    ]
    opening = Decimal("1000.00")
    closing = opening + sum((e.amount for e in entries), Decimal(0))
    page = StatementPage("EB1", ACCOUNT, 1, 1, "USD", opening, closing, today, today)
    return render_statement(page, entries)


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"reading a statement calls no bank: {request.url}")


@pytest.mark.parametrize("layout", ["openg2p", "subfields"])
def test_returns_reconcile_with_the_reason_in_either_layout(session_factory, layout: str) -> None:
    context = fake_context(session_factory, FakeBank())
    ids = setup_envelope(context, 4)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    assert states(session_factory, "env-1") == {"SHIPPED": 4}
    # Paid through the fake; the statement is read with the Example Bank connector's rules.
    connector = ExampleBankConnector(
        BankConnectorSettings(), transport=httpx.MockTransport(_refuse)
    )
    context.use_bank("EXAMPLE", connector)
    text = _statement(layout, ids)
    if layout == "openg2p":
        assert "\n\nACCOUNT_CLOSED\n" in text  # the empty fifth line, written as OpenG2P does

    statement_id = upload(context, text)
    assert runner.run_until_idle(timeout=30)
    row = statement_row(context, statement_id)
    assert row.state == "PROCESSED", row.error_reason
    assert (row.entries_matched, row.entries_reversed, row.entries_unmatched) == (4, 2, 0)
    assert row.balance_problems is None
    assert states(session_factory, "env-1") == {"RECONCILED": 2, "REVERSED": 2}
    with transaction(session_factory) as session:
        reasons = {
            recon.disbursement_id: recon.reversal_reason
            for recon in session.query(DisbursementRecon)
            if recon.reversal_found
        }
    assert reasons == dict(zip(ids, REASONS, strict=False))
    counters_match_rows(session_factory)
    connector.close()


def test_a_six_line_return_without_a_reason_stores_none_not_the_block(session_factory) -> None:
    context = fake_context(session_factory, FakeBank())
    (only,) = setup_envelope(context, 1)
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    context.use_bank(
        "EXAMPLE",
        ExampleBankConnector(BankConnectorSettings(), transport=httpx.MockTransport(_refuse)),
    )
    today = utcnow().date()
    # A reason line of one blank: the parser strips it, so the return names no reason.
    details = "Cash transfer\nPROG1\n2026-11\nben-1\n\n "
    entries = [
        StatementEntry(today, today, "D", -TEN, only, "EB1D", _details("openg2p", only, None)),
        StatementEntry(today, today, "RD", TEN, only, "EB1RD", details),
    ]
    page = StatementPage("EB2", ACCOUNT, 1, 1, "USD", TEN, TEN, today, today)
    statement_id = upload(context, render_statement(page, entries))
    assert runner.run_until_idle(timeout=30)
    assert statement_row(context, statement_id).state == "PROCESSED"
    with transaction(session_factory) as session:
        (recon,) = session.query(DisbursementRecon).all()
    assert recon.reversal_found and recon.reversal_reason is None
