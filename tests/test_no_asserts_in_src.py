"""No ``assert`` statement in src/: ``python -O`` removes them, so a check written as one is no
check in a service started that way. Use ``if ...: raise`` (``g2p_bridge.db.get_required`` for a
row that must exist)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from g2p_bridge.db import MissingRow, get_required
from g2p_bridge.models import BenefitProgram

SRC = Path(__file__).resolve().parents[1] / "src"


def test_src_has_no_assert_statements() -> None:
    found = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in sorted(SRC.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Assert)
    ]
    assert not found, f"assert statements in src/ (gone under python -O): {found}"


def test_get_required_raises_for_a_missing_row(session_factory) -> None:  # type: ignore[no-untyped-def]
    with session_factory() as session:
        assert isinstance(session, Session)
        with pytest.raises(MissingRow, match="BenefitProgram 'NOPE' does not exist"):
            get_required(session, BenefitProgram, "NOPE")
