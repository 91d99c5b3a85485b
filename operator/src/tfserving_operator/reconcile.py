"""Reconcile: one ServedModel, one pass of observe -> decide -> apply.

Each ServedModel gets a `Worker`: an asyncio task that runs a pass when
woken (its object, a child or a pod changed) or when a probe or deadline is
due. Passes of one ServedModel never overlap; passes of different ones run
concurrently, so a slow model server delays only its own ServedModel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tfserving_operator import decide, kinds, render, spec
from tfserving_operator.api import GateReason
from tfserving_operator.apply import Applier, now_iso
from tfserving_operator.kube import ApiError
from tfserving_operator.observe import Cache, Key, PodView, Prober, ProbeResult
from tfserving_operator.settings import Settings

log = logging.getLogger(__name__)

MAX_IDLE_SECONDS = 60.0

# A server that answers "still LOADING", or refuses connections while it
# starts (the real server opens its ports only once its versions have
# loaded), is asked again at least this often: such a probe costs next to
# nothing, and the time between the version turning AVAILABLE and the next
# probe is the gate's latency. Slow failures (timeouts, odd answers) back
# off up to the probe_backoff_max_seconds setting.
QUICK_RETRY_MAX_SECONDS = 1.0
QUICK_RETRY_REASONS = frozenset({GateReason.LOADING, GateReason.UNREACHABLE})


@dataclass
class ProbeState:
    """When to ask one pod next, and what it said last."""

    last: ProbeResult | None = None
    next_at: float = 0.0
    backoff: float = 0.0
    config_hash: str = ""
    target: str = ""  # host:port last probed (its channel is closed when the pod goes)


@dataclass
class Context:
    """Everything a pass needs, shared by all workers."""

    settings: Settings
    applier: Applier
    cache: Cache
    prober: Prober
    workers: dict[Key, Worker] = field(default_factory=dict)
    # Bounds the passes in flight: with a thousand ServedModels starting at
    # once, each finishes sooner and peak memory stays low.
    passes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))

    def poke(self, key: Key, body: Mapping[str, Any] | None = None) -> None:
        """Wake the worker of `key` (starting one for a new ServedModel body)."""
        worker = self.workers.get(key)
        if worker is None:
            if body is None:
                return  # a child event before its ServedModel was seen
            worker = self.workers[key] = Worker(key, self)
        worker.wake(body)

    async def forget(self, key: Key) -> None:
        """A ServedModel was deleted: stop its worker, drop what we knew."""
        worker = self.workers.pop(key, None)
        if worker is not None:
            await worker.stop()
            await self.prober.forget(s.target for s in worker.probes.values() if s.target)
        self.cache.forget(key)

    async def stop(self) -> None:
        """Stop every worker (operator shutdown)."""
        await asyncio.gather(*(w.stop() for w in list(self.workers.values())))
        self.workers.clear()


class Worker:
    """Runs the passes of one ServedModel."""

    def __init__(self, key: Key, ctx: Context) -> None:
        self.key = key
        self.ctx = ctx
        self.body: dict[str, Any] | None = None
        # The status this worker wrote last: fresher than a watch event that
        # has not caught up with it yet.
        self._written: dict[str, Any] | None = None
        self._written_rv = 0
        self._validated_generation = -1
        self.probes: dict[str, ProbeState] = {}
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"servedmodel {key[0]}/{key[1]}")
        self.passes = 0

    def wake(self, body: Mapping[str, Any] | None) -> None:
        if body is not None:
            # managedFields are most of an object's bytes and never read here.
            meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
            self.body = {**body, "metadata": meta}
        self._wake.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        delay = 0.0
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            if self.body is None:
                delay = MAX_IDLE_SECONDS
                continue
            try:
                async with self.ctx.passes:
                    delay = await self.reconcile()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning(
                    "%s/%s: pass failed (%s), retrying in %.1f s",
                    *self.key,
                    _short(err),
                    delay,
                    exc_info=not isinstance(err, ApiError),
                )

    # ----- one pass ------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        assert self.body is not None
        status = dict(self.body.get("status") or {})
        rv = _rv(self.body)
        if self._written is not None and self._written_rv > rv:
            return dict(self._written)
        return status

    async def reconcile(self) -> float:
        """One pass; returns seconds until the next pass is due."""
        assert self.body is not None
        self.passes += 1
        settings = self.ctx.settings
        try:
            sm = spec.parse(self.body, settings.default_image, settings.default_gpu_image)
        except (KeyError, ValueError, TypeError) as err:
            await self._invalid(f"spec cannot be used: {err}")
            return MAX_IDLE_SECONDS
        old_status = self._status()
        memory = decide.memory_from_status(old_status)
        serve, refused = decide.choose_serving_set(sm, memory)
        children = render.render(sm, serve)
        if sm.generation != self._validated_generation and not decide.already_validated(
            old_status, sm.generation
        ):
            problem = await self._dry_run(children)
            if problem:
                await self._invalid(problem, sm=sm, old_status=old_status)
                return MAX_IDLE_SECONDS
            self._validated_generation = sm.generation
        await self._ensure_children(children, sm.uid)

        pods = list(self.ctx.cache.pods.get(self.key, {}).values())
        probes = await self._probe(pods)
        pods = await self._apply_gates(pods, probes)

        now = datetime.now(UTC)
        rollout_start = (
            memory.rollout_start
            if memory.rollout_hash == children.config_hash and memory.rollout_start
            else decide.format_time(now)
        )
        deployment = self.ctx.cache.deployments.get(self.key)
        complete = decide.rollout_complete(sm, children.config_hash, deployment, pods)
        failure = None
        if not complete:
            failure = decide.detect_failure(
                sm, children.config_hash, pods, probes, decide.parse_time(rollout_start), now
            )
        last_good = memory.last_good
        if complete and serve.explicit:
            last_good = serve
        if (
            failure is not None
            and refused is None
            and serve.explicit
            and last_good is not None
            and last_good != serve
        ):
            # Refuse the target and go back to the last good set right away.
            refused = decide.Refusal(
                versions=serve.versions,
                labels=serve.labels,
                reason=failure.reason,
                message=failure.message,
                time=now_iso(),
                retry_token=sm.retry_token,
            )
            log.warning("%s/%s: refusing %s: %s", *self.key, serve.describe(), failure.message)
            serve = last_good
            children = render.render(sm, serve)
            await self._ensure_children(children, sm.uid)
            failure = None
            rollout_start = decide.format_time(now)
            complete = decide.rollout_complete(sm, children.config_hash, deployment, pods)

        outcome = decide.Outcome(
            serve=serve,
            config_hash=children.config_hash,
            refused=refused,
            failure=failure,
            complete=complete,
            last_good=last_good,
            rollout_start=rollout_start,
        )
        new_status = decide.compute_status(
            sm, outcome, deployment, pods, probes, memory.conditions, now_iso()
        )
        await self._write_status(old_status, new_status)
        if complete:
            await self._collect_config_maps(children.config_hash, pods)
        return self._next_delay(sm, outcome)

    async def _dry_run(self, children: render.Children) -> str:
        """Server-side dry run of every child: refuse the spec before anything is written."""
        for manifest in children.all():
            try:
                await self.ctx.applier.apply(manifest, dry_run=True)
            except ApiError as err:
                if err.status in (400, 403, 422):
                    return f"{manifest['kind']} {manifest['metadata']['name']}: {err.message}"
                raise
        return ""

    async def _invalid(
        self,
        message: str,
        sm: spec.ServedModel | None = None,
        old_status: dict[str, Any] | None = None,
    ) -> None:
        assert self.body is not None
        old_status = old_status if old_status is not None else self._status()
        generation = int((self.body.get("metadata") or {}).get("generation") or 0)
        new_status = decide.invalid_status(old_status, generation, message, now_iso())
        await self._write_status(old_status, new_status)

    async def _ensure_children(self, children: render.Children, owner_uid: str) -> None:
        """Apply each child that is missing or differs from what we render, and
        delete the ones the spec no longer asks for."""
        observed = self.ctx.cache.children.setdefault(self.key, {})
        for manifest in children.all():
            ident = (manifest["kind"], manifest["metadata"]["name"])
            current = observed.get(ident)
            if current is not None and contains(current, manifest):
                continue
            result = await self.ctx.applier.apply(manifest)
            self.ctx.cache.observe(manifest["kind"], result, deleted=False)
        await self._prune_children(children, owner_uid)

    async def _prune_children(self, children: render.Children, owner_uid: str) -> None:
        # A PDB at one replica, the REST Service with REST off, a NetworkPolicy
        # the spec dropped: rendered no more, so deleted. Only objects this
        # ServedModel controls (owner uid), never one that merely carries our
        # label; ConfigMaps go by _collect_config_maps once nothing uses them.
        wanted = {(m["kind"], m["metadata"]["name"]) for m in children.all()}
        observed = self.ctx.cache.children.get(self.key, {})
        for ident, obj in list(observed.items()):
            kind, name = ident
            if kind not in kinds.PRUNED or ident in wanted or not _controlled_by(obj, owner_uid):
                continue
            log.info("%s/%s: deleting %s %s: no longer rendered", *self.key, kind, name)
            await self.ctx.applier.delete(kind, self.key[0], name)
            observed.pop(ident, None)

    async def _probe(self, pods: list[PodView]) -> dict[str, ProbeResult]:
        """Ask the servers that are due; return the latest answer of every pod."""
        now = time.monotonic()
        live = {p.name for p in pods}
        gone = [self.probes.pop(name) for name in set(self.probes) - live]
        # One channel per pod IP: without this the pool grows with every pod
        # that ever ran (pod IPs are rarely reused).
        await self.ctx.prober.forget(s.target for s in gone if s.target)
        due = []
        for pod in pods:
            state = self.probes.setdefault(pod.name, ProbeState())
            if state.config_hash != pod.config_hash:
                state.config_hash, state.next_at, state.backoff = pod.config_hash, 0.0, 0.0
            if pod.probeable and not pod.terminating and state.next_at <= now:
                due.append(pod)
        if due:
            results = await self.ctx.prober.probe_all(due)
            for pod in due:
                self.probes[pod.name].target = pod.target
                self._schedule(pod, results[pod.name])
        return {name: s.last for name, s in self.probes.items() if s.last is not None}

    def _schedule(self, pod: PodView, result: ProbeResult) -> None:
        settings = self.ctx.settings
        state = self.probes[pod.name]
        state.last = result
        decision = decide.gate_for(pod, result)
        if decision.open:
            state.backoff = 0.0
            state.next_at = time.monotonic() + settings.probe_interval_seconds
            return
        longest = settings.probe_backoff_max_seconds
        if decision.reason in QUICK_RETRY_REASONS:
            longest = min(longest, QUICK_RETRY_MAX_SECONDS)
        state.backoff = min(longest, max(settings.probe_backoff_initial_seconds, state.backoff * 2))
        state.next_at = time.monotonic() + state.backoff

    async def _apply_gates(
        self, pods: list[PodView], probes: dict[str, ProbeResult]
    ) -> list[PodView]:
        changes = decide.gate_changes(pods, probes)
        by_name = {c.pod: c for c in changes}
        for change in changes:
            await self.ctx.applier.set_gate(
                self.key[0], change.pod, change.open, change.reason, change.message
            )
        # Status is computed on the gates as just written; Ready follows the
        # gate (the kubelet's rule) once the node reports it.
        updated = []
        for pod in pods:
            decision = by_name.get(pod.name)
            if decision is not None:
                pod = replace(
                    pod,
                    gate=decision.open,
                    gate_reason=decision.reason,
                    ready=pod.ready and decision.open,
                )
            updated.append(pod)
        return updated

    async def _write_status(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        patch = decide.status_patch(old, new)
        if patch is None:
            return
        assert self.body is not None
        ns, name = self.key
        try:
            result = await self.ctx.applier.patch_status(ns, name, patch)
        except ApiError as err:
            if err.not_found:
                return  # deleted meanwhile
            raise
        self._written = dict(result.get("status") or {})
        self._written_rv = _rv(result)
        for event in decide.events_for(old, new):
            await self.ctx.applier.event(self.body, event.type, event.reason, event.message)

    async def _collect_config_maps(self, current_hash: str, pods: list[PodView]) -> None:
        """Delete config generations no pod or ReplicaSet uses any more."""
        in_use = {current_hash, *(p.config_hash for p in pods)}
        in_use |= set(self.ctx.cache.replicaset_hashes.get(self.key, {}).values())
        observed = self.ctx.cache.children.get(self.key, {})
        for kind, name in list(observed):
            if kind != "ConfigMap" or not name.startswith(f"{self.key[1]}-config-"):
                continue
            if name.rsplit("-", 1)[-1] in in_use:
                continue
            await self.ctx.applier.delete("ConfigMap", self.key[0], name)
            observed.pop((kind, name), None)

    def _next_delay(self, sm: spec.ServedModel, outcome: decide.Outcome) -> float:
        now = time.monotonic()
        due = [s.next_at - now for s in self.probes.values() if s.next_at]
        delay = min([MAX_IDLE_SECONDS, *due])
        if not outcome.complete:
            start = decide.parse_time(outcome.rollout_start)
            if start is not None:
                left = sm.availability_timeout_seconds - (datetime.now(UTC) - start).total_seconds()
                delay = min(delay, max(left + 1.0, 1.0))
        return max(0.05, delay)


def contains(observed: Any, desired: Any) -> bool:
    """True when every field we render has the same value in the observed object.

    Fields the API server or other controllers add (defaults, status,
    annotations) are ignored; a field we render that differs is drift.
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        return all(k in observed and contains(observed[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(observed) != len(desired):
            return False
        return all(contains(o, d) for o, d in zip(observed, desired, strict=True))
    return bool(observed == desired)


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return bool(uid) and any(r.get("controller") and r.get("uid") == uid for r in refs)


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) < 300 else text[:300] + "..."
