"""What the API chart publishes: the Ingress routes the API's own routes and nothing else (not
health, not /metrics, not the OpenAPI document and its pages unless asked), and /metrics is on
a port of its own that only the Service exposes, inside the cluster.

The API's routes are read from the app's route table, not listed here, so a route added to
the app and not to the chart (or removed from the app and left in the chart) fails."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from chart_rendering import UMBRELLA, Rendered, render_chart

from g2p_bridge.api.app import create_app
from g2p_bridge.settings import Settings

# Served by the pod but never published: probes, metrics and the API's documents.
NOT_PUBLISHED_PREFIXES = ("/health", "/ping", "/metrics", "/docs", "/redoc", "/openapi.json")
DOCUMENTS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
INGRESS_CASES = ("g2p-bridge-api:production-values", f"{UMBRELLA}:production-values")


def _route_paths(routes: Iterable[Any]) -> Iterator[str]:
    """Every path of a route table, through included routers of any FastAPI version."""
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            yield path
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _route_paths(inner.routes)


def app_paths() -> set[str]:
    app = create_app(
        Settings(database_url="sqlite://", auth_secret_key="k" * 40), wake=lambda *_: None
    )
    return set(_route_paths(app.routes)) | set(app.openapi()["paths"])


def api_paths() -> set[str]:
    return {
        path
        for path in app_paths()
        if not any(path == p or path.startswith(p + "/") for p in NOT_PUBLISHED_PREFIXES)
    }


def concrete(path: str) -> str:
    """A request path for a route's template: ``/envelopes/{envelope_id}/status`` -> with an id."""
    return re.sub(r"\{[^}]+\}", "ENV-1", path)


def matches(rule: dict[str, Any], request_path: str) -> bool:
    """Kubernetes Ingress matching: Exact is the whole path; Prefix is element by element."""
    if rule["pathType"] == "Exact":
        return bool(request_path == rule["path"])
    assert rule["pathType"] == "Prefix", rule
    prefix = [part for part in rule["path"].split("/") if part]
    parts = [part for part in request_path.split("/") if part]
    return parts[: len(prefix)] == prefix


def ingress_rules(manifests: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every path rule of the one Ingress among ``manifests``, over all its hosts."""
    (ingress,) = [doc for _, doc in manifests if doc["kind"] == "Ingress"]
    rules = ingress["spec"]["rules"]
    assert rules
    return [path for rule in rules for path in rule["http"]["paths"]]


def test_the_route_table_is_read() -> None:
    paths = api_paths()
    # The reading itself: the G2P Connect routes, the upload, operator routes with ids.
    assert {"/create_disbursements", "/upload_mt940", "/envelopes/{envelope_id}/status"} <= paths
    assert "/metrics" in app_paths() and "/metrics" not in paths
    assert "/openapi.json" in app_paths() and "/health/ready" in app_paths()


@pytest.mark.parametrize("case", INGRESS_CASES)
def test_ingress_routes_every_api_route_and_nothing_else(
    rendered: dict[str, Rendered], case: str
) -> None:
    rules = ingress_rules(rendered[case].manifests)
    for path in sorted(api_paths()):
        assert any(matches(rule, concrete(path)) for rule in rules), f"{path} is not routed"
    for path in [*sorted(app_paths() - api_paths()), "/", "/anything", "/metrics/", "/docs/"]:
        hits = [rule["path"] for rule in rules if matches(rule, concrete(path))]
        assert not hits, f"{path} is published by {hits}"
    # No stale rule: each one routes some route the app has.
    for rule in rules:
        assert any(matches(rule, concrete(path)) for path in api_paths()), rule


@pytest.mark.parametrize("case", INGRESS_CASES)
def test_ingress_sends_only_to_the_api_port(rendered: dict[str, Rendered], case: str) -> None:
    result = rendered[case]
    services = {doc["metadata"]["name"]: doc for doc in result.of_kind("Service")}
    for rule in ingress_rules(result.manifests):
        backend = rule["backend"]["service"]
        ports = {port["port"]: port for port in services[backend["name"]]["spec"]["ports"]}
        assert ports[backend["port"]["number"]]["name"] == "http", backend


def test_the_docs_are_published_only_when_asked(chart_tree: Path) -> None:
    values: dict[str, Any] = {"ingress": {"enabled": True, "hosts": [{"host": "a.example"}]}}
    rules = ingress_rules(render_chart(chart_tree, "g2p-bridge-api", values))
    assert not [p for p in DOCUMENTS if any(matches(rule, p) for rule in rules)]
    values["ingress"]["exposeApiDocs"] = True
    rules = ingress_rules(render_chart(chart_tree, "g2p-bridge-api", values))
    assert all(any(matches(rule, p) for rule in rules) for p in DOCUMENTS)
    assert not any(matches(rule, "/metrics") for rule in rules)


def test_a_host_with_its_own_paths_is_refused(chart_tree: Path) -> None:
    """The chart's earlier values format routed "/" per host: everything the pod serves."""
    values = {
        "ingress": {
            "enabled": True,
            "hosts": [{"host": "a.example", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        }
    }
    with pytest.raises(helm.HelmError, match="paths is not read any more"):
        render_chart(chart_tree, "g2p-bridge-api", values)


@pytest.mark.parametrize(
    "case",
    [
        "g2p-bridge-api:defaults",
        "g2p-bridge-api:production-values",
        f"{UMBRELLA}:defaults",
        f"{UMBRELLA}:production-values",
    ],
)
def test_metrics_have_their_own_port_inside_the_cluster(
    rendered: dict[str, Rendered], case: str
) -> None:
    result = rendered[case]
    (deployment,) = [
        doc
        for doc in result.of_kind("Deployment")
        if doc["spec"]["template"]["spec"]["containers"][0].get("args", [""])[0] == "api"
    ]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    # The app serves /metrics on this port only, bound where the Service can reach it.
    assert env["G2P_BRIDGE_METRICS_PORT"] == str(ports["metrics"])
    assert env["G2P_BRIDGE_METRICS_HOST"] == "0.0.0.0"
    assert ports["metrics"] != ports["http"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    selector = deployment["spec"]["selector"]["matchLabels"]
    (service,) = [s for s in result.of_kind("Service") if s["spec"]["selector"] == selector]
    assert service["spec"]["type"] == "ClusterIP"
    by_name = {port["name"]: port for port in service["spec"]["ports"]}
    assert by_name["metrics"]["targetPort"] == "metrics"
    for ingress in result.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                number = path["backend"]["service"]["port"].get("number")
                assert number != by_name["metrics"]["port"]
