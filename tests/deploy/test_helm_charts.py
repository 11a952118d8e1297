"""The Helm charts under deploy/helm, rendered and linted by Helm's own library.

Every chart is rendered with its default values and with its production-like
values file (ci/production-values.yaml; the umbrella also with ci/dev-values.yaml),
linted in strict mode, and every manifest is validated against the Kubernetes
JSON schemas shipped by kubernetes-validate in strict mode (unknown fields fail).
No network, cluster or helm binary is needed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from chart_rendering import (
    ALL_CHARTS,
    BRIDGE_COMPONENT_CHARTS,
    CASES,
    HELM_DIR,
    KUBE_VERSION,
    NAMESPACE,
    UMBRELLA,
    Rendered,
    case_id,
    containers,
    load_values,
    pod_specs,
    render_chart,
)

CASE_IDS = [case_id(case) for case in CASES]
BRIDGE_QUEUES = {"mapper", "funds", "dispatch", "statements", "callbacks", "default"}
SECRET_LOOKING_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|BROKER_URL", re.I)
HOOK_ANNOTATION = "helm.sh/hook"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def workloads(case: Rendered) -> list[dict[str, Any]]:
    return [doc for _, doc in case.manifests if doc["kind"] in WORKLOAD_KINDS]


def args_of(deployment: dict[str, Any]) -> list[str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return [*container.get("command", []), *container.get("args", [])]


def deployments_running(case: Rendered, script: str, subcommand: str) -> list[dict[str, Any]]:
    return [doc for doc in case.of_kind("Deployment") if args_of(doc)[:2] == [script, subcommand]]


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_chart_layout(chart: str) -> None:
    chart_dir = HELM_DIR / chart
    metadata = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    assert metadata["apiVersion"] == "v2"
    assert metadata["name"] == chart
    assert metadata["appVersion"] == "0.1.0"
    for required in ("values.yaml", "README.md", "templates/_helpers.tpl", "ci"):
        assert (chart_dir / required).exists(), f"{chart} lacks {required}"
    assert "helm install" in (chart_dir / "README.md").read_text()


def undocumented_keys(values_yaml: str) -> list[str]:
    """Keys of a values.yaml that have no comment.

    A key is documented when a comment line sits right above it, when its block
    opens with a ``# --`` comment (a section such as ``image:``), or when an
    enclosing key is documented with ``# --`` as a whole (an object value such as
    ``securityContext:``). List items are part of their key's value.
    """
    lines = values_yaml.splitlines()
    key_line = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):")
    # (indent, documented-as-a-whole) of the enclosing keys
    ancestors: list[tuple[int, bool]] = []
    missing = []
    for index, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        comment: list[str] = []  # the comment block right above the key
        cursor = index - 1
        while cursor >= 0 and lines[cursor].strip().startswith("#"):
            comment.insert(0, lines[cursor].strip())
            cursor -= 1
        below = lines[index + 1] if index + 1 < len(lines) else ""
        opens_documented_block = (
            line.rstrip().endswith(":")
            and below.strip().startswith("# --")
            and len(below) - len(below.lstrip()) > indent
        )
        inside_documented_value = any(whole for _, whole in ancestors)
        if not (comment or opens_documented_block or inside_documented_value):
            missing.append(match["key"])
        documented_whole = bool(comment) and comment[0].startswith("# --")
        ancestors.append((indent, documented_whole and not opens_documented_block))
    return missing


@pytest.mark.parametrize(
    "values_file",
    [
        *(HELM_DIR / chart / "values.yaml" for chart in ALL_CHARTS),
        HELM_DIR / UMBRELLA / "charts" / "postgresql" / "values.yaml",
        HELM_DIR / UMBRELLA / "charts" / "redis" / "values.yaml",
    ],
    ids=lambda path: str(path.relative_to(HELM_DIR)),
)
def test_every_value_is_documented(values_file: Path) -> None:
    missing = undocumented_keys(values_file.read_text())
    assert not missing, f"undocumented keys: {missing}"


# --------------------------------------------------------------------------- lint + schema


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_lint_is_clean(chart_tree: Path, case: tuple[str, str | None]) -> None:
    chart, values_file = case
    report = helm.lint(
        chart_tree / chart,
        load_values(chart_tree / chart, values_file),
        strict=True,
        with_subcharts=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    # severity: 1 info (e.g. "icon is recommended"), 2 warning, 3 error
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_manifests_match_kubernetes_schemas(
    rendered: dict[str, Rendered], case: tuple[str, str | None]
) -> None:
    result = rendered[case_id(case)]
    assert result.manifests, "nothing rendered"
    failures = []
    for template, doc in result.manifests:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            failures.append(f"{template} {doc['kind']}/{doc['metadata']['name']}: {where}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_objects_carry_recommended_labels(
    rendered: dict[str, Rendered], case: tuple[str, str | None]
) -> None:
    for _, doc in rendered[case_id(case)].manifests:
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance"):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"


# --------------------------------------------------------------------------- security


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_container_is_non_root_and_read_only(
    rendered: dict[str, Rendered], case: tuple[str, str | None]
) -> None:
    for doc in workloads(rendered[case_id(case)]):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        for spec in pod_specs(doc):
            pod_context = spec.get("securityContext", {})
            assert pod_context.get("runAsNonRoot") is True, name
            assert pod_context.get("runAsUser", 0) != 0, name
            assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            assert spec.get("automountServiceAccountToken") is False, name
            for container in containers(spec):
                context = container.get("securityContext", {})
                where = f"{name} container {container['name']}"
                assert context.get("readOnlyRootFilesystem") is True, where
                assert context.get("allowPrivilegeEscalation") is False, where
                assert context.get("runAsNonRoot", True) is True, where
                assert context.get("runAsUser", pod_context["runAsUser"]) != 0, where
                assert context.get("privileged", False) is False, where
                assert context.get("capabilities", {}).get("drop") == ["ALL"], where
                assert not context.get("capabilities", {}).get("add"), where


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_no_secret_looking_key_in_any_configmap(
    rendered: dict[str, Rendered], case: tuple[str, str | None]
) -> None:
    for configmap in rendered[case_id(case)].of_kind("ConfigMap"):
        leaked = [key for key in configmap.get("data") or {} if SECRET_LOOKING_KEY.search(key)]
        assert not leaked, f"ConfigMap {configmap['metadata']['name']} holds {leaked}"


@pytest.mark.parametrize(
    ("chart", "values"),
    [
        ("g2p-bridge-api", {"config": {"G2P_BRIDGE_DATABASE_URL": "postgresql://u:p@h/db"}}),
        ("g2p-bridge-celery-workers", {"config": {"G2P_BRIDGE_BROKER_URL": "redis://r"}}),
        ("g2p-bridge-celery-beat-producers", {"config": {"G2P_BRIDGE_AUTH_SECRET_KEY": "k"}}),
        (UMBRELLA, {"config": {"G2P_BRIDGE_BANK_CONNECTORS__EXAMPLE__API_KEY": "k"}}),
        ("example-bank", {"config": {"EXAMPLE_BANK_BRIDGE_TOKEN": "t"}}),
    ],
)
def test_charts_refuse_a_secret_in_the_configmap(
    chart_tree: Path, chart: str, values: dict[str, Any]
) -> None:
    with pytest.raises(helm.HelmError, match="looks like a secret"):
        render_chart(chart_tree, chart, values)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_env_sources_exist_or_are_declared_external(
    rendered: dict[str, Rendered], case: tuple[str, str | None]
) -> None:
    """envFrom references a rendered ConfigMap/Secret, or the existing Secret named in values.

    Hook Jobs may only use hook objects created before them (lower weight) or the
    pre-existing Secret: ordinary release objects do not exist yet at pre-install.
    """
    result = rendered[case_id(case)]
    merged = result.merged_values
    external = {
        (merged.get("secret") or {}).get("existingSecret"),
        ((merged.get("global") or {}).get("g2pBridge") or {}).get("secretName")
        if (merged.get("secret") or {}).get("create") is False
        else None,
    } - {None, ""}
    objects = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in result.of_kind("ConfigMap") + result.of_kind("Secret")
    }
    for doc in workloads(result):
        job_weight = None
        if HOOK_ANNOTATION in doc["metadata"].get("annotations", {}):
            job_weight = int(doc["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
        for spec in pod_specs(doc):
            for container in containers(spec):
                for source in container.get("envFrom", []):
                    kind = "ConfigMap" if "configMapRef" in source else "Secret"
                    name = (source.get("configMapRef") or source.get("secretRef"))["name"]
                    if kind == "Secret" and name in external:
                        continue
                    target = objects.get((kind, name))
                    assert target is not None, f"{doc['metadata']['name']} needs {kind}/{name}"
                    if job_weight is not None:
                        annotations = target["metadata"].get("annotations", {})
                        assert HOOK_ANNOTATION in annotations, f"{kind}/{name} is not a hook"
                        assert int(annotations["helm.sh/hook-weight"]) < job_weight


def test_existing_secret_replaces_the_chart_secret(rendered: dict[str, Rendered]) -> None:
    for chart in (*BRIDGE_COMPONENT_CHARTS, UMBRELLA, "example-bank"):
        result = rendered[f"{chart}:production-values"]
        assert not result.of_kind("Secret"), f"{chart} production renders a Secret"


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize(
    ("case", "script", "port"),
    [
        ("g2p-bridge-api:defaults", "g2p-bridge", 8000),
        ("g2p-bridge-api:production-values", "g2p-bridge", 8000),
        (f"{UMBRELLA}:defaults", "g2p-bridge", 8000),
        (f"{UMBRELLA}:production-values", "g2p-bridge", 8000),
        ("example-bank:defaults", "example-bank", 8003),
        ("example-bank:production-values", "example-bank", 8003),
    ],
)
def test_api_has_health_probes_and_service(
    rendered: dict[str, Rendered], case: str, script: str, port: int
) -> None:
    result = rendered[case]
    (deployment,) = deployments_running(result, script, "api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = args_of(deployment)
    assert option(argv, "--host") == "0.0.0.0"
    assert option(argv, "--port") == str(port)
    assert container["ports"][0] == {"name": "http", "containerPort": port, "protocol": "TCP"}
    # The bridge's API has a second port, for /metrics only (test_ingress_and_metrics.py).
    assert [p["name"] for p in container["ports"]] == (
        ["http", "metrics"] if script == "g2p-bridge" else ["http"]
    )
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    services = [
        service for service in result.of_kind("Service") if service["spec"]["selector"] == selector
    ]
    assert len(services) == 1
    assert services[0]["spec"]["ports"][0]["targetPort"] == "http"


def test_api_autoscaling_and_optional_ingress(rendered: dict[str, Rendered]) -> None:
    defaults = rendered["g2p-bridge-api:defaults"]
    assert not defaults.of_kind("Ingress"), "the Ingress must be off by default"
    (deployment,) = defaults.of_kind("Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (hpa,) = defaults.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    production = rendered["g2p-bridge-api:production-values"]
    (ingress,) = production.of_kind("Ingress")
    (service,) = production.of_kind("Service")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"number": 8000}}


def test_api_without_autoscaling_sets_replicas(chart_tree: Path) -> None:
    manifests = render_chart(
        chart_tree, "g2p-bridge-api", {"autoscaling": {"enabled": False}, "replicaCount": 3}
    )
    kinds = [doc["kind"] for _, doc in manifests]
    assert "HorizontalPodAutoscaler" not in kinds
    (deployment,) = [doc for _, doc in manifests if doc["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 3


# --------------------------------------------------------------------------- beat


@pytest.mark.parametrize(
    "case",
    [
        "g2p-bridge-celery-beat-producers:defaults",
        "g2p-bridge-celery-beat-producers:production-values",
        f"{UMBRELLA}:defaults",
        f"{UMBRELLA}:production-values",
        f"{UMBRELLA}:dev-values",
    ],
)
def test_beat_is_a_single_recreated_pod_without_hpa(
    rendered: dict[str, Rendered], case: str
) -> None:
    result = rendered[case]
    (beat,) = deployments_running(result, "g2p-bridge", "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    targets = {
        hpa["spec"]["scaleTargetRef"]["name"] for hpa in result.of_kind("HorizontalPodAutoscaler")
    }
    assert beat["metadata"]["name"] not in targets


def test_beat_replicas_cannot_be_raised_from_values(chart_tree: Path) -> None:
    values = {"replicaCount": 3, "replicas": 3, "autoscaling": {"enabled": True}}
    manifests = render_chart(chart_tree, "g2p-bridge-celery-beat-producers", values)
    kinds = [doc["kind"] for _, doc in manifests]
    assert "HorizontalPodAutoscaler" not in kinds
    (beat,) = [doc for _, doc in manifests if doc["kind"] == "Deployment"]
    assert beat["spec"]["replicas"] == 1


@pytest.mark.parametrize("case", ["example-bank:defaults", "example-bank:production-values"])
def test_example_bank_worker_is_a_single_pod(rendered: dict[str, Rendered], case: str) -> None:
    """`example-bank worker` embeds Celery beat: never more than one pod."""
    result = rendered[case]
    (worker,) = deployments_running(result, "example-bank", "worker")
    assert worker["spec"]["replicas"] == 1
    assert worker["spec"]["strategy"] == {"type": "Recreate"}
    expected = str(result.merged_values["worker"]["concurrency"])
    assert option(args_of(worker), "--concurrency") == expected


# --------------------------------------------------------------------------- workers


@pytest.mark.parametrize(
    ("case", "pools_key"),
    [
        ("g2p-bridge-celery-workers:defaults", ()),
        ("g2p-bridge-celery-workers:production-values", ()),
        (f"{UMBRELLA}:defaults", ("g2p-bridge-celery-workers",)),
        (f"{UMBRELLA}:production-values", ("g2p-bridge-celery-workers",)),
    ],
)
def test_worker_commands_carry_the_configured_queues(
    rendered: dict[str, Rendered], case: str, pools_key: tuple[str, ...]
) -> None:
    result = rendered[case]
    values = result.merged_values
    for key in pools_key:
        values = values[key]
    defaults = values["poolDefaults"]
    expected = {}
    for name, pool in values["pools"].items():
        if pool.get("enabled", defaults["enabled"]):
            queues = pool["queues"]
            queue_list = queues.split(",") if isinstance(queues, str) else list(queues)
            expected[name] = (queue_list, str(pool.get("concurrency", defaults["concurrency"])))

    workers = deployments_running(result, "g2p-bridge", "worker")
    found = {}
    for deployment in workers:
        pool = deployment["metadata"]["labels"]["g2p-bridge/worker-pool"]
        argv = args_of(deployment)
        found[pool] = (option(argv, "--queues").split(","), option(argv, "--concurrency"))
    assert found == expected

    consumed = {queue for queues, _ in found.values() for queue in queues}
    assert consumed <= BRIDGE_QUEUES
    assert consumed == BRIDGE_QUEUES, f"no worker consumes {BRIDGE_QUEUES - consumed}"


def test_workers_get_an_hpa_each_and_a_long_grace_period(rendered: dict[str, Rendered]) -> None:
    result = rendered["g2p-bridge-celery-workers:defaults"]
    workers = deployments_running(result, "g2p-bridge", "worker")
    assert len(workers) >= 2
    hpas = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa
        for hpa in result.of_kind("HorizontalPodAutoscaler")
    }
    for deployment in workers:
        assert deployment["metadata"]["name"] in hpas
        assert hpas[deployment["metadata"]["name"]]["apiVersion"] == "autoscaling/v2"
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120


def test_worker_pool_settings_override_defaults(chart_tree: Path) -> None:
    values = {
        "pools": {
            "general": {"enabled": False},
            "dispatch": {
                "queues": "dispatch",
                "concurrency": 1,
                "terminationGracePeriodSeconds": 600,
                "autoscaling": {"enabled": False},
                "replicaCount": 2,
            },
        }
    }
    manifests = render_chart(chart_tree, "g2p-bridge-celery-workers", values)
    deployments = [doc for _, doc in manifests if doc["kind"] == "Deployment"]
    assert [doc["metadata"]["name"] for doc in deployments] == [
        "g2p-bridge-celery-workers-dispatch"
    ]
    (deployment,) = deployments
    assert args_of(deployment) == [
        "g2p-bridge",
        "worker",
        "--queues",
        "dispatch",
        "--concurrency",
        "1",
    ]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 600
    assert not [doc for _, doc in manifests if doc["kind"] == "HorizontalPodAutoscaler"]


def test_a_pool_without_queues_is_rejected(chart_tree: Path) -> None:
    with pytest.raises(helm.HelmError, match="queues"):
        render_chart(
            chart_tree, "g2p-bridge-celery-workers", {"pools": {"extra": {"concurrency": 1}}}
        )


# --------------------------------------------------------------------------- migrations


@pytest.mark.parametrize(
    ("case", "script"),
    [
        (f"{UMBRELLA}:defaults", "g2p-bridge"),
        (f"{UMBRELLA}:production-values", "g2p-bridge"),
        ("example-bank:defaults", "example-bank"),
        ("example-bank:production-values", "example-bank"),
    ],
)
def test_migration_job_is_a_pre_install_pre_upgrade_hook(
    rendered: dict[str, Rendered], case: str, script: str
) -> None:
    (job,) = rendered[case].of_kind("Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations[HOOK_ANNOTATION].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["backoffLimit"] >= 1
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert [*container["command"], *container["args"]][:2] == [script, "migrate"]


def test_umbrella_dependencies_resolve_offline(
    chart_tree: Path, rendered: dict[str, Rendered]
) -> None:
    statuses = {dep["name"]: dep["status"] for dep in helm.dependency_list(chart_tree / UMBRELLA)}
    assert statuses == {
        "g2p-bridge-api": "ok",
        "g2p-bridge-celery-beat-producers": "ok",
        "g2p-bridge-celery-workers": "ok",
        "postgresql": "unpacked",
        "redis": "unpacked",
    }
    defaults = rendered[f"{UMBRELLA}:defaults"]
    assert {("g2p-bridge", sub) for sub in ("api", "beat", "worker")} <= {
        tuple(args_of(doc)[:2]) for doc in defaults.of_kind("Deployment")
    }
    assert not defaults.of_kind("StatefulSet"), "PostgreSQL/Redis must be off by default"
    dev = rendered[f"{UMBRELLA}:dev-values"]
    names = {doc["metadata"]["name"] for doc in dev.of_kind("StatefulSet")}
    assert names == {"g2p-bridge-postgresql", "g2p-bridge-redis"}


def test_umbrella_components_share_one_configmap_and_secret(rendered: dict[str, Rendered]) -> None:
    for case in (f"{UMBRELLA}:defaults", f"{UMBRELLA}:production-values"):
        result = rendered[case]
        sources = set()
        for deployment in result.of_kind("Deployment"):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            sources.add(tuple(sorted(str(source) for source in container["envFrom"])))
        assert len(sources) == 1, sources
        ordinary_configmaps = [
            doc
            for doc in result.of_kind("ConfigMap")
            if HOOK_ANNOTATION not in doc["metadata"].get("annotations", {})
        ]
        assert len(ordinary_configmaps) == 1


def test_umbrella_can_disable_a_component(chart_tree: Path) -> None:
    manifests = render_chart(chart_tree, UMBRELLA, {"g2p-bridge-api": {"enabled": False}})
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in manifests}
    assert ("Deployment", "g2p-bridge-api") not in kinds
    assert ("Deployment", "g2p-bridge-celery-beat-producers") in kinds


def test_production_values_files_parse(chart_tree: Path) -> None:
    for chart, values_file in CASES:
        if values_file is not None:
            assert isinstance(load_values(chart_tree / chart, values_file), dict)
