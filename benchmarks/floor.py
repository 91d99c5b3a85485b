"""The floor: the least any operator could do for N new ServedModels, measured in the same run.

A bare client with the operator's request concurrency (16 threads, the
operator's `Kube` pool) writes what the operator must write for each new
ServedModel and nothing else: its rendered children by server-side apply
(the operator's own render, field manager and apply order) and one status
patch (the status the operator would write, computed by its own decide
functions). No dry run, no Event, no cache, no probe, no second pass. It
learns of each ServedModel from a watch, as the operator does, and is timed
exactly like the operator's run (throughput.py): the same creates by 8
client threads, the clock started before the first, the same convergence
tracker. throughput.py divides the operator's time by this one: how close
the operator is to what the API server allows on this machine.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchmarks import apimetrics, workload
from benchmarks.convergence import Tracker
from benchmarks.harness import Bench, say
from benchmarks.kubeapi import Api, ApiError
from tfserving_operator import api as names
from tfserving_operator import decide, kinds, render, spec
from tfserving_operator.apply import APPLY_CONTENT_TYPE, MERGE_CONTENT_TYPE, now_iso
from tfserving_operator.observe import deployment_view
from tfserving_operator.settings import Settings

# The operator's request pool (kube.Kube's default workers).
THREADS = 16
TIMEOUT_SECONDS = 900


@dataclass
class FloorFigures:
    """One floor run of N ServedModels."""

    n: int
    applied_seconds: float | None  # until the last one was applied (None: timed out)
    create_seconds: float
    requests: dict[str, int] = field(default_factory=dict)
    errors: int = 0


def _path(kind: str, namespace: str, name: str, sub: str = "") -> str:
    info = kinds.BY_KIND[kind]
    path = f"{info.path_prefix}/namespaces/{namespace}/{info.plural}/{name}"
    return f"{path}/{sub}" if sub else path


class FloorClient:
    """Watches ServedModels in one namespace; writes children and a status for each."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.settings = Settings()
        self.jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.errors = 0
        self._stream: Any = None
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(THREADS)]
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._listening = threading.Event()
        self._stopped = False

    def start(self) -> FloorClient:
        for thread in self._threads:
            thread.start()
        self._watcher.start()
        if not self._listening.wait(timeout=120):
            raise TimeoutError("the floor client's ServedModel watch did not start in 120 s")
        return self

    def stop(self) -> None:
        self._stopped = True
        if self._stream is not None:
            self._stream.close()
        for _ in self._threads:
            self.jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=30)

    def _watch(self) -> None:
        path = f"{workload.SM_PATH}/namespaces/{self.namespace}/{names.PLURAL}"
        rv = ""
        while not self._stopped:
            try:
                if not rv:
                    _, rv = self.api.list_rv(path)
                self._stream = self.api.watch(path, rv)
            except ApiError as err:
                # A CRD installed a moment ago answers 429 ("storage is
                # (re)initializing") for a while; an expired version is relisted.
                if err.status == 410:
                    rv = ""
                time.sleep(0.5)
                continue
            self._listening.set()
            for event in self._stream:
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    rv = ""
                    break
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if event.get("type") == "ADDED":
                    self.jobs.put(obj)

    def _work(self) -> None:
        while True:
            body = self.jobs.get()
            if body is None:
                return
            try:
                self.reconcile(body)
            except Exception as err:  # counted and shown; the run times out on it
                self.errors += 1
                if self.errors <= 3:
                    say(f"floor: {body['metadata']['name']}: {err}")

    def reconcile(self, body: dict[str, Any]) -> None:
        """What the operator must write for a new ServedModel: children, one status."""
        settings = self.settings
        sm = spec.parse(
            body,
            settings.default_image,
            settings.default_gpu_image,
            settings.puller_image,
            carried_label_keys=settings.label_selector,
        )
        memory = decide.memory_from_status(body.get("status"))
        serve = decide.choose_serving_set(sm, memory)[0]
        children = render.render(sm, serve, settings.operator_peer())
        query = f"fieldManager={names.FIELD_MANAGER}&force=true"
        deployment: dict[str, Any] = {}
        for manifest in children.all():
            meta = manifest["metadata"]
            answer = self.api.request(
                "PATCH",
                f"{_path(manifest['kind'], meta['namespace'], meta['name'])}?{query}",
                manifest,
                content_type=APPLY_CONTENT_TYPE,
            )
            if manifest["kind"] == "Deployment":
                deployment = answer
        view = deployment_view(deployment)
        outcome = decide.plan_rollout(
            sm, memory, lambda _: children.config_hash, view, [], {}, datetime.now(UTC)
        )
        status = decide.compute_status(sm, outcome, view, [], {}, [], now_iso())
        patch = decide.status_patch(body.get("status") or {}, status)
        self.api.request(
            "PATCH",
            f"{_path('ServedModel', sm.namespace, sm.name, 'status')}?"
            f"fieldManager={names.FIELD_MANAGER}",
            {"status": patch},
            content_type=MERGE_CONTENT_TYPE,
        )


def run_once(bench: Bench, n: int, replicas: int = 0) -> FloorFigures:
    """N ServedModels created as throughput.run_once does, written by the floor client."""
    api = bench.api
    namespace = workload.create_namespace(api, prefix="floor")
    client = FloorClient(api, namespace).start()
    metrics_before = apimetrics.snapshot(api)
    tracker = Tracker(api, namespace).start()
    names_ = workload.sm_names(n)
    tracker.t0 = time.monotonic()
    created = workload.create_servedmodels(
        api, namespace, n, bench.model_base, replicas, t0=tracker.t0
    )
    applied_ok = tracker.wait(tracker.all_applied(names_), TIMEOUT_SECONDS)
    delta = apimetrics.diff(metrics_before, apimetrics.snapshot(api))
    tracker.stop()
    client.stop()
    figures = FloorFigures(
        n=n,
        applied_seconds=round(max(tracker.applied.values()), 2) if applied_ok else None,
        create_seconds=round(max(created.values()), 2),
        requests={
            "apply": sum(v for k, v in delta.items() if k.verb == "APPLY" and not k.dry_run),
            "status_patch": apimetrics.count(delta, "servedmodels", "PATCH"),
        },
        errors=client.errors,
    )
    say(f"floor N={n}: applied {figures.applied_seconds} s ({figures.errors} errors)")
    workload.delete_namespace(api, namespace)
    return figures


def as_dict(figures: FloorFigures) -> dict[str, Any]:
    return asdict(figures)
