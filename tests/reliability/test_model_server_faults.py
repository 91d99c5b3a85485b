"""Model servers that hang, answer garbage, answer slowly, or vanish.

The stand-in's fault annotation (localdev/standin/faults.py) breaks one pod's
server. The operator must bound every probe by TFSO_PROBE_TIMEOUT_SECONDS,
close that pod's gate with a reason that names the fault (ProbeTimeout,
ProbeFailed, ServerUnreachable), show it in the ServedModel's status with
Ready not True, heal when the server does, and never let a broken server
slow another ServedModel.

Runs on the own cluster (instance 2): its stand-in is started from this
checkout, so it knows the fault annotation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localdev.sim.cluster import SimCluster
from localdev.standin.faults import FAULT_ANNOTATION
from localdev.support.k8s import condition, create_sm, get_sm, patch_sm, pods_of, servedmodel
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tests.reliability import results
from tests.reliability.conftest import REL_PREFIX, delete_namespace, make_namespace
from tests.reliability.invariants import wait_converged

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

PROBE_TIMEOUT = 1.0
PROBE_INTERVAL = 2.0
AVAILABILITY_TIMEOUT = 10
# fault annotation -> the gate reason the operator must write
FAULTS = {
    "hang": "ProbeTimeout",
    "garbage": "ProbeFailed",
    "slow=4": "ProbeTimeout",
    "vanish": "ServerUnreachable",
}


@dataclass
class Env:
    api: Any
    namespace: str
    operator: OperatorProcess
    base: Path
    cluster: SimCluster

    def spec(self, version: int = 1, **extra: Any) -> dict[str, Any]:
        return {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": str(self.base)}},
            "version": version,
            "rollout": {"availabilityTimeoutSeconds": AVAILABILITY_TIMEOUT},
            **extra,
        }


@pytest.fixture(scope="module")
def env(own_cluster: SimCluster, own_api_client: Any, model_store: Path) -> Iterator[Env]:
    namespace = make_namespace(own_api_client)
    log = own_cluster.state_dir / "logs" / f"operator-{REL_PREFIX}-faults.log"
    operator = OperatorProcess(
        own_cluster.kubeconfig,
        namespace,
        log,
        env={
            "TFSO_PROBE_TIMEOUT_SECONDS": str(PROBE_TIMEOUT),
            "TFSO_PROBE_INTERVAL_SECONDS": str(PROBE_INTERVAL),
        },
    ).start()
    base = make_model_dir(model_store, "faults", good=(1, 2, 3, 4, 5, 6))
    yield Env(own_api_client, namespace, operator, base, own_cluster)
    operator.stop()
    delete_namespace(own_api_client, namespace)


def _gate_reasons(body: dict[str, Any]) -> list[str]:
    return [p.get("gate", "") for p in (body.get("status") or {}).get("pods") or []]


def _annotate(env: Env, pod: str, fault: str | None) -> None:
    client.CoreV1Api(env.api).patch_namespaced_pod(
        pod, env.namespace, {"metadata": {"annotations": {FAULT_ANNOTATION: fault}}}
    )


def _name(fault: str) -> str:
    return fault.split("=")[0]


def test_broken_servers_are_reported_and_heal(env: Env) -> None:
    """A serving pod's server breaks: gate closed with the fault's reason, Ready
    not True, within one probe interval plus one timeout; it heals when fixed.
    A ServedModel whose server is broken from the start never becomes Ready
    and is Degraded once its availability timeout passes, naming the fault."""
    # Broken from the start, all at once (each waits out its availability timeout).
    for fault in FAULTS:
        annotations = {FAULT_ANNOTATION: fault}
        create_sm(
            env.api,
            env.namespace,
            servedmodel(f"new-{_name(fault)}", env.spec(podAnnotations=annotations)),
        )
    for fault in FAULTS:
        create_sm(env.api, env.namespace, servedmodel(f"live-{_name(fault)}", env.spec()))
    for fault in FAULTS:
        wait_converged(env.api, env.namespace, f"live-{_name(fault)}", "1", 1, timeout=60)

    outcomes: dict[str, list[str]] = {fault: [] for fault in FAULTS}
    detect: dict[str, float] = {}
    for fault, reason in FAULTS.items():
        name = f"live-{_name(fault)}"
        pod = pods_of(env.api, env.namespace, name)[0].metadata.name
        started = time.monotonic()
        _annotate(env, pod, fault)

        def reported(name: str = name, reason: str = reason) -> bool:
            body = get_sm(env.api, env.namespace, name)
            return (
                _gate_reasons(body) == [reason] and condition(body, "Ready").get("status") != "True"
            )

        try:
            wait_until(
                reported, timeout=PROBE_INTERVAL + PROBE_TIMEOUT + 10, what=f"{name}: {reason}"
            )
            detect[fault] = time.monotonic() - started
            _annotate(env, pod, None)
            wait_converged(env.api, env.namespace, name, "1", 1, timeout=30)
        except AssertionError as err:
            outcomes[fault].append(f"serving pod broken by {fault}: {err}")

    deadline = AVAILABILITY_TIMEOUT + 15
    for fault, reason in FAULTS.items():
        name = f"new-{_name(fault)}"

        def degraded(name: str = name, reason: str = reason) -> bool:
            body = get_sm(env.api, env.namespace, name)
            cond = condition(body, "Degraded")
            return (
                _gate_reasons(body) == [reason]
                and condition(body, "Ready").get("status") == "False"
                and cond.get("status") == "True"
                and reason in cond.get("message", "")
            )

        try:
            wait_until(degraded, timeout=deadline, what=f"{name}: Degraded naming {reason}")
            assert get_sm(env.api, env.namespace, name)["status"].get("servingVersions") == ""
        except AssertionError as err:
            outcomes[fault].append(f"server broken from the start by {fault}: {err}")

    for fault, reason in FAULTS.items():
        results.record(
            f"model-server-{_name(fault)}",
            "Faults",
            f"Model server fault `{fault}` (serving pod broken, then healed; and a new "
            f"ServedModel broken from the start); probe timeout {PROBE_TIMEOUT:g} s",
            2,
            2 - len(outcomes[fault]),
            f"gate {reason}, Ready not True, healed",
            suite="make chaos",
            figures={"detected s": round(detect[fault], 1) if fault in detect else "-"},
        )
    problems = [p for found in outcomes.values() for p in found]
    assert not problems, "\n".join(problems)


def _time_rollouts(env: Env, prefix: str, count: int = 2) -> list[float]:
    """Seconds from create to Ready, then from v1->v2 to Ready, for `count` fresh ServedModels."""
    seconds = []
    for i in range(count):
        name = f"{prefix}-{i}"
        started = time.monotonic()
        create_sm(env.api, env.namespace, servedmodel(name, env.spec()))
        wait_converged(env.api, env.namespace, name, "1", 1, timeout=60)
        seconds.append(time.monotonic() - started)
        started = time.monotonic()
        patch_sm(env.api, env.namespace, name, {"spec": {"version": 2}})
        wait_converged(env.api, env.namespace, name, "2", 1, timeout=60)
        seconds.append(time.monotonic() - started)
    return seconds


def test_hung_servers_do_not_slow_healthy_ones(env: Env) -> None:
    baseline = _time_rollouts(env, "calm")
    for i in range(3):
        hung = env.spec(replicas=2, podAnnotations={FAULT_ANNOTATION: "hang"})
        create_sm(env.api, env.namespace, servedmodel(f"hung-{i}", hung))
    wait_until(
        lambda: all(
            _gate_reasons(get_sm(env.api, env.namespace, f"hung-{i}")) == ["ProbeTimeout"] * 2
            for i in range(3)
        ),
        timeout=30,
        what="six hung model servers being probed",
    )
    during = _time_rollouts(env, "busy")
    normal, busy = statistics.median(baseline), statistics.median(during)
    # "About its normal time": the shared CPU is noisy, a probe timeout is not.
    ok = busy <= 2 * normal + PROBE_TIMEOUT
    results.record(
        "model-server-hung-neighbours",
        "Faults",
        "Healthy ServedModels created and rolled out while 6 hung model servers exist",
        len(during),
        len(during) if ok else 0,
        "rollouts in their normal time",
        suite="make chaos",
        figures={"median s without": round(normal, 2), "median s with": round(busy, 2)},
    )
    assert ok, f"median rollout {busy:.2f} s with hung neighbours, {normal:.2f} s without"


def test_hung_servers_outnumbering_probe_slots(env: Env, start_own_operator: Any) -> None:
    """Measured, not asserted: every probe takes one of its own ServedModel's
    TFSO_MAX_CONCURRENT_PROBES slots, a hung one for a whole timeout; with only
    2 slots each, hung ServedModels fill their own slots, not the healthy
    ones' (until per-ServedModel slots, one global pool of 2 made the healthy
    rollouts wait: 4.2 s against 1.7 s)."""
    namespace = make_namespace(env.api)
    try:
        crowded = Env(env.api, namespace, env.operator, env.base, env.cluster)
        start_own_operator(
            namespace,
            "probe-slots",
            env={"TFSO_MAX_CONCURRENT_PROBES": "2", "TFSO_PROBE_TIMEOUT_SECONDS": "2"},
        )
        baseline = _time_rollouts(crowded, "calm", count=1)
        for i in range(5):
            hung = crowded.spec(replicas=2, podAnnotations={FAULT_ANNOTATION: "hang"})
            create_sm(env.api, namespace, servedmodel(f"hung-{i}", hung))

        def hung_gates() -> list[str]:
            return [
                reason
                for i in range(5)
                for reason in _gate_reasons(get_sm(env.api, namespace, f"hung-{i}"))
            ]

        # The slots are taken only once the operator probes the hung servers.
        wait_until(
            lambda: hung_gates() == ["ProbeTimeout"] * 10,
            timeout=60,
            what="ten hung model servers being probed",
        )
        during = _time_rollouts(crowded, "busy", count=1)
        # Queued behind hung probes, the healthy rollout still completed (its
        # waits above assert it) and no hung server was let in meanwhile.
        assert hung_gates() == ["ProbeTimeout"] * 10, hung_gates()
    finally:
        delete_namespace(env.api, namespace)
    normal, busy = statistics.median(baseline), statistics.median(during)
    results.record(
        "model-server-hung-outnumber-slots",
        "Faults",
        "Same, with 10 hung servers and only 2 probe slots per ServedModel "
        "(TFSO_MAX_CONCURRENT_PROBES=2): measured, not asserted",
        len(during),
        len(during),
        "rollouts completed (see figures)",
        suite="make chaos",
        figures={"median s without": round(normal, 2), "median s with": round(busy, 2)},
    )
