"""The format layer stays pure, and its camt output reads like MT940 to the existing code."""

from __future__ import annotations

import ast
from pathlib import Path

from iso20022_schemas import SAMPLES

import g2p_bridge.formats
from g2p_bridge.connectors.banks.base import BankConnector
from g2p_bridge.formats.iso20022 import iter_camt, to_recon_statement

FORMATS = Path(g2p_bridge.formats.__file__).parent


def test_formats_imports_nothing_of_the_domain() -> None:
    allowed = ("g2p_bridge.money", "g2p_bridge.formats")
    for path in FORMATS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("g2p_bridge"):
                    assert name.startswith(allowed), f"{path.name} imports {name}"


def test_the_bank_connectors_read_camt_entries_as_they_read_mt940() -> None:
    with (SAMPLES / "camt.053.001.08.xml").open("rb") as file:
        (statement,) = list(iter_camt(file))
    entries = to_recon_statement(statement).entries
    # The base connector's reading rules, called as the reconciliation core calls them.
    read = [
        (
            entry.mark,
            BankConnector.disbursement_id(None, entry),  # type: ignore[arg-type]
            BankConnector.beneficiary_name(None, entry),  # type: ignore[arg-type]
            BankConnector.reversal_reason(None, entry)  # type: ignore[arg-type]
            if entry.mark == "RD"
            else None,
        )
        for entry in entries
    ]
    assert read[0] == ("D", "d-1", "Amina Hassan", None)
    assert read[4] == ("RD", "d-2", None, "AC04 Account closed")
    assert read[5] == ("RD", "d-3", None, "AC01 Incorrect account number")
    assert read[6][:2] == ("C", None)
