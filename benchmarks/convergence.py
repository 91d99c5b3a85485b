"""Watch a namespace and note when each ServedModel converged (no polling).

A ServedModel counts as *applied* once its Deployment, its three Services
and a ConfigMap exist with an owner reference to it and its status says
`observedGeneration == metadata.generation`; as *ready* once, in addition,
its Ready condition is True for that generation; as *settled* once, in
addition, the status shows no rollout in progress (the Deployment controller
caught up). The watches start from a
list, so objects that already converged before the tracker started count
as converged at its start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.kubeapi import Api, WatchStream
from benchmarks.workload import SM_PATH
from tfserving_operator import api as names

SELECTOR = f"labelSelector={names.LABEL_SERVEDMODEL}"


@dataclass
class SmState:
    """What the tracker knows about one ServedModel."""

    uid: str = ""
    generation: int = 0
    observed_generation: int = 0
    ready: bool = False
    rollout_done: bool = False  # the operator reports no rollout in progress
    status_written: bool = False
    # (kind, name) of each child that names this ServedModel's uid as owner
    children: set[tuple[str, str]] = field(default_factory=set)


def _owner_uid(meta: dict[str, Any]) -> str:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == names.KIND and ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


class Tracker:
    """Follows one namespace; `applied` and `ready` map ServedModel name -> seconds since t0."""

    def __init__(self, api: Api, namespace: str, t0: float | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.t0 = time.monotonic() if t0 is None else t0
        self.states: dict[str, SmState] = {}
        self.applied: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.settled: dict[str, float] = {}
        self.first_write: float | None = None  # first child or status seen after t0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._streams: list[WatchStream] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False
        ns = f"/namespaces/{namespace}"
        self._sources: list[tuple[str, str, bool]] = [
            ("ServedModel", f"{SM_PATH}{ns}/{names.PLURAL}", False),
            ("Deployment", f"/apis/apps/v1{ns}/deployments?{SELECTOR}", True),
            ("Service", f"/api/v1{ns}/services?{SELECTOR}", True),
            ("ConfigMap", f"/api/v1{ns}/configmaps?{SELECTOR}", True),
        ]

    # ----- life cycle ---------------------------------------------------------

    def start(self) -> Tracker:
        """List every source, then follow each in a thread of its own."""
        for kind, path, metadata_only in self._sources:
            items, rv = self.api.list_rv(path, metadata_only=metadata_only)
            with self._lock:
                for item in items:
                    self._apply(kind, "ADDED", item, initial=True)
            thread = threading.Thread(
                target=self._follow, args=(kind, path, metadata_only, rv), daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopped = True
        for stream in list(self._streams):
            stream.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _follow(self, kind: str, path: str, metadata_only: bool, rv: str) -> None:
        while not self._stopped:
            try:
                stream = self.api.watch(path, rv, metadata_only=metadata_only)
            except Exception:
                time.sleep(0.5)
                continue
            self._streams.append(stream)
            for event in stream:
                etype = event.get("type")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    # Expired: relist (keeps states; a relist only adds what was missed).
                    items, rv = self.api.list_rv(path, metadata_only=metadata_only)
                    with self._lock:
                        for item in items:
                            self._apply(kind, "ADDED", item, initial=False)
                    break
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if etype == "BOOKMARK":
                    continue
                with self._lock:
                    self._apply(kind, str(etype), obj, initial=False)
            self._streams.remove(stream)

    # ----- state --------------------------------------------------------------

    def _apply(self, kind: str, etype: str, obj: dict[str, Any], initial: bool) -> None:
        meta = obj.get("metadata") or {}
        now = time.monotonic() - self.t0
        if kind == "ServedModel":
            name = meta.get("name", "")
            if etype == "DELETED":
                self.states.pop(name, None)
                return
            state = self.states.setdefault(name, SmState())
            state.uid = meta.get("uid", "")
            state.generation = int(meta.get("generation") or 0)
            status = obj.get("status") or {}
            state.observed_generation = int(status.get("observedGeneration") or 0)
            state.status_written = bool(status)
            state.ready = any(
                c.get("type") == "Ready"
                and c.get("status") == "True"
                and c.get("observedGeneration") == state.generation
                for c in status.get("conditions") or ()
            )
            state.rollout_done = bool(status) and not status.get("rollout")
            if status and not initial and self.first_write is None:
                self.first_write = now
            self._settle(name, now)
        else:
            owner = (meta.get("labels") or {}).get(names.LABEL_SERVEDMODEL, "")
            state = self.states.setdefault(owner, SmState())
            ident = (kind, meta.get("name", ""))
            if etype == "DELETED":
                state.children.discard(ident)
                return
            if not initial and self.first_write is None:
                self.first_write = now
            if _owner_uid(meta) and (not state.uid or _owner_uid(meta) == state.uid):
                state.children.add(ident)
            self._settle(owner, now)
        self._changed.notify_all()

    def _settle(self, name: str, now: float) -> None:
        state = self.states[name]
        kinds: dict[str, set[str]] = {}
        for kind, child in state.children:
            kinds.setdefault(kind, set()).add(child)
        services = {f"{name}-grpc", f"{name}-rest", f"{name}-headless"}
        children_ok = (
            name in kinds.get("Deployment", set())
            and services <= kinds.get("Service", set())
            and any(c.startswith(f"{name}-config-") for c in kinds.get("ConfigMap", set()))
        )
        converged = (
            children_ok
            and state.uid != ""
            and state.generation > 0
            and state.observed_generation == state.generation
        )
        if converged and name not in self.applied:
            self.applied[name] = max(0.0, now)
        if converged and state.ready and name not in self.ready:
            self.ready[name] = max(0.0, now)
        if converged and state.ready and state.rollout_done and name not in self.settled:
            self.settled[name] = max(0.0, now)

    # ----- waiting ------------------------------------------------------------

    def wait(
        self, what: Callable[[Tracker], bool], timeout: float, describe: str = "condition"
    ) -> bool:
        """Block until `what(self)` holds (checked on every event); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not what(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(timeout=min(left, 1.0))
        return True

    def all_applied(self, wanted: Iterable[str]) -> Callable[[Tracker], bool]:
        wanted = set(wanted)
        return lambda t: wanted <= t.applied.keys()

    def all_ready(self, wanted: Iterable[str]) -> Callable[[Tracker], bool]:
        wanted = set(wanted)
        return lambda t: wanted <= t.ready.keys()

    def all_settled(self, wanted: Iterable[str]) -> Callable[[Tracker], bool]:
        wanted = set(wanted)
        return lambda t: wanted <= t.settled.keys()
