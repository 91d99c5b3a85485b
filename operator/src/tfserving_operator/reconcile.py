"""Reconcile: one ServedModel, one pass of observe -> decide -> apply.

Each ServedModel gets a `Worker`: an asyncio task that runs a pass when
woken (its object, a child or a pod changed) or when a probe or deadline is
due. Passes of one ServedModel never overlap; passes of different ones run
concurrently, so a slow model server delays only its own ServedModel.

The Worker only sequences: the probe schedule (probing.py), the child sync
(children.py) and the status writer (status_writer.py) hold the state, and
every decision comes from decide.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tfserving_operator import autoscaling, canary, decide, render, scrape, spec
from tfserving_operator.aio import wait_event
from tfserving_operator.apply import ApiWriter, now_iso
from tfserving_operator.children import ChildSync
from tfserving_operator.kube import ApiError
from tfserving_operator.metrics import (
    METRICS,
    OUTCOME_ERROR,
    OUTCOME_SUCCESS,
    Metrics,
    parse_versions,
)
from tfserving_operator.observe import Cache, Key
from tfserving_operator.probing import ProbeClient, ProbeSchedule
from tfserving_operator.settings import Settings
from tfserving_operator.spec import VersionSet
from tfserving_operator.status_writer import StatusWriter
from tfserving_operator.views import PodView, ProbeResult, ServingCounts

log = logging.getLogger(__name__)

MAX_IDLE_SECONDS = 60.0
# The pass a ServedModel at rest with no pod runs anyway (a safety net for a
# missed event; the child streams replay or re-list after a gap). At 1000
# such ServedModels a pass a minute each was most of an idle operator's CPU.
QUIET_SECONDS = 300.0
# Longer than any healthy pass (probes time out in seconds, requests in 30 s,
# and a cold start over 1000 ServedModels queues passes for about a minute for
# a pass slot): only a pass that hangs reaches it.
PASS_TIMEOUT_SECONDS = 300.0
# After a start, the child watches' first lists take seconds to arrive (about
# 6000 objects at 1000 ServedModels): until they are in (or this long, if a
# stream cannot list), a ServedModel reconciled before waits for them.
WARM_UP_SECONDS = 30.0


@dataclass
class Context:
    """Everything a pass needs, shared by all workers."""

    settings: Settings
    applier: ApiWriter
    cache: Cache
    prober: ProbeClient
    workers: dict[Key, Worker] = field(default_factory=dict)
    # Bounds the passes in flight: with a thousand ServedModels starting at
    # once, each finishes sooner and peak memory stays low.
    passes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(32))
    metrics: Metrics = field(default_factory=lambda: METRICS)
    # A paused peering replica (pause.py) runs no worker: ServedModel events
    # kopf delivers while pausing wake nobody, its re-list on resume starts
    # the workers again; the child watches (watch.py) keep the cache current
    # meanwhile. `pause_source` is kopf's own state once attached (read live:
    # kopf's re-list may come before our resume()).
    pause_source: Callable[[], bool] | None = None
    _paused: bool = False
    # Until then (time.monotonic()), a ServedModel reconciled before waits
    # for the watches' first lists (WARM_UP_SECONDS, or until caches_synced).
    warm_until: float = 0.0

    @property
    def servedmodel_keys(self) -> set[Key]:
        """The ServedModels this process reconciles (one worker each)."""
        return set(self.workers)

    def poke(self, key: Key, body: Mapping[str, Any] | None = None) -> None:
        """Wake the worker of `key` (starting one for a new ServedModel body)."""
        if self.paused:
            return
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
            await self.prober.forget(worker.probes.targets())
        self.cache.forget(key)
        self.metrics.forget_servedmodel(*key)

    def caches_synced(self) -> None:
        """The child watches' first lists are in the cache: a child missing
        now is really missing, so the workers that waited for it go on."""
        self.warm_until = 0.0
        for worker in self.workers.values():
            if worker.waits_for_cache:
                worker.wake(None)

    async def stop(self) -> None:
        """Stop every worker (operator shutdown)."""
        await asyncio.gather(*(w.stop() for w in list(self.workers.values())))
        self.workers.clear()

    @property
    def paused(self) -> bool:
        """This replica must not act (a peering pause)."""
        return self.pause_source() if self.pause_source is not None else self._paused

    async def pause(self) -> None:
        """This replica stops acting: every worker stops with its probe channels
        (the cache stays, kept current by the child watches)."""
        self._paused = True
        workers = list(self.workers.values())
        await self.stop()
        await self.prober.forget(t for w in workers for t in w.probes.targets())
        for key in (w.key for w in workers):
            self.metrics.forget_servedmodel(*key)

    def resume(self) -> None:
        """Act again; kopf's re-list after the pause starts the workers."""
        self._paused = False


class Worker:
    """Runs the passes of one ServedModel."""

    def __init__(self, key: Key, ctx: Context) -> None:
        self.key = key
        self.ctx = ctx
        self.body: dict[str, Any] | None = None
        self._validated_generation = -1
        self.probes = ProbeSchedule(ctx.prober, ctx.settings, on_port_open=lambda: self.wake(None))
        self.children = ChildSync(key, ctx.applier, ctx.cache)
        self.status = StatusWriter(key, ctx.applier)
        self._wake = asyncio.Event()
        # Pods whose gate this worker opened, and when (monotonic): the gate
        # latency is observed when a later pass sees the pod Ready.
        self._opened: dict[str, float] = {}
        # A context of its own: a task copies the context it is created in, and a
        # Worker is created inside kopf's event handler, whose context variables
        # hold the event's cause and with it the first body in full (managedFields
        # too) for as long as the worker lives: 23 MiB over 1000 ServedModels
        # (tracemalloc; docs/benchmarks.md, session 9).
        self._task = asyncio.create_task(
            self._run(), name=f"servedmodel {key[0]}/{key[1]}", context=contextvars.Context()
        )
        self.passes = 0
        # The last pass waited for the watches' first lists (Context.caches_synced wakes it).
        self.waits_for_cache = False

    def wake(self, body: Mapping[str, Any] | None) -> None:
        """Run a pass soon; with a body, on that version of the object."""
        if body is not None:
            # managedFields are most of an object's bytes and never read here.
            meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
            self.body = {**body, "metadata": meta}
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the task and the probes' port waits, and wait for them."""
        self._task.cancel()
        # asyncio.wait, not `await task` under suppress(CancelledError): that also
        # swallowed a cancellation of the caller (kopf's cleanup timing out).
        await asyncio.wait([self._task])
        await self.probes.close()

    async def _run(self) -> None:
        delay = 0.0
        failures = 0
        while True:
            await self._sleep(delay)
            self._wake.clear()
            if self.body is None or self.ctx.paused:
                log.debug("%s/%s: no pass (%s)", *self.key, "paused" if self.body else "no body")
                delay = MAX_IDLE_SECONDS
                continue
            started = time.monotonic()
            try:
                # A watchdog: a pass stuck on anything (a request or a probe that
                # never returns after an API server restart) is cancelled and
                # retried like a failed one, instead of silencing this
                # ServedModel for good.
                async with asyncio.timeout(PASS_TIMEOUT_SECONDS):
                    delay = await self.reconcile()
                failures = 0
                self.ctx.metrics.observe_pass(OUTCOME_SUCCESS, time.monotonic() - started)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.ctx.metrics.observe_pass(OUTCOME_ERROR, time.monotonic() - started)
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning(
                    "%s/%s: pass failed (%s), retrying in %.1f s",
                    *self.key,
                    _short(err),
                    delay,
                    exc_info=not isinstance(err, ApiError),
                )

    async def _sleep(self, seconds: float) -> None:
        """Until woken (wake()) or `seconds` have passed; a stop() always ends it
        (aio.wait_event says why not asyncio.wait_for)."""
        await wait_event(self._wake, seconds)

    # ----- one pass ------------------------------------------------------------

    async def reconcile(self) -> float:
        """One pass; returns seconds until the next pass is due."""
        body = self.body
        assert body is not None
        self.passes += 1
        settings = self.ctx.settings
        # Just started, and this ServedModel has been reconciled before: its
        # children, pods and Deployment status may still be on their way in
        # the watches' first lists, and a pass on part of them would re-apply
        # what exists or write a status from half the pods. It waits until the
        # lists are all in (Context.caches_synced wakes it), WARM_UP_SECONDS at
        # most. One never reconciled has nothing to lose: it goes on at once.
        warm_up_left = self.ctx.warm_until - time.monotonic()
        self.waits_for_cache = warm_up_left > 0 and (
            "observedGeneration" in self.status.current(body)
        )
        if self.waits_for_cache:
            return warm_up_left
        # The pass holds a slot of ctx.passes except while it waits for model
        # servers: a ServedModel whose servers hang keeps no slot from others.
        async with self.ctx.passes:
            try:
                sm = spec.parse(
                    body,
                    settings.default_image,
                    settings.default_gpu_image,
                    settings.puller_image,
                    carried_label_keys=settings.label_selector,
                )
            except (KeyError, ValueError, TypeError) as err:
                await self.status.invalid(body, f"spec cannot be used: {err}")
                return MAX_IDLE_SECONDS
            # While autoscaling, the checks expect the autoscaler's count, not spec.replicas.
            sm = autoscaling.effective(sm, self.ctx.cache.deployments.get(self.key))
            old_status = self.status.current(body)
            memory = decide.memory_from_status(old_status)
            renders = Renders(sm, settings.operator_peer())
            started_canary = canary.current(sm, memory, old_status, datetime.now(UTC))
            # While a canary runs, the stable Deployment keeps the last good set.
            stable = canary.stable_view(sm, memory, started_canary)
            serve = decide.choose_serving_set(stable, memory)[0]
            children = renders.with_canary(serve, started_canary)
            validated = sm.generation == self._validated_generation or decide.already_validated(
                old_status, sm.generation
            )
            # A ServedModel never reconciled has no children to keep serving: its
            # children are applied without a dry run first, and undone if one is
            # refused (ChildSync.ensure). Otherwise a new generation is dry-run
            # first, but only the children about to change.
            first = not validated and "observedGeneration" not in old_status
            if not validated and not first:
                problem = await self.children.dry_run(self.children.pending(children))
                if problem:
                    await self.status.invalid(body, problem, old_status)
                    return MAX_IDLE_SECONDS
            await self.children.hand_over_replicas(sm)  # before the apply that drops it
            problem = await self.children.ensure(children, sm.uid, undo_on_refusal=first)
            if problem:
                await self.status.invalid(body, problem, old_status)
                return MAX_IDLE_SECONDS
            self._validated_generation = sm.generation
            await self.children.hand_over_replicas(sm)  # a Deployment created without it
            pods = list(self.ctx.cache.pods.get(self.key, {}).values())
            self._observe_ready(pods)

        probes = await self.probes.probe(pods)
        # The canary's servers' own metrics, when an analysis reading is due:
        # read like the probes, outside the pass slot.
        readings = None
        if started_canary is not None:
            targets = canary.scrape_targets(
                sm, started_canary, pods, renders(sm.target).config_hash, datetime.now(UTC)
            )
            if targets:
                readings = await scrape.read_all(targets, sm.model_name)
        async with self.ctx.passes:
            return await self._conclude(
                body, sm, old_status, memory, renders, pods, probes, started_canary, readings
            )

    async def _conclude(
        self,
        body: dict[str, Any],
        sm: spec.ServedModel,
        old_status: dict[str, Any],
        memory: decide.Memory,
        renders: Renders,
        pods: list[PodView],
        probes: dict[str, ProbeResult],
        started_canary: canary.State | None = None,
        readings: dict[str, ServingCounts] | None = None,
    ) -> float:
        """The pass after the probes: gates, canary, rollout, status."""
        pods = await self._apply_gates(pods, probes)
        now = datetime.now(UTC)
        canary_hash = renders(sm.target).config_hash if started_canary is not None else ""
        step = None
        state = started_canary
        if started_canary is not None:
            step = canary.advance(sm, started_canary, canary_hash, pods, probes, readings, now)
            state = step.state
            if step.refusal is not None:
                # Refused like a failed load: the refusal is the memory the
                # rollout plan reads, so the last good set keeps serving.
                memory = replace(memory, refused=step.refusal)
                log.warning(
                    "%s/%s: canary %s refused: %s",
                    *self.key,
                    sm.target.describe(),
                    step.refusal.message,
                )
                self.ctx.metrics.refusals.labels(step.refusal.reason).inc()

        deployment = self.ctx.cache.deployments.get(self.key)
        outcome = decide.plan_rollout(
            canary.stable_view(sm, memory, state),
            memory,
            lambda versions: renders(versions).config_hash,
            deployment,
            # Canary pods are judged by canary.advance, never as the rollout's.
            [p for p in pods if not p.canary],
            probes,
            now,
        )
        canary_status = canary.to_status(sm, state, pods, canary_hash)
        outcome = replace(outcome, canary=canary_status)
        if outcome.rerender:
            assert outcome.refused is not None
            log.warning(
                "%s/%s: refusing %s: %s",
                *self.key,
                sm.target.describe(),
                outcome.refused.message,
            )
            self.ctx.metrics.refusals.labels(outcome.refused.reason).inc()
        # A refusal, or a canary step that changes the replica counts: the
        # children applied before the probes are not the ones to keep.
        if outcome.rerender or (step is not None and step.rerender):
            await self.children.ensure(renders.with_canary(outcome.serve, state), sm.uid)
        new_status = decide.compute_status(
            sm, outcome, deployment, pods, probes, memory.conditions, now_iso()
        )
        self.ctx.metrics.set_servedmodel(
            *self.key,
            ready=int(new_status["readyReplicas"]),
            versions=parse_versions(new_status["servingVersions"]),
        )
        await self.status.write(body, old_status, new_status)
        if outcome.complete:
            keep = [canary_hash] if state is not None else []
            await self.children.collect_config_maps(outcome.config_hash, pods, keep)
        delay = self._next_delay(sm, outcome, pods)
        if step is not None and step.due_in is not None:
            delay = min(delay, max(0.05, step.due_in))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s/%s: pass %d: serve %s, complete %s, pods %s; next pass in %.1f s",
                *self.key,
                self.passes,
                outcome.serve,
                outcome.complete,
                _pods_summary(pods, probes),
                delay,
            )
        return delay

    async def _apply_gates(
        self, pods: list[PodView], probes: dict[str, ProbeResult]
    ) -> list[PodView]:
        """Write the gates that change; return the pods as the status must see them."""
        decisions = decide.gate_decisions(
            pods, probes, self.probes.failures(), self.ctx.settings.probe_failure_threshold
        )
        by_name = {p.name: p for p in pods}
        changing = [d for d in decisions if decide.gate_differs(by_name[d.pod], d)]
        # Side by side: pods whose versions turned AVAILABLE together (replicas
        # started together) each wait for their own patch only, not for the
        # patches of the pods before them (the kube client's pool bounds them).
        # Every patch is tried; the first failure then fails the pass.
        results = await asyncio.gather(*map(self._set_gate, changing), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        gone = {d.pod for d, written in zip(changing, results, strict=True) if written is False}
        if gone:
            pods = [p for p in pods if p.name not in gone]
            decisions = [d for d in decisions if d.pod not in gone]
        return decide.with_gates(pods, decisions)

    async def _set_gate(self, decision: decide.GateDecision) -> bool:
        """Write one pod's gate; False when the pod is gone."""
        if not await self.ctx.applier.set_gate(
            self.key[0], decision.pod, decision.open, decision.reason, decision.message
        ):
            # Deleted while a watch was down (no DELETED event will
            # come): drop it here, or it stays in the status forever.
            log.info("%s/%s: pod %s is gone (404 on its gate)", *self.key, decision.pod)
            self.ctx.cache.drop("Pod", self.key, decision.pod)
            return False
        self.ctx.metrics.observe_gate(decision.open, decision.reason)
        if decision.open:
            self._opened[decision.pod] = time.monotonic()
        else:
            self._opened.pop(decision.pod, None)
        return True

    def _observe_ready(self, pods: list[PodView]) -> None:
        """Gate latency: pods whose gate we opened, now seen Ready (the kubelet's
        status sync took the rest); forget pods that are gone."""
        present = {p.name: p for p in pods}
        for name, opened in list(self._opened.items()):
            pod = present.get(name)
            if pod is None or pod.terminating:
                del self._opened[name]
            elif pod.ready:
                self.ctx.metrics.gate_latency.observe(time.monotonic() - opened)
                del self._opened[name]

    def _next_delay(
        self, sm: spec.ServedModel, outcome: decide.Outcome, pods: list[PodView]
    ) -> float:
        # At rest with no pod (zero replicas, scaled to zero), nothing a pass
        # reads changes with time: every input is a watch event that wakes it.
        rest = QUIET_SECONDS if outcome.complete and not pods else MAX_IDLE_SECONDS
        delay = min([rest, *self.probes.seconds_until_due()])
        if not outcome.complete:
            start = decide.parse_time(outcome.rollout_start)
            if start is not None:
                left = sm.availability_timeout_seconds - (datetime.now(UTC) - start).total_seconds()
                delay = min(delay, max(left + 1.0, 1.0))
        return max(0.05, delay)


class Renders:
    """The children of each version set one pass looks at, rendered once each."""

    def __init__(self, sm: spec.ServedModel, operator: render.OperatorPeer) -> None:
        self.sm = sm
        self.operator = operator
        self._done: dict[VersionSet, render.Children] = {}

    def __call__(self, versions: VersionSet) -> render.Children:
        """The children serving `versions`."""
        if versions not in self._done:
            self._done[versions] = render.render(self.sm, versions, self.operator)
        return self._done[versions]

    def with_canary(self, versions: VersionSet, state: canary.State | None) -> render.Children:
        """The children serving `versions`, plus the canary's while one runs."""
        children = self(versions)
        if state is None:
            return children
        manifests = render.render_canary(
            self.sm, self.sm.target, canary.canary_replicas(self.sm, state)
        )
        return replace(children, canary=manifests)


def _pods_summary(pods: list[PodView], probes: dict[str, ProbeResult]) -> str:
    """One pass's view of its pods, for the DEBUG line (TFSO_LOG_LEVEL=DEBUG)."""
    return "; ".join(
        f"{p.name} {p.phase} ready={p.ready} gate={p.gate} term={p.terminating} "
        f"probe={probes.get(p.name, '-')}"
        for p in pods
    )


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) < 300 else text[:300] + "..."
