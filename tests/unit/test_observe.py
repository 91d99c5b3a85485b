"""observe's parsers: Pod, Deployment and ReplicaSet objects as the API server
sends them, read into the views decide works on, and the watch cache.

The objects here carry what the kubelet, the scheduler and the Deployment
controller write (field names from the core/v1 and apps/v1 API references).
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tfserving_operator import api, observe
from tfserving_operator.metrics import PROBE_OK, Metrics
from tfserving_operator.observe import (
    Cache,
    ChildStore,
    DeploymentView,
    PodView,
    Prober,
    ProbeResult,
    deployment_view,
    pod_view,
    strip_object,
)
from tfserving_operator.views import ModelState, VersionStatus
from tfserving_operator.wire.client import (
    ModelNotFound,
    ProbeError,
    ProbeTimeout,
    ServerUnreachable,
)

NAMESPACE = "team-a"
OWNER = "mnist"
KEY = (NAMESPACE, OWNER)
# What the real server writes when its first version ends in END (main.cc,
# tag 2.19.1), as FallbackToLogsOnError puts it in the termination message.
SERVER_WORDS = "Failed to start server. Error: NOT_FOUND: Could not find base path /models/m"


def condition(ctype: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def running_container(restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "name": api.CONTAINER_NAME,
        "ready": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": "2026-12-01T05:00:00Z"}},
        **extra,
    }


def crashed_container(restarts: int, message: str) -> dict[str, Any]:
    """A container in back-off after its server exited: what the kubelet reports."""
    return {
        "name": api.CONTAINER_NAME,
        "ready": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
        "lastState": {
            "terminated": {"exitCode": 255, "reason": "Error", "message": message},
        },
    }


def pod(
    name: str = "mnist-7d9c-abcde",
    *,
    containers: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    phase: str = "Running",
    ip: str = "10.0.0.7",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """A model-server Pod object; by default Running, Ready, its gate open."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "labels": {api.LABEL_SERVEDMODEL: OWNER} if labels is None else labels,
        "annotations": {
            api.ANNOTATION_CONFIG_HASH: "hash2",
            api.ANNOTATION_VERSIONS: "2",
            api.ANNOTATION_MODEL_NAME: "mnist",
            api.ANNOTATION_GRPC_PORT: "8500",
        }
        if annotations is None
        else annotations,
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T05:10:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Ready", "True"),
            condition(api.GATE_CONDITION, "True", "VersionsAvailable", "2 AVAILABLE"),
        ]
        if conditions is None
        else conditions,
        "containerStatuses": [running_container()] if containers is None else containers,
    }
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def deployment(
    *,
    generation: int = 3,
    observed: int = 3,
    replicas: int = 2,
    status: dict[str, Any] | None = None,
    config_hash: str = "hash2",
    kind: str = "Deployment",
    name: str = "mnist",
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {api.LABEL_SERVEDMODEL: OWNER},
            "generation": generation,
            "resourceVersion": "4711",
            "uid": "0b3f-uid",
            "creationTimestamp": "2026-12-01T05:00:00Z",
            "managedFields": [{"manager": api.FIELD_MANAGER, "operation": "Apply"}],
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"annotations": {api.ANNOTATION_CONFIG_HASH: config_hash}},
                "spec": {"containers": [{"name": api.CONTAINER_NAME}]},
            },
        },
        "status": {
            "observedGeneration": observed,
            "replicas": 3,
            "updatedReplicas": 1,
            "readyReplicas": 2,
            "availableReplicas": 2,
        }
        if status is None
        else status,
    }


# ----- pod_view ----------------------------------------------------------------


def test_a_serving_pod_is_read_field_by_field() -> None:
    annotations = {
        api.ANNOTATION_CONFIG_HASH: "hash3",
        api.ANNOTATION_VERSIONS: "2,3",
        api.ANNOTATION_MODEL_NAME: "digits",
        api.ANNOTATION_GRPC_PORT: "9000",
    }
    view = pod_view(pod(annotations=annotations))
    assert view == PodView(
        name="mnist-7d9c-abcde",
        namespace=NAMESPACE,
        ip="10.0.0.7",
        phase="Running",
        ready=True,
        gate=True,
        gate_reason="VersionsAvailable",
        terminating=False,
        config_hash="hash3",
        versions="2,3",
        model_name="digits",
        grpc_port=9000,
        running=True,
        restart_count=0,
        termination_message="",
        exit_code=0,
        exit_reason="",
        unschedulable="",
    )
    assert view.target == "10.0.0.7:9000"
    assert view.probeable


def test_a_pod_the_operator_never_gated_has_no_gate() -> None:
    view = pod_view(pod(conditions=[condition("Ready", "False", "ReadinessGatesNotReady")]))
    assert (view.gate, view.gate_reason, view.ready) == (None, "", False)


def test_a_closed_gate_is_false_with_its_reason() -> None:
    closed = condition(api.GATE_CONDITION, "False", "VersionLoading", "3 LOADING")
    view = pod_view(pod(conditions=[condition("Ready", "False"), closed]))
    assert (view.gate, view.gate_reason, view.ready) == (False, "VersionLoading", False)


def test_ready_needs_the_ready_condition_true() -> None:
    gate = condition(api.GATE_CONDITION, "True", "VersionsAvailable")
    assert not pod_view(pod(conditions=[gate])).ready
    assert not pod_view(pod(conditions=[condition("Ready", "Unknown"), gate])).ready


def test_a_crashed_server_is_read_from_last_state_and_restart_count() -> None:
    """The crash path: the kubelet restarts the container and keeps the exit in
    lastState.terminated, with the termination message FallbackToLogsOnError
    took from the server's last log lines."""
    view = pod_view(pod(containers=[crashed_container(3, f"  {SERVER_WORDS}\n")]))
    assert view.termination_message == SERVER_WORDS  # trimmed
    assert view.restart_count == 3
    assert not view.running
    assert not view.probeable


def test_the_termination_message_comes_from_last_state_not_state() -> None:
    # Both present and different: a restarted container terminating again
    # carries the new exit in state and the one that restarted it in lastState.
    container = crashed_container(4, SERVER_WORDS)
    container["state"] = {
        "terminated": {"exitCode": 137, "reason": "Error", "message": "killed by the kubelet"}
    }
    assert pod_view(pod(containers=[container])).termination_message == SERVER_WORDS


def test_a_first_exit_not_yet_restarted_has_no_message_yet() -> None:
    # Only state.terminated: the crash path waits for the restart (restartCount
    # and lastState), so nothing is read from state.
    container = {
        "name": api.CONTAINER_NAME,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 255, "reason": "Error", "message": SERVER_WORDS}},
    }
    view = pod_view(pod(containers=[container]))
    assert (view.termination_message, view.restart_count, view.running) == ("", 0, False)


def test_only_the_model_server_container_counts() -> None:
    sidecar = crashed_container(9, "sidecar died")
    sidecar["name"] = "log-shipper"
    view = pod_view(pod(containers=[sidecar, running_container(restarts=1)]))
    assert (view.termination_message, view.restart_count, view.running) == ("", 1, True)


def test_a_running_server_keeps_the_message_of_its_previous_exit() -> None:
    container = running_container(
        restarts=1, lastState={"terminated": {"exitCode": 1, "message": "OOM\n"}}
    )
    view = pod_view(pod(containers=[container]))
    assert (view.running, view.restart_count, view.termination_message) == (True, 1, "OOM")


def test_an_unschedulable_pod_carries_the_scheduler_message() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    view = pod_view(
        pod(
            phase="Pending",
            ip="",
            containers=[],
            conditions=[condition("PodScheduled", "False", "Unschedulable", message)],
        )
    )
    assert view.unschedulable == message
    assert (view.phase, view.ip, view.running, view.probeable) == ("Pending", "", False, False)


@pytest.mark.parametrize(
    "scheduled",
    [
        condition("PodScheduled", "False", "SchedulingGated", "waiting for a gate"),
        condition("PodScheduled", "True", "", ""),
    ],
    ids=["gated-not-unschedulable", "scheduled"],
)
def test_only_the_unschedulable_reason_is_reported(scheduled: dict[str, Any]) -> None:
    assert pod_view(pod(phase="Pending", conditions=[scheduled])).unschedulable == ""


def test_a_pod_with_a_deletion_timestamp_is_terminating() -> None:
    assert pod_view(pod(deleting=True)).terminating
    assert not pod_view(pod()).terminating


def test_an_empty_pod_gets_safe_defaults() -> None:
    view = pod_view({"metadata": {"name": "p"}})
    assert (view.phase, view.grpc_port, view.gate, view.ready, view.running) == (
        "Pending",
        8500,
        None,
        False,
        False,
    )
    assert (view.ip, view.config_hash, view.versions, view.model_name) == ("", "", "", "")


def test_probeable_needs_an_ip_a_running_container_and_the_running_phase() -> None:
    assert pod_view(pod()).probeable
    assert not pod_view(pod(ip="")).probeable
    assert not pod_view(pod(phase="Pending")).probeable
    waiting = running_container()
    waiting["state"] = {"waiting": {"reason": "ContainerCreating"}}
    assert not pod_view(pod(containers=[waiting])).probeable


# ----- deployment_view ---------------------------------------------------------


def test_a_deployment_is_read_field_by_field() -> None:
    view = deployment_view(deployment(generation=4, observed=3, replicas=2, config_hash="h4"))
    assert view == DeploymentView(
        generation=4,
        observed_generation=3,
        replicas=2,
        updated_replicas=1,
        config_hash="h4",
        current_replicas=3,
    )
    assert not view.settled


def test_a_replica_failure_is_read_in_the_api_servers_words() -> None:
    """The Deployment controller copies its ReplicaSet's FailedCreate here."""
    refused = (
        'pods "mnist-7c9-x" is forbidden: violates PodSecurity "restricted:latest": '
        'restricted volume types (volume "models" uses restricted volume type "hostPath")'
    )
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}
    progressing = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated"}
    status: dict[str, Any] = {
        "observedGeneration": 3,
        "conditions": [progressing, {**failure, "message": refused}],
    }
    view = deployment_view(deployment(status=status))
    assert view.replica_failure == f"FailedCreate: {refused}"
    resolved = {**status, "conditions": [{**failure, "status": "False"}]}
    assert deployment_view(deployment(status=resolved)).replica_failure == ""


def test_settled_once_the_controller_saw_the_generation() -> None:
    assert deployment_view(deployment(generation=3, observed=3)).settled
    assert deployment_view(deployment(generation=3, observed=4)).settled
    assert not deployment_view(deployment(generation=3, observed=2)).settled


def test_a_new_deployment_without_status_counts_nothing() -> None:
    view = deployment_view(deployment(generation=1, status={}))
    assert (view.observed_generation, view.current_replicas, view.updated_replicas) == (0, 0, 0)
    assert not view.settled


def test_zero_replicas_are_zero() -> None:
    assert deployment_view(deployment(replicas=0)).replicas == 0


# ----- strip_object ------------------------------------------------------------


def test_strip_object_drops_status_and_server_bookkeeping() -> None:
    body = deployment()
    body["metadata"]["ownerReferences"] = [{"kind": api.KIND, "name": OWNER}]
    before = copy.deepcopy(body)
    stripped = strip_object(body)
    assert "status" not in stripped
    assert stripped["metadata"] == {
        "name": "mnist",
        "namespace": NAMESPACE,
        "labels": {api.LABEL_SERVEDMODEL: OWNER},
        "ownerReferences": [{"kind": api.KIND, "name": OWNER}],
    }
    assert stripped["spec"] == body["spec"]
    assert (stripped["apiVersion"], stripped["kind"]) == ("apps/v1", "Deployment")
    assert body == before  # the watch's object is left alone


def test_strip_object_of_an_object_without_metadata() -> None:
    assert strip_object({"kind": "ConfigMap", "data": {"a": "1"}}) == {
        "kind": "ConfigMap",
        "data": {"a": "1"},
        "metadata": {},
    }


# ----- Cache.observe -----------------------------------------------------------


def test_objects_without_our_label_are_ignored() -> None:
    cache = Cache()
    assert cache.observe("Pod", pod(labels={}), deleted=False) is None
    assert cache.observe("Deployment", {"metadata": {"name": "x"}}, deleted=False) is None
    assert (cache.pods, cache.children, cache.deployments) == ({}, {}, {})


def test_pod_events_add_update_and_delete_a_view() -> None:
    cache = Cache()
    name = "mnist-7d9c-abcde"
    assert cache.observe("Pod", pod(name), deleted=False) == KEY
    assert cache.pods[KEY][name].gate is True
    closed = condition(api.GATE_CONDITION, "False", "VersionLoading")
    cache.observe("Pod", pod(name, conditions=[closed]), deleted=False)
    assert cache.pods[KEY][name].gate is False
    assert cache.observe("Pod", pod(name), deleted=True) == KEY
    assert cache.pods[KEY] == {}
    assert cache.children == {}  # pods are not drift-checked children


def test_replicaset_events_keep_their_config_hash() -> None:
    cache = Cache()
    old = deployment(kind="ReplicaSet", name="mnist-6f8b", config_hash="hash1")
    new = deployment(kind="ReplicaSet", name="mnist-7d9c", config_hash="hash2")
    cache.observe("ReplicaSet", old, deleted=False)
    cache.observe("ReplicaSet", new, deleted=False)
    assert cache.replicaset_hashes[KEY] == {"mnist-6f8b": "hash1", "mnist-7d9c": "hash2"}
    assert cache.observe("ReplicaSet", old, deleted=True) == KEY
    assert cache.replicaset_hashes[KEY] == {"mnist-7d9c": "hash2"}
    assert KEY not in cache.deployments and cache.children == {}


def test_deployment_events_keep_the_stripped_child_and_the_view() -> None:
    cache = Cache()
    body = deployment(generation=5, observed=4)
    assert cache.observe("Deployment", body, deleted=False) == KEY
    assert cache.children[KEY][("Deployment", "mnist")] == strip_object(body)
    assert cache.deployments[KEY] == deployment_view(body)
    assert cache.observe("Deployment", body, deleted=True) == KEY
    assert cache.children[KEY] == {}
    assert KEY not in cache.deployments


@pytest.mark.parametrize("kind", ["Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"])
def test_other_children_are_kept_stripped_and_dropped_on_delete(kind: str) -> None:
    cache = Cache()
    body = {
        "kind": kind,
        "metadata": {
            "name": f"mnist-{kind.lower()}",
            "namespace": NAMESPACE,
            "labels": {api.LABEL_SERVEDMODEL: OWNER},
            "resourceVersion": "12",
        },
        "spec": {"any": "thing"},
        "status": {"loadBalancer": {}},
    }
    assert cache.observe(kind, body, deleted=False) == KEY
    assert cache.children[KEY] == {(kind, f"mnist-{kind.lower()}"): strip_object(body)}
    assert KEY not in cache.deployments
    cache.observe(kind, body, deleted=True)
    assert cache.children[KEY] == {}


def with_rv(body: dict[str, Any], rv: str, **status: Any) -> dict[str, Any]:
    """The same object as the API server sends it later: a new resourceVersion,
    and the status fields given changed."""
    meta = {**body["metadata"], "resourceVersion": rv}
    return {**body, "metadata": meta, "status": {**(body.get("status") or {}), **status}}


def test_an_event_that_changes_nothing_held_wakes_nobody() -> None:
    """The echo of our own apply, and a controller's write on parts not held."""
    cache = Cache()
    service = {
        "kind": "Service",
        "metadata": {
            "name": "mnist-grpc",
            "namespace": NAMESPACE,
            "labels": {api.LABEL_SERVEDMODEL: OWNER},
        },
        "spec": {"ports": [{"port": 8500}]},
    }
    assert cache.observe("Service", service, deleted=False) == KEY
    assert cache.observe("Service", with_rv(service, "13"), deleted=False) is None
    assert (
        cache.observe("Service", with_rv(service, "14", loadBalancer={"x": 1}), deleted=False)
        is None
    )
    edited = {**service, "spec": {"ports": [{"port": 9000}]}}
    assert cache.observe("Service", edited, deleted=False) == KEY  # someone edited it: drift

    rs = deployment(kind="ReplicaSet", name="mnist-7d9c")
    assert cache.observe("ReplicaSet", rs, deleted=False) == KEY
    assert cache.observe("ReplicaSet", with_rv(rs, "5000", readyReplicas=2), deleted=False) is None

    body = deployment(generation=5, observed=4)
    assert cache.observe("Deployment", body, deleted=False) == KEY
    stamped = with_rv(body, "4712", conditions=[condition("Progressing", "True")])
    assert cache.observe("Deployment", stamped, deleted=False) is None  # not in the view
    caught_up = with_rv(body, "4713", observedGeneration=5)
    assert cache.observe("Deployment", caught_up, deleted=False) == KEY
    assert cache.deployments[KEY].settled

    name = "mnist-7d9c-abcde"
    assert cache.observe("Pod", pod(name), deleted=False) == KEY
    assert cache.observe("Pod", with_rv(pod(name), "99", hostIP="10.1.1.1"), deleted=False) is None
    closed = condition(api.GATE_CONDITION, "False", "VersionLoading")
    assert cache.observe("Pod", pod(name, conditions=[closed]), deleted=False) == KEY


def test_a_canary_deployment_is_a_child_whose_changes_wake_the_owner() -> None:
    cache = Cache()
    canary = deployment(name="mnist-canary")
    assert cache.observe("Deployment", canary, deleted=False) == KEY
    assert KEY not in cache.deployments
    assert (
        cache.observe("Deployment", deployment(name="mnist-canary", replicas=3), deleted=False)
        == KEY
    )


def test_deleting_what_was_never_seen_is_harmless() -> None:
    cache = Cache()
    for kind, body in (
        ("Pod", pod()),
        ("ReplicaSet", deployment(kind="ReplicaSet")),
        ("Deployment", deployment()),
    ):
        assert cache.observe(kind, body, deleted=True) == KEY
    assert cache.entries() == set() and KEY not in cache.deployments


def test_objects_are_filed_under_their_namespace_and_owner() -> None:
    cache = Cache()
    other = pod("other-pod", labels={api.LABEL_SERVEDMODEL: "fashion"})
    cache.observe("Pod", pod(), deleted=False)
    cache.observe("Pod", other, deleted=False)
    assert set(cache.pods) == {KEY, (NAMESPACE, "fashion")}
    assert list(cache.pods[(NAMESPACE, "fashion")]) == ["other-pod"]


def test_forget_drops_everything_about_one_servedmodel() -> None:
    cache = Cache()
    cache.observe("Pod", pod(), deleted=False)
    cache.observe("Deployment", deployment(), deleted=False)
    cache.observe("ReplicaSet", deployment(kind="ReplicaSet", name="rs"), deleted=False)
    kept = pod("kept", labels={api.LABEL_SERVEDMODEL: "fashion"})
    cache.observe("Pod", kept, deleted=False)
    cache.forget(KEY)
    for store in (cache.pods, cache.children, cache.deployments, cache.replicaset_hashes):
        assert KEY not in store
    assert list(cache.pods[(NAMESPACE, "fashion")]) == ["kept"]


# ----- Prober latency summary ------------------------------------------------------


def test_probe_latency_summary_is_nearest_rank_in_milliseconds() -> None:
    from tfserving_operator.observe import Prober

    prober = Prober(timeout=2.0)
    assert prober.latency_summary() == {"count": 0}
    prober.latencies.extend(i / 1000 for i in range(1, 101))  # 1..100 ms
    assert prober.latency_summary() == {"count": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}


# ----- whole Pod objects, every field the API server sends ------------------------

# tests/unit/pods/: full Pod objects in the form the API server returns them
# (a kubelet's container statuses, the scheduler's and our gate conditions,
# managedFields, owner references), written out field by field from the
# core/v1 reference and the kubelet's status messages, so pod_view is read
# against everything around the fields it needs, not a minimal dict.
PODS_DIR = Path(__file__).parent / "pods"


def recorded(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((PODS_DIR / f"{name}.json").read_text())
    return body


def test_a_crash_looping_server_is_read_from_its_last_termination() -> None:
    view = pod_view(recorded("crash-looping"))
    assert (view.running, view.ready, view.restart_count) == (False, False, 3)
    assert (view.exit_code, view.exit_reason) == (255, "Error")
    assert view.termination_message.startswith("2026-12-01 05:01:12")
    assert view.termination_message.endswith("with error NOT_FOUND: /models/mnist not found")
    assert (view.gate, view.gate_reason) == (False, "ServerUnreachable")
    assert (view.ip, view.phase, view.terminating) == ("10.244.1.17", "Running", False)
    assert not view.probeable  # not running: nothing listens


def test_a_pod_whose_gate_is_open_serves() -> None:
    view = pod_view(recorded("gate-open"))
    assert (view.gate, view.gate_reason, view.ready, view.running) == (
        True,
        "VersionsAvailable",
        True,
        True,
    )
    assert (view.config_hash, view.versions, view.model_name, view.grpc_port) == (
        "a1b2c3d4e5",
        "2",
        "mnist",
        8500,
    )
    assert (view.restart_count, view.termination_message, view.exit_code) == (0, "", 0)
    assert view.probeable and view.target == "10.244.2.9:8500"


def test_a_terminating_pod_is_terminating_whatever_its_gate_says() -> None:
    view = pod_view(recorded("terminating"))
    assert view.terminating and view.gate is True and not view.ready
    assert (view.versions, view.config_hash) == ("1", "0f9e8d7c6b")
    cache = Cache()
    cache.observe("Pod", recorded("terminating"), deleted=False)
    assert cache.pods[KEY]["mnist-6f8b7c9d1-zz5t2"].terminating


# ----- the model puller's init containers (puller.py) ------------------------------

STORE_WORDS = "NOTICE: Failed to copy: operation error S3: ListObjectsV2, api error Forbidden"


def with_init(*statuses: dict[str, Any]) -> dict[str, Any]:
    body = pod(phase="Pending", ip="")
    body["status"]["initContainerStatuses"] = list(statuses)
    return body


def test_a_failed_pull_waiting_to_restart_is_read_from_last_state() -> None:
    status = {
        "name": "model-pull-3",
        "restartCount": 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": STORE_WORDS}},
    }
    view = pod_view(with_init(status))
    assert (view.pull_container, view.pull_failure, view.pull_exit_code) == (
        "model-pull-3",
        STORE_WORDS,
        1,
    )


def test_a_failed_pull_not_yet_restarted_is_read_from_state() -> None:
    status = {
        "name": "model-pull-3",
        "state": {"terminated": {"exitCode": 9, "reason": "Error", "message": ""}},
    }
    view = pod_view(with_init(status))
    assert (view.pull_failure, view.pull_exit_code) == ("exit code 9 (Error)", 9)


def test_a_pull_that_succeeded_on_retry_is_no_failure() -> None:
    status = {
        "name": "model-pull-3",
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": STORE_WORDS}},
    }
    assert pod_view(with_init(status)).pull_failure == ""


def test_other_init_containers_are_not_the_puller() -> None:
    status = {
        "name": "istio-init",
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "no"}},
    }
    assert pod_view(with_init(status)).pull_container == ""


def test_child_store_keeps_each_child_as_it_was_written() -> None:
    """Children are held as compact JSON: a read is a fresh copy, so a caller
    that edits what it read changes nothing in the cache."""
    store = ChildStore()
    service = {
        "kind": "Service",
        "metadata": {"name": "m-grpc", "labels": {"a": "b"}},
        "spec": {"ports": [{"port": 8500, "name": "grpc"}], "clusterIP": "10.0.0.1"},
    }
    store[("Service", "m-grpc")] = service
    read = store[("Service", "m-grpc")]
    assert read == service and read is not service
    read["spec"]["ports"].clear()
    assert store[("Service", "m-grpc")] == service
    assert list(store) == [("Service", "m-grpc")] and len(store) == 1
    assert ("Service", "m-grpc") in store and ("Service", "other") not in store
    assert store.get(("Service", "other")) is None
    assert store == {("Service", "m-grpc"): service}
    assert store.pop(("Service", "m-grpc")) == service
    assert store == {}
    assert Cache().children_of(("ml", "none")) == {}


# ----- Prober: what a probe reports, against a recording channel pool --------------


class RecordingPool:
    """Stands in for the Prober's ChannelPool: answers or raises as told, records
    every call, and notes whether the caller's slot was held during the call."""

    def __init__(self, answers: dict[str, list[VersionStatus] | ProbeError]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, float]] = []
        self.discarded: list[str] = []
        self.waits: list[tuple[str, float]] = []
        self.closed = False
        self.slots: asyncio.Semaphore | None = None
        self.slot_held: list[bool] = []
        self.in_flight = 0
        self.most_in_flight = 0
        # When set, every call waits until this many calls are in flight at once.
        self.opens_at = 0
        self.release = asyncio.Event()

    async def get_model_status(
        self, target: str, model_name: str, timeout: float
    ) -> list[VersionStatus]:
        self.calls.append((target, model_name, timeout))
        if self.slots is not None:
            self.slot_held.append(self.slots.locked())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.in_flight >= self.opens_at:
                self.release.set()
            await self.release.wait()
        finally:
            self.in_flight -= 1
        answer = self.answers[target]
        if isinstance(answer, ProbeError):
            raise answer
        return answer

    async def discard(self, target: str) -> None:
        self.discarded.append(target)

    async def wait_for_port(self, target: str, seconds: float) -> bool:
        self.waits.append((target, seconds))
        return target.endswith(":8500")

    async def close(self) -> None:
        self.closed = True


class Clock:
    """time.monotonic for observe only: each reading a quarter second later."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        self.now += 0.25
        return self.now


AVAILABLE_2 = VersionStatus(2, ModelState.AVAILABLE, 0, "")
LOADING_3 = VersionStatus(3, ModelState.LOADING, 0, "")


def server_pod(name: str, ip: str, port: int = 8500) -> PodView:
    annotations = {
        api.ANNOTATION_CONFIG_HASH: "hash2",
        api.ANNOTATION_VERSIONS: "2,3",
        api.ANNOTATION_MODEL_NAME: "digits",
        api.ANNOTATION_GRPC_PORT: str(port),
    }
    return pod_view(pod(name, ip=ip, annotations=annotations))


def prober_with(
    answers: dict[str, list[VersionStatus] | ProbeError],
    monkeypatch: pytest.MonkeyPatch,
    timeout: float = 1.5,
) -> tuple[Prober, RecordingPool, Metrics]:
    metrics = Metrics()
    prober = Prober(timeout=timeout, metrics=metrics)
    fake = RecordingPool(answers)
    monkeypatch.setattr(prober, "_pool", fake)
    monkeypatch.setattr(observe, "time", Clock())
    return prober, fake, metrics


def probes_counted(metrics: Metrics, result: str) -> float | None:
    return metrics.registry.get_sample_value("tfserving_operator_probes_total", {"result": result})


def test_a_probe_asks_the_pods_server_for_its_model_and_reports_every_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prober, fake, metrics = prober_with(
        {"10.0.0.7:9000": [AVAILABLE_2, LOADING_3]}, monkeypatch, timeout=1.5
    )
    result = asyncio.run(prober.probe(server_pod("p1", "10.0.0.7", 9000)))
    assert result == ProbeResult("p1", (AVAILABLE_2, LOADING_3))
    assert result.ok
    assert fake.calls == [("10.0.0.7:9000", "digits", 1.5)]
    assert (prober.calls, prober.timeouts, fake.discarded) == (1, 0, [])
    assert list(prober.latencies) == [0.25]
    assert probes_counted(metrics, PROBE_OK) == 1
    assert metrics.registry.get_sample_value(
        "tfserving_operator_probe_duration_seconds_sum"
    ) == pytest.approx(0.25)


def test_a_probe_that_times_out_is_reported_and_counted_as_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    late = ProbeTimeout("no answer from 10.0.0.7:8500 within 1.5 s", target="10.0.0.7:8500")
    prober, fake, metrics = prober_with({"10.0.0.7:8500": late}, monkeypatch)
    result = asyncio.run(prober.probe(server_pod("p1", "10.0.0.7")))
    assert result == ProbeResult(
        "p1",
        error_reason="ProbeTimeout",
        error_message="no answer from 10.0.0.7:8500 within 1.5 s",
    )
    assert not result.ok
    assert (prober.calls, prober.timeouts) == (1, 1)
    assert fake.discarded == []  # a slow server keeps its channel
    assert list(prober.latencies) == [0.25]
    assert probes_counted(metrics, "ProbeTimeout") == 1
    assert probes_counted(metrics, PROBE_OK) is None
    asyncio.run(prober.probe(server_pod("p1", "10.0.0.7")))
    assert (prober.calls, prober.timeouts) == (2, 2)  # counted, not just flagged


def test_an_unreachable_server_gets_a_fresh_channel_at_the_next_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = ServerUnreachable("connection refused", target="10.0.0.8:8500")
    prober, fake, metrics = prober_with({"10.0.0.8:8500": refused}, monkeypatch)
    result = asyncio.run(prober.probe(server_pod("p2", "10.0.0.8")))
    assert (result.error_reason, result.error_message) == (
        "ServerUnreachable",
        "connection refused",
    )
    assert fake.discarded == ["10.0.0.8:8500"]
    assert prober.timeouts == 0
    assert probes_counted(metrics, "ServerUnreachable") == 1


def test_a_server_that_answers_not_found_keeps_its_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unknown = ModelNotFound("the server does not know model digits")
    prober, fake, metrics = prober_with({"10.0.0.9:8500": unknown}, monkeypatch)
    result = asyncio.run(prober.probe(server_pod("p3", "10.0.0.9")))
    assert result.error_reason == "ModelNotFound"
    assert (fake.discarded, prober.timeouts) == ([], 0)
    assert probes_counted(metrics, "ModelNotFound") == 1


def test_a_probe_holds_one_of_the_callers_slots_while_it_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: dict[str, list[VersionStatus] | ProbeError] = {
        f"10.0.0.{i}:8500": [AVAILABLE_2] for i in range(1, 4)
    }
    prober, fake, _ = prober_with(answers, monkeypatch)
    pods = [server_pod(f"p{i}", f"10.0.0.{i}") for i in range(1, 4)]

    async def run() -> dict[str, ProbeResult]:
        slots = asyncio.Semaphore(1)
        fake.slots = slots
        results = await prober.probe_all(pods, slots)
        assert not slots.locked()  # every slot given back
        return results

    results = asyncio.run(run())
    assert results == {f"p{i}": ProbeResult(f"p{i}", (AVAILABLE_2,)) for i in range(1, 4)}
    assert fake.slot_held == [True, True, True]
    assert prober.calls == 3


def test_probe_all_asks_every_pod_at_once_without_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: dict[str, list[VersionStatus] | ProbeError] = {
        "10.0.0.1:8500": [AVAILABLE_2],
        "10.0.0.2:8500": ServerUnreachable("refused"),
    }
    prober, fake, _ = prober_with(answers, monkeypatch)
    pods = [server_pod("a", "10.0.0.1"), server_pod("b", "10.0.0.2")]

    async def run() -> dict[str, ProbeResult]:
        fake.opens_at = 2  # neither answers before both were asked
        # A bound, not a synchronisation: probes one after the other never get there.
        return await asyncio.wait_for(prober.probe_all(pods), timeout=10)

    results = asyncio.run(run())
    assert fake.most_in_flight == 2
    assert results["a"] == ProbeResult("a", (AVAILABLE_2,))
    assert results["b"].error_reason == "ServerUnreachable"
    assert set(results) == {"a", "b"}


def test_wait_for_port_forget_and_close_reach_the_channel_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prober, fake, _ = prober_with({}, monkeypatch)

    async def run() -> tuple[bool, bool]:
        opened = await prober.wait_for_port("10.0.0.1:8500", 7.5)
        closed = await prober.wait_for_port("10.0.0.2:9000", 2.0)
        await prober.forget(["10.0.0.1:8500", "10.0.0.2:9000"])
        await prober.close()
        return opened, closed

    assert asyncio.run(run()) == (True, False)
    assert fake.waits == [("10.0.0.1:8500", 7.5), ("10.0.0.2:9000", 2.0)]
    assert fake.discarded == ["10.0.0.1:8500", "10.0.0.2:9000"]
    assert fake.closed


def test_the_latency_window_is_bounded() -> None:
    prober = Prober(timeout=2.0)
    prober.latencies.extend(float(i) for i in range(observe.LATENCY_WINDOW + 10))
    assert len(prober.latencies) == observe.LATENCY_WINDOW == 4096
    assert prober.latencies[0] == 10.0


# ----- the survivors of the observe mutation run (docs/mutation.md) ----------------


def test_a_canary_pod_with_prometheus_annotations_says_where_its_metrics_are() -> None:
    body = pod(labels={api.LABEL_SERVEDMODEL: OWNER, api.LABEL_TRACK: api.TRACK_CANARY})
    body["metadata"]["annotations"] |= {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8501",
        "prometheus.io/path": "/monitoring/prometheus/metrics",
    }
    view = pod_view(body)
    assert (view.canary, view.metrics_port, view.metrics_path) == (
        True,
        8501,
        "/monitoring/prometheus/metrics",
    )
    assert view.metrics_url == "http://10.0.0.7:8501/monitoring/prometheus/metrics"


def test_a_stable_pod_without_monitoring_has_no_metrics_page() -> None:
    view = pod_view(pod(labels={api.LABEL_SERVEDMODEL: OWNER, api.LABEL_TRACK: "stable"}))
    assert (view.canary, view.metrics_port, view.metrics_path, view.metrics_url) == (
        False,
        0,
        "",
        "",
    )
    body = pod()
    body["metadata"]["annotations"] |= {"prometheus.io/port": "metrics"}  # a named port
    assert pod_view(body).metrics_port == 0


def test_an_empty_grpc_port_annotation_means_the_default_port() -> None:
    annotations = {api.ANNOTATION_MODEL_NAME: "mnist", api.ANNOTATION_GRPC_PORT: ""}
    assert pod_view(pod(annotations=annotations)).grpc_port == 8500


def test_a_pod_with_no_metadata_at_all_has_empty_names() -> None:
    view = pod_view({})
    assert (view.name, view.namespace, view.phase, view.grpc_port) == ("", "", "Pending", 8500)


def test_an_unschedulable_condition_without_a_message_reports_none() -> None:
    scheduled = condition("PodScheduled", "False", "Unschedulable")
    del scheduled["message"]
    assert pod_view(pod(phase="Pending", conditions=[scheduled])).unschedulable == ""


def test_an_empty_deployment_reads_as_zeros() -> None:
    view = deployment_view({})
    assert view == DeploymentView(
        generation=0,
        observed_generation=0,
        replicas=0,
        updated_replicas=0,
        config_hash="",
        current_replicas=0,
    )
    assert (view.replica_failure, view.replicas_managers) == ("", ())
    assert view.settled  # nothing asked, nothing outstanding


def test_a_replica_failure_without_reason_or_message_is_not_filled_in() -> None:
    bare = {"type": "ReplicaFailure", "status": "True"}
    assert deployment_view(deployment(status={"conditions": [bare]})).replica_failure == ": "


def test_a_field_manager_entry_without_a_manager_name_owns_replicas_as_empty() -> None:
    meta = {
        "managedFields": [
            {"operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl", "fieldsV1": {"f:metadata": {"f:labels": {}}}},
        ]
    }
    assert deployment_view({"metadata": meta}).replicas_managers == ("",)


def test_a_puller_is_found_after_other_init_containers() -> None:
    mesh = {
        "name": "istio-init",
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "no"}},
    }
    failed = {
        "name": "model-pull-3",
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": STORE_WORDS}},
    }
    view = pod_view(with_init(mesh, failed))
    assert (view.pull_container, view.pull_failure, view.pull_exit_code) == (
        "model-pull-3",
        STORE_WORDS,
        1,
    )


def test_a_later_pull_fails_after_an_earlier_one_succeeded() -> None:
    """One puller per version: version 2's copy finished, version 3's failed."""
    done = {"name": "model-pull-2", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    failed = {
        "name": "model-pull-3",
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": STORE_WORDS}},
    }
    view = pod_view(with_init(done, failed))
    assert (view.pull_container, view.pull_failure) == ("model-pull-3", STORE_WORDS)


def test_a_puller_running_again_after_a_clean_exit_is_no_failure() -> None:
    """A pod sandbox recreated re-runs its init containers: lastState holds the
    earlier, successful run."""
    again = {
        "name": "model-pull-3",
        "state": {"running": {"startedAt": "2026-12-01T05:03:00Z"}},
        "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }
    view = pod_view(with_init(again))
    assert (view.pull_container, view.pull_failure, view.pull_exit_code) == ("", "", 0)


@pytest.mark.parametrize(
    ("terminated", "words"),
    [
        ({"exitCode": 137, "reason": "OOMKilled"}, "exit code 137 (OOMKilled)"),
        ({"exitCode": 2}, "exit code 2 (Error)"),
        ({"exitCode": 1, "reason": "Error", "message": " \n"}, "exit code 1 (Error)"),
    ],
    ids=["oom-killed", "no-reason", "blank-message"],
)
def test_a_failed_pull_without_a_message_is_described_by_its_exit(
    terminated: dict[str, Any], words: str
) -> None:
    status = {"name": "model-pull-3", "state": {"terminated": terminated}}
    view = pod_view(with_init(status))
    assert (view.pull_failure, view.pull_exit_code) == (words, terminated["exitCode"])


def test_entries_name_every_kind_held() -> None:
    cache = Cache()
    cache.observe("Pod", pod("p1"), deleted=False)
    cache.observe("ReplicaSet", deployment(kind="ReplicaSet", name="mnist-7d9c"), deleted=False)
    cache.observe("Deployment", deployment(), deleted=False)
    cache.observe("Deployment", deployment(name="mnist-canary"), deleted=False)
    assert cache.entries() == {
        ("Pod", KEY, "p1"),
        ("ReplicaSet", KEY, "mnist-7d9c"),
        ("Deployment", KEY, "mnist"),
        ("Deployment", KEY, "mnist-canary"),
    }


def test_the_canary_deployment_is_a_child_but_not_the_deployment_view() -> None:
    cache = Cache()
    stable = deployment(generation=3, observed=3)
    canary = deployment(name="mnist-canary", generation=7, observed=1)
    cache.observe("Deployment", stable, deleted=False)
    cache.observe("Deployment", canary, deleted=False)
    assert cache.deployments[KEY] == deployment_view(stable)
    cache.drop("Deployment", KEY, "mnist-canary")
    assert cache.deployments[KEY] == deployment_view(stable)
    assert list(cache.children_of(KEY)) == [("Deployment", "mnist")]


def test_the_latency_summary_rounds_to_a_tenth_of_a_millisecond() -> None:
    prober = Prober(timeout=2.0)
    prober.latencies.extend([0.0123456, 0.0456789])
    # Nearest rank of two: p50 is the first, p99 and max the second.
    assert prober.latency_summary() == {"count": 2, "p50": 12.3, "p99": 45.7, "max": 45.7}
