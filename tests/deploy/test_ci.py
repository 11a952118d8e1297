"""What CI runs: .ci/run must lint, type-check and test, in that order, over the whole tree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_targets_run_by_ci() -> list[str]:
    lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    return [m[1] for line in lines if (m := re.fullmatch(r"\s*make\s+([\w-]+)\s*", line))]


def recipe(target: str) -> str:
    makefile = (REPO_ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert match, f"no {target} target in the Makefile"
    return match[1]


def test_ci_lints_type_checks_then_tests() -> None:
    assert make_targets_run_by_ci() == ["lint", "typecheck", "test"]
    assert "set -euo pipefail" in (REPO_ROOT / ".ci" / "run").read_text()


def test_lint_covers_src_tests_and_bench() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    linted = re.search(r"^LINTED := (.*)$", makefile, re.M)
    assert linted and set(linted[1].split()) == {"src", "tests", "bench"}
    lint = recipe("lint")
    assert "ruff check $(LINTED)" in lint and "ruff format --check $(LINTED)" in lint
    assert "mypy" in recipe("typecheck")


def test_mypy_is_strict_over_src_and_bench() -> None:
    mypy = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    assert set(mypy["files"]) == {"src", "bench"}
    # A module left out of the strict checks must be named in an override, not ignored quietly.
    assert "ignore_missing_imports" not in mypy
