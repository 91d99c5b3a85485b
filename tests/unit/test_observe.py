"""observe.py's parsers and Cache: Kubernetes objects in, the views decide reads out."""

from __future__ import annotations

from typing import Any

from tfserving_operator import api
from tfserving_operator.observe import Cache, deployment_view, pod_view, strip_object

KEY = ("ml", "mnist")


def pod_body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "mnist-abc",
            "namespace": "ml",
            "labels": {api.LABEL_SERVEDMODEL: "mnist"},
            "annotations": {
                api.ANNOTATION_CONFIG_HASH: "h3",
                api.ANNOTATION_VERSIONS: "2,3",
                api.ANNOTATION_MODEL_NAME: "mnist",
                api.ANNOTATION_GRPC_PORT: "9000",
            },
        },
        "status": status,
    }


def test_a_fresh_pending_pod() -> None:
    view = pod_view(pod_body())
    assert (view.phase, view.ip, view.ready, view.gate, view.running) == (
        "Pending",
        "",
        False,
        None,
        False,
    )
    assert not view.probeable
    assert (view.config_hash, view.versions, view.grpc_port) == ("h3", "2,3", 9000)


def test_a_running_pod_with_an_open_gate() -> None:
    view = pod_view(
        pod_body(
            phase="Running",
            podIP="10.1.2.3",
            conditions=[
                {"type": "Ready", "status": "True"},
                {"type": api.GATE_CONDITION, "status": "True", "reason": "ModelAvailable"},
            ],
            containerStatuses=[
                {"name": "sidecar", "state": {"waiting": {}}},
                {"name": api.CONTAINER_NAME, "state": {"running": {}}, "restartCount": 0},
            ],
        )
    )
    assert (view.ready, view.gate, view.gate_reason) == (True, True, "ModelAvailable")
    assert view.running and view.probeable
    assert view.target == "10.1.2.3:9000"


def test_a_crashed_server_keeps_its_last_words() -> None:
    view = pod_view(
        pod_body(
            phase="Running",
            podIP="10.1.2.3",
            containerStatuses=[
                {
                    "name": api.CONTAINER_NAME,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "restartCount": 2,
                    "lastState": {"terminated": {"exitCode": 255, "message": "Failed to start\n"}},
                }
            ],
        )
    )
    assert (view.running, view.restart_count, view.termination_message) == (
        False,
        2,
        "Failed to start",
    )


def test_unschedulable_only_from_the_scheduler() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unplaced = pod_view(
        pod_body(
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ]
        )
    )
    assert unplaced.unschedulable == message
    waiting = pod_view(pod_body(conditions=[{"type": "PodScheduled", "status": "False"}]))
    assert waiting.unschedulable == ""


def test_a_terminating_pod() -> None:
    body = pod_body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_view(body).terminating


def test_deployment_view_reads_the_template_hash_and_progress() -> None:
    view = deployment_view(
        {
            "metadata": {"generation": 4},
            "spec": {
                "replicas": 3,
                "template": {"metadata": {"annotations": {api.ANNOTATION_CONFIG_HASH: "h3"}}},
            },
            "status": {"observedGeneration": 3, "replicas": 4, "updatedReplicas": 1},
        }
    )
    assert (view.config_hash, view.replicas, view.updated_replicas, view.current_replicas) == (
        "h3",
        3,
        1,
        4,
    )
    assert not view.settled


def test_strip_object_keeps_what_drift_detection_compares() -> None:
    body = {
        "kind": "Service",
        "metadata": {"name": "s", "resourceVersion": "9", "managedFields": [{}], "uid": "u"},
        "spec": {"ports": []},
        "status": {"loadBalancer": {}},
    }
    assert strip_object(body) == {
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": []},
    }


def test_cache_files_events_under_their_servedmodel() -> None:
    cache = Cache()
    assert cache.observe("Pod", pod_body(), deleted=False) == KEY
    assert set(cache.pods[KEY]) == {"mnist-abc"}
    deployment = {
        "kind": "Deployment",
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "labels": {api.LABEL_SERVEDMODEL: "mnist"},
        },
        "spec": {"template": {"metadata": {"annotations": {api.ANNOTATION_CONFIG_HASH: "h3"}}}},
    }
    cache.observe("Deployment", deployment, deleted=False)
    assert cache.deployments[KEY].config_hash == "h3"
    assert ("Deployment", "mnist") in cache.children[KEY]
    cache.observe("Pod", pod_body(), deleted=True)
    assert cache.pods[KEY] == {}
    unlabelled = {"metadata": {"name": "x", "namespace": "ml"}}
    assert cache.observe("Pod", unlabelled, deleted=False) is None
    cache.forget(KEY)
    assert KEY not in cache.deployments and KEY not in cache.children
