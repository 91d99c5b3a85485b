"""Start-up: process start to first reconcile, and to convergence of existing ServedModels.

Three situations, each timed from the moment the process is spawned:

* warm restart: N converged ServedModels, nothing changed while the operator
  was down. It should write nothing at all; any request it makes shows in
  the API server's counters (dry runs included), and the time until its CPU
  goes quiet is when it has been through every ServedModel.
* changed while down: a few ServedModels edited while no operator ran; time
  until each has its children re-applied and its status at the new generation.
* cold start: N ServedModels that never had an operator (no children, no status).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks import apimetrics, procstat, workload
from benchmarks.convergence import Tracker
from benchmarks.harness import Bench, say
from benchmarks.runner import RunningOperator, start_operator
from benchmarks.throughput import TIMEOUT_SECONDS, LiveRun

QUIET_DEADLINE_SECONDS = 300


class MetricsPoller:
    """Snapshots the API server's write counters every `interval` s (progress of dry runs)."""

    def __init__(self, bench: Bench, interval: float = 1.0) -> None:
        self.bench = bench
        self.interval = interval
        self.base = apimetrics.snapshot(bench.api)
        self.samples: list[tuple[float, apimetrics.Snapshot]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MetricsPoller:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                delta = apimetrics.diff(self.base, apimetrics.snapshot(self.bench.api))
            except Exception:
                continue
            self.samples.append((time.monotonic(), delta))

    def stop(self) -> apimetrics.Snapshot:
        self._stop.set()
        self._thread.join(timeout=10)
        return apimetrics.diff(self.base, apimetrics.snapshot(self.bench.api))

    def first_time(self, predicate: Any) -> float | None:
        return next((t for t, delta in self.samples if predicate(delta)), None)


def _since(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 2)


def warm_restart(
    bench: Bench, live: LiveRun, label: str, min_seconds: float = 65
) -> dict[str, Any]:
    """Stop the operator over N converged ServedModels and start a new one.

    Watches at least `min_seconds` (past a worker's first 60 s idle wake-up,
    so that it is not mistaken for quiet) and at most QUIET_DEADLINE_SECONDS.
    """
    n = len(live.names)
    live.operator.stop()
    poller = MetricsPoller(bench).start()
    operator = start_operator(bench.cluster, label)
    t0 = operator.started_at
    sampler = procstat.Sampler(operator.pid).start()
    cpu_start = procstat.read(operator.pid).cpu_seconds
    deadline = time.monotonic() + QUIET_DEADLINE_SECONDS
    quiet = None
    while time.monotonic() < deadline:
        time.sleep(1.0)
        quiet = sampler.quiet_since(t0 + operator.healthy_after + 1.0)
        if quiet is not None and time.monotonic() - t0 > min_seconds:
            break
    delta = poller.stop()
    sampler.stop()
    usage = procstat.read(operator.pid)
    live.operator = operator
    first_request = poller.first_time(lambda d: apimetrics.dry_runs(d) + sum(d.values()) > 0)
    all_dry_runs = poller.first_time(
        lambda d: apimetrics.count(d, "deployments", "APPLY", dry_run=True) >= n
    )
    figures = {
        "servedmodels": n,
        "healthz_seconds": round(operator.healthy_after, 2),
        "first_request_seconds": _since(first_request, t0),
        "all_dry_runs_seconds": _since(all_dry_runs, t0),
        "cpu_quiet_seconds": _since(quiet, t0),
        "operator_cpu_seconds": round(usage.cpu_seconds - cpu_start, 2),
        "operator_rss_mib": round(usage.rss_mib, 1),
        "operator_writes": apimetrics.operator_writes(delta),
        "operator_dry_runs": apimetrics.dry_runs(delta),
        "writes_table": apimetrics.table(delta),
    }
    say(
        f"warm restart over {n}: healthz {figures['healthz_seconds']} s, CPU quiet "
        f"{figures['cpu_quiet_seconds']} s, writes {figures['operator_writes']}, "
        f"dry runs {figures['operator_dry_runs']}"
    )
    return figures


def changed_while_down(bench: Bench, live: LiveRun, count: int, label: str) -> dict[str, Any]:
    """Edit `count` ServedModels while no operator runs; time their convergence after start."""
    live.operator.stop()
    changed = live.names[:count]
    for name in changed:
        workload.patch_servedmodel(
            bench.api, live.namespace, name, {"spec": {"fileSystemPollWaitSeconds": 31}}
        )
    # Listed after the edits: the changed ones start out not converged.
    tracker = Tracker(bench.api, live.namespace).start()
    tracker.t0 = time.monotonic()  # the spawn, give or take a millisecond
    operator = start_operator(bench.cluster, label)
    ok = tracker.wait(tracker.all_applied(changed), TIMEOUT_SECONDS)
    tracker.stop()
    live.operator = operator
    times = [tracker.applied[n] for n in changed if n in tracker.applied]
    figures = {
        "servedmodels": len(live.names),
        "changed": count,
        "healthz_seconds": round(operator.healthy_after, 2),
        "first_write_seconds": round(tracker.first_write, 2) if tracker.first_write else None,
        "all_changed_applied_seconds": round(max(times), 2) if ok and times else None,
    }
    say(
        f"changed while down ({count} of {len(live.names)}): first write "
        f"{figures['first_write_seconds']} s, all {figures['all_changed_applied_seconds']} s"
    )
    return figures


def cold_start(bench: Bench, n: int, replicas: int, label: str) -> dict[str, Any]:
    """N ServedModels created with no operator running; then the operator starts."""
    api = bench.api
    namespace = workload.create_namespace(api)
    workload.create_servedmodels(api, namespace, n, bench.model_base, replicas)
    names = workload.sm_names(n)
    tracker = Tracker(api, namespace).start()
    before = apimetrics.snapshot(api)
    tracker.t0 = time.monotonic()  # the spawn, give or take a millisecond
    # Its own namespace only: the throughput run's 1000 converged ServedModels
    # are still there, and a cluster-wide operator would restart over those
    # as well (a cold start over 2000; until session 7 that is what ran).
    operator: RunningOperator = start_operator(bench.cluster, label, namespaces=namespace)
    sampler = procstat.Sampler(operator.pid).start()
    ok = tracker.wait(tracker.all_applied(names), TIMEOUT_SECONDS)
    usage = procstat.read(operator.pid)
    delta = apimetrics.diff(before, apimetrics.snapshot(api))
    sampler.stop()
    tracker.stop()
    figures = {
        "servedmodels": n,
        "replicas": replicas,
        "healthz_seconds": round(operator.healthy_after, 2),
        "first_write_seconds": round(tracker.first_write, 2) if tracker.first_write else None,
        "all_applied_seconds": round(max(tracker.applied.values()), 2) if ok else None,
        "operator_cpu_seconds": round(usage.cpu_seconds, 2),
        "operator_rss_mib": round(usage.rss_mib, 1),
        "operator_peak_rss_mib": round(max(sampler.peak_rss_mib, usage.hwm_mib), 1),
        "operator_requests": apimetrics.operator_writes(delta),
        "operator_dry_runs": apimetrics.dry_runs(delta),
    }
    say(
        f"cold start with {n}: first write {figures['first_write_seconds']} s, all applied "
        f"{figures['all_applied_seconds']} s, RSS {figures['operator_rss_mib']} MiB"
    )
    operator.stop()
    workload.delete_namespace(api, namespace)
    return figures
