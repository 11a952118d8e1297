"""Session fixtures: the Helm charts under deploy/helm rendered offline, once.

Rendering uses helm-python-sdk (``helm_python``), which embeds Helm's own Go
library: no ``helm`` binary, no cluster and no network are involved.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers module sits next to this file; make it importable whatever the import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chart_rendering import CASES, Rendered, build_chart_tree, case_id, commands_of, render_case


@pytest.fixture(scope="session")
def chart_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/helm with the umbrella's dependencies built into charts/."""
    return build_chart_tree(tmp_path_factory.mktemp("charts"))


@pytest.fixture(scope="session")
def rendered(chart_tree: Path) -> dict[str, Rendered]:
    """Every case of CASES rendered, keyed by case_id."""
    return {case_id(case): render_case(chart_tree, *case) for case in CASES}


@pytest.fixture(scope="session")
def chart_commands(rendered: dict[str, Rendered]) -> set[tuple[str, str]]:
    """Every (console script, subcommand) any rendered chart runs."""
    return commands_of(rendered.values())
