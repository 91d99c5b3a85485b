"""Gate latency: a version turning AVAILABLE on a pod's model server -> that pod Ready.

For each pod, two clocks in this process: a thread asks the pod's server
GetModelStatus every few milliseconds and notes when the version first reads
AVAILABLE; a pod watch notes when the pod first reads Ready (the operator
probed the server, opened the readiness gate, and the kubelet, kwok here,
recomputed Ready). The difference is what the gate adds to a rollout.

Each round is a fresh ServedModel of a few replicas whose versions load for
a different time (the stand-in's load-delay annotation), so the moment a
version turns AVAILABLE falls anywhere in the operator's probe schedule.

`measure_gate_latency` needs an operator watching `namespace`; run this
module (`python -m benchmarks.gate_latency`) to start one with the shipped
defaults in a namespace of its own and print the median and p90.
"""

from __future__ import annotations

import math
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from localdev.support.clients import PodWatcher, model_status
from localdev.support.k8s import create_sm, delete_sm, servedmodel
from localdev.support.models import make_model_dir

MODEL = "half_plus_three"
LOAD_DELAY_ANNOTATION = "standin.tests.tfoperator.dev/load-delay-seconds"
REPLICAS_PER_ROUND = 5
# Load times of successive rounds, in seconds: spread over several probe
# backoff steps so no round lines up with the operator's schedule by luck.
LOAD_DELAYS = (2.3, 4.1, 6.7, 3.2, 8.9, 5.5, 1.7, 7.3)
POLL_SECONDS = 0.005
ROUND_TIMEOUT = 90.0


def _watch_available(
    target: str, version: int, stop: threading.Event, seen: dict[str, float], key: str
) -> None:
    """Poll `target` until `version` is AVAILABLE; note the moment in seen[key].

    Only a transition this poller saw counts: if its first answer already says
    AVAILABLE, the moment is unknown and nothing is noted (it started late).
    After a failed call the channel is replaced: gRPC holds a failed channel
    back from reconnecting for its reconnect backoff (1 s, growing, by
    default), so a kept channel saw the server's port open seconds late, and
    the pod read Ready "before" its version was AVAILABLE.
    """
    channel = grpc.insecure_channel(target)
    saw_not_available = False
    try:
        while not stop.is_set():
            try:
                states = model_status(target, MODEL, timeout=1.0, channel=channel)
            except grpc.RpcError:
                states = []
                channel.close()
                channel = grpc.insecure_channel(target)
            if any(s.version == version and s.state == "AVAILABLE" for s in states):
                if saw_not_available:
                    seen[key] = time.monotonic()
                else:
                    seen[key] = float("nan")
                return
            saw_not_available = True
            stop.wait(POLL_SECONDS)
    finally:
        channel.close()


def _gate_opened_at(pods: PodWatcher) -> dict[str, float]:
    """When the watch first showed each pod's availability gate True."""
    opened: dict[str, float] = {}
    for when, info in pods.history:
        if info.gate == "True":
            opened.setdefault(info.name, when)
    return opened


def _one_round(
    api_client: Any, namespace: str, base: Path, replicas: int, delay: float
) -> list[tuple[float, float]]:
    """(AVAILABLE -> gate True, AVAILABLE -> Ready) of each pod of one round."""
    name = f"gate-latency-{uuid.uuid4().hex[:6]}"
    spec = {
        "modelName": MODEL,
        "storage": {"hostPath": {"path": str(base)}},
        "version": 1,
        "replicas": replicas,
        "podAnnotations": {LOAD_DELAY_ANNOTATION: f"{delay:g}"},
    }
    available: dict[str, float] = {}
    pollers: dict[str, threading.Thread] = {}
    stop = threading.Event()
    with PodWatcher(api_client, namespace, name) as pods:
        create_sm(api_client, namespace, servedmodel(name, spec))
        try:
            deadline = time.monotonic() + ROUND_TIMEOUT
            while time.monotonic() < deadline:
                current = pods.pods()
                for pod in current.values():
                    if pod.ip and pod.name not in pollers:
                        # Started as soon as the pod has an IP: the server
                        # cannot be AVAILABLE before it is polled.
                        poller = threading.Thread(
                            target=_watch_available,
                            args=(pod.target, 1, stop, available, pod.name),
                            daemon=True,
                        )
                        poller.start()
                        pollers[pod.name] = poller
                ready = [n for n in current if n in pods.ready_at and n in available]
                if len(ready) >= replicas:
                    break
                pods.wait(lambda _: False, 0.05)
            else:
                raise TimeoutError(f"{name}: not every pod Ready after {ROUND_TIMEOUT:.0f} s")
            # NaN: a poller whose first answer was already AVAILABLE (it started
            # late, the transition unseen): not a sample.
            seen = [n for n in ready if not math.isnan(available[n])]
            opened = _gate_opened_at(pods)
            return [(opened[n] - available[n], pods.ready_at[n] - available[n]) for n in seen]
        finally:
            stop.set()
            for poller in pollers.values():
                poller.join(timeout=2)
            delete_sm(api_client, namespace, name)


@dataclass
class GateRun:
    """The latencies measured, and how many pods were started to measure them.

    `latencies` end at the pod's Ready: the gate (the operator) and the
    kubelet's startup probe (every second; a container is ready once it
    passed) both have to agree. `gate_latencies` end at the gate, the
    operator's share.
    """

    latencies: list[float]
    gate_latencies: list[float]
    pods: int


def measure_gate_latency(
    api_client: Any, namespace: str, model_store: Path, samples: int
) -> GateRun:
    """Seconds from a pod's server reporting its version AVAILABLE to the pod turning
    Ready, for `samples` pods (rounds of up to five replicas, each a new ServedModel).

    `api_client` is a kubernetes ApiClient; an operator must watch `namespace`;
    `model_store` holds half_plus_three/1 (as the test fixture of that name).
    """
    base = make_model_dir(model_store, "gate-latency", good=(1,))
    pairs: list[tuple[float, float]] = []
    pods = 0
    round_number = 0
    while len(pairs) < samples:
        if round_number >= 3 * (samples // REPLICAS_PER_ROUND + 1):
            raise RuntimeError(
                f"only {len(pairs)} of {samples} samples after {round_number} rounds: "
                "the pollers kept starting after the versions were AVAILABLE"
            )
        replicas = min(REPLICAS_PER_ROUND, samples - len(pairs))
        delay = LOAD_DELAYS[round_number % len(LOAD_DELAYS)]
        pairs += _one_round(api_client, namespace, base, replicas, delay)
        pods += replicas
        round_number += 1
    pairs = pairs[:samples]
    return GateRun([ready for _, ready in pairs], [gate for gate, _ in pairs], pods)


def summarize(latencies: list[float]) -> dict[str, float]:
    """Median, p90, p99 (nearest rank) and max, in seconds."""
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "samples": float(len(ordered)),
        "median": statistics.median(ordered),
        "p90": rank(0.9),
        "p99": rank(0.99),
        "max": ordered[-1],
    }


def main(argv: list[str]) -> int:
    """Start an operator with the shipped defaults in a namespace of its own; print figures."""
    from kubernetes import client, config

    from localdev.sim.cluster import SimCluster
    from localdev.support.operator import OperatorProcess
    from localdev.support.waiting import wait_until

    samples = int(argv[0]) if argv else 20
    sim = SimCluster(with_standin=True).up()
    model_store = _model_store()
    api_client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    core = client.CoreV1Api(api_client)
    namespace = f"bench-gate-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    # The shipped probe backoff (tests use a faster one).
    operator = OperatorProcess(
        sim.kubeconfig,
        namespace,
        sim.state_dir / "logs" / f"operator-{namespace}.log",
        env={"TFSO_PROBE_BACKOFF_MAX_SECONDS": "5"},
    )
    try:
        wait_until(
            lambda: core.list_namespaced_service_account(namespace).items,
            timeout=30,
            what="default ServiceAccount",
        )
        operator.start()
        run = measure_gate_latency(api_client, namespace, model_store, samples)
        figures = summarize(run.latencies)
        gate = summarize(run.gate_latencies)
        probes = float(operator.health_since(time.time())["probe_calls"])
    finally:
        operator.stop()
        core.delete_namespace(namespace, propagation_policy="Background")
        api_client.close()
    print(
        f"gate latency (version AVAILABLE -> pod Ready), {figures['samples']:.0f} pods: "
        f"median {figures['median']:.3f} s, p90 {figures['p90']:.3f} s, "
        f"p99 {figures['p99']:.3f} s, max {figures['max']:.3f} s; "
        f"{probes / run.pods:.1f} probes per pod; the gate alone: median {gate['median']:.3f} s, "
        f"p99 {gate['p99']:.3f} s"
    )
    return 0


def _model_store() -> Path:
    """The test suite's model store, with half_plus_three/1 exported if missing."""
    import os
    import subprocess

    root = Path(os.environ.get("TFSO_TEST_MODELS", "/tmp/tfso-test-models"))
    if not (root / "half_plus_three" / "1" / "saved_model.pb").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training_jobs.half_plus_three.export_half_plus_three",
                f"--model_dir={root / 'half_plus_three'}",
                "--model_version=1",
            ],
            check=True,
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
        )
    return root


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
