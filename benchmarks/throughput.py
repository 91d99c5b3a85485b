"""Throughput: create N ServedModels, time until every one has its children and its status.

The clock starts just before the first create request (the operator is
already running and idle). A ServedModel is *applied* once its Deployment,
three Services and a ConfigMap exist with an owner reference to it and its
status has `observedGeneration == generation` (convergence.py, from
watches). With replicas 0 (the default, see README) the figure is the
operator's own work, not kwok's, the scheduler's or the ReplicaSet
controller's making pods on the same two cores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import apimetrics, floor, procstat, workload
from benchmarks.convergence import Tracker
from benchmarks.cpusplit import CpuSplit
from benchmarks.harness import Bench, median, percentile, say
from benchmarks.kubeapi import Api
from benchmarks.runner import RunningOperator, start_operator
from tfserving_operator import api as names

TIMEOUT_SECONDS = 900
QUIET_AFTER_SECONDS = 3.0


@dataclass
class RunFigures:
    """One run of N ServedModels."""

    n: int
    replicas: int
    create_seconds: float  # the benchmark's own create requests, first to last
    applied_seconds: float | None  # until the last one was applied (None: timed out)
    ready_seconds: float | None
    settled_seconds: float | None  # also no rollout in progress (only when waited for)
    latency_p50: float | None  # per ServedModel: applied minus its create returning
    latency_p90: float | None
    latency_max: float | None
    operator_cpu_seconds: float  # until every ServedModel was applied
    operator_cpu_seconds_total: float  # until the end of the run (settled, when waited for)
    operator_rss_mib: float  # at the end of the run
    operator_peak_rss_mib: float
    requests: dict[str, int] = field(default_factory=dict)
    cpu_split: dict[str, float] = field(default_factory=dict)
    # The floor client's run of the same N just before (floor.py), and this run over it.
    floor_applied_seconds: float | None = None
    floor_ratio: float | None = None


@dataclass
class LiveRun:
    """A converged run kept alive for the next benchmarks (idle, start-up)."""

    namespace: str
    operator: RunningOperator
    names: list[str]


def run_once(
    bench: Bench, n: int, replicas: int, label: str, keep: bool = False, settle: bool = False
) -> tuple[RunFigures, LiveRun | None]:
    """One measured run in a fresh namespace with a fresh operator."""
    api = bench.api
    namespace = workload.create_namespace(api)
    operator = start_operator(bench.cluster, label)
    sampler = procstat.Sampler(operator.pid).start()
    cpu = CpuSplit(bench.cluster, operator.pid)
    usage_before = procstat.read(operator.pid)
    metrics_before = apimetrics.snapshot(api)
    tracker = Tracker(api, namespace).start()
    names = workload.sm_names(n)
    cpu.start()
    tracker.t0 = time.monotonic()
    created = workload.create_servedmodels(
        api, namespace, n, bench.model_base, replicas, t0=tracker.t0
    )
    applied_ok = tracker.wait(tracker.all_applied(names), TIMEOUT_SECONDS)
    split = cpu.stop()
    usage_applied = procstat.read(operator.pid)
    ready_ok = tracker.wait(tracker.all_ready(names), TIMEOUT_SECONDS if applied_ok else 1)
    settled_ok = settle and tracker.wait(tracker.all_settled(names), TIMEOUT_SECONDS)
    usage_after = procstat.read(operator.pid)
    delta = apimetrics.diff(metrics_before, apimetrics.snapshot(api))
    sampler.stop()
    tracker.stop()
    requests = _request_summary(delta)
    requests["events_by_operator"] = operator_events(api, namespace)
    requests["per_servedmodel"] = per_servedmodel(requests, n)
    latencies = [tracker.applied[n_] - created[n_] for n_ in names if n_ in tracker.applied]
    figures = RunFigures(
        n=n,
        replicas=replicas,
        create_seconds=round(max(created.values()), 2),
        applied_seconds=round(max(tracker.applied.values()), 2) if applied_ok else None,
        ready_seconds=round(max(tracker.ready.values()), 2) if ready_ok else None,
        settled_seconds=round(max(tracker.settled.values()), 2) if settled_ok else None,
        latency_p50=percentile(latencies, 50) if latencies else None,
        latency_p90=percentile(latencies, 90) if latencies else None,
        latency_max=round(max(latencies), 2) if latencies else None,
        operator_cpu_seconds=round(usage_applied.cpu_seconds - usage_before.cpu_seconds, 2),
        operator_cpu_seconds_total=round(usage_after.cpu_seconds - usage_before.cpu_seconds, 2),
        operator_rss_mib=round(usage_after.rss_mib, 1),
        operator_peak_rss_mib=round(max(sampler.peak_rss_mib, usage_after.hwm_mib), 1),
        requests=requests,
        cpu_split=split,
    )
    say(
        f"throughput N={n}: applied {figures.applied_seconds} s, ready {figures.ready_seconds} s"
        f", settled {figures.settled_seconds} s, operator {figures.operator_cpu_seconds} CPU-s"
        f", RSS {figures.operator_rss_mib} MiB"
    )
    if keep:
        return figures, LiveRun(namespace, operator, names)
    operator.stop()
    workload.delete_namespace(api, namespace)
    return figures, None


def _request_summary(delta: apimetrics.Snapshot) -> dict[str, Any]:
    """The operator's requests during the run, by kind."""
    return {
        "apply": sum(v for k, v in delta.items() if k.verb == "APPLY" and not k.dry_run),
        "apply_dry_run": sum(v for k, v in delta.items() if k.verb == "APPLY" and k.dry_run),
        "status_patch": apimetrics.count(delta, "servedmodels", "PATCH"),
        "delete": sum(
            v for k, v in delta.items() if k.verb == "DELETE" and apimetrics.is_operators(k)
        ),
        "events_posted_all_clients": apimetrics.count(delta, "events", "POST"),
    }


def operator_events(api: Api, namespace: str) -> int:
    """Events the operator recorded in `namespace` (its reporting controller), with
    repeats: each repeat is one more request (a PATCH of the series)."""
    items, _ = api.list_rv(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
    ours = [e for e in items if e.get("reportingController") == names.MANAGED_BY]
    return sum(max(1, int((e.get("series") or {}).get("count") or 1)) for e in ours)


def per_servedmodel(requests: dict[str, Any], n: int) -> float:
    """API requests the operator sent per ServedModel: applies, dry runs, status
    patches, its Events and deletes."""
    total = (
        requests["apply"]
        + requests["apply_dry_run"]
        + requests["status_patch"]
        + requests["events_by_operator"]
        + requests.get("delete", 0)
    )
    return round(total / n, 2) if n else 0.0


def changed_version(bench: Bench, live: LiveRun, count: int, version: int = 2) -> dict[str, Any]:
    """Requests per changed version: `count` converged ServedModels move to `version`.

    Replicas 0 (no pod loads it): the work measured is the operator's, as in run_once.
    """
    api = bench.api
    changed = live.names[:count]
    events_before = operator_events(api, live.namespace)
    before = apimetrics.snapshot(api)
    tracker = Tracker(api, live.namespace).start()
    tracker.t0 = time.monotonic()
    with tracker._lock:  # listed converged: they count again once the new generation is
        tracker.applied.clear()
        tracker.ready.clear()
        tracker.settled.clear()
    for name in changed:
        workload.patch_servedmodel(api, live.namespace, name, {"spec": {"version": version}})
    ok = tracker.wait(tracker.all_settled(changed), TIMEOUT_SECONDS)
    # A measurement window, not a synchronisation: requests that follow the
    # status (a ConfigMap no ReplicaSet uses any more) are counted too.
    time.sleep(QUIET_AFTER_SECONDS)
    tracker.stop()
    delta = apimetrics.diff(before, apimetrics.snapshot(api))
    requests = _request_summary(delta)
    requests["events_by_operator"] = operator_events(api, live.namespace) - events_before
    figures = {
        "changed": count,
        "settled_seconds": round(max(tracker.settled.values()), 2) if ok else None,
        "requests": requests,
        "per_change": per_servedmodel(requests, count),
    }
    say(f"changed version on {count}: {figures['per_change']} requests each ({requests})")
    return figures


def run(
    bench: Bench, sizes: list[int], repeats: int, replicas: int = 0, with_floor: bool = True
) -> tuple[dict[str, Any], LiveRun | None]:
    """Every size `repeats` times, each operator run just after a floor run of the
    same N (floor.py); the last run of the largest size is kept alive."""
    runs: list[RunFigures] = []
    floors: list[floor.FloorFigures] = []
    live = None
    for n in sizes:
        for i in range(repeats):
            last = n == sizes[-1] and i == repeats - 1
            floor_run = None
            if with_floor:
                say(f"floor N={n} run {i + 1}/{repeats}")
                floor_run = floor.run_once(bench, n, replicas)
                floors.append(floor_run)
            say(f"throughput N={n} replicas={replicas} run {i + 1}/{repeats}")
            figures, kept = run_once(
                bench, n, replicas, f"throughput-{n}-{i + 1}", keep=last, settle=last
            )
            if floor_run is not None and floor_run.applied_seconds:
                figures.floor_applied_seconds = floor_run.applied_seconds
                if figures.applied_seconds:
                    figures.floor_ratio = round(
                        figures.applied_seconds / floor_run.applied_seconds, 2
                    )
                say(
                    f"N={n}: operator {figures.applied_seconds} s / floor "
                    f"{floor_run.applied_seconds} s = {figures.floor_ratio}"
                )
            runs.append(figures)
            live = kept or live
    summary = []
    for n in sizes:
        of_n = [r for r in runs if r.n == n]
        done = [r for r in of_n if r.applied_seconds is not None]
        summary.append(
            {
                "n": n,
                "replicas": replicas,
                "runs": len(of_n),
                "timed_out": len(of_n) - len(done),
                "applied_seconds_median": median(r.applied_seconds or 0 for r in done),
                "applied_per_second": round(n / median(r.applied_seconds or 0 for r in done), 1)
                if done
                else None,
                "latency_p50_median": median(r.latency_p50 or 0 for r in done),
                "latency_p90_median": median(r.latency_p90 or 0 for r in done),
                "operator_cpu_seconds_median": median(r.operator_cpu_seconds for r in of_n),
                "operator_rss_mib_median": median(r.operator_rss_mib for r in of_n),
                "operator_peak_rss_mib_max": max(r.operator_peak_rss_mib for r in of_n),
                "create_seconds_median": median(r.create_seconds for r in of_n),
                "floor_applied_seconds_median": median(
                    r.floor_applied_seconds for r in of_n if r.floor_applied_seconds
                ),
                "floor_ratio_median": median(r.floor_ratio for r in of_n if r.floor_ratio),
                "requests_per_servedmodel_median": median(
                    r.requests["per_servedmodel"] for r in of_n
                ),
            }
        )
    return {
        "summary": summary,
        "runs": [asdict(r) for r in runs],
        "floor_runs": [floor.as_dict(f) for f in floors],
    }, live
