"""The stand-in's kubelet for model-server pods, against the local cluster.

kwok's create stage gives a labelled pod its IP; from there the stand-in
(localdev/standin/kubelet.py) starts the server, runs the pod's tcpSocket
probes, kills and restarts it, and honours preStop and the grace period on
deletion. Each test names the Kubernetes documentation page it follows.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.support.models import make_model_dir
from localdev.support.waiting import wait_until
from tfserving_operator import release

LABEL = "serving.tfoperator.dev/servedmodel"
GATE = "serving.tfoperator.dev/model-available"
FAULT = "standin.tests.tfoperator.dev/fault"
SERVER = "tensorflow-serving"


def tcp_probe(probe: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"tcpSocket": {"port": "grpc"}, **(probe or {}), **fields}


# The probes the operator renders (tests/unit/golden/minimal-hostpath.yaml).
RENDERED_PROBES = {
    "startupProbe": tcp_probe(periodSeconds=5, failureThreshold=120),
    "readinessProbe": tcp_probe(periodSeconds=10, failureThreshold=3),
    "livenessProbe": tcp_probe(periodSeconds=20, failureThreshold=3),
}
# The same shape, with periods a test can wait for.
QUICK_PROBES = {
    "startupProbe": tcp_probe(periodSeconds=1, failureThreshold=30),
    "readinessProbe": tcp_probe(periodSeconds=1, failureThreshold=1),
    "livenessProbe": tcp_probe(periodSeconds=1, failureThreshold=2),
}


def model_pod(
    name: str, store: Path, probes: dict[str, Any], grace: int = 45, pre_stop: int = 40
) -> dict[str, Any]:
    """A model-server pod shaped like the operator's, serving a real SavedModel
    (the server opens its ports only once its first version has loaded)."""
    models = make_model_dir(store, name, good=(1,))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL: name}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "readinessGates": [{"conditionType": GATE}],
            "containers": [
                {
                    "name": SERVER,
                    "image": release.DEFAULT_IMAGE,
                    "command": ["/usr/bin/tensorflow_model_server"],
                    "args": [
                        "--port=8500",
                        "--rest_api_port=0",
                        "--model_name=m",
                        "--model_base_path=/models",
                    ],
                    "ports": [{"name": "grpc", "containerPort": 8500}],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "lifecycle": {"preStop": {"sleep": {"seconds": pre_stop}}},
                    "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                    **probes,
                }
            ],
            "volumes": [{"name": "models", "hostPath": {"path": str(models)}}],
        },
    }


def read(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        core.read_namespaced_pod(name, namespace, _preload_content=False).data
    )
    return body


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def server_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status["name"] == SERVER:
            return dict(status)
    return {}


def answers(ip: str, port: int = 8500) -> bool:
    """The server's gRPC port accepts a TCP connection."""
    try:
        with socket.create_connection((ip, port), timeout=1):
            return True
    except OSError:
        return False


def waiter(
    core: client.CoreV1Api, namespace: str, name: str
) -> Callable[[Callable[[dict[str, Any]], bool], str, float], dict[str, Any]]:
    """``wait(check, what, timeout)``: the pod once ``check(pod)`` holds; a
    timeout shows its status."""

    def describe() -> str:
        try:
            status = read(core, namespace, name).get("status", {})
        except ApiException as e:
            return f"API error {e.status}"
        return json.dumps(
            {k: status.get(k) for k in ("phase", "conditions", "containerStatuses")}, indent=None
        )

    def wait(check: Callable[[dict[str, Any]], bool], what: str, timeout: float) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            pod = read(core, namespace, name)
            return pod if check(pod) else None

        return wait_until(probe, timeout=timeout, what=f"pod {name}: {what}", describe=describe)

    return wait


def events(core: client.CoreV1Api, namespace: str, name: str) -> list[tuple[str, str]]:
    items = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    ).items
    return [(e.reason, e.message) for e in items]


def set_gate(core: client.CoreV1Api, namespace: str, name: str, status: str) -> None:
    """What the operator does: a strategic-merge patch of status.conditions."""
    body = {"status": {"conditions": [{"type": GATE, "status": status}]}}
    core.patch_namespaced_pod_status(
        name, namespace, body, _content_type="application/strategic-merge-patch+json"
    )


def test_rendered_probes_start_the_container_and_ready_waits_for_the_gate(
    api_client: Any, namespace: str, model_store: Path
) -> None:
    """Pod Lifecycle ("Container states", "Pod readiness") and Configure
    Liveness, Readiness and Startup Probes: the container runs, turns started
    after its startup probe and ready after its readiness probe; the pod is
    Ready only once the readiness gate's condition is True too."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, model_pod("start", model_store, RENDERED_PROBES))
    wait = waiter(core, namespace, "start")
    pod = wait(
        lambda p: condition(p, "ContainersReady").get("status") == "True",
        "containers ready after the startup and readiness probes",
        60,
    )
    status = server_status(pod)
    assert status["started"] and status["ready"] and status["restartCount"] == 0
    assert "running" in status["state"]
    assert pod["status"]["phase"] == "Running"
    ready = condition(pod, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReadinessGatesNotReady")
    assert answers(pod["status"]["podIP"])

    set_gate(core, namespace, "start", "True")
    pod = wait(
        lambda p: condition(p, "Ready").get("status") == "True", "Ready once the gate is", 30
    )
    set_gate(core, namespace, "start", "False")
    pod = wait(lambda p: condition(p, "Ready").get("status") == "False", "not Ready again", 30)
    assert condition(pod, GATE)["status"] == "False", "the kubelet overwrote the gate"
    assert condition(pod, "ContainersReady")["status"] == "True"
    reasons = {reason for reason, _ in events(core, namespace, "start")}
    assert {"Created", "Started"} <= reasons


def test_liveness_failure_kills_and_restarts_the_container(
    api_client: Any, namespace: str, model_store: Path
) -> None:
    """Configure Liveness, Readiness and Startup Probes ("Define a TCP
    liveness probe") and Pod Lifecycle ("Container restarts"): when the port
    closes, failureThreshold failed liveness probes kill the container (SIGKILL
    after the grace period: exit 137) and it is restarted after the back-off."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace, model_pod("live", model_store, QUICK_PROBES, grace=2, pre_stop=1)
    )
    wait = waiter(core, namespace, "live")
    wait(lambda p: bool(server_status(p).get("ready")), "container ready", 60)
    # The stand-in's vanish fault closes the listeners: the process "hangs" without its port.
    core.patch_namespaced_pod("live", namespace, {"metadata": {"annotations": {FAULT: "vanish"}}})
    pod = wait(
        lambda p: server_status(p).get("restartCount") == 1, "restartCount 1 after the kill", 30
    )
    status = server_status(pod)
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert not status["ready"]
    seen = events(core, namespace, "live")
    assert ("Killing", f"Container {SERVER} failed liveness probe, will be restarted") in seen
    assert any(
        r == "Unhealthy" and m.startswith("Liveness probe failed: dial tcp") for r, m in seen
    )

    core.patch_namespaced_pod("live", namespace, {"metadata": {"annotations": {FAULT: None}}})
    pod = wait(
        lambda p: bool(server_status(p).get("ready")) and server_status(p)["restartCount"] == 1,
        "running and ready again after the back-off",
        40,
    )
    assert answers(pod["status"]["podIP"])


def test_deletion_runs_pre_stop_while_serving_then_deletes_after_the_grace_period(
    api_client: Any, namespace: str, model_store: Path
) -> None:
    """Pod Lifecycle, "Termination of Pods" and Container Lifecycle Hooks: the
    preStop hook runs first while the server keeps serving; SIGTERM is ignored
    by tensorflow_model_server, so the container stops at the end of the
    grace period and only then is the pod object deleted."""
    core = client.CoreV1Api(api_client)
    grace = 6
    core.create_namespaced_pod(
        namespace, model_pod("bye", model_store, QUICK_PROBES, grace=grace, pre_stop=3)
    )
    wait = waiter(core, namespace, "bye")
    pod = wait(lambda p: bool(server_status(p).get("ready")), "container ready", 60)
    ip = pod["status"]["podIP"]
    core.delete_namespaced_pod("bye", namespace)
    deleted_at = time.monotonic()
    answered_at: list[float] = []

    def gone() -> bool:
        try:
            read(core, namespace, "bye")
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        if answers(ip):
            answered_at.append(time.monotonic() - deleted_at)
        return False

    wait_until(gone, timeout=grace + 15, what="the pod object deleted after the grace period")
    lasted = time.monotonic() - deleted_at
    assert lasted >= grace - 1, f"deleted after {lasted:.1f} s, before the {grace} s grace period"
    assert answered_at and max(answered_at) >= 3, (
        f"the server did not answer through the preStop sleep (answers at {answered_at})"
    )
    assert not answers(ip)


def test_pod_deleted_before_its_container_started_goes_at_once(
    api_client: Any, namespace: str, model_store: Path
) -> None:
    """Pod Lifecycle, "Termination of Pods": a pod with no running container
    has nothing to stop; the kubelet deletes the object at once."""
    core = client.CoreV1Api(api_client)
    manifest = model_pod("never", model_store, QUICK_PROBES, grace=60)
    # Bound to a node kwok does not manage: it never gets an IP, so no
    # container starts. Without a kubelet the bound pod would stay Terminating.
    manifest["spec"]["nodeName"] = "sim-absent-node"
    core.create_namespaced_pod(namespace, manifest)
    core.delete_namespaced_pod("never", namespace)

    def gone() -> bool:
        try:
            read(core, namespace, "never")
        except ApiException as e:
            return e.status == 404
        return False

    wait_until(gone, timeout=10, what="the unstarted pod deleted at once")


def test_a_pod_keeps_its_ip_when_another_writer_changes_it(
    api_client: Any, namespace: str, model_store: Path
) -> None:
    """Cluster Networking / Pods ("Resource sharing and communication"): the
    containers of a pod share the network namespace the kubelet created with
    its sandbox, so the pod's IP is the same for its whole life. kwok's
    create stage, played twice after an API server outage, wrote a second
    IP; the server kept listening on the first, so clients and the operator
    dialled an address nobody served. The kubelet reports the sandbox's IP
    at its next status sync, putting the first one back."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, model_pod("stable-ip", model_store, QUICK_PROBES))
    wait = waiter(core, namespace, "stable-ip")
    pod = wait(lambda p: bool(server_status(p).get("ready")), "its server ready", 60)
    first = pod["status"]["podIP"]
    assert answers(first)
    other = "127.3.255.254"
    # What kwok sends: a merge patch of the status with a new IP.
    core.patch_namespaced_pod_status(
        "stable-ip",
        namespace,
        {"status": {"podIP": other, "podIPs": [{"ip": other}]}},
        _content_type="application/merge-patch+json",
    )
    pod = wait(
        lambda p: p["status"].get("podIP") == first,
        f"its first IP {first} back in place of {other}",
        30,
    )
    assert pod["status"]["podIPs"] == [{"ip": first}]
    assert answers(first)
