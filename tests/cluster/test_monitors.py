"""The chart's ServiceMonitor and PodMonitor against the real Prometheus
Operator CRDs (from the Go module proxy: localdev/support/prometheus_crds.py),
applied in the local cluster, whose API server validates them against the
CRDs' schemas."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from localdev.sim.cluster import SimCluster
from localdev.support.prometheus_crds import crd_paths
from tests.contract.test_chart import CHART, helm_binary


def kubectl(
    sim: SimCluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(sim.kubectl_path()), "--kubeconfig", str(sim.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def monitor_crds(sim: SimCluster) -> None:
    try:
        paths = crd_paths()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    for path in paths:
        applied = kubectl(sim, "apply", "--server-side", "--field-manager=test", "-f", str(path))
        assert applied.returncode == 0, applied.stderr
        sim.wait_established(path)


def monitors(namespace: str) -> list[dict[str, Any]]:
    helm = helm_binary()
    if helm is None:
        pytest.skip("no helm binary (make sim-build, or helm on PATH)")
    rendered = subprocess.run(
        [helm, "template", "rel", str(CHART), "--namespace", namespace,
         "--show-only", "templates/metrics.yaml",
         "--set", "metrics.serviceMonitor.enabled=true",
         "--set", "metrics.serviceMonitor.labels.release=prometheus",
         "--set", "metrics.podMonitor.enabled=true"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    return [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor")]


def test_the_charts_monitors_apply_against_the_real_crds(
    sim: SimCluster, monitor_crds: None, namespace: str
) -> None:
    objects = monitors(namespace)
    assert sorted(o["kind"] for o in objects) == ["PodMonitor", "ServiceMonitor"]
    for obj in objects:
        # Strict field validation: a field the CRD's schema does not know fails too.
        applied = kubectl(sim, "apply", "--server-side", "--field-manager=test",
                          "--validate=strict", "-f", "-", stdin=yaml.safe_dump(obj))  # fmt: skip
        assert applied.returncode == 0, (obj["kind"], applied.stderr)
    for kind in ("servicemonitor", "podmonitor"):
        listed = kubectl(sim, "get", kind, "-n", namespace, "-o", "name")
        assert listed.stdout.strip(), f"no {kind} in {namespace}"


def test_the_crds_do_reject_a_wrong_monitor(
    sim: SimCluster, monitor_crds: None, namespace: str
) -> None:
    """The check above can fail: an unknown field in an endpoint is refused."""
    (service_monitor,) = [o for o in monitors(namespace) if o["kind"] == "ServiceMonitor"]
    service_monitor["spec"]["endpoints"][0]["scrapePath"] = "/metrics"
    wrong = yaml.safe_dump(service_monitor)
    applied = kubectl(sim, "apply", "--server-side", "--field-manager=test",
                      "--validate=strict", "-f", "-", stdin=wrong)  # fmt: skip
    assert applied.returncode != 0
    assert "scrapePath" in applied.stderr
