"""metrics.k8s.io in the local cluster: metrics-server scraping kwok's emulated
kubelet /metrics/resource, where a pod's usage is its kwok.x-k8s.io/usage-cpu
annotation (localdev/sim/kwok-metrics.yaml)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from localdev.support.waiting import wait_until


def pod_cpu_nanocores(api_client: Any, namespace: str, name: str) -> int:
    """The pod's CPU in metrics.k8s.io (what `kubectl top pods` prints), in nanocores."""
    metrics = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", namespace, "pods", name
    )
    usage = metrics["containers"][0]["usage"]["cpu"]
    assert usage.endswith("n"), usage
    return int(usage[:-1])


def test_metrics_api_reports_the_annotated_usage_and_follows_a_change(sim, api_client, namespace):
    core = client.CoreV1Api(api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "busy", "annotations": {"kwok.x-k8s.io/usage-cpu": "250m"}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }
    core.create_namespaced_pod(namespace, pod)
    # A rate needs two scrapes (10 s apart here): the first value takes ~20 s.
    wait_until(
        lambda: 200e6 <= pod_cpu_nanocores(api_client, namespace, "busy") <= 300e6,
        timeout=90,
        what="metrics.k8s.io to report about 250m for the pod",
    )
    patch = {"metadata": {"annotations": {"kwok.x-k8s.io/usage-cpu": "1"}}}
    core.patch_namespaced_pod("busy", namespace, patch)
    wait_until(
        lambda: pod_cpu_nanocores(api_client, namespace, "busy") >= 900e6,
        timeout=90,
        what="metrics.k8s.io to follow the usage up to about 1 core",
    )
    nodes = client.CustomObjectsApi(api_client).list_cluster_custom_object(
        "metrics.k8s.io", "v1beta1", "nodes"
    )
    assert {n["metadata"]["name"] for n in nodes["items"]} == {
        n.metadata.name for n in core.list_node(label_selector="type=kwok").items
    }
