"""Gate under load: does a model server whose gRPC pool Predict saturates keep its gate?

The real server answers every RPC, GetModelStatus included, from one pool of
`--grpc_max_threads` threads (tensorflow_serving/model_servers/server.cc at
2.20.0), and the stand-in does the same. Under Predict load the operator's
status probe waits for a free thread; a probe that times out must not close
an open gate by itself, or the pod's traffic moves onto the others, which then
time out too (decide.gate_for: a timeout closes an open gate only after
TFSO_PROBE_FAILURE_THRESHOLD consecutive failures).

Each scenario: a fresh operator probing every second, one ServedModel of two
replicas (half_plus_three, `--grpc_max_threads=2`), and closed-loop Predict
workers (more than the pool's threads, so the pool never idles) for `window`
seconds. Figures: gate flaps (a serving pod's gate going True -> False while
the pod is not terminating), the operator's GetModelStatus round trips
(p50/p99/max and timeouts, from its /healthz), and Predict failures.

Scenarios: the shipped defaults (2 s probe timeout, threshold 3); then a probe
timeout near the round trip measured under load, so some probes do time out,
with threshold 1 (the rule before hysteresis) and with threshold 3.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.harness import Bench, say
from benchmarks.runner import start_operator
from localdev.support.clients import PodInfo, PodWatcher, PredictLoad
from localdev.support.k8s import create_sm, delete_sm, servedmodel, wait_condition
from localdev.support.models import make_model_dir

MODEL = "half_plus_three"
REPLICAS = 2
GRPC_MAX_THREADS = 2
WORKERS_PER_POD = 6
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Scenario:
    """Operator settings for one run."""

    name: str
    probe_timeout: float
    failure_threshold: int


def gate_flaps(history: list[tuple[float, PodInfo]]) -> int:
    """Times a pod's gate went from True to False while the pod was not terminating."""
    last: dict[str, str | None] = {}
    flaps = 0
    for _, info in history:
        before = last.get(info.name)
        if before == "True" and info.gate == "False" and not info.terminating:
            flaps += 1
        last[info.name] = info.gate
    return flaps


def run_scenario(
    bench: Bench, api_client: Any, base: Path, scenario: Scenario, window: float
) -> dict[str, Any]:
    """One operator, one loaded ServedModel, `window` seconds of counting."""
    namespace = workload.create_namespace(bench.api, prefix="bench-load")
    env = {
        "TFSO_PROBE_INTERVAL_SECONDS": "1",
        "TFSO_PROBE_TIMEOUT_SECONDS": str(scenario.probe_timeout),
        "TFSO_PROBE_FAILURE_THRESHOLD": str(scenario.failure_threshold),
    }
    operator = start_operator(bench.cluster, f"load-{uuid.uuid4().hex[:4]}", env, namespace)
    name = "loaded"
    try:
        spec = {
            "modelName": MODEL,
            "storage": {"hostPath": {"path": str(base)}},
            "version": 1,
            "replicas": REPLICAS,
            "serverArgs": [f"--grpc_max_threads={GRPC_MAX_THREADS}"],
        }
        create_sm(api_client, namespace, servedmodel(name, spec))
        wait_condition(api_client, namespace, name, "Ready", "True", timeout=READY_TIMEOUT)
        with PodWatcher(api_client, namespace, name) as pods:
            load = PredictLoad(
                pods, MODEL, workers=WORKERS_PER_POD * REPLICAS, max_seconds=window + 30
            ).start()
            time.sleep(window)  # the measurement window, not a synchronisation
            report = load.stop()
            flaps = gate_flaps(pods.history)
        health = operator.fresh_health()
        latency = dict(health.get("probe_latency_ms") or {})
        figures = {
            "probe_timeout_seconds": scenario.probe_timeout,
            "failure_threshold": scenario.failure_threshold,
            "window_seconds": window,
            "gate_flaps": flaps,
            "probe_p50_ms": latency.get("p50"),
            "probe_p99_ms": latency.get("p99"),
            "probe_max_ms": latency.get("max"),
            "probes": latency.get("count"),
            "probe_timeouts": latency.get("timeouts"),
            "predicts": report.sent,
            "predict_failures": len(report.failures),
            "no_serving_pod": report.no_serving_pod,
        }
        say(
            f"gate under load [{scenario.name}]: {flaps} gate flaps, probes p50 "
            f"{figures['probe_p50_ms']} ms p99 {figures['probe_p99_ms']} ms "
            f"({figures['probe_timeouts']} timeouts), {report.sent} Predicts, "
            f"{len(report.failures)} failed"
        )
        return figures
    finally:
        delete_sm(api_client, namespace, name)
        operator.stop()
        workload.delete_namespace(bench.api, namespace)


def run(bench: Bench, window: float, quick: bool) -> dict[str, Any]:
    """The scenarios, in order; a tight timeout is derived from the first one's p50."""
    from kubernetes import config

    bench.with_standin()
    api_client = config.new_client_from_config(config_file=str(bench.cluster.kubeconfig))
    base = make_model_dir(workload.MODELS_ROOT, f"load-{uuid.uuid4().hex[:6]}", good=(1,))
    results: dict[str, Any] = {
        "grpc_max_threads": GRPC_MAX_THREADS,
        "replicas": REPLICAS,
        "predict_workers": WORKERS_PER_POD * REPLICAS,
    }
    try:
        defaults = run_scenario(bench, api_client, base, Scenario("defaults", 2.0, 3), window)
        results["defaults"] = defaults
        if quick:
            return results
        # A timeout at about twice the loaded median: most probes answer in time,
        # the slow tail does not, which is what a spike under load looks like.
        p50 = float(defaults.get("probe_p50_ms") or 50.0)
        tight = round(max(0.005, 2 * p50 / 1000), 3)
        for threshold in (1, 3):
            key = f"tight_timeout_threshold_{threshold}"
            results[key] = run_scenario(
                bench, api_client, base, Scenario(key, tight, threshold), window
            )
    finally:
        api_client.close()
    return results
