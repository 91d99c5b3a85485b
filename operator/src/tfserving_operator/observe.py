"""Observe: what the cluster and the model servers say, as plain values.

Kubernetes objects arrive through the child watches (watch.py) into the
`Cache`, so a reconcile never lists anything; model servers are asked over
gRPC by the `Prober`, with a bounded timeout, a concurrency limit per
ServedModel and per-pod backoff, so a hung server costs one probe slot of its
own ServedModel for one timeout and never stalls another ServedModel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from tfserving_operator import api, puller
from tfserving_operator.metrics import METRICS, PROBE_OK, Metrics
from tfserving_operator.views import DeploymentView, PodView, ProbeResult
from tfserving_operator.wire.client import ChannelPool, ProbeError, ProbeTimeout, ServerUnreachable

__all__ = [
    "Cache",
    "DeploymentView",
    "Key",
    "PodView",
    "ProbeResult",
    "Prober",
    "deployment_view",
    "pod_view",
    "strip_object",
]

Key = tuple[str, str]  # (namespace, ServedModel name)

# Round trips kept for the latency summary: a bounded window, so memory stays
# flat however long the operator runs.
LATENCY_WINDOW = 4096


def _condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def pod_view(body: Mapping[str, Any]) -> PodView:
    """Extract a PodView from a Pod object."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    ready = _condition(status, "Ready")
    gate = _condition(status, api.GATE_CONDITION)
    scheduled = _condition(status, "PodScheduled")
    container: Mapping[str, Any] = next(
        (c for c in status.get("containerStatuses") or () if c.get("name") == api.CONTAINER_NAME),
        {},
    )
    terminated = (container.get("lastState") or {}).get("terminated") or {}
    unschedulable = ""
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        unschedulable = str(scheduled.get("message", ""))
    puller_container, puller_message, puller_code = pull_failure(status)
    return PodView(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        ip=status.get("podIP") or "",
        phase=status.get("phase") or "Pending",
        ready=bool(ready and ready.get("status") == "True"),
        gate=None if gate is None else gate.get("status") == "True",
        gate_reason=str((gate or {}).get("reason", "")),
        terminating=meta.get("deletionTimestamp") is not None,
        config_hash=annotations.get(api.ANNOTATION_CONFIG_HASH, ""),
        versions=annotations.get(api.ANNOTATION_VERSIONS, ""),
        model_name=annotations.get(api.ANNOTATION_MODEL_NAME, ""),
        grpc_port=int(annotations.get(api.ANNOTATION_GRPC_PORT, "8500") or 8500),
        running="running" in (container.get("state") or {}),
        restart_count=int(container.get("restartCount") or 0),
        termination_message=str(terminated.get("message") or "").strip(),
        exit_code=int(terminated.get("exitCode") or 0),
        exit_reason=str(terminated.get("reason") or ""),
        unschedulable=unschedulable,
        pull_container=puller_container,
        pull_failure=puller_message,
        pull_exit_code=puller_code,
        canary=(meta.get("labels") or {}).get(api.LABEL_TRACK) == api.TRACK_CANARY,
        metrics_port=_int(annotations.get("prometheus.io/port")),
        metrics_path=str(annotations.get("prometheus.io/path") or ""),
    )


def _int(text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def pull_failure(status: Mapping[str, Any]) -> tuple[str, str, int]:
    """The model puller's failure on a pod, from its init containers' statuses.

    An init container that exited non-zero shows it in ``state.terminated``
    until the kubelet restarts it, then in ``lastState.terminated`` (while it
    waits in CrashLoopBackOff or runs again); one that finished with 0 did
    its job, whatever an earlier attempt said.
    """
    for init in status.get("initContainerStatuses") or ():
        name = str(init.get("name", ""))
        if not puller.is_puller(name):
            continue
        now = (init.get("state") or {}).get("terminated") or {}
        if now and int(now.get("exitCode") or 0) == 0:
            continue
        failed = now or (init.get("lastState") or {}).get("terminated") or {}
        code = int(failed.get("exitCode") or 0)
        if failed and code != 0:
            message = str(failed.get("message") or "").strip()
            return name, message or f"exit code {code} ({failed.get('reason') or 'Error'})", code
    return "", "", 0


def deployment_view(body: Mapping[str, Any]) -> DeploymentView:
    """Extract a DeploymentView from a Deployment object."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    template_annotations = ((spec.get("template") or {}).get("metadata") or {}).get(
        "annotations"
    ) or {}
    return DeploymentView(
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec.get("replicas") or 0),
        current_replicas=int(status.get("replicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        config_hash=template_annotations.get(api.ANNOTATION_CONFIG_HASH, ""),
        replica_failure=_replica_failure(status),
        replicas_managers=replicas_managers(meta),
    )


def _replica_failure(status: Mapping[str, Any]) -> str:
    for cond in status.get("conditions") or ():
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"{cond.get('reason', '')}: {cond.get('message', '')}"
    return ""


def replicas_managers(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The field managers that own spec.replicas, from managedFields."""
    owners = []
    for entry in meta.get("managedFields") or ():
        fields = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
        if "f:replicas" in fields:
            owners.append(str(entry.get("manager", "")))
    return tuple(sorted(owners))


def strip_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """Keep what drift detection compares: drop status and server bookkeeping."""
    meta = dict(body.get("metadata") or {})
    for key in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"):
        meta.pop(key, None)
    out = {k: v for k, v in body.items() if k not in ("status", "metadata")}
    out["metadata"] = meta
    return out


ChildId = tuple[str, str]  # (kind, name)


class ChildStore(MutableMapping[ChildId, dict[str, Any]]):
    """One ServedModel's children, each held as compact JSON and parsed when read.

    As parsed JSON, the five children of 1000 ServedModels took 40 MiB of the
    operator's 200 MiB (measured with `make bench`'s workload): the API
    server's defaults make a Deployment a few hundred small dicts and strings.
    The bytes take a fraction of that, and a pass reads its own ServedModel's
    five at most. Each read returns a fresh copy: nothing changes the cache by
    editing what it read.
    """

    def __init__(self) -> None:
        self._packed: dict[ChildId, bytes] = {}

    def __getitem__(self, ident: ChildId) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self._packed[ident])
        return obj

    def __setitem__(self, ident: ChildId, obj: Mapping[str, Any]) -> None:
        self.put(ident, obj)

    def put(self, ident: ChildId, obj: Mapping[str, Any]) -> bool:
        """Hold `obj`; True when it differs from what was held (or nothing was)."""
        packed = json.dumps(obj, separators=(",", ":")).encode()
        if self._packed.get(ident) == packed:
            return False
        self._packed[ident] = packed
        return True

    def __delitem__(self, ident: ChildId) -> None:
        del self._packed[ident]

    def __iter__(self) -> Iterator[ChildId]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, ident: object) -> bool:
        return ident in self._packed


def _put(store: dict[Any, Any], key: Any, value: Any) -> bool:
    """store[key] = value; True when that changed it."""
    if key in store and store[key] == value:
        return False
    store[key] = value
    return True


@dataclass
class Cache:
    """Children and pods of every ServedModel, kept current by the child watches."""

    pods: dict[Key, dict[str, PodView]] = field(default_factory=dict)
    children: dict[Key, ChildStore] = field(default_factory=dict)
    deployments: dict[Key, DeploymentView] = field(default_factory=dict)
    replicaset_hashes: dict[Key, dict[str, str]] = field(default_factory=dict)

    @staticmethod
    def key_of(body: Mapping[str, Any]) -> Key | None:
        """The ServedModel an object belongs to, from our label."""
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(api.LABEL_SERVEDMODEL)
        return (meta.get("namespace", ""), owner) if owner else None

    def observe(self, kind: str, body: Mapping[str, Any], deleted: bool) -> Key | None:
        """Record one watch event (or an apply's answer).

        Returns the key of the ServedModel it concerns when what the cache
        holds changed: None for an object not ours, and for one whose held
        part is as before. Most events change nothing a pass reads: the watch
        echo of our own apply (its answer is held already), and the status
        writes of the controllers on the parts we do not keep (a ReplicaSet's
        or a PodDisruptionBudget's counts, an HPA's metrics every sync, a
        Deployment condition's timestamps). A pass over unchanged inputs
        decides what the last one did, so they wake nobody."""
        key = self.key_of(body)
        if key is None:
            return None
        name = (body.get("metadata") or {}).get("name", "")
        if deleted:
            self.drop(kind, key, name)
            return key
        if kind == "Pod":
            return key if _put(self.pods.setdefault(key, {}), name, pod_view(body)) else None
        if kind == "ReplicaSet":
            hashes = self.replicaset_hashes.setdefault(key, {})
            return key if _put(hashes, name, deployment_view(body).config_hash) else None
        changed = self.children.setdefault(key, ChildStore()).put((kind, name), strip_object(body))
        if kind == "Deployment" and name == key[1]:
            # The stable Deployment; a canary's (<name>-canary) is only a child.
            changed = _put(self.deployments, key, deployment_view(body)) or changed
        return key if changed else None

    def drop(self, kind: str, key: Key, name: str) -> None:
        """Forget one object (a DELETED event, or found gone without one)."""
        if kind == "Pod":
            self.pods.get(key, {}).pop(name, None)
        elif kind == "ReplicaSet":
            self.replicaset_hashes.get(key, {}).pop(name, None)
        else:
            self.children_of(key).pop((kind, name), None)
            if kind == "Deployment" and name == key[1]:
                self.deployments.pop(key, None)

    def children_of(self, key: Key) -> ChildStore:
        """The children held for one ServedModel (an empty store if none)."""
        store = self.children.get(key)
        return store if store is not None else ChildStore()

    def entries(self) -> set[tuple[str, Key, str]]:
        """Every object held, as (kind, ServedModel key, name)."""
        out = {("Pod", key, name) for key, pods in self.pods.items() for name in pods}
        out |= {
            ("ReplicaSet", key, name)
            for key, hashes in self.replicaset_hashes.items()
            for name in hashes
        }
        out |= {
            (kind, key, name) for key, children in self.children.items() for kind, name in children
        }
        return out

    def forget(self, key: Key) -> None:
        """Drop everything about a deleted ServedModel."""
        for store in self._stores():
            store.pop(key, None)

    def _stores(self) -> tuple[dict[Key, Any], ...]:
        return (self.pods, self.children, self.deployments, self.replicaset_hashes)


class Prober:
    """Asks model servers for their versions: bounded, concurrent, backed off per pod."""

    def __init__(self, timeout: float, metrics: Metrics = METRICS) -> None:
        self.timeout = timeout
        self._metrics = metrics
        self._pool = ChannelPool()
        self.calls = 0  # for benchmarks: probe load
        self.timeouts = 0
        # Seconds per GetModelStatus round trip (slot wait excluded: it measures
        # the model server, whose one gRPC pool Predict load can fill).
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def latency_summary(self) -> dict[str, float]:
        """p50/p99/max of the recent round trips in milliseconds, and their count."""
        ordered = sorted(self.latencies)
        if not ordered:
            return {"count": 0}

        def rank(q: float) -> float:
            return round(ordered[min(len(ordered), max(1, round(q * len(ordered)))) - 1] * 1e3, 1)

        return {"count": len(ordered), "p50": rank(0.5), "p99": rank(0.99), "max": rank(1.0)}

    async def probe(self, pod: PodView, slots: asyncio.Semaphore | None = None) -> ProbeResult:
        """GetModelStatus for the pod's model (every version it manages), in one
        of the caller's `slots`: each ServedModel bounds its own probes, so
        servers that hang hold slots of their own ServedModel only."""
        async with slots or contextlib.nullcontext():
            self.calls += 1
            started = time.monotonic()
            try:
                statuses = await self._pool.get_model_status(
                    pod.target, pod.model_name, timeout=self.timeout
                )
            except ProbeError as err:
                self._observe(err.reason, time.monotonic() - started)
                if isinstance(err, ProbeTimeout):
                    self.timeouts += 1
                if isinstance(err, ServerUnreachable):
                    # gRPC holds a failed channel back from reconnecting for
                    # up to its max reconnect backoff (5 s): a fresh channel
                    # connects at the next probe, as soon as the server listens.
                    await self._pool.discard(pod.target)
                return ProbeResult(
                    pod.name,
                    error_reason=err.reason,
                    error_message=err.message,
                )
            self._observe(PROBE_OK, time.monotonic() - started)
        return ProbeResult(pod.name, tuple(statuses))

    def _observe(self, result: str, seconds: float) -> None:
        self.latencies.append(seconds)
        self._metrics.observe_probe(result, seconds)

    async def probe_all(
        self, pods: Iterable[PodView], slots: asyncio.Semaphore | None = None
    ) -> dict[str, ProbeResult]:
        """Probe several pods at once, at most as many at a time as `slots` allows."""
        pods = list(pods)
        results = await asyncio.gather(*(self.probe(p, slots) for p in pods))
        return {r.pod: r for r in results}

    async def wait_for_port(self, target: str, seconds: float) -> bool:
        """True once the server at `target` accepts connections (within `seconds`)."""
        return await self._pool.wait_for_port(target, seconds)

    async def forget(self, targets: Iterable[str]) -> None:
        """Close the channels of these servers (their pods are gone)."""
        for target in targets:
            await self._pool.discard(target)

    async def close(self) -> None:
        await self._pool.close()
