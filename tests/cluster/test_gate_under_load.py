"""The gate under Predict load: one slow answer is not a dead server.

The real server answers GetModelStatus from the same bounded gRPC pool as
Predict (`--grpc_max_threads`, model_servers/server.cc at 2.20.0), and so does
the stand-in (localdev/standin/grpc_service.py, RpcPool). A gate that closed on
one slow probe would move a busy pod's traffic onto the others, which would
then time out in turn. So a timeout closes an open gate only after
TFSO_PROBE_FAILURE_THRESHOLD (default 3) consecutive ones (decide.gate_for).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localdev.standin.faults import FAULT_ANNOTATION
from localdev.support.clients import PodWatcher, PredictLoad
from localdev.support.k8s import create_sm, servedmodel, wait_condition, wait_sm
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until

MODEL = "half_plus_three"
Body = dict[str, Any]


@pytest.fixture
def own_operator(api_client: Any, sim: Any, crds: None) -> Iterator[tuple[str, OperatorProcess]]:
    """A namespace and an operator of its own that probes every second."""
    core = client.CoreV1Api(api_client)
    namespace = f"load-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {"tfso-test": "true"}}})
    log = sim.state_dir / "logs" / f"operator-{namespace}.log"
    env = {"TFSO_PROBE_INTERVAL_SECONDS": "1"}
    proc = OperatorProcess(sim.kubeconfig, namespace, log, env=env)
    try:
        wait_until(
            lambda: core.list_namespaced_service_account(namespace).items,
            timeout=30,
            what=f"default ServiceAccount in {namespace}",
        )
        proc.start()
        yield namespace, proc
    finally:
        proc.stop()
        core.delete_namespace(namespace, propagation_policy="Background")


def set_fault(api_client: Any, namespace: str, pod: str, fault: str | None) -> None:
    patch = {"metadata": {"annotations": {FAULT_ANNOTATION: fault}}}
    client.CoreV1Api(api_client).patch_namespaced_pod(pod, namespace, patch)


def pod_entry(body: Body) -> Body:
    (entry,) = (body.get("status") or {}).get("pods") or [{}]
    return dict(entry)


def test_gate_holds_while_predicts_fill_the_grpc_pool(
    api_client: Any, own_operator: tuple[str, OperatorProcess], model_store: Path
) -> None:
    """Both threads of `--grpc_max_threads=2` busy with 1 s Predicts, back to back:
    each status probe waits for a thread (up to a second) and answers within
    its 2 s deadline; the gate never closes and no Predict fails."""
    namespace, proc = own_operator
    base = make_model_dir(model_store, "busy", good=(1,))
    spec = {
        "modelName": MODEL,
        "storage": {"hostPath": {"path": str(base)}},
        "version": 1,
        "serverArgs": ["--grpc_max_threads=2"],
        "podAnnotations": {FAULT_ANNOTATION: "slow-predict=1"},
    }
    create_sm(api_client, namespace, servedmodel("busy", spec))
    wait_condition(api_client, namespace, "busy", "Ready", "True", timeout=90)

    with PodWatcher(api_client, namespace, "busy") as pods:
        (pod,) = pods.serving()
        load = PredictLoad(pods, MODEL, workers=2, max_seconds=120, timeout=10).start()
        try:
            # kopf caches /healthz for up to 10 s: count from an answer computed
            # after the load began, and read the latencies from a later one.
            calls_before = int(proc.health_since(time.time())["probe_calls"])
            seen: dict[str, Any] = {}

            def a_dozen_more() -> bool:
                seen.update(proc.health())
                return int(seen["probe_calls"]) >= calls_before + 12

            # Probes every second: wait until a dozen were answered under load.
            wait_until(
                a_dozen_more, timeout=90, what="12 probes of the loaded server", interval=1.0
            )
            latency = seen["probe_latency_ms"]
        finally:
            report = load.stop()
        closed = [info for _, info in pods.history if info.name == pod.name and not info.ready]
    assert report.failures == [], report.summary()
    assert report.ok > 0, report.summary()
    assert closed == [], f"the loaded pod left the endpoints: {closed[:3]}"
    # The probes really queued behind the Predicts: the pool is shared.
    assert latency["max"] >= 300, latency
    assert latency["timeouts"] == 0, latency


def test_an_open_gate_closes_on_the_third_timeout_in_a_row(
    api_client: Any, own_operator: tuple[str, OperatorProcess], model_store: Path
) -> None:
    """A status call slower than the probe deadline: the first timeout leaves the
    pod serving (status.pods shows the reason beside ready: true) and an answer
    in time resets the count; timeouts that go on close the gate."""
    namespace, _ = own_operator
    base = make_model_dir(model_store, "flaky", good=(1,))
    spec = {"modelName": MODEL, "storage": {"hostPath": {"path": str(base)}}, "version": 1}
    create_sm(api_client, namespace, servedmodel("flaky", spec))
    wait_condition(api_client, namespace, "flaky", "Ready", "True", timeout=90)

    with PodWatcher(api_client, namespace, "flaky") as pods:
        (pod,) = pods.serving()
        set_fault(api_client, namespace, pod.name, "slow=3")

        def held_open(body: Body) -> bool:
            entry = pod_entry(body)
            return entry.get("gate") == "ProbeTimeout" and entry.get("ready") is True

        wait_sm(api_client, namespace, "flaky", "a probe timed out, gate held open", held_open)
        set_fault(api_client, namespace, pod.name, None)

        def answered_again(body: Body) -> bool:
            return pod_entry(body).get("gate") == "ModelAvailable"

        wait_sm(api_client, namespace, "flaky", "a probe answered in time again", answered_again)
        assert all(info.ready for _, info in pods.history if info.name == pod.name), (
            "one timeout took the pod out of the endpoints"
        )

        set_fault(api_client, namespace, pod.name, "slow=3")
        assert pods.wait(lambda p: not p[pod.name].ready, 60), "the gate never closed"
        closed = pods.pods()[pod.name]
        assert (closed.gate, closed.gate_reason) == ("False", "ProbeTimeout"), closed
        set_fault(api_client, namespace, pod.name, None)
        assert pods.wait(lambda p: p[pod.name].ready, 30), "the gate never opened again"
