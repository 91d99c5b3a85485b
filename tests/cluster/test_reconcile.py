"""The core reconcile, with the operator running against the local cluster.

Create, update (replicas, resources, version), drift correction, deletion by
garbage collection, GPU placement and an unfittable GPU request; kubectl
scale and kubectl wait through the real binary. The stand-in model server
serves every Running pod from the rendered config and the hostPath folder,
so "Ready" here means a model server reported the versions AVAILABLE.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.sim.nodes import MAX_GPUS_PER_NODE, MIG_RESOURCE, SIM_NODES
from localdev.support.k8s import (
    condition,
    create_sm,
    delete_sm,
    get_sm,
    patch_sm,
    pods_of,
    servedmodel,
    wait_condition,
    wait_sm,
)
from localdev.support.models import make_model_dir
from localdev.support.waiting import wait_until
from tfserving_operator import api, render, spec
from tfserving_operator.children import contains
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

GPU_NODES = {n.name for n in SIM_NODES if n.gpus}
MIG_NODES = {n.name for n in SIM_NODES if n.mig_slices}
SELECTOR = api.LABEL_SERVEDMODEL


def model_spec(base: Path, **extra: Any) -> dict[str, Any]:
    return {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(base)}},
        "version": 1,
        **extra,
    }


def raw(api_client: Any, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """An object exactly as the API serves it (the typed clients drop fields)."""
    from tfserving_operator.kube import path_for

    request = api_client.param_serialize(
        method="GET",
        resource_path=path_for(kind, namespace, name),
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*request)
    response.read()
    assert response.status == 200, response.data
    result: dict[str, Any] = json.loads(response.data)
    return result


def kubectl(sim: Any, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(sim.kubectl_path()), f"--kubeconfig={sim.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Children:
    """What exists in the namespace for one ServedModel, read fresh each time."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        self.api_client = api_client
        self.ns = namespace
        self.name = name
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.policy = client.PolicyV1Api(api_client)

    def _labelled(self) -> str:
        return f"{SELECTOR}={self.name}"

    def deployment(self) -> Any:
        return self.apps.read_namespaced_deployment(self.name, self.ns)

    def services(self) -> dict[str, Any]:
        items = self.core.list_namespaced_service(self.ns, label_selector=self._labelled()).items
        return {s.metadata.name: s for s in items}

    def config_maps(self) -> dict[str, Any]:
        items = self.core.list_namespaced_config_map(self.ns, label_selector=self._labelled()).items
        return {c.metadata.name: c for c in items}

    def pdbs(self) -> list[Any]:
        return list(
            self.policy.list_namespaced_pod_disruption_budget(
                self.ns, label_selector=self._labelled()
            ).items
        )

    def deployments(self) -> list[Any]:
        return list(
            self.apps.list_namespaced_deployment(self.ns, label_selector=self._labelled()).items
        )

    def describe(self) -> str:
        try:
            sm = get_sm(self.api_client, self.ns, self.name)
            status = sm.get("status") or {}
        except ApiException as err:
            status = {"error": err.status}
        pods = [
            (p.metadata.name, p.spec.node_name, p.status.phase)
            for p in pods_of(self.api_client, self.ns, self.name)
        ]
        return f"status={status} pods={pods} pdbs={[p.metadata.name for p in self.pdbs()]}"


def rendered(body: dict[str, Any]) -> render.Children:
    sm = spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)
    return render.render(sm, sm.target)


def ready(api_client: Any, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    return wait_condition(api_client, namespace, name, "Ready", timeout=timeout)


# ----- create -------------------------------------------------------------------


def test_create_renders_every_child_and_reports_ready(
    api_client, namespace, operator, model_store, sim
) -> None:
    base = make_model_dir(model_store, "create", good=(1,))
    create_sm(api_client, namespace, servedmodel("hpt", model_spec(base)))
    body = ready(api_client, namespace, "hpt")
    status = body["status"]
    uid = body["metadata"]["uid"]

    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["servingVersions"] == "1"
    assert status["targetVersions"] == "1"
    assert status["modelName"] == "half_plus_three"
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)
    assert status["endpoints"] == {
        "grpc": f"hpt-grpc.{namespace}.svc:8500",
        "rest": f"http://hpt-rest.{namespace}.svc:8501/v1/models/half_plus_three",
        "headless": f"hpt-headless.{namespace}.svc",
    }
    assert condition(body, "Ready")["reason"] == api.Reason.AVAILABLE
    assert condition(body, "Progressing")["status"] == "False"
    assert condition(body, "Degraded")["status"] == "False"
    for ctype in ("Ready", "Progressing", "Degraded"):
        assert condition(body, ctype)["observedGeneration"] == body["metadata"]["generation"]

    # Every child exists as rendered, owned by the ServedModel.
    children = Children(api_client, namespace, "hpt")
    expected = rendered(body)
    live = {
        ("Deployment", "hpt"),
        *(("Service", n) for n in children.services()),
        *(("ConfigMap", n) for n in children.config_maps()),
    }
    wanted = {(m["kind"], m["metadata"]["name"]): m for m in expected.all()}
    assert live == set(wanted)
    assert children.pdbs() == []
    for key in sorted(live):
        as_dict = raw(api_client, key[0], namespace, key[1])
        (owner,) = as_dict["metadata"]["ownerReferences"]
        assert owner["uid"] == uid and owner["controller"] is True, key
        # What the operator renders is what is there: no perpetual re-apply.
        assert contains(as_dict, wanted[key]), key
    (config_map,) = children.config_maps().values()
    assert config_map.immutable is True

    # The pod passed the model gate.
    (pod,) = pods_of(api_client, namespace, "hpt")
    gate = {c.type: c for c in pod.status.conditions}[api.GATE_CONDITION]
    assert gate.status == "True" and gate.reason == api.GateReason.AVAILABLE

    # kubectl get shows the printer columns.
    table = kubectl(sim, "get", "servedmodels", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "MODEL",
        "SERVING",
        "TARGET",
        "READY",
        "REPLICAS",
        "GPUS",
        "AGE",
    ]
    assert row.split()[:7] == ["hpt", "half_plus_three", "1", "1", "True", "1/1", "0"]

    # An Event records that it became Ready.
    def ready_event() -> bool:
        events = client.CoreV1Api(api_client).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name=hpt,involvedObject.kind={api.KIND}"
        )
        return any(e.reason == "Ready" for e in events.items)

    wait_until(ready_event, timeout=15, what="a Ready Event on hpt")


# ----- update -------------------------------------------------------------------


def test_replicas_follow_and_a_pdb_appears(api_client, namespace, operator, model_store) -> None:
    base = make_model_dir(model_store, "scale", good=(1,))
    create_sm(api_client, namespace, servedmodel("scaled", model_spec(base)))
    ready(api_client, namespace, "scaled")
    children = Children(api_client, namespace, "scaled")

    patch_sm(api_client, namespace, "scaled", {"spec": {"replicas": 3}})
    body = wait_sm(
        api_client,
        namespace,
        "scaled",
        "3 ready replicas",
        lambda b: (
            condition(b, "Ready").get("status") == "True"
            and (b.get("status") or {}).get("readyReplicas") == 3
            and b["status"].get("observedGeneration") == b["metadata"]["generation"]
        ),
    )
    assert body["status"]["replicasSummary"] == "3/3"
    assert children.deployment().spec.replicas == 3
    (pdb,) = children.pdbs()
    assert pdb.spec.max_unavailable == 1
    assert pdb.metadata.owner_references[0].controller is True

    patch_sm(api_client, namespace, "scaled", {"spec": {"replicas": 1}})
    wait_until(
        lambda: children.deployment().spec.replicas == 1,
        timeout=30,
        what="the Deployment back at 1 replica",
        describe=children.describe,
    )
    # Until the surplus pods are deleted the status truthfully says "3/1".
    wait_sm(
        api_client,
        namespace,
        "scaled",
        "1/1 replicas and Ready",
        lambda b: (
            (b.get("status") or {}).get("replicasSummary") == "1/1"
            and b["status"].get("replicas") == 1
            and condition(b, "Ready").get("status") == "True"
            and b["status"].get("observedGeneration") == b["metadata"]["generation"]
        ),
    )


def test_children_no_longer_rendered_are_deleted(
    api_client, namespace, operator, model_store
) -> None:
    base = make_model_dir(model_store, "prune", good=(1,))
    network_policy = {"clientSelector": {"matchLabels": {"app": "client"}}}
    sm_spec = model_spec(base, replicas=2, networkPolicy=network_policy)
    create_sm(api_client, namespace, servedmodel("pruned", sm_spec))
    ready(api_client, namespace, "pruned")
    children = Children(api_client, namespace, "pruned")
    networking = client.NetworkingV1Api(api_client)

    def policies() -> list[str]:
        items = networking.list_namespaced_network_policy(
            namespace, label_selector=f"{SELECTOR}=pruned"
        ).items
        return [p.metadata.name for p in items]

    assert children.pdbs() and policies() and "pruned-rest" in children.services()

    patch = {"replicas": 1, "networkPolicy": None, "ports": {"rest": 0}}
    patch_sm(api_client, namespace, "pruned", {"spec": patch})
    ready(api_client, namespace, "pruned")

    def leftovers() -> list[str]:
        left = [f"PodDisruptionBudget {p.metadata.name}" for p in children.pdbs()]
        left += [f"NetworkPolicy {name}" for name in policies()]
        left += [f"Service {name}" for name in children.services() if name == "pruned-rest"]
        return left

    wait_until(
        lambda: not leftovers(),
        timeout=10,
        what="children no longer rendered deleted",
        describe=lambda: str(leftovers()),
    )


def test_resources_follow(api_client, namespace, operator, model_store) -> None:
    base = make_model_dir(model_store, "resources", good=(1,))
    create_sm(api_client, namespace, servedmodel("res", model_spec(base)))
    ready(api_client, namespace, "res")
    children = Children(api_client, namespace, "res")
    assert children.deployment().spec.template.spec.containers[0].resources.limits is None

    # Written as a user might; the API server stores "250m", "64Mi", "128Mi".
    written = {"requests": {"cpu": "0.25", "memory": "64Mi"}, "limits": {"memory": "0.125Gi"}}
    stored = {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    patch_sm(api_client, namespace, "res", {"spec": {"resources": written}})

    def container_resources() -> Any:
        res = children.deployment().spec.template.spec.containers[0].resources
        return res if res.requests == stored["requests"] else None

    res = wait_until(container_resources, timeout=30, what="the new resources on the Deployment")
    assert res.limits == stored["limits"]
    body = ready(api_client, namespace, "res")
    assert body["status"]["servingVersions"] == "1"

    def pods_resized() -> bool:
        live = [
            p for p in pods_of(api_client, namespace, "res") if not p.metadata.deletion_timestamp
        ]
        return bool(live) and all(
            p.spec.containers[0].resources.requests == stored["requests"] for p in live
        )

    wait_until(pods_resized, timeout=30, what="every live pod running with the new resources")
    # What the operator renders matches what is stored: no re-apply on every pass.
    assert contains(raw(api_client, "Deployment", namespace, "res"), rendered(body).deployment)


def test_version_update_ends_serving_the_new_version(
    api_client, namespace, operator, model_store
) -> None:
    base = make_model_dir(model_store, "version", good=(1, 2))
    create_sm(api_client, namespace, servedmodel("versioned", model_spec(base)))
    ready(api_client, namespace, "versioned")
    children = Children(api_client, namespace, "versioned")
    (old_config,) = children.config_maps()

    patch_sm(api_client, namespace, "versioned", {"spec": {"version": 2}})
    body = wait_sm(
        api_client,
        namespace,
        "versioned",
        "serving version 2",
        lambda b: (
            (b.get("status") or {}).get("servingVersions") == "2"
            and condition(b, "Ready").get("status") == "True"
            and b["status"].get("observedGeneration") == b["metadata"]["generation"]
        ),
        timeout=90,
    )
    assert body["status"]["targetVersions"] == "2"
    assert body["status"]["lastGood"]["versions"] == [2]
    live = [
        p for p in pods_of(api_client, namespace, "versioned") if not p.metadata.deletion_timestamp
    ]
    assert [p.metadata.annotations[api.ANNOTATION_VERSIONS] for p in live] == ["2"]
    # The new config is a new ConfigMap. The old one stays while a ReplicaSet
    # could bring its pods back, and goes once none can.
    configs = children.config_maps()
    assert old_config in configs and len(configs) == 2
    old_hash = old_config.rsplit("-", 1)[-1]
    replica_sets = children.apps.list_namespaced_replica_set(
        namespace, label_selector=f"{SELECTOR}=versioned"
    ).items
    (old_rs,) = [
        rs
        for rs in replica_sets
        if rs.spec.template.metadata.annotations[api.ANNOTATION_CONFIG_HASH] == old_hash
    ]
    assert old_rs.spec.replicas == 0
    children.apps.delete_namespaced_replica_set(old_rs.metadata.name, namespace)
    # The old pod drains through its preStop sleep and grace period (the local
    # kubelet honours them) and keeps its config until it is gone.
    wait_until(
        lambda: all(
            p.metadata.annotations[api.ANNOTATION_CONFIG_HASH] != old_hash
            for p in pods_of(api_client, namespace, "versioned")
        ),
        timeout=90,
        what="the old pod gone after its grace period",
    )
    wait_until(
        lambda: list(children.config_maps()) == [children_config_name(body)],
        timeout=30,
        what="the old config generation collected",
        describe=lambda: str(sorted(children.config_maps())),
    )


def children_config_name(body: dict[str, Any]) -> str:
    name: str = rendered(body).config_map["metadata"]["name"]
    return name


# ----- drift --------------------------------------------------------------------


def test_drift_is_corrected(api_client, namespace, operator, model_store) -> None:
    base = make_model_dir(model_store, "drift", good=(1,))
    create_sm(api_client, namespace, servedmodel("drift", model_spec(base)))
    body = ready(api_client, namespace, "drift")
    children = Children(api_client, namespace, "drift")
    expected = rendered(body)
    image = expected.deployment["spec"]["template"]["spec"]["containers"][0]["image"]

    # Someone scales and re-images the Deployment by hand.
    edited = children.apps.patch_namespaced_deployment(
        "drift",
        namespace,
        {
            "spec": {
                "replicas": 3,
                "template": {
                    "spec": {
                        "containers": [{"name": api.CONTAINER_NAME, "image": "evil/serving:1"}]
                    }
                },
            }
        },
    )

    assert edited.spec.replicas == 3
    assert edited.spec.template.spec.containers[0].image == "evil/serving:1"

    def deployment_restored() -> bool:
        d = children.deployment()
        return bool(d.spec.replicas == 1 and d.spec.template.spec.containers[0].image == image)

    wait_until(
        deployment_restored, timeout=30, what="the Deployment restored", describe=children.describe
    )

    # Someone deletes the gRPC Service and the ConfigMap.
    grpc = children.services()["drift-grpc"]
    config_name = expected.config_map["metadata"]["name"]
    config = children.config_maps()[config_name]
    children.core.delete_namespaced_service("drift-grpc", namespace)
    children.core.delete_namespaced_config_map(config_name, namespace)

    def recreated() -> bool:
        services, configs = children.services(), children.config_maps()
        return bool(
            "drift-grpc" in services
            and services["drift-grpc"].metadata.uid != grpc.metadata.uid
            and config_name in configs
            and configs[config_name].metadata.uid != config.metadata.uid
        )

    wait_until(recreated, timeout=30, what="the gRPC Service and the ConfigMap recreated")
    assert contains(raw(api_client, "Service", namespace, "drift-grpc"), expected.services[0])
    assert children.config_maps()[config_name].data == expected.config_map["data"]

    # Someone deletes the Deployment.
    old_uid = children.deployment().metadata.uid
    children.apps.delete_namespaced_deployment("drift", namespace)
    wait_until(
        lambda: children.deployment().metadata.uid != old_uid,
        timeout=30,
        what="the Deployment recreated",
        describe=children.describe,
    )
    assert contains(raw(api_client, "Deployment", namespace, "drift"), expected.deployment)
    body = ready(api_client, namespace, "drift")
    assert body["status"]["servingVersions"] == "1"


# ----- delete -------------------------------------------------------------------


def test_delete_removes_children_by_garbage_collection(
    api_client, namespace, operator, model_store
) -> None:
    base = make_model_dir(model_store, "delete", good=(1,))
    create_sm(api_client, namespace, servedmodel("doomed", model_spec(base, replicas=2)))
    ready(api_client, namespace, "doomed")
    children = Children(api_client, namespace, "doomed")
    assert children.deployments() and children.services() and children.config_maps()
    assert children.pdbs()

    delete_sm(api_client, namespace, "doomed")

    def all_gone() -> bool:
        return not (
            children.deployments()
            or children.services()
            or children.config_maps()
            or children.pdbs()
            or pods_of(api_client, namespace, "doomed")
        )

    wait_until(
        all_gone, timeout=60, what="every child of doomed deleted", describe=children.describe
    )


# ----- GPUs ---------------------------------------------------------------------


def test_gpu_servedmodel_lands_on_a_gpu_node(api_client, namespace, operator, model_store) -> None:
    base = make_model_dir(model_store, "gpu", good=(1,))
    create_sm(api_client, namespace, servedmodel("gpu", model_spec(base, gpus=1)))
    body = ready(api_client, namespace, "gpu")
    assert body["status"]["servingVersions"] == "1"
    (pod,) = [p for p in pods_of(api_client, namespace, "gpu") if not p.metadata.deletion_timestamp]
    assert pod.spec.node_name in GPU_NODES
    ctr = pod.spec.containers[0]
    assert ctr.resources.limits[api.GPU_RESOURCE] == "1"
    assert ctr.image == DEFAULT_GPU_IMAGE
    assert any(t.key == api.GPU_RESOURCE and t.operator == "Exists" for t in pod.spec.tolerations)


def test_mig_slice_servedmodel_lands_on_the_mig_node(
    api_client, namespace, operator, model_store
) -> None:
    """A MIG slice is its own extended resource: only sim-mig-1 advertises it."""
    base = make_model_dir(model_store, "mig", good=(1,))
    body = model_spec(base, gpus=1, gpuResource=MIG_RESOURCE)
    create_sm(api_client, namespace, servedmodel("mig", body))
    assert ready(api_client, namespace, "mig")["status"]["servingVersions"] == "1"
    (pod,) = [p for p in pods_of(api_client, namespace, "mig") if not p.metadata.deletion_timestamp]
    assert pod.spec.node_name in MIG_NODES
    ctr = pod.spec.containers[0]
    assert ctr.resources.limits == {MIG_RESOURCE: "1"}
    assert ctr.image == DEFAULT_GPU_IMAGE


def test_unfittable_gpu_servedmodel_is_reported(
    api_client, namespace, operator, model_store, sim
) -> None:
    gpus = MAX_GPUS_PER_NODE + 1
    base = make_model_dir(model_store, "huge", good=(1,))
    create_sm(api_client, namespace, servedmodel("huge", model_spec(base, gpus=gpus)))
    body = wait_condition(
        api_client, namespace, "huge", "Degraded", reason=api.Reason.UNSCHEDULABLE, timeout=60
    )
    degraded = condition(body, "Degraded")
    # The scheduler's own words, not a silent Pending.
    assert f"Insufficient {api.GPU_RESOURCE}" in degraded["message"], degraded
    assert condition(body, "Ready")["status"] == "False"
    assert body["status"]["readyReplicas"] == 0
    # kubectl wait reads the same condition, and does not pass.
    waited = kubectl(
        sim, "wait", "--for=condition=Ready", "servedmodel/huge", "-n", namespace, "--timeout=2s"
    )
    assert waited.returncode != 0


# ----- kubectl ------------------------------------------------------------------


def test_kubectl_scale_and_wait(api_client, namespace, operator, model_store, sim) -> None:
    base = make_model_dir(model_store, "kubectl", good=(1,))
    create_sm(api_client, namespace, servedmodel("kube", model_spec(base)))

    waited = kubectl(
        sim, "wait", "--for=condition=Ready", "servedmodel/kube", "-n", namespace, "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout

    scaled = kubectl(sim, "scale", "servedmodel", "kube", "--replicas=2", "-n", namespace)
    assert scaled.returncode == 0, scaled.stderr
    assert get_sm(api_client, namespace, "kube")["spec"]["replicas"] == 2
    children = Children(api_client, namespace, "kube")
    wait_until(
        lambda: children.deployment().spec.replicas == 2,
        timeout=30,
        what="the Deployment at 2 replicas",
    )
    body = wait_sm(
        api_client,
        namespace,
        "kube",
        "2 ready replicas",
        lambda b: (
            (b.get("status") or {}).get("readyReplicas") == 2
            and b["status"].get("replicas") == 2
            and b["status"].get("observedGeneration") == b["metadata"]["generation"]
        ),
    )
    # The scale subresource reads the status back (what an HPA sees).
    scale = kubectl(sim, "get", "servedmodel", "kube", "-n", namespace, "--subresource=scale", "-o",
                    "jsonpath={.spec.replicas} {.status.replicas} {.status.selector}")  # fmt: skip
    assert scale.returncode == 0, scale.stderr
    assert scale.stdout == f"2 2 {SELECTOR}=kube"
    assert body["status"]["selector"] == f"{SELECTOR}=kube"
    waited = kubectl(
        sim, "wait", "--for=condition=Ready", "servedmodel/kube", "-n", namespace, "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
