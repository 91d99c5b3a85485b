"""kube-apiserver and etcd restarted while ServedModels change.

On a cluster of our own (instance 2): a rollout is in flight when the
component is SIGKILLed; it stays down a few seconds and is started again;
right after the API answers, a second ServedModel is changed. The operator
(the same process throughout: its pid must not change) has to reconnect on
its own and bring both to the new versions. Two figures per restart: how
long until the operator had acted on the post-restart change (its status
names the new generation), and until both ServedModels converged fully (that
one also waits for the controller manager, kwok and the stand-in, which
reconnect on their own schedules; pods kwok dropped during the outage are
nudged, see nudge_stuck_pods, but only once the operator has acted on a
change by itself).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.sim.cluster import SimCluster, wait_for
from localdev.support.k8s import create_sm, get_sm, patch_sm, servedmodel
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tests.reliability import results
from tests.reliability.conftest import (
    REL_PREFIX,
    delete_namespace,
    heal_nodes,
    make_namespace,
)
from tests.reliability.invariants import wait_converged

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

RESTARTS = int(os.environ.get("TFSO_CHAOS_RESTARTS", "2"))
DOWN_SECONDS = 3.0
LOAD_DELAY = "standin.tests.tfoperator.dev/load-delay-seconds"


@dataclass
class Env:
    cluster: SimCluster
    api: Any
    namespace: str
    operator: OperatorProcess
    version: int = 1
    # False from a control-plane kill until the operator acts on a change by
    # itself (wait_acted): pods are nudged only after that, so an operator
    # that never resumes cannot be carried to convergence by pod events.
    resumed: bool = True


@pytest.fixture(scope="module")
def env(own_cluster: SimCluster, own_api_client: Any, model_store: Path) -> Iterator[Env]:
    namespace = make_namespace(own_api_client)
    log = own_cluster.state_dir / "logs" / f"operator-{REL_PREFIX}-restarts.log"
    operator = OperatorProcess(own_cluster.kubeconfig, namespace, log).start()
    base = make_model_dir(model_store, "restarts", good=tuple(range(1, 3 + 4 * RESTARTS)))
    for name in ("inflight", "after"):
        spec = {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": str(base)}},
            "version": 1,
            "replicas": 2,
            # Every version but 1 loads for 2 s: the rollout spans the outage.
            "podAnnotations": {LOAD_DELAY: "2"},
        }
        create_sm(own_api_client, namespace, servedmodel(name, spec))
    for name in ("inflight", "after"):
        wait_converged(own_api_client, namespace, name, "1", 2, timeout=120)
    yield Env(own_cluster, own_api_client, namespace, operator)
    operator.stop()
    delete_namespace(own_api_client, namespace)


def _kill(cluster: SimCluster, component: str) -> None:
    pid = int((cluster.pids / f"{component}.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    wait_for(f"{component} to die", lambda: not SimCluster._alive(pid), timeout=10)


def _start(cluster: SimCluster, component: str) -> None:
    comp = next(c for c in cluster.components() if c.name == component)
    cluster._start(comp)


def nudge_stuck_pods(api: Any, namespace: str, older_than: float = 3.0) -> list[str]:
    """Touch pods kwok left half-way (Pending, or Terminating) so it plays their next stage.

    kwok gives up on a stage whose status write failed while the API server
    or etcd was down, and never retries it: the pod would stay Pending (or
    Terminating) for good, which no real kubelet does (it retries at its next
    sync). A touched annotation is an event kwok acts on. The operator is not
    involved: it only ever waits for such pods.
    """
    from datetime import UTC, datetime

    core = client.CoreV1Api(api)
    now = datetime.now(UTC)
    touched = []
    for pod in core.list_namespaced_pod(namespace).items:
        stuck = pod.metadata.deletion_timestamp is not None or pod.status.phase == "Pending"
        age = (now - pod.metadata.creation_timestamp).total_seconds()
        if stuck and age > older_than:
            stamp = {"reliability.tests.tfoperator.dev/nudged": now.isoformat()}
            try:
                core.patch_namespaced_pod(
                    pod.metadata.name, namespace, {"metadata": {"annotations": stamp}}
                )
            except ApiException as err:
                if err.status != 404:  # deleted since the list: nothing to nudge
                    raise
                continue
            touched.append(pod.metadata.name)
    return touched


def wait_acted(env: Env, name: str, generation: int, timeout: float = 120) -> None:
    """The operator's status on `name` names `generation`: it acted on that change."""

    def acted() -> bool:
        status = get_sm(env.api, env.namespace, name).get("status") or {}
        return bool(status.get("observedGeneration") == generation)

    wait_until(
        acted, timeout=timeout, what=f"the operator to act on generation {generation} of {name}"
    )
    env.resumed = True


def kill(env: Env, component: str) -> None:
    env.resumed = False
    _kill(env.cluster, component)


def converge(env: Env, name: str, versions: str, timeout: float = 120) -> None:
    """wait_converged, nudging pods kwok dropped during the outage (only once the
    operator has shown it resumed by itself)."""
    assert env.resumed, "nudging pods before the operator acted on its own after the restart"
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_converged(env.api, env.namespace, name, versions, 2, timeout=5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            nudge_stuck_pods(env.api, env.namespace)


def _restart_while_changing(env: Env, component: str) -> dict[str, float]:
    """One restart; returns the figures in seconds."""
    pid_before = env.operator.proc.pid if env.operator.proc else None
    env.version += 1
    inflight_target = env.version
    body = patch_sm(env.api, env.namespace, "inflight", {"spec": {"version": inflight_target}})
    # The rollout has started (the operator's status names it): new pods are loading.
    wait_acted(env, "inflight", body["metadata"]["generation"], timeout=60)
    kill(env, component)
    time.sleep(DOWN_SECONDS)
    _start(env.cluster, component)
    wait_for(f"{component} back (API /readyz)", env.cluster.healthy, timeout=60)
    back = time.monotonic()

    env.version += 1
    after_target = env.version
    body = patch_sm(env.api, env.namespace, "after", {"spec": {"version": after_target}})
    wait_acted(env, "after", body["metadata"]["generation"])
    acted_at = time.monotonic()
    converge(env, "after", str(after_target))
    converge(env, "inflight", str(inflight_target))
    converged_at = time.monotonic()

    assert env.operator.proc is not None and env.operator.proc.poll() is None, (
        "the operator exited:\n" + env.operator.log_tail()
    )
    assert env.operator.proc.pid == pid_before, "the operator was restarted"
    return {"acted": acted_at - back, "converged": converged_at - back}


@pytest.mark.parametrize(
    "component",
    ["kube-apiserver", "etcd"],
)
def test_operator_catches_up_after_a_restart(env: Env, component: str) -> None:
    failures: list[str] = []
    acted: list[float] = []
    converged: list[float] = []
    for i in range(RESTARTS):
        try:
            figures = _restart_while_changing(env, component)
            acted.append(figures["acted"])
            converged.append(figures["converged"])
        except AssertionError as err:
            failures.append(f"restart {i}: {err}")
            wait_for(f"{component} healthy", env.cluster.healthy, timeout=60)
    results.record(
        f"{component}-restart",
        "Faults",
        f"{component} SIGKILLed for {DOWN_SECONDS:.0f} s during a rollout, restarted; "
        "another ServedModel changed right after",
        RESTARTS,
        RESTARTS - len(failures),
        "caught up without an operator restart",
        suite="make chaos",
        figures={
            "operator acted s (max)": round(max(acted), 1) if acted else "-",
            "all converged s (max)": round(max(converged), 1) if converged else "-",
        },
    )
    assert not failures, "\n".join(failures)


# Longer than kopf's whole retry schedule for one request
# (settings.networking.error_backoffs: 1+1+2+3+5+8+13+21 = 54 s).
LONG_OUTAGE_SECONDS = 60.0


def test_operator_outlives_a_long_api_server_outage(env: Env) -> None:
    """An API server down for longer than kopf's retries for one request (a
    control-plane upgrade, an etcd repair): the watch streams give up, start
    over, and the running operator must still be there when the API returns."""
    pid_before = env.operator.proc.pid if env.operator.proc else None
    kill(env, "kube-apiserver")
    started = time.monotonic()
    exited_after: float | None = None
    try:
        while time.monotonic() - started < LONG_OUTAGE_SECONDS:
            if env.operator.proc is not None and env.operator.proc.poll() is not None:
                exited_after = time.monotonic() - started
                break
            time.sleep(0.5)
    finally:
        _start(env.cluster, "kube-apiserver")
        wait_for("kube-apiserver back (API /readyz)", env.cluster.healthy, timeout=60)
        # The node controller marked the simulated nodes Unknown meanwhile.
        heal_nodes(env.cluster)
        back = time.monotonic()
    survived = exited_after is None
    caught_up: float | None = None
    if survived:
        env.version += 1
        body = patch_sm(env.api, env.namespace, "after", {"spec": {"version": env.version}})
        wait_acted(env, "after", body["metadata"]["generation"])
        converge(env, "after", str(env.version))
        caught_up = time.monotonic() - back
    else:
        env.operator.start()  # for whatever runs next
    results.record(
        "kube-apiserver-long-outage",
        "Faults",
        f"kube-apiserver down {LONG_OUTAGE_SECONDS:.0f} s (longer than kopf's 54 s of retries "
        "per request), then a change",
        1,
        1 if survived else 0,
        "operator survived and caught up"
        if survived
        else f"operator exited after {exited_after:.0f} s",
        suite="make chaos",
        figures={
            "converged s after the API and nodes returned": round(caught_up, 1)
            if caught_up
            else "-"
        },
    )
    assert survived, f"the operator exited {exited_after:.0f} s into the outage"
    assert env.operator.proc is not None and env.operator.proc.pid == pid_before
