"""Probe load: GetModelStatus calls per model server per minute in steady state.

ServedModels of one replica each, served by the stand-in model server, all
Ready (which also times creation -> Ready end to end: pods scheduled,
started, probed, gate opened). Then the operator's own call counter (the
`probe_calls` kopf probe on its /healthz) is read at both ends of a window
in which nothing changes; the same window gives the idle writes with pods.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import idle, procstat, workload
from benchmarks.convergence import Tracker
from benchmarks.harness import Bench, say
from benchmarks.runner import RunningOperator, start_operator
from benchmarks.throughput import TIMEOUT_SECONDS
from tfserving_operator.settings import Settings


def fresh_probe_calls(operator: RunningOperator) -> tuple[int, float]:
    """The operator's GetModelStatus call count, computed no earlier than the return."""
    at = time.monotonic()
    return int(operator.fresh_health()["probe_calls"]), at


def run(
    bench: Bench, n: int, window: float, label: str, warmup: float | None = None
) -> dict[str, Any]:
    """N one-replica ServedModels until Ready, then `window` s of probe counting."""
    bench.with_standin()
    api = bench.api
    namespace = workload.create_namespace(api)
    operator = start_operator(bench.cluster, label)
    tracker = Tracker(api, namespace).start()
    names = workload.sm_names(n)
    tracker.t0 = time.monotonic()
    workload.create_servedmodels(api, namespace, n, bench.model_base, replicas=1, t0=tracker.t0)
    ready = tracker.wait(tracker.all_ready(names), TIMEOUT_SECONDS)
    settled = ready and tracker.wait(tracker.all_settled(names), TIMEOUT_SECONDS)
    tracker.stop()
    ready_seconds = round(max(tracker.ready.values()), 2) if ready else None
    say(f"probe load: {n} one-replica ServedModels Ready after {ready_seconds} s")
    figures: dict[str, Any] = {
        "servedmodels": n,
        "replicas": 1,
        "all_ready_seconds": ready_seconds,
        "all_settled_seconds": round(max(tracker.settled.values()), 2) if settled else None,
        "probe_interval_seconds": Settings().probe_interval_seconds,
    }
    if ready:
        # One full probe interval after the last gate opened: every pod is on its schedule.
        time.sleep(Settings().probe_interval_seconds + 5 if warmup is None else warmup)
        calls_before, t_before = fresh_probe_calls(operator)
        figures["idle"] = idle.measure(bench, namespace, operator, window, n)
        calls_after, t_after = fresh_probe_calls(operator)
        minutes = (t_after - t_before) / 60
        pods = figures["idle"]["pods"] or n
        figures["probe_calls"] = calls_after - calls_before
        figures["probe_window_seconds"] = round(t_after - t_before, 1)
        figures["calls_per_server_per_minute"] = round(
            (calls_after - calls_before) / pods / minutes, 3
        )
        figures["calls_per_minute_total"] = round((calls_after - calls_before) / minutes, 1)
        figures["operator_rss_mib"] = round(procstat.read(operator.pid).rss_mib, 1)
        say(
            f"probe load: {figures['calls_per_server_per_minute']} calls per server per minute "
            f"({figures['probe_calls']} calls, {pods} pods, {figures['probe_window_seconds']} s)"
        )
    operator.stop()
    workload.delete_namespace(api, namespace)
    return figures
