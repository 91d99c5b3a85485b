"""The operator image runs for real (issue 17): built by `make image`'s code
(localdev/image/build.py), started with podman as the chart starts it (its
user, env and args, read-only root file system, no capabilities), on the
host network to reach the local API server and the model servers. It
reconciles a ServedModel, answers /healthz, serves /metrics and exits 0 on
SIGTERM.

Skipped, saying why, where podman, runc or mmdebstrap is missing (`.ci/run`
installs them).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from localdev.image import build
from localdev.sim.cluster import SimCluster
from localdev.support.k8s import create_sm, servedmodel, wait_condition
from localdev.support.models import make_model_dir
from localdev.support.operator import free_port
from localdev.support.waiting import wait_until
from tests.cluster.test_observability import families
from tests.contract.test_chart import CHART, helm_binary
from tests.unit.test_metrics import EXPECTED_FAMILIES

REQUIRED_TOOLS = ("podman", "runc", "mmdebstrap")
MOUNTED_KUBECONFIG = "/var/run/tfso/kubeconfig"


@pytest.fixture(scope="module")
def image() -> str:
    """The operator image, built now (the base and wheels come from caches when warm)."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"the image test needs {', '.join(missing)} (apt-get install podman runc "
            "mmdebstrap; .ci/run installs them)"
        )
    base = build.base_image()
    build.wheels()
    ref = build.build(base)
    build.smoke(ref)
    return ref


def flat_kubeconfig(sim: SimCluster, target: Path) -> Path:
    """The admin kubeconfig with its certificates inlined, readable by the image's user."""
    config = yaml.safe_load(sim.kubeconfig.read_text())
    for entry in config["clusters"]:
        cluster = entry["cluster"]
        path = cluster.pop("certificate-authority")
        cluster["certificate-authority-data"] = base64.b64encode(Path(path).read_bytes()).decode()
    for entry in config["users"]:
        user = entry["user"]
        for field in ("client-certificate", "client-key"):
            user[f"{field}-data"] = base64.b64encode(Path(user.pop(field)).read_bytes()).decode()
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o644)  # the container's user is not root; a test cluster's throwaway key
    return target


def chart_container(namespace: str, liveness: int, metrics: int) -> dict[str, Any]:
    """The operator container and pod security context as the chart renders them."""
    helm = helm_binary()
    if helm is None:
        pytest.skip("no helm binary (make sim-build, or helm on PATH)")
    rendered = subprocess.run(
        [helm, "template", "rel", str(CHART),
         "--show-only", "templates/deployment.yaml",
         "--set", f"watchNamespaces={{{namespace}}}",
         "--set", f"operator.livenessPort={liveness}",
         "--set", f"operator.metricsPort={metrics}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    pod = yaml.safe_load(rendered)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return {"container": container, "pod_security": pod["securityContext"]}


# The downward API fields the chart's env reads, as the kubelet would fill them
# for a pod of the release `helm template` rendered (namespace "default").
DOWNWARD_API = {"metadata.namespace": "default"}


def _env_value(var: dict[str, Any]) -> str:
    if "value" in var:
        return str(var["value"])
    field = var["valueFrom"]["fieldRef"]["fieldPath"]  # the only valueFrom the chart uses
    return DOWNWARD_API[field]


def podman_run_args(chart: dict[str, Any], kubeconfig: Path, name: str, image: str) -> list[str]:
    """`podman run` arguments that start the image the way the chart's pod does."""
    container, pod_security = chart["container"], chart["pod_security"]
    security = container["securityContext"]
    user = f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"
    args = ["run", "--detach", "--name", name, "--network", "host", "--user", user]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if not security.get("allowPrivilegeEscalation", True):
        args += ["--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={cap}" for cap in security["capabilities"]["drop"]]
    for mount in container.get("volumeMounts", []):  # the chart's emptyDirs
        args += ["--tmpfs", mount["mountPath"]]
    for var in container["env"]:
        args += ["--env", f"{var['name']}={_env_value(var)}"]
    args += ["--volume", f"{kubeconfig}:{MOUNTED_KUBECONFIG}:ro"]
    args += ["--env", f"KUBECONFIG={MOUNTED_KUBECONFIG}", image, *container.get("args", [])]
    return args


@pytest.fixture
def own_namespace(api_client: Any) -> Iterator[str]:
    """A namespace outside the session operator's pattern: only the container acts here."""
    core = client.CoreV1Api(api_client)
    name = f"img-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_until(
        lambda: core.list_namespaced_service_account(name).items,
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def test_the_image_reconciles_serves_health_and_metrics_and_stops_on_sigterm(
    image: str,
    sim: SimCluster,
    crds: None,
    api_client: Any,
    own_namespace: str,
    model_store: Path,
    tmp_path: Path,
) -> None:
    liveness, metrics = free_port(), free_port()
    chart = chart_container(own_namespace, liveness, metrics)
    assert chart["container"]["securityContext"]["readOnlyRootFilesystem"] is True
    kubeconfig = flat_kubeconfig(sim, tmp_path / "kubeconfig")
    name = f"tfso-image-test-{uuid.uuid4().hex[:8]}"
    build.podman(*podman_run_args(chart, kubeconfig, name, image))
    try:

        def logs() -> str:
            return build.podman("logs", "--tail", "30", name, capture=True)

        health = json.loads(
            wait_until(
                lambda: get(f"http://127.0.0.1:{liveness}/healthz"),
                timeout=90,
                what="the container's /healthz",
                describe=logs,
            )
        )
        assert "servedmodels" in health, health

        base = make_model_dir(model_store, "image", good=(1,))
        spec = {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": str(base)}},
            "version": 1,
        }
        create_sm(api_client, own_namespace, servedmodel("image", spec))
        body = wait_condition(api_client, own_namespace, "image", "Ready")
        assert body["status"]["servingVersions"] == "1"

        text = get(f"http://127.0.0.1:{metrics}/metrics")
        assert families(text) >= EXPECTED_FAMILIES, EXPECTED_FAMILIES - families(text)
        assert f'name="image",namespace="{own_namespace}"' in text

        build.podman("stop", "--time", "30", name)
        state = json.loads(
            build.podman("inspect", "--format", "{{json .State}}", name, capture=True)
        )
        # 0: kopf handled SIGTERM and exited (137 would be podman's SIGKILL after 30 s).
        assert state["ExitCode"] == 0, (state, logs())
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--time", "0", name],
            env=build.podman_env(),
            capture_output=True,
        )
