"""The local cluster behaves like a real one where this project depends on it.

Each test drives a real controller (scheduler, controller manager, garbage
collector, admission, RBAC, kwok's pod stages) and asserts its outcome, so a
cluster that only looks alive fails here.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.sim.cluster import Ports, SimCluster
from localdev.sim.nodes import (
    GPU_RESOURCE,
    GPU_TAINT,
    MAX_GPUS_PER_NODE,
    MIG_RESOURCE,
    SIM_NODES,
)
from localdev.support.waiting import wait_until

GPU_NODES = {n.name for n in SIM_NODES if n.gpus}
CPU_NODES = {n.name for n in SIM_NODES if not n.accelerated}
MIG_NODES = {n.name for n in SIM_NODES if n.mig_slices}
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
GATE = "sim.test/gate"


# ----- helpers ----------------------------------------------------------------


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "app", "image": "registry.invalid/app:1", **extra}


def pod_manifest(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("containers", [container()])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def gpu_pod(name: str, gpus: int, tolerate: bool = True) -> dict[str, Any]:
    limits = {GPU_RESOURCE: str(gpus)}
    extra: dict[str, Any] = {"tolerations": [GPU_TOLERATION]} if tolerate else {}
    return pod_manifest(name, containers=[container(resources={"limits": limits})], **extra)


def deployment_manifest(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container()]},
            },
        },
    }


def condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    for cond in (pod.status and pod.status.conditions) or []:
        if cond.type == kind:
            return cond
    return None


def required_condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition:
    """The pod's condition of this type; fails the test when it has none."""
    cond = condition(pod, kind)
    assert cond is not None, f"pod {pod.metadata.name} has no {kind} condition: {pod.status}"
    return cond


def condition_status(pod: client.V1Pod, kind: str) -> str | None:
    cond = condition(pod, kind)
    return cond.status if cond else None


def pods_state(core: client.CoreV1Api, namespace: str, **list_args: Any) -> Callable[[], str]:
    """A `describe` callback: each pod's node, phase and conditions."""

    def describe() -> str:
        rows = []
        for pod in core.list_namespaced_pod(namespace, **list_args).items:
            conds = {c.type: (c.status, c.reason) for c in pod.status.conditions or []}
            where = f"node={pod.spec.node_name} phase={pod.status.phase}"
            rows.append(f"{pod.metadata.name} {where} conditions={conds}")
        return "; ".join(rows) or "no pods"

    return describe


def status_of(call: Callable[[], object]) -> ApiException:
    """Run `call`, which must fail with an API error; return the error."""
    with pytest.raises(ApiException) as info:
        call()
    return info.value


def is_gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def wait_running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    def running() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == "Running" else None

    return wait_until(
        running,
        timeout=30,
        what=f"pod {name} to be Running",
        describe=pods_state(core, namespace, field_selector=f"metadata.name={name}"),
    )


def wait_unschedulable(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    def unschedulable() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        cond = condition(pod, "PodScheduled")
        return pod if cond and cond.status == "False" and cond.reason == "Unschedulable" else None

    return wait_until(
        unschedulable,
        timeout=30,
        what=f"the scheduler to mark pod {name} Unschedulable",
        describe=pods_state(core, namespace, field_selector=f"metadata.name={name}"),
    )


# ----- 1. Deployment -> ReplicaSet -> Pods ------------------------------------


def test_deployment_gets_replicaset_and_ready_pods(api_client, namespace):
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, deployment_manifest("web", replicas=2))

    def two_ready() -> client.V1Deployment | None:
        dep = apps.read_namespaced_deployment("web", namespace)
        return dep if dep.status.ready_replicas == 2 else None

    dep = wait_until(
        two_ready,
        timeout=30,
        what="Deployment web to report 2 ready replicas",
        describe=pods_state(core, namespace),
    )

    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replica_sets) == 1
    rs = replica_sets[0]
    (rs_owner,) = rs.metadata.owner_references
    assert rs_owner.kind == "Deployment"
    assert rs_owner.uid == dep.metadata.uid
    assert rs_owner.controller is True
    # Made by the controller manager, not by anything in this test.
    assert "kube-controller-manager" in {m.manager for m in rs.metadata.managed_fields}

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    pod_net = ipaddress.ip_network(Ports(0).pod_cidr)
    for pod in pods:
        (pod_owner,) = pod.metadata.owner_references
        assert (pod_owner.kind, pod_owner.uid) == ("ReplicaSet", rs.metadata.uid)
        # No GPU toleration: the tainted GPU nodes are out of bounds.
        assert pod.spec.node_name in CPU_NODES
        assert pod.status.phase == "Running"
        assert condition_status(pod, "PodScheduled") == "True"
        assert condition_status(pod, "ContainersReady") == "True"
        assert condition_status(pod, "Ready") == "True"
        assert ipaddress.ip_address(pod.status.pod_ip) in pod_net
    assert len({p.status.pod_ip for p in pods}) == 2


# ----- 2. GPU scheduling ------------------------------------------------------


def test_gpu_pod_lands_on_a_gpu_node(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, gpu_pod("one-gpu", gpus=1))
    pod = wait_running(core, namespace, "one-gpu")
    assert pod.spec.node_name in GPU_NODES
    node = core.read_node(pod.spec.node_name)
    assert int(node.status.allocatable[GPU_RESOURCE]) >= 1


def test_pod_asking_more_gpus_than_any_node_has_stays_pending(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, gpu_pod("too-many", gpus=MAX_GPUS_PER_NODE + 1))
    pod = wait_unschedulable(core, namespace, "too-many")
    assert pod.spec.node_name is None
    assert pod.status.phase == "Pending"
    message = required_condition(pod, "PodScheduled").message
    assert f"Insufficient {GPU_RESOURCE}" in message, message


def test_gpu_pod_without_toleration_is_unschedulable(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, gpu_pod("no-toleration", gpus=1, tolerate=False))
    pod = wait_unschedulable(core, namespace, "no-toleration")
    assert pod.spec.node_name is None
    message = required_condition(pod, "PodScheduled").message
    # CPU nodes have no GPUs; GPU nodes carry a taint the pod does not tolerate.
    assert f"Insufficient {GPU_RESOURCE}" in message, message
    assert "untolerated taint" in message, message


# ----- 3. Garbage collection --------------------------------------------------


def test_deleting_an_owner_deletes_its_dependents(api_client, namespace):
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [ref]}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "bystander"}})

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    wait_until(
        lambda: is_gone(lambda: core.read_namespaced_config_map("dependent", namespace)),
        timeout=30,
        what="the garbage collector to delete the dependent ConfigMap",
    )
    # The collector removed what the owner owned, nothing else.
    assert core.read_namespaced_config_map("bystander", namespace).metadata.name == "bystander"


def test_foreground_deletion_removes_replicaset_and_pods_before_the_deployment(
    api_client, namespace
):
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, deployment_manifest("fg", replicas=1))
    wait_until(
        lambda: apps.read_namespaced_deployment("fg", namespace).status.ready_replicas == 1,
        timeout=30,
        what="Deployment fg to have its pod ready",
        describe=pods_state(core, namespace),
    )
    (rs,) = apps.list_namespaced_replica_set(namespace, label_selector="app=fg").items
    (pod,) = core.list_namespaced_pod(namespace, label_selector="app=fg").items

    apps.delete_namespaced_deployment("fg", namespace, propagation_policy="Foreground")
    # kwok takes a second to finish a pod's graceful deletion (sim-pod-delete),
    # so the owner is still there, waiting for it.
    waiting = apps.read_namespaced_deployment("fg", namespace)
    assert waiting.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in (waiting.metadata.finalizers or [])

    wait_until(
        lambda: is_gone(lambda: apps.read_namespaced_deployment("fg", namespace)),
        timeout=30,
        what="the foreground deletion of Deployment fg to finish",
        describe=pods_state(core, namespace),
    )
    # Foreground: the owner goes last, so its dependents are already gone.
    assert is_gone(lambda: apps.read_namespaced_replica_set(rs.metadata.name, namespace))
    assert is_gone(lambda: core.read_namespaced_pod(pod.metadata.name, namespace))


# ----- 4. Pod Security admission ----------------------------------------------


def test_restricted_namespace_rejects_privileged_pod(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    privileged = pod_manifest(
        "privileged", containers=[container(securityContext={"privileged": True})]
    )

    def rejected_in_dry_run() -> bool:
        try:
            core.create_namespaced_pod(namespace, privileged, dry_run="All")
        except ApiException as err:
            return err.status == 403
        return False

    # Admission reads namespace labels from a cache: wait until it has seen ours.
    wait_until(rejected_in_dry_run, timeout=30, what="Pod Security admission to see the label")

    err = status_of(lambda: core.create_namespaced_pod(namespace, privileged))
    assert err.status == 403
    status = json.loads(err.body)
    assert status["reason"] == "Forbidden"
    message = status["message"]
    assert 'violates PodSecurity "restricted:latest"' in message, message
    assert "securityContext.privileged=true" in message, message
    assert is_gone(lambda: core.read_namespaced_pod("privileged", namespace))

    compliant = pod_manifest(
        "compliant",
        securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        containers=[
            container(
                securityContext={
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                }
            )
        ],
    )
    core.create_namespaced_pod(namespace, compliant)
    wait_running(core, namespace, "compliant")


# ----- 5. ServiceAccount tokens and RBAC ---------------------------------------


def token_client(sim: SimCluster, token: str) -> client.ApiClient:
    """An API client that authenticates with a bearer token only (no client cert)."""
    kubeconfig = yaml.safe_load(sim.kubeconfig.read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    config = client.Configuration(
        host=cluster["server"], api_key={"authorization": "Bearer " + token}
    )
    config.ssl_ca_cert = cluster["certificate-authority"]
    return client.ApiClient(config)


def test_service_account_token_is_authorized_only_by_its_role_binding(sim, api_client, namespace):
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    request = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    )
    token = request.status.token
    assert token

    with token_client(sim, token) as as_reader:
        reader_core = client.CoreV1Api(as_reader)
        review = client.AuthenticationV1Api(as_reader).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"

        err = status_of(lambda: reader_core.list_namespaced_pod(namespace))
        assert err.status == 403, err.body

        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "pod-lister"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "reader-lists-pods"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pod-lister",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )
        wait_until(
            lambda: reader_core.list_namespaced_pod(namespace).kind == "PodList",
            timeout=30,
            what="the RoleBinding to let the token list pods",
        )

        # The grant is for listing pods in this namespace, nothing more.
        assert status_of(lambda: reader_core.list_namespaced_pod("default")).status == 403
        assert status_of(lambda: reader_core.list_pod_for_all_namespaces()).status == 403
        create = status_of(
            lambda: reader_core.create_namespaced_pod(
                namespace, pod_manifest("nope"), dry_run="All"
            )
        )
        assert create.status == 403


# ----- 6. Readiness gates -----------------------------------------------------


def test_readiness_gate_controls_pod_ready(api_client, namespace):
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace, pod_manifest("gated", readinessGates=[{"conditionType": GATE}])
    )
    describe = pods_state(core, namespace)

    def read_when(check: Callable[[client.V1Pod], bool]) -> Callable[[], client.V1Pod | None]:
        def probe() -> client.V1Pod | None:
            pod = core.read_namespaced_pod("gated", namespace)
            return pod if check(pod) else None

        return probe

    pod = wait_until(
        read_when(
            lambda p: (
                p.status.phase == "Running" and condition_status(p, "ContainersReady") == "True"
            )
        ),
        timeout=30,
        what="pod gated to be Running with its containers ready",
        describe=describe,
    )
    # Containers are ready but the gate has no condition yet: not Ready.
    ready = required_condition(pod, "Ready")
    assert (ready.status, ready.reason) == ("False", "ReadinessGatesNotReady")
    assert condition(pod, GATE) is None

    def set_gate(status: str) -> None:
        body = {"status": {"conditions": [{"type": GATE, "status": status}]}}
        core.patch_namespaced_pod_status("gated", namespace, body)

    set_gate("True")
    wait_until(
        read_when(lambda p: condition_status(p, "Ready") == "True"),
        timeout=30,
        what="pod gated to turn Ready once its gate is True",
        describe=describe,
    )
    set_gate("False")
    pod = wait_until(
        read_when(lambda p: condition_status(p, "Ready") == "False"),
        timeout=30,
        what="pod gated to turn not Ready once its gate is False",
        describe=describe,
    )
    assert required_condition(pod, "Ready").reason == "ReadinessGatesNotReady"
    assert condition_status(pod, "ContainersReady") == "True"


# ----- 7. Nodes ----------------------------------------------------------------


def test_simulated_nodes_are_ready_with_gpus_and_taints_where_expected(api_client):
    core = client.CoreV1Api(api_client)
    nodes = {n.metadata.name: n for n in core.list_node(label_selector="type=kwok").items}
    assert set(nodes) == {n.name for n in SIM_NODES}
    assert (len(GPU_NODES), len(MIG_NODES), len(CPU_NODES)) == (2, 1, 3)

    for spec in SIM_NODES:
        node = nodes[spec.name]
        assert node.metadata.labels["kubernetes.io/arch"] == spec.arch
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert [c.status for c in ready] == ["True"], spec.name
        assert not node.spec.unschedulable
        taints = [(t.key, t.value, t.effect) for t in node.spec.taints or []]
        if spec.gpus:
            assert node.status.capacity[GPU_RESOURCE] == str(spec.gpus)
            assert node.status.allocatable[GPU_RESOURCE] == str(spec.gpus)
            assert (GPU_TAINT["key"], GPU_TAINT["value"], GPU_TAINT["effect"]) in taints
        elif spec.mig_slices:
            assert node.status.allocatable[MIG_RESOURCE] == str(spec.mig_slices)
            assert GPU_RESOURCE not in node.status.allocatable
            assert (GPU_TAINT["key"], GPU_TAINT["value"], GPU_TAINT["effect"]) in taints
        else:
            assert GPU_RESOURCE not in node.status.capacity
            assert GPU_RESOURCE not in node.status.allocatable
            assert taints == []
    assert max(int(nodes[n].status.capacity[GPU_RESOURCE]) for n in GPU_NODES) == MAX_GPUS_PER_NODE
