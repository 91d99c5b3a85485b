"""Idle cost: API writes, CPU and memory while nothing changes.

Writes come from the API server's `apiserver_request_total`, diffed over the
window. The metric names no client, so each series is attributed by what
writes it in this cluster (apimetrics.is_operators); the two shared ones
are split by looking at the objects: Events by their reporting component,
pod status patches by whether the operator's readiness-gate condition
changed (the only thing it writes on a pod).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks import apimetrics, procstat
from benchmarks.harness import Bench, say
from benchmarks.kubeapi import Api
from benchmarks.runner import RunningOperator
from tfserving_operator import api as names


class GateWrites:
    """Counts pod updates that changed the operator's readiness-gate condition."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.path = f"/api/v1/namespaces/{namespace}/pods?labelSelector={names.LABEL_SERVEDMODEL}"
        self.count = 0
        self.pods = 0
        self._gates: dict[str, Any] = {}
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    @staticmethod
    def _gate(pod: dict[str, Any]) -> Any:
        for cond in (pod.get("status") or {}).get("conditions") or ():
            if cond.get("type") == names.GATE_CONDITION:
                return (cond.get("status"), cond.get("reason"), cond.get("lastTransitionTime"))
        return None

    def start(self) -> GateWrites:
        self._thread.start()
        self._ready.wait(timeout=60)
        return self

    def _run(self) -> None:
        items, rv = self.api.list_rv(self.path)
        self.pods = len(items)
        self._gates = {p["metadata"]["name"]: self._gate(p) for p in items}
        self._stream = self.api.watch(self.path, rv)
        self._ready.set()
        for event in self._stream:
            if event.get("type") not in ("ADDED", "MODIFIED"):
                continue
            pod = event["object"]
            name = pod["metadata"]["name"]
            gate = self._gate(pod)
            if gate is not None and gate != self._gates.get(name):
                self.count += 1
            self._gates[name] = gate

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._thread.join(timeout=5)


def operator_event_names(api: Api, namespace: str) -> set[str]:
    """Names of the Events the operator recorded in `namespace`."""
    items, _ = api.list_rv(f"/api/v1/namespaces/{namespace}/events")
    return {
        e["metadata"]["name"]
        for e in items
        if (e.get("source") or {}).get("component") == names.MANAGED_BY
        or e.get("reportingComponent") == names.MANAGED_BY
    }


def controllers_caught_up(api: Api, namespace: str) -> bool:
    """Every Deployment's status is at its generation: the Deployment controller
    (200 requests/s in the local cluster, `localdev/sim/cluster.py`) has
    finished with them. Until then its status updates are events the
    operator rightly answers with passes."""
    items, _ = api.list_rv(f"/apis/apps/v1/namespaces/{namespace}/deployments")
    return all(
        (d.get("status") or {}).get("observedGeneration") == d["metadata"].get("generation")
        for d in items
    )


def measure(
    bench: Bench, namespace: str, operator: RunningOperator, seconds: float, servedmodels: int
) -> dict[str, Any]:
    """Watch `seconds` of steady state; every write, attributed, and the operator's cost.

    Steady means the controllers have caught up too: the window starts once
    every Deployment's status is at its generation (the tail of the
    Deployment controller's work counted as "idle" CPU until session 7)."""
    api = bench.api
    waited = time.monotonic()
    deadline = waited + 600
    while not controllers_caught_up(api, namespace):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Deployments in {namespace} not at their generation after 600 s")
        time.sleep(1.0)
    waited = time.monotonic() - waited
    gates = GateWrites(api, namespace).start()
    events_before = operator_event_names(api, namespace)
    usage_before = procstat.read(operator.pid)
    before = apimetrics.snapshot(api)
    started = time.monotonic()
    say(f"idle: watching {seconds:.0f} s of steady state ({servedmodels} ServedModels)")
    time.sleep(seconds)
    after = apimetrics.snapshot(api)
    elapsed = time.monotonic() - started
    usage_after = procstat.read(operator.pid)
    events = len(operator_event_names(api, namespace) - events_before)
    gates.stop()
    delta = apimetrics.diff(before, after)
    certain = apimetrics.operator_writes(delta)
    cpu = usage_after.cpu_seconds - usage_before.cpu_seconds
    figures = {
        "servedmodels": servedmodels,
        "pods": gates.pods,
        "window_seconds": round(elapsed, 1),
        "operator_writes": certain + events + gates.count,
        "operator_writes_by_kind": {
            "servedmodels, applies, deletes": certain,
            "events": events,
            "pod gate patches": gates.count,
        },
        "operator_dry_runs": apimetrics.dry_runs(delta),
        "others_writes": sum(v for k, v in delta.items() if not k.dry_run)
        - (certain + events + gates.count),
        "writes_table": apimetrics.table(delta),
        "waited_for_controllers_seconds": round(waited, 1),
        "operator_cpu_seconds": round(cpu, 2),
        "operator_cpu_percent_of_core": round(100 * cpu / elapsed, 2),
        "operator_rss_mib_start": round(usage_before.rss_mib, 1),
        "operator_rss_mib_end": round(usage_after.rss_mib, 1),
    }
    say(
        f"idle: operator writes {figures['operator_writes']} in {elapsed:.0f} s, "
        f"others {figures['others_writes']}, "
        f"operator CPU {figures['operator_cpu_percent_of_core']} % of a core"
    )
    return figures
