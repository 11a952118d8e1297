"""Offline rendering of the Helm charts under deploy/helm, shared by the deploy tests.

Rendering uses helm-python-sdk (``helm_python``), which embeds Helm's own Go
library: no ``helm`` binary, no cluster and no network are involved.

The umbrella chart ``g2p-bridge`` declares its three components as ``file://``
dependencies. build_chart_tree copies deploy/helm to a temporary directory and
runs the equivalent of ``helm dependency update`` there (all repositories are
local or vendored, so nothing is fetched), leaving the work tree untouched.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = REPO_ROOT / "deploy" / "helm"
UMBRELLA = "g2p-bridge"
BRIDGE_COMPONENT_CHARTS = (
    "g2p-bridge-api",
    "g2p-bridge-celery-beat-producers",
    "g2p-bridge-celery-workers",
)
ALL_CHARTS = (*BRIDGE_COMPONENT_CHARTS, UMBRELLA, "example-bank")
RELEASE = "g2p-bridge"
NAMESPACE = "g2p"
# Schemas of this Kubernetes version ship with kubernetes-validate; the charts
# themselves declare kubeVersion >=1.27.
KUBE_VERSION = "1.30.0"

# (chart, values file relative to the chart directory or None for the defaults)
CASES: tuple[tuple[str, str | None], ...] = (
    *((chart, None) for chart in ALL_CHARTS),
    *((chart, "ci/production-values.yaml") for chart in ALL_CHARTS),
    (UMBRELLA, "ci/dev-values.yaml"),
)


def case_id(case: tuple[str, str | None]) -> str:
    chart, values_file = case
    if values_file is None:
        return f"{chart}:defaults"
    return f"{chart}:{Path(values_file).stem}"


@dataclass
class Rendered:
    """One chart rendered with one set of values."""

    chart: str
    values_file: str | None
    values: dict[str, Any]
    merged_values: dict[str, Any]
    # (template path, parsed manifest) for every non-empty YAML document
    manifests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for _, doc in self.manifests if doc.get("kind") == kind]

    def find(self, kind: str, name: str) -> dict[str, Any]:
        for doc in self.of_kind(kind):
            if doc["metadata"]["name"] == name:
                return doc
        raise AssertionError(f"no {kind} named {name} in {case_id((self.chart, self.values_file))}")


def _helm() -> Any:
    import helm_python  # the real Helm library; a missing install is a test error

    return helm_python


def build_chart_tree(destination: Path) -> Path:
    """Copy deploy/helm to ``destination`` and build the umbrella's charts/ there.

    This is ``helm dependency update deploy/helm/g2p-bridge`` done by Helm's own
    library: the component charts are ``file://`` repositories and PostgreSQL/Redis
    are vendored, so it runs without network access.
    """
    helm = _helm()
    tree = destination / "helm"
    # Leave out anything a local `helm dependency update` may have produced.
    shutil.copytree(HELM_DIR, tree, ignore=shutil.ignore_patterns("*.tgz", "Chart.lock"))
    helm.dependency_update(tree / UMBRELLA, skip_refresh=True)
    return tree


def load_values(chart_dir: Path, values_file: str | None) -> dict[str, Any]:
    if values_file is None:
        return {}
    values: dict[str, Any] = _helm().values_from_yaml((chart_dir / values_file).read_text())
    return values


def render_chart(
    chart_tree: Path, chart: str, values: dict[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Render ``chart`` and parse every manifest (NOTES.txt and empty documents dropped).

    A fresh Chart handle is loaded for every render: helm-python-sdk 0.2.2's
    ``Chart.render`` prunes the subcharts disabled by the values from the loaded
    chart itself, so a reused handle would lose them for later renders.
    """
    helm = _helm()
    with helm.Chart.load(chart_tree / chart) as loaded:
        output = loaded.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[tuple[str, dict[str, Any]]] = []
    for template, text in sorted(output.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append((template, doc))
    return manifests


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod spec of a workload object (Deployment, StatefulSet, Job...)."""
    if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        yield doc["spec"]["template"]["spec"]
    elif doc.get("kind") == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif doc.get("kind") == "Pod":
        yield doc["spec"]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def console_command(container: dict[str, Any]) -> tuple[str, str] | None:
    """(console script, subcommand) a container runs, e.g. ("g2p-bridge", "worker")."""
    argv = [*container.get("command", []), *container.get("args", [])]
    if len(argv) >= 2 and argv[0] in {"g2p-bridge", "example-bank"}:
        return argv[0], argv[1]
    return None


def render_case(chart_tree: Path, chart: str, values_file: str | None) -> Rendered:
    helm = _helm()
    values = load_values(chart_tree / chart, values_file)
    with helm.Chart.load(chart_tree / chart) as loaded:
        merged = loaded.merge_values(values)
    return Rendered(
        chart=chart,
        values_file=values_file,
        values=values,
        merged_values=merged,
        manifests=render_chart(chart_tree, chart, values),
    )


def commands_of(cases: Iterable[Rendered]) -> set[tuple[str, str]]:
    """Every (console script, subcommand) the rendered workloads run."""
    commands: set[tuple[str, str]] = set()
    for case in cases:
        for _, doc in case.manifests:
            for spec in pod_specs(doc):
                for container in containers(spec):
                    command = console_command(container)
                    if command is not None:
                        commands.add(command)
    return commands
