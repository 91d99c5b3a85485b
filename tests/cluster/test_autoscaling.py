"""spec.autoscaling against the real HPA controller and metrics-server (issue 16).

The local cluster's metrics API is real: metrics-server scrapes kwok's
kubelet-style /metrics/resource, whose usage comes from each pod's
kwok.x-k8s.io/usage-cpu annotation (localdev/sim/kwok-metrics.yaml). `CpuLoad`
plays the traffic: a total CPU load spread over the pods that are Ready, as a
Service would spread requests; a pod not Ready (its gate still closed) gets
none. The HPA controller syncs every 5 s here (cluster.HPA_SYNC_PERIOD; 15 s
by default), metrics-server scrapes every 10 s.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localdev.sim.cluster import SimCluster
from localdev.support.clients import PodInfo, PodWatcher
from localdev.support.k8s import condition, custom, get_sm, patch_sm, wait_sm
from localdev.support.waiting import wait_until
from tfserving_operator import api

MODEL = "half_plus_three"
USAGE_CPU = "kwok.x-k8s.io/usage-cpu"
GITOPS = "gitops"  # the field manager a GitOps tool applies the ServedModel with

Body = dict[str, Any]


class CpuLoad:
    """A total CPU load (millicores) spread evenly over the ServedModel's Ready pods."""

    def __init__(self, api_client: Any, watcher: PodWatcher) -> None:
        self.core = client.CoreV1Api(api_client)
        self.watcher = watcher
        self.total_millicores = 0
        self._set: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-load", daemon=True)

    def __enter__(self) -> CpuLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pods = self.watcher.pods()
            serving = [p for p in pods.values() if p.serving]
            share = f"{self.total_millicores // max(len(serving), 1)}m"
            for pod in pods.values():
                wanted = share if pod.serving and self.total_millicores else None
                if self._set.get(pod.name, "unset") != wanted:
                    self._annotate(pod.name, wanted)
            self._stop.wait(0.5)

    def _annotate(self, pod: str, usage: str | None) -> None:
        try:
            patch = {"metadata": {"annotations": {USAGE_CPU: usage}}}
            self.core.patch_namespaced_pod(pod, self.watcher.namespace, patch)
            self._set[pod] = usage
        except client.ApiException as err:
            if err.status != 404:  # gone meanwhile: nothing to load
                raise


def gitops_apply(api_client: Any, namespace: str, body: Body) -> Body:
    """Server-side apply of the whole ServedModel, as a GitOps tool does."""
    result: Body = custom(api_client).patch_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, body["metadata"]["name"], body,
        field_manager=GITOPS, force=True, _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    return result


def manifest(name: str, base: Path, version: int, replicas: int, autoscaling: Body | None) -> Body:
    spec: Body = {
        "modelName": MODEL,
        "storage": {"hostPath": {"path": str(base)}},
        "version": version,
        "replicas": replicas,
        # The HPA's utilisation is usage over this request.
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def deployment(api_client: Any, namespace: str, name: str) -> Any:
    return client.AppsV1Api(api_client).read_namespaced_deployment(name, namespace)


def replicas_owners(dep: Any) -> set[str]:
    """Field managers owning the Deployment's spec.replicas."""
    return {
        entry.manager
        for entry in dep.metadata.managed_fields or ()
        if "f:replicas" in ((entry.fields_v1 or {}).get("f:spec") or {})
    }


def hpa(api_client: Any, namespace: str, name: str) -> Any:
    return client.AutoscalingV2Api(api_client).read_namespaced_horizontal_pod_autoscaler(
        name, namespace
    )


def wait_ready(api_client: Any, namespace: str, name: str, versions: str, replicas: int) -> Body:
    def done(body: Body) -> bool:
        status = body.get("status") or {}
        return (
            status.get("observedGeneration") == body["metadata"]["generation"]
            and condition(body, "Ready").get("status") == "True"
            and status.get("servingVersions") == versions
            and status.get("readyReplicas") == replicas
            and not status.get("rollout")
        )

    what = f"Ready, {replicas} replicas serving {versions}"
    return wait_sm(api_client, namespace, name, what, done, timeout=120)


def pod_metrics(api_client: Any, namespace: str) -> list[Body]:
    """`kubectl top pods`: the metrics.k8s.io PodMetrics of the namespace."""
    listed = custom(api_client).list_namespaced_custom_object(
        "metrics.k8s.io", "v1beta1", namespace, "pods"
    )
    return list(listed["items"])


def never_ready_before_the_gate(history: list[tuple[float, PodInfo]]) -> list[str]:
    """Pods seen Ready while their availability gate was not True."""
    return sorted({info.name for _, info in history if info.ready and info.gate != "True"})


@pytest.fixture
def watcher(api_client: Any, namespace: str) -> Iterator[PodWatcher]:
    with PodWatcher(api_client, namespace, "auto") as pods:
        yield pods


@pytest.mark.usefixtures("operator")
def test_load_scales_up_through_the_gate_keeps_capacity_and_scales_down(
    api_client: Any, namespace: str, model_store: Path, watcher: PodWatcher, sim: SimCluster
) -> None:
    base = model_store / MODEL
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCPUUtilization": 50,
        # The HPA's default waits 300 s before scaling down; the test, none.
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
    }
    gitops_apply(api_client, namespace, manifest("auto", base, 1, 1, autoscaling))
    wait_ready(api_client, namespace, "auto", "1", 1)
    wait_until(
        lambda: pod_metrics(api_client, namespace),
        timeout=60,
        what="metrics.k8s.io to have the pod's metrics (kubectl top pods)",
    )
    top = subprocess.run(
        [str(sim.kubectl_path()), f"--kubeconfig={sim.kubeconfig}", "top", "pods", "-n", namespace,
         "--no-headers"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert top.split()[0] in watcher.pods()

    with CpuLoad(api_client, watcher) as load:
        # 300m over one 100m request is 300%: the HPA wants 6, capped at 3.
        step, step_wall = time.monotonic(), time.time()
        load.total_millicores = 300
        assert watcher.wait(lambda pods: sum(p.serving for p in pods.values()) >= 3, 180), (
            f"not scaled up to 3 serving replicas: {watcher.pods()}"
        )
        newest = max(watcher.ready_at.values())
        # A figure for docs/autoscaling.md, not an assertion (the timing is the
        # HPA's and metrics-server's periods plus a model load).
        decided = hpa(api_client, namespace, "auto").status.last_scale_time.timestamp()
        print(
            f"\nload step -> HPA scaled: {decided - step_wall:.0f} s (1 s resolution); "
            f"-> 3rd replica serving: {newest - step:.1f} s"
        )
        dep = deployment(api_client, namespace, "auto")
        assert dep.spec.replicas == 3
        assert api.FIELD_MANAGER not in replicas_owners(dep)
        body = get_sm(api_client, namespace, "auto")
        assert body["status"]["autoscaling"]["desiredReplicas"] == 3
        assert "spec.replicas (1) is ignored" in body["status"]["autoscaling"]["message"]

        # GitOps applies the next version with the same replicas: 1 it always
        # had: a rollout, with the count (and the capacity) the HPA set.
        rollout_start, before = time.monotonic(), watcher.pods()
        gitops_apply(api_client, namespace, manifest("auto", base, 2, 1, autoscaling))
        wait_ready(api_client, namespace, "auto", "2", 3)
        assert deployment(api_client, namespace, "auto").spec.replicas == 3
        during = [(at, info) for at, info in watcher.history if at >= rollout_start]
        assert min(serving_counts(before, during)) >= 3

        load.total_millicores = 0
        wait_until(
            lambda: deployment(api_client, namespace, "auto").spec.replicas == 1,
            timeout=120,
            what="the HPA to scale back to minReplicas (1) once the load is gone",
        )
        wait_ready(api_client, namespace, "auto", "2", 1)
    assert never_ready_before_the_gate(watcher.history) == []


def serving_counts(before: dict[str, PodInfo], history: list[tuple[float, PodInfo]]) -> list[int]:
    """The number of serving pods from `before` on, after each watch event replayed in order."""
    current = {name: info.serving for name, info in before.items()}
    counts = [sum(current.values())]
    for _, info in history:
        current[info.name] = info.serving
        counts.append(sum(current.values()))
    return counts


@pytest.mark.usefixtures("operator")
def test_turning_autoscaling_on_keeps_the_count_and_off_hands_it_back(
    api_client: Any, namespace: str, model_store: Path
) -> None:
    base = model_store / MODEL
    gitops_apply(api_client, namespace, manifest("auto", base, 1, 2, None))
    wait_ready(api_client, namespace, "auto", "1", 2)
    assert api.FIELD_MANAGER in replicas_owners(deployment(api_client, namespace, "auto"))

    # On, with minReplicas 1: the count stays 2 (server-side apply would have
    # removed the field and reset it to 1 without the handover). The HPA's
    # default downscale stabilisation (5 min) keeps it at 2 meanwhile.
    auto = {"minReplicas": 1, "maxReplicas": 4}
    gitops_apply(api_client, namespace, manifest("auto", base, 1, 2, auto))
    wait_until(
        lambda: hpa(api_client, namespace, "auto").status.current_replicas == 2,
        timeout=60,
        what="the HPA to have synced once (status.currentReplicas 2)",
    )
    dep = deployment(api_client, namespace, "auto")
    assert dep.spec.replicas == 2
    assert api.FIELD_MANAGER not in replicas_owners(dep)
    body = wait_sm(
        api_client, namespace, "auto", "status.autoscaling",
        lambda b: (b.get("status") or {}).get("autoscaling"),
    )  # fmt: skip
    assert body["status"]["autoscaling"]["scaler"] == "HorizontalPodAutoscaler/auto"

    # Off, with replicas 3: the operator takes the count back; the HPA goes.
    gitops_apply(api_client, namespace, manifest("auto", base, 1, 3, None))
    wait_ready(api_client, namespace, "auto", "1", 3)
    dep = deployment(api_client, namespace, "auto")
    assert dep.spec.replicas == 3
    assert api.FIELD_MANAGER in replicas_owners(dep)
    with pytest.raises(client.ApiException) as gone:
        hpa(api_client, namespace, "auto")
    assert gone.value.status == 404
    assert "autoscaling" not in get_sm(api_client, namespace, "auto")["status"]


@pytest.mark.usefixtures("operator")
def test_merge_patch_of_spec_replicas_is_ignored_while_autoscaling(
    api_client: Any, namespace: str, model_store: Path
) -> None:
    """`kubectl scale servedmodel` writes spec.replicas: ignored while the HPA owns the count."""
    base = model_store / MODEL
    auto = {"minReplicas": 2, "maxReplicas": 4}
    gitops_apply(api_client, namespace, manifest("auto", base, 1, 1, auto))
    wait_ready(api_client, namespace, "auto", "1", 2)
    patched = patch_sm(api_client, namespace, "auto", {"spec": {"replicas": 4}})
    generation = patched["metadata"]["generation"]
    wait_sm(
        api_client, namespace, "auto", "the new generation observed",
        lambda b: (b.get("status") or {}).get("observedGeneration") == generation,
    )  # fmt: skip
    assert deployment(api_client, namespace, "auto").spec.replicas == 2
    status = get_sm(api_client, namespace, "auto")["status"]
    assert "spec.replicas (4) is ignored" in status["autoscaling"]["message"]
