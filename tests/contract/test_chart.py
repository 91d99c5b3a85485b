"""The Helm chart, the plain manifests and the image recipe, checked without a cluster.

`helm` renders the chart (the binary `make sim-build` builds, or one on PATH).
Without one the tests that need it fail, saying how to get it: a fresh clone
running `make test-unit` would otherwise pass with the chart untested.
TFSO_SKIP_CHART_TESTS=1 skips them instead, for a run that means to. What
only a real API server can judge (admission, RBAC in action) is in
tests/cluster/test_install.py.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "tfserving-operator"
TOP_CRDS = REPO_ROOT / "crds"
INSTALL_YAML = REPO_ROOT / "manifests" / "install.yaml"
INSTALL_NAMESPACE = "tfserving-operator-system"
DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
# CRDs the chart ships on top of the ServedModel API (kopf's peering, for HA).
CHART_ONLY_CRDS = {"kopf.dev-peerings.yaml"}

Doc = dict[str, Any]


@cache
def helm_binary() -> str | None:
    # The pinned build first: .sim/bin links whatever set the last `make sim-up`
    # used, which is stale after a toolchain change until the next sim-up.
    built = _built_helm()
    if built is not None:
        return built
    linked = REPO_ROOT / ".sim" / "bin" / "helm"
    if linked.exists():
        return str(linked)
    return shutil.which("helm")


def _built_helm() -> str | None:
    """The helm of the pinned set, if `make sim-build` built it on this machine."""
    from localdev.sim import toolchain

    tool = toolchain.tool("helm")
    try:
        path = toolchain.tool_path(tool)
    except (OSError, subprocess.CalledProcessError):  # no Go: nothing was built here
        return None
    return str(path) if path.is_file() else None


@pytest.fixture(scope="module")
def helm() -> str:
    binary = helm_binary()
    if binary is None:
        if os.environ.get("TFSO_SKIP_CHART_TESTS") == "1":
            pytest.skip("no helm binary, and TFSO_SKIP_CHART_TESTS=1")
        pytest.fail(
            "no helm binary: run `make sim-build` (or put helm on PATH); "
            "TFSO_SKIP_CHART_TESTS=1 skips the chart tests instead",
            pytrace=False,
        )
    return binary


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)


def render_text(helm: str, *sets: str, namespace: str = "tfso-system", crds: bool = False) -> str:
    args = ["template", "rel", str(CHART), "--namespace", namespace]
    if crds:
        args.append("--include-crds")
    for item in sets:
        args += ["--set", item]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(helm: str, *sets: str, namespace: str = "tfso-system") -> list[Doc]:
    return [d for d in yaml.safe_load_all(render_text(helm, *sets, namespace=namespace)) if d]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def env_of(deployment: Doc) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def grants(rules: list[Doc]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, merged over rules."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


# What the operator does (apply.py, handlers.py) and nothing more.
APPLICATION_GRANTS = {
    ("serving.tfoperator.dev", "servedmodels"): {"list", "watch"},
    ("serving.tfoperator.dev", "servedmodels/status"): {"patch"},
    ("serving.tfoperator.dev", "servedmodels/finalizers"): {"update"},
    ("", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "watch", "create", "patch", "delete"},
    # delete: a canary's Deployment (<name>-canary) goes once the canary is over.
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("apps", "replicasets"): {"list", "watch"},
    ("policy", "poddisruptionbudgets"): {"list", "watch", "create", "patch", "delete"},
    ("networking.k8s.io", "networkpolicies"): {"list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch", "create", "patch", "delete"},
    ("keda.sh", "scaledobjects"): {"create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/status"): {"patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
CRD_GRANT = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
NAMESPACE_GRANT = {("", "namespaces"): {"list", "watch"}}


# ----- one source for the CRDs ------------------------------------------------


def test_chart_crds_are_copies_of_the_top_level_crds() -> None:
    top = sorted(p.name for p in TOP_CRDS.glob("*.yaml"))
    assert top, "crds/ holds no CRD"
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert set(chart) - CHART_ONLY_CRDS == set(top), (
        "the chart's crds/ must hold exactly the top-level CRDs (plus kopf's "
        "peering CRDs): run `make manifests`"
    )
    for name in top:
        assert filecmp.cmp(TOP_CRDS / name, CHART / "crds" / name, shallow=False), (
            f"charts/tfserving-operator/crds/{name} differs from crds/{name}: run `make manifests`"
        )


def test_kopf_peering_crds_have_kopfs_shape() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf.dev-peerings.yaml").read_text()))
    shapes = {(d["spec"]["names"]["kind"], d["spec"]["scope"], d["metadata"]["name"]) for d in docs}
    assert shapes == {
        ("ClusterKopfPeering", "Cluster", "clusterkopfpeerings.kopf.dev"),
        ("KopfPeering", "Namespaced", "kopfpeerings.kopf.dev"),
    }
    for doc in docs:
        (version,) = doc["spec"]["versions"]
        assert (doc["spec"]["group"], version["name"]) == ("kopf.dev", "v1")
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
        # kopf patches the status in the main resource: no status subresource.
        assert "subresources" not in version


# ----- lint and the values schema ---------------------------------------------


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("ha.enabled=true",),
        ("watchNamespaces={a,b}", "ha.enabled=true", "healthService.enabled=true"),
        ("operator.labelSelector.team=vision", "image.digest=sha256:" + "0" * 64),
    ],
    ids=["defaults", "ha", "namespaced-ha-service", "selector-digest"],
)
def test_helm_lint_passes(helm: str, sets: tuple[str, ...]) -> None:
    args = ["lint", str(CHART), "--strict"]
    for item in sets:
        args += ["--set", item]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr


# --set values -> the JSON pointer helm's schema error names.
BAD_VALUES = {
    "unknown top-level key": (["replicaCount=3"], "replicaCount"),
    "misspelt nested key": (["ha.enable=true"], "enable"),
    "ha.enabled not a boolean": (["ha.enabled=yes"], "/ha/enabled"),
    "one HA replica": (["ha.enabled=true", "ha.replicas=1"], "/ha/replicas"),
    "watchNamespaces as a string": (["watchNamespaces=team-a"], "/watchNamespaces"),
    "namespace name not DNS-1123": (["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    "duplicate namespace": (["watchNamespaces={a,a}"], "/watchNamespaces"),
    "pull policy": (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    "log level": (["operator.logLevel=LOUD"], "/operator/logLevel"),
    "privileged liveness port": (["operator.livenessPort=80"], "/operator/livenessPort"),
    "not a quantity": (["resources.limits.memory=lots"], "/resources/limits/memory"),
    "extraEnv outside TFSO_": (["operator.extraEnv[0].name=PATH"], "/operator/extraEnv/0/name"),
    "bad digest": (["image.digest=latest"], "/image/digest"),
}


@pytest.mark.parametrize("sets, field", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_values(helm: str, sets: list[str], field: str) -> None:
    for command in ("template", "lint"):
        args = [command, *(["rel"] if command == "template" else []), str(CHART)]
        for item in sets:
            args += ["--set", item]
        result = run_helm(helm, *args)
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"helm {command} accepted {sets}"
        assert "schema" in output.lower() and field in output, output


def test_every_value_is_documented() -> None:
    """Each top-level key, and each key of the chart's own settings blocks, has a
    comment right above it (Kubernetes pass-through blocks such as resources or
    securityContext are documented as a whole)."""
    own_blocks = {"image", "ha", "operator", "serviceAccount", "rbac", "healthService", "metrics"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    block = ""
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z]\w*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        if indent == 0:
            block = key
        checked = indent == 0 or (indent == 2 and block in own_blocks)
        if checked and not lines[i - 1].lstrip().startswith("#"):
            undocumented.append(f"{block}.{key}" if indent else key)
    assert not undocumented, f"values without a comment: {undocumented}"


# ----- what the chart renders --------------------------------------------------


def test_default_render_objects(helm: str) -> None:
    docs = render(helm)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ClusterRole", "rel-tfserving-operator"),
        ("ClusterRoleBinding", "rel-tfserving-operator"),
        ("Deployment", "rel-tfserving-operator"),
        ("Service", "rel-tfserving-operator-metrics"),
        ("ServiceAccount", "rel-tfserving-operator"),
    ]


def test_operator_deployment_defaults(helm: str) -> None:
    deployment = one(render(helm), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "tfserving-operator:0.1.0"
    env = env_of(deployment)
    assert env["TFSO_LIVENESS_PORT"] == "8080"
    assert env["TFSO_METRICS_PORT"] == "8081"
    assert env["TFSO_PROBE_FAILURE_THRESHOLD"] == "3"
    assert "TFSO_NAMESPACES" not in env and "TFSO_PEERING" not in env
    # Liveness through kopf's probe endpoint, on the port the operator is told to use.
    assert container["ports"] == [
        {"name": "health", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8081, "protocol": "TCP"},
    ]
    for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == "rel-tfserving-operator"


def test_operator_pod_is_restricted(helm: str) -> None:
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = pod["containers"][0]["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert all("hostPath" not in v for v in pod["volumes"])


def test_liveness_port_follows_the_value(helm: str) -> None:
    deployment = one(render(helm, "operator.livenessPort=9090"), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert env_of(deployment)["TFSO_LIVENESS_PORT"] == "9090"
    assert container["ports"][0]["containerPort"] == 9090


def test_clusterwide_rbac_is_exactly_what_the_operator_needs(helm: str) -> None:
    role = one(render(helm), "ClusterRole")
    assert grants(role["rules"]) == {**CRD_GRANT, **APPLICATION_GRANTS}


def test_every_kind_the_operator_prunes_may_be_deleted(helm: str) -> None:
    """children.prune deletes kinds.PRUNED: without the grant each prune is a 403
    and the pass fails again and again."""
    from tfserving_operator import kinds

    table = grants(one(render(helm), "ClusterRole")["rules"])
    for info in kinds.KINDS:
        if info.pruned:
            assert "delete" in table.get((info.group, info.plural), set()), info


def test_rbac_never_grants_secrets_or_wildcards(helm: str) -> None:
    for sets in [(), ("watchNamespaces={a,b}", "ha.enabled=true"), ("ha.enabled=true",)]:
        for doc in render(helm, *sets):
            if doc["kind"] not in ("ClusterRole", "Role"):
                continue
            for rule in doc["rules"]:
                assert "secrets" not in rule["resources"], rule
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                # Nothing is read one by one, nothing is replaced whole (PUT),
                # and nothing about RBAC itself.
                assert not {"get", "escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
                if "update" in rule["verbs"]:
                    assert rule["resources"] == ["servedmodels/finalizers"], rule


def test_every_rbac_rule_says_why(helm: str) -> None:
    """Each rule in the rendered roles is preceded by a comment naming its owner."""
    for sets in [(), ("watchNamespaces={a}", "ha.enabled=true"), ("ha.enabled=true",)]:
        text = render_text(helm, *sets)
        for document in text.split("\n---\n"):
            if not re.search(r"^kind: (Cluster)?Role$", document, re.M):
                continue
            lines = document.splitlines()
            rules_at = lines.index("rules:")
            for i in range(rules_at + 1, len(lines)):
                if lines[i].startswith("- apiGroups:"):
                    assert re.match(r"# (Framework|Application)\b", _comment_above(lines, i)), (
                        f"rule without a reason: {lines[i]} {lines[i + 1]}"
                    )


def _comment_above(lines: list[str], index: int) -> str:
    """The first line of the comment block right above lines[index] ('' if none)."""
    start = index
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    return lines[start] if start < index else ""


def test_namespaced_rbac_is_a_role_per_namespace(helm: str) -> None:
    docs = render(helm, "watchNamespaces={team-a,team-b}")
    env = env_of(one(docs, "Deployment"))
    assert env["TFSO_NAMESPACES"] == "team-a,team-b"
    # Cluster-wide only what kopf needs to follow CRDs and namespaces: read-only.
    assert grants(one(docs, "ClusterRole")["rules"]) == {**CRD_GRANT, **NAMESPACE_GRANT}
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert grants(role["rules"]) == APPLICATION_GRANTS
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-tfserving-operator", "namespace": "tfso-system"}
        ]
        assert binding["roleRef"]["kind"] == "Role"


def test_ha_peers_two_replicas(helm: str) -> None:
    docs = render(helm, "ha.enabled=true")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env_of(deployment)["TFSO_PEERING"] == "rel-tfserving-operator"
    assert "TFSO_PEERING_PRIORITY" not in env_of(deployment)  # each replica draws its own
    peering = one(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "rel-tfserving-operator"
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    table = grants(one(docs, "ClusterRole")["rules"])
    assert table[("kopf.dev", "clusterkopfpeerings")] == {"list", "watch", "patch"}
    (patch_rule,) = [
        r
        for r in one(docs, "ClusterRole")["rules"]
        if r["apiGroups"] == ["kopf.dev"] and "patch" in r["verbs"]
    ]
    assert patch_rule["resourceNames"] == ["rel-tfserving-operator"]


def test_namespaced_ha_peers_in_each_namespace(helm: str) -> None:
    docs = render(helm, "ha.enabled=true", "watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterKopfPeering")
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    for role in by_kind(docs, "Role"):
        assert grants(role["rules"])[("kopf.dev", "kopfpeerings")] == {"list", "watch", "patch"}
    assert ("kopf.dev", "clusterkopfpeerings") not in grants(one(docs, "ClusterRole")["rules"])


def test_settings_values_become_env(helm: str) -> None:
    deployment = one(
        render(
            helm,
            "operator.labelSelector.team=vision",
            "operator.labelSelector.tier=gold",
            "operator.defaultImage=registry.local/serving:2.19.1",
            "operator.extraEnv[0].name=TFSO_PROBE_TIMEOUT_SECONDS",
            "operator.extraEnv[0].value=1.5",
            "operator.logLevel=DEBUG",
        ),
        "Deployment",
    )
    env = env_of(deployment)
    assert env["TFSO_LABEL_SELECTOR"] == "team=vision,tier=gold"
    assert env["TFSO_DEFAULT_IMAGE"] == "registry.local/serving:2.19.1"
    assert env["TFSO_PROBE_TIMEOUT_SECONDS"] == "1.5"
    assert env["TFSO_LOG_LEVEL"] == "DEBUG"


def test_rendered_env_is_accepted_by_the_operator_settings(helm: str) -> None:
    """What the chart sets, the operator's own settings loader accepts."""
    from tfserving_operator.settings import Settings

    docs = render(helm, "ha.enabled=true", "watchNamespaces={a,b}", "operator.labelSelector.x=y")
    settings = Settings.from_env(env_of(one(docs, "Deployment")))
    assert settings.namespaces == ("a", "b")
    assert settings.peering == "rel-tfserving-operator"
    assert settings.label_selector == {"x": "y"}


@pytest.mark.parametrize("sets", [(), ("nameOverride=serving-ops",)])
def test_network_policy_peer_is_the_operator_pods_own_labels(
    helm: str, sets: tuple[str, ...]
) -> None:
    """ServedModel NetworkPolicies admit the operator by the labels its pods carry,
    in the namespace it runs in, whatever nameOverride makes of its name."""
    from tfserving_operator.settings import Settings

    deployment = one(render(helm, *sets), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    by_name = {e["name"]: e for e in container["env"]}
    assert by_name["TFSO_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    peer = Settings.from_env(env_of(deployment)).operator_peer()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert peer.pod_labels, "no labels: the peer would admit every pod of the namespace"
    assert dict(peer.pod_labels).items() <= pod_labels.items()
    expected_name = "serving-ops" if sets else "tfserving-operator"
    assert peer.pod_labels["app.kubernetes.io/name"] == expected_name
    assert peer.pod_labels["app.kubernetes.io/instance"] == "rel"


def test_health_service(helm: str) -> None:
    docs = render(helm, "healthService.enabled=true", "metrics.service.enabled=false")
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "health"


def test_metrics_service_by_default_and_no_monitors_unless_asked(helm: str) -> None:
    docs = render(helm)
    service = one(docs, "Service")
    assert service["metadata"]["name"] == "rel-tfserving-operator-metrics"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "PodMonitor")


def test_metrics_port_zero_turns_the_endpoint_and_its_objects_off(helm: str) -> None:
    docs = render(helm, "operator.metricsPort=0", "metrics.serviceMonitor.enabled=true")
    assert not by_kind(docs, "Service") and not by_kind(docs, "ServiceMonitor")
    deployment = one(docs, "Deployment")
    assert env_of(deployment)["TFSO_METRICS_PORT"] == "0"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == ["health"]


def test_service_monitor_scrapes_the_metrics_port(helm: str) -> None:
    docs = render(
        helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"
    )
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["tfso-system"]}


def test_pod_monitor_scrapes_model_servers_that_turn_monitoring_on(helm: str) -> None:
    from tfserving_operator import api

    docs = render(helm, "metrics.podMonitor.enabled=true")
    monitor = one(docs, "PodMonitor")
    spec = monitor["spec"]
    assert spec["selector"]["matchExpressions"] == [
        {"key": api.LABEL_SERVEDMODEL, "operator": "Exists"}
    ]
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints"]
    # The model server's REST port name and TF Serving's default metrics path.
    assert (endpoint["port"], endpoint["path"]) == ("http", "/monitoring/prometheus/metrics")
    keep = endpoint["relabelings"][0]
    assert keep["sourceLabels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert (keep["regex"], keep["action"]) == ("true", "keep")
    scoped = render(helm, "metrics.podMonitor.enabled=true", "metrics.podMonitor.namespaces={ml}")
    assert one(scoped, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_notes_say_what_to_do_next() -> None:
    """NOTES.txt (shown after install; the cluster test reads it back) names the next steps."""
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    for expected in (
        "rollout status deployment/",
        "manifests/mnist-servedmodel.yaml",
        "kubectl get sm",
        "kubectl wait sm/mnist",
        "--for=condition=Ready",
    ):
        assert expected in notes


# ----- manifests/ --------------------------------------------------------------


def _install_documents() -> Iterator[Doc]:
    yield from (d for d in yaml.safe_load_all(INSTALL_YAML.read_text()) if d)


def test_install_yaml_is_the_rendered_chart(helm: str) -> None:
    """manifests/install.yaml = a Namespace + `helm template` of the chart (make manifests)."""
    rendered = subprocess.run(
        [helm, "template", "tfserving-operator", str(CHART), "--namespace", INSTALL_NAMESPACE,
         "--include-crds"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    text = INSTALL_YAML.read_text()
    assert text.endswith(rendered), "manifests/install.yaml is stale: run `make manifests`"
    head = [d for d in yaml.safe_load_all(text[: -len(rendered)]) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in head] == [("Namespace", INSTALL_NAMESPACE)]
    assert head[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_install_yaml_objects() -> None:
    docs = list(_install_documents())
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "Service",
        "ServiceAccount",
    ]
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert "servedmodels.serving.tfoperator.dev" in crds
    for doc in docs:
        if doc["kind"] in ("Deployment", "Service", "ServiceAccount"):
            assert doc["metadata"]["namespace"] == INSTALL_NAMESPACE


def test_kustomization_renders_install_yaml() -> None:
    kustomization = yaml.safe_load((REPO_ROOT / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["install.yaml"]
    kubectl = REPO_ROOT / ".sim" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip("no kubectl (make sim-up links one)")
    built = subprocess.run(
        [str(kubectl), "kustomize", str(REPO_ROOT / "manifests")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built) if d}
    assert names == {(d["kind"], d["metadata"]["name"]) for d in _install_documents()}


# ----- the operator image ------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_dockerfile_is_runtime_only_non_root_on_one_base_argument() -> None:
    instructions = _dockerfile_instructions()
    # One recipe, two bases: the official Python image by default (Docker
    # users), the Debian-built base from `make image`.
    args = [rest for word, rest in instructions if word == "ARG"]
    assert "BASE_IMAGE=python:3.11-slim" in args
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert bases and all(b == "${BASE_IMAGE}" for b in bases), bases
    runs = [json.loads(rest) for word, rest in instructions if word == "RUN"]
    # Exec form only: the Debian-built base has no shell.
    installs = [r for r in runs if "install" in r]
    assert len(installs) == 1, runs
    (install,) = installs
    assert "--no-index" in install and "--requirement=/build/requirements.txt" in install
    assert not any("tensorflow" in rest.lower() for word, rest in instructions if word != "#")
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    # The chart runs the pod as the image's user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    entrypoints = [json.loads(rest) for word, rest in instructions if word == "ENTRYPOINT"]
    assert entrypoints == [["python3.11", "-m", "tfserving_operator"]]
    labels = " ".join(rest for word, rest in instructions if word == "LABEL")
    for key in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_image_lock_pins_every_runtime_dependency_within_its_bounds() -> None:
    from packaging.utils import canonicalize_name

    from localdev.image.lock import read_lock, runtime_requirements

    pins = read_lock()
    assert "tensorflow" not in pins and "tensorflow-serving-api" not in pins
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} missing from operator/requirements-image.txt: make image-lock"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {req.specifier}"


def test_console_script_is_the_image_entry_point() -> None:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    # The image runs `python3.11 -m tfserving_operator`: the same function.
    assert project["scripts"]["tfserving-operator"] == "tfserving_operator.__main__:main"
    runtime = " ".join(project["dependencies"]).lower()
    assert "tensorflow" not in runtime


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything is excluded first"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {"dist/image"}, "the build context is the wheels only"


# ----- the Grafana dashboard ---------------------------------------------------

DASHBOARD = CHART / "dashboards" / "tfserving-operator.json"
# TF Serving's own metrics on /monitoring/prometheus/metrics, as its exporter
# names them ('/' -> ':'; tensorflow_serving/util/prometheus_exporter.cc and
# servables/tensorflow/util.cc at 2.20.0): a counter, and a histogram of
# microseconds.
TF_SERVING_FAMILIES = {
    ":tensorflow:serving:request_count": ("model_name", "status"),
    ":tensorflow:serving:request_latency": ("model_name", "API", "entrypoint"),
}
METRIC_NAME = re.compile(r"(?<![\w:])(tfserving_operator_\w+|:tensorflow:[\w:]+)")


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def _exposed_names() -> set[str]:
    """Every series name a scrape can return: operator families with their
    histogram suffixes, and TF Serving's."""
    from prometheus_client import generate_latest

    from tfserving_operator.metrics import Metrics

    metrics = Metrics()
    # One observation per labelled family, so every series name shows up.
    metrics.observe_pass("success", 0.1)
    metrics.observe_request("GET", 200)
    metrics.observe_probe("ok", 0.01)
    metrics.observe_gate(True, "ModelAvailable")
    metrics.gate_latency.observe(1.0)
    metrics.refusals.labels("VersionLoadFailed").inc()
    metrics.set_servedmodel("ml", "m", ready=1, versions=[1])
    names = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line and not line.startswith("#")
    }
    for family in TF_SERVING_FAMILIES:
        names |= {family, f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return names


def test_every_dashboard_query_names_metrics_that_exist() -> None:
    exprs = _dashboard_exprs()
    assert exprs, "the dashboard has no queries"
    exposed = _exposed_names()
    for expr in exprs:
        named = METRIC_NAME.findall(expr)
        assert named, f"query names no metric: {expr}"
        for name in named:
            assert name in exposed, f"{name} (in {expr!r}) is not a metric anyone exposes"


def test_the_dashboard_shows_every_operator_family() -> None:
    from tfserving_operator.metrics import Metrics

    queried = {name for expr in _dashboard_exprs() for name in METRIC_NAME.findall(expr)}
    for family in Metrics().family_names():
        suffixed = {family, f"{family}_bucket"}
        assert queried & suffixed, f"no panel shows {family}"


def test_dashboard_configmap_carries_the_json_when_enabled(helm: str) -> None:
    assert not by_kind(render(helm), "ConfigMap")
    config_map = one(render(helm, "metrics.dashboard.enabled=true"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    embedded = json.loads(config_map["data"]["tfserving-operator.json"])
    assert embedded == json.loads(DASHBOARD.read_text())
