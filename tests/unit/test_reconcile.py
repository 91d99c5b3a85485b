"""reconcile.py: one pass sequenced against fakes of the API and the model servers.

The fakes record every write, so these tests pin what a pass writes (and that
an idle pass writes nothing), how a refusal re-renders the last good versions,
and how often each pod's server is asked.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import gc
import logging
import time
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit import builders
from tests.unit.builders import LOAD_ERROR, answer, probe_error
from tfserving_operator import api, decide, observe, render, spec
from tfserving_operator.api import GateReason
from tfserving_operator.children import contains
from tfserving_operator.kube import ApiError
from tfserving_operator.metrics import Metrics
from tfserving_operator.observe import Cache, DeploymentView, PodView, ProbeResult
from tfserving_operator.probing import PROBE_JITTER, QUICK_RETRY_MAX_SECONDS, ProbeState
from tfserving_operator.reconcile import MAX_IDLE_SECONDS, QUIET_SECONDS, Context, Worker
from tfserving_operator.settings import Settings
from tfserving_operator.spec import VersionSet
from tfserving_operator.status_writer import Written, caught_up
from tfserving_operator.views import ModelState, ServingCounts

KEY = ("ml", "mnist")


class FakeApplier:
    """Records every write; the API server's answers are the objects sent."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.dry_runs = 0
        self.refusals: dict[str, ApiError] = {}  # by kind: the API server refuses
        self.gates: list[tuple[str, bool, str]] = []
        self.status_patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str]] = []
        self.handovers: list[dict[str, Any]] = []
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # last applied, by kind and name
        self.status: dict[str, Any] = {}
        self.rv = 100
        self.refusal: ApiError | None = None
        self.gone: set[str] = set()  # pods the API server answers 404 for

    @property
    def writes(self) -> int:
        # A dry run is a request the API server admits and answers like a
        # write: an idle pass must not send one either.
        return (
            self.dry_runs
            + len(self.applied)
            + len(self.gates)
            + len(self.status_patches)
            + len(self.events)
            + len(self.deleted)
            + len(self.handovers)
        )

    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        # The API server refuses a body alike with or without a dry run.
        if dry_run:
            self.dry_runs += 1
        if self.refusal is not None:
            raise self.refusal
        if manifest["kind"] in self.refusals:
            raise self.refusals[manifest["kind"]]
        if dry_run:
            return copy.deepcopy(manifest)
        self.applied.append(manifest)
        result = copy.deepcopy(manifest)
        if manifest["kind"] == "Deployment":
            self._own_replicas(result, api.FIELD_MANAGER, "replicas" in manifest["spec"])
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = result
        return copy.deepcopy(result)

    async def hand_over(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The object as the API server returns it: the last applied one, with
        spec.replicas set and co-owned by the handover manager."""
        self.handovers.append(manifest)
        sent = self.objects.get((manifest["kind"], manifest["metadata"]["name"]))
        full = (
            copy.deepcopy(sent)
            if sent
            else {"kind": manifest["kind"], "metadata": dict(manifest["metadata"])}
        )
        full["spec"] = {**full.get("spec", {}), **manifest["spec"]}
        self._own_replicas(full, api.HANDOVER_FIELD_MANAGER, True)
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = full
        return copy.deepcopy(full)

    def _own_replicas(self, result: dict[str, Any], manager: str, owns: bool) -> None:
        """Server-side apply's bookkeeping of spec.replicas, and only that: a field
        its last manager stops sending is removed, else it keeps its value."""
        old = self.objects.get((result["kind"], result["metadata"]["name"])) or {}
        owners = set(observe.replicas_managers(old.get("metadata") or {}))
        (owners.add if owns else owners.discard)(manager)
        if owners and "replicas" not in result["spec"]:
            result["spec"]["replicas"] = old["spec"]["replicas"]
        result["metadata"]["managedFields"] = [
            {"manager": m, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
            for m in sorted(owners)
        ]

    async def set_gate(
        self, namespace: str, pod: str, is_open: bool, reason: str, message: str
    ) -> bool:
        if pod in self.gone:
            return False
        self.gates.append((pod, is_open, reason))
        return True

    async def patch_status(
        self, namespace: str, name: str, status_patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.status_patches.append(status_patch)
        self.status = merge(self.status, status_patch)
        self.rv += 1
        return {"metadata": {"resourceVersion": str(self.rv)}, "status": self.status}

    async def event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        self.events.append((event_type, reason, message))

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))
        self.objects.pop((kind, name), None)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            base = out.get(key)
            out[key] = merge(base if isinstance(base, dict) else {}, value)
        else:
            out[key] = value
    return out


class FakeProber:
    """Answers GetModelStatus from a table; counts the calls per pod."""

    def __init__(self) -> None:
        self.answers: dict[str, ProbeResult] = {}
        self.calls: dict[str, int] = {}
        self.forgotten: list[str] = []
        # Port waits: each blocks until the test opens that target's port.
        self.ports: dict[str, asyncio.Event] = {}
        self.port_waits: list[str] = []

    async def probe_all(
        self, pods: Iterable[PodView], slots: asyncio.Semaphore | None = None
    ) -> dict[str, ProbeResult]:
        out = {}
        for pod in pods:
            self.calls[pod.name] = self.calls.get(pod.name, 0) + 1
            out[pod.name] = self.answers.get(pod.name) or probe_error(
                pod.name, "ServerUnreachable", "refused"
            )
        return out

    async def forget(self, targets: Iterable[str]) -> None:
        self.forgotten.extend(targets)

    async def wait_for_port(self, target: str, seconds: float) -> bool:
        self.port_waits.append(target)
        await self.ports.setdefault(target, asyncio.Event()).wait()
        return True


def body(version: int = 3, status: dict[str, Any] | None = None, rv: int = 50) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "uid": "uid-1",
            "generation": 2,
            "resourceVersion": str(rv),
        },
        "spec": {"storage": {"hostPath": {"path": "/srv/mnist"}}, "version": version},
        "status": status or {},
    }


def config_hash(version: int) -> str:
    sm = spec.parse(body(version), "img", "img-gpu")
    return render.render(sm, VersionSet.specific([version])).config_hash


def pod(name: str, version: int, serving: bool = False, **options: Any) -> PodView:
    """A pod started for `version` of this ServedModel (its config hash is the real one)."""
    options.setdefault("config_hash", config_hash(version))
    return builders.pod(name, versions=str(version), serving=serving, **options)


def settled_deployment(version: int) -> DeploymentView:
    return builders.deployment(config_hash(version))


class Harness:
    """A Worker whose task is stopped: the test runs its passes by hand."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.applier = FakeApplier()
        self.prober = FakeProber()
        self.ctx = Context(
            settings=settings or Settings(),
            applier=self.applier,
            cache=Cache(),
            prober=self.prober,
        )
        self.worker: Worker | None = None

    async def start(self, sm_body: dict[str, Any]) -> Worker:
        self.worker = self.ctx.workers[KEY] = Worker(KEY, self.ctx)
        await self.worker.stop()
        self.worker.body = sm_body
        return self.worker

    def pods(self, *pods: PodView) -> None:
        self.ctx.cache.pods[KEY] = {p.name: p for p in pods}

    async def settle_children(self) -> None:
        """What the watches would have delivered: every applied child, as applied."""
        for manifest in self.applier.applied:
            self.ctx.cache.observe(manifest["kind"], manifest, deleted=False)
        self.applier.applied.clear()

    async def next_pass(self) -> float:
        """Run a pass after the worker's status came back through the watch."""
        assert self.worker is not None
        assert self.worker.body is not None
        self.worker.body = {
            **self.worker.body,
            "status": self.applier.status,
            "metadata": {
                **self.worker.body["metadata"],
                "resourceVersion": str(self.applier.rv),
            },
        }
        for state in self.worker.probes.states.values():
            state.next_at = 0.0  # every probe due: the pass sees fresh answers
        return await self.worker.reconcile()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ----- tests ---------------------------------------------------------------------------


def test_first_pass_applies_children_and_reports_rolling_out() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        await worker.reconcile()
        kinds = [m["kind"] for m in h.applier.applied]
        assert kinds == ["ConfigMap", "Service", "Service", "Service", "Deployment"]
        # Never reconciled: nothing of it serves yet, so no dry run (a refusal is undone).
        assert h.applier.dry_runs == 0
        conditions = {c["type"]: c for c in h.applier.status["conditions"]}
        assert conditions["Progressing"]["reason"] == "RollingOut"
        for condition in conditions.values():
            assert decide.parse_time(condition["lastTransitionTime"]) is not None, condition
        assert ("Normal", "RolloutStarted") in [(t, r) for t, r, _ in h.applier.events]

    run(scenario())


TYPED_PATCH_500 = {
    "reason": "InternalError",
    "message": '.spec.template.spec.containers[name="tfserving"].env: duplicate entries for '
    'key [name="MODE"]: failed to create typed patch object (apps/v1, Kind=Deployment)',
}


def test_a_body_server_side_apply_cannot_type_check_is_an_invalid_spec() -> None:
    """HTTP 500 "failed to create typed patch object" fails again on every retry:
    the status says InvalidSpec in the API server's words and nothing is applied."""

    async def scenario() -> None:
        h = Harness()
        h.applier.refusal = ApiError(500, TYPED_PATCH_500)
        worker = await h.start(body(version=3))
        await worker.reconcile()
        assert h.applier.applied == []
        conditions = {c["type"]: c for c in h.applier.status["conditions"]}
        assert conditions["Ready"]["reason"] == "InvalidSpec"
        assert 'duplicate entries for key [name="MODE"]' in conditions["Ready"]["message"]

    run(scenario())


def test_any_other_server_error_fails_the_pass_and_the_retry_completes() -> None:
    async def scenario() -> None:
        h = Harness()
        h.applier.refusals["Service"] = ApiError(500, {"message": "etcdserver: request timed out"})
        worker = await h.start(body(version=3))
        with pytest.raises(ApiError):
            await worker.reconcile()
        assert h.applier.status_patches == [] and h.applier.deleted == []
        del h.applier.refusals["Service"]
        await worker.reconcile()
        kinds = [m["kind"] for m in h.applier.applied]
        # The ConfigMap the failed pass applied is not applied again.
        assert kinds == ["ConfigMap", "Service", "Service", "Service", "Deployment"]
        assert h.applier.status["observedGeneration"] == 2

    run(scenario())


async def serving_steadily(h: Harness) -> Worker:
    """A worker whose one pod serves version 2 with its gate open, rollout done."""
    worker = await h.start(body(version=2))
    h.pods(pod("a", 2, serving=True))
    h.prober.answers["a"] = answer("a", 2, ModelState.AVAILABLE)
    await worker.reconcile()
    await h.settle_children()
    h.ctx.cache.deployments[KEY] = settled_deployment(2)
    await h.next_pass()
    return worker


def test_idle_pass_writes_nothing() -> None:
    async def scenario() -> None:
        h = Harness()
        await serving_steadily(h)
        assert h.applier.status["servingVersions"] == "2"
        assert h.applier.status["lastGood"] == {"versions": [2], "labels": {}}
        before = h.applier.writes
        for _ in range(3):
            await h.next_pass()
        assert h.applier.writes == before, (h.applier.status_patches[-1:], h.applier.events)

    run(scenario())


def test_loading_pod_gets_a_closed_gate_once() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        h.pods(pod("b", 3))
        h.prober.answers["b"] = answer("b", 3, ModelState.LOADING)
        await worker.reconcile()
        assert h.applier.gates == [("b", False, GateReason.LOADING)]
        h.pods(pod("b", 3, gate=False, gate_reason=GateReason.LOADING))
        await h.next_pass()
        assert h.applier.gates == [("b", False, GateReason.LOADING)]
        h.prober.answers["b"] = answer("b", 3, ModelState.AVAILABLE)
        await h.next_pass()
        assert h.applier.gates[-1] == ("b", True, GateReason.AVAILABLE)

    run(scenario())


def test_load_failure_refuses_and_re_renders_the_last_good_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        h = Harness()
        metrics = h.ctx.metrics = Metrics()
        good = {"lastGood": {"versions": [2], "labels": {}}, "servingVersions": "2"}
        worker = await h.start(body(version=3, status=good))
        h.applier.status = dict(good)
        h.pods(pod("a", 2, serving=True), pod("b", 3))
        h.prober.answers["a"] = answer("a", 2, ModelState.AVAILABLE)
        h.prober.answers["b"] = answer("b", 3, ModelState.END, LOAD_ERROR)
        await worker.reconcile()

        deployments = [m for m in h.applier.applied if m["kind"] == "Deployment"]
        assert len(deployments) == 2, "the target, then the last good set"
        back = deployments[-1]["spec"]["template"]["metadata"]["annotations"]
        assert back[api.ANNOTATION_VERSIONS] == "2"
        assert back[api.ANNOTATION_CONFIG_HASH] == config_hash(2)
        refused = h.applier.status["refused"]
        assert (refused["versions"], refused["reason"]) == ([3], "VersionLoadFailed")
        assert LOAD_ERROR in refused["message"]
        degraded = {c["type"]: c for c in h.applier.status["conditions"]}["Degraded"]
        assert degraded["status"] == "True"
        assert degraded["message"].startswith("target 3 refused, serving 2: ")
        warnings = [(r, m) for t, r, m in h.applier.events if t == "Warning"]
        assert warnings == [("VersionLoadFailed", degraded["message"])]
        refusals = "tfserving_operator_refusals_total"
        assert sample(metrics, refusals, reason="VersionLoadFailed") == 1
        assert f"ml/mnist: refusing 3: {refused['message']}" in caplog.messages

        # Later passes keep serving 2 while the spec still says 3.
        await h.settle_children()
        h.pods(pod("a", 2, serving=True))
        h.ctx.cache.deployments[KEY] = settled_deployment(2)
        await h.next_pass()
        assert all(
            m["spec"]["template"]["metadata"]["annotations"][api.ANNOTATION_VERSIONS] == "2"
            for m in h.applier.applied
            if m["kind"] == "Deployment"
        )
        assert h.applier.status["refused"]["versions"] == [3]
        assert h.applier.status["targetVersions"] == "3"
        assert "rollout" not in h.applier.status, "the rollback is over"

    with caplog.at_level(logging.WARNING, logger="tfserving_operator.reconcile"):
        run(scenario())


def test_failure_with_nothing_to_go_back_to_is_reported_not_refused() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        h.pods(pod("b", 3))
        h.prober.answers["b"] = answer("b", 3, ModelState.END, LOAD_ERROR)
        await worker.reconcile()
        assert "refused" not in h.applier.status
        degraded = {c["type"]: c for c in h.applier.status["conditions"]}["Degraded"]
        assert (degraded["status"], degraded["reason"]) == ("True", "VersionLoadFailed")

    run(scenario())


@pytest.mark.parametrize(
    ("probe", "longest"),
    [
        (answer("b", 3, ModelState.LOADING), QUICK_RETRY_MAX_SECONDS),
        # A port wait watches a refusing server instead (next test).
        (probe_error("b", "ServerUnreachable"), 5.0),
        (probe_error("b", "ProbeTimeout"), 5.0),
        (probe_error("b", "ProbeFailed"), 5.0),
        (answer("b", 3, ModelState.END, LOAD_ERROR), 5.0),
    ],
)
def test_probe_cadence(probe: ProbeResult, longest: float) -> None:
    """A "still loading" answer is asked again within a second; failures back off."""

    async def scenario() -> None:
        h = Harness(Settings(probe_backoff_initial_seconds=0.25, probe_backoff_max_seconds=5.0))
        worker = await h.start(body(version=3))
        waiting = pod("b", 3)
        worker.probes.states["b"] = ProbeState()
        delays = []
        for _ in range(8):
            worker.probes.record(waiting, probe)
            delays.append(worker.probes.states["b"].backoff)
        assert delays[0] == 0.25
        assert max(delays) == longest
        assert delays == sorted(delays)

    run(scenario())


def test_a_refusing_server_is_asked_again_the_moment_its_port_opens() -> None:
    """The real server opens its ports only once its versions have loaded: a
    refused probe starts a port wait, and the port opening makes the probe due
    at once and wakes the worker, however long the backoff had grown."""

    async def scenario() -> None:
        h = Harness(Settings(probe_backoff_initial_seconds=0.25, probe_backoff_max_seconds=5.0))
        worker = await h.start(body(version=3))
        starting = pod("a", 3)
        h.pods(starting)
        await worker.reconcile()  # refused: the fake's default answer
        assert worker.probes.port_waits() == {"a"}
        await worker.reconcile()
        assert h.prober.calls["a"] == 1, "asked again before its backoff ran out"
        woken = asyncio.Event()
        wake = worker.probes.on_port_open

        def wake_and_note() -> None:
            wake()
            woken.set()

        worker.probes.on_port_open = wake_and_note
        h.prober.answers["a"] = answer("a", 3, ModelState.AVAILABLE)
        h.prober.ports.setdefault(starting.target, asyncio.Event()).set()
        await asyncio.wait_for(woken.wait(), 5)
        assert h.prober.port_waits == [starting.target], "one wait, on the pod's address"
        assert worker._wake.is_set(), "the port opened but the worker was not woken"
        assert worker.probes.port_waits() == frozenset()
        await worker.reconcile()
        assert h.prober.calls["a"] == 2
        assert h.applier.gates[-1] == ("a", True, "ModelAvailable")

    run(scenario())


def test_a_port_wait_ends_when_its_pod_terminates_and_when_the_worker_stops() -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_backoff_initial_seconds=0.25, probe_backoff_max_seconds=5.0))
        worker = await h.start(body(version=3))
        h.pods(pod("a", 3), pod("b", 3))
        await worker.reconcile()
        assert worker.probes.port_waits() == {"a", "b"}
        h.pods(pod("a", 3, terminating=True), pod("b", 3))
        await worker.reconcile()
        assert worker.probes.port_waits() == {"b"}
        await worker.stop()
        assert worker.probes.port_waits() == frozenset()

    run(scenario())


def test_open_gate_is_asked_at_the_steady_interval() -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_interval_seconds=30.0))
        worker = await h.start(body(version=3))
        worker.probes.states["a"] = ProbeState()
        before = time.monotonic()
        worker.probes.record(pod("a", 3, serving=True), answer("a", 3, ModelState.AVAILABLE))
        assert worker.probes.states["a"].backoff == 0.0
        assert worker.probes.states["a"].next_at >= before + 30.0
        assert worker.probes.states["a"].next_at <= time.monotonic() + 30.0 * (1 + PROBE_JITTER)

    run(scenario())


def test_steady_probes_are_spread_over_the_jitter() -> None:
    """Pods answered at the same moment are asked again at different moments,
    none sooner than the interval: a fixed period phase-locks onto a server's
    periodic work (a probe always arriving as a Predict frees a thread)."""

    async def scenario() -> None:
        h = Harness(Settings(probe_interval_seconds=100.0))
        worker = await h.start(body(version=3))
        before = time.monotonic()
        for name in "abcdefgh":
            worker.probes.record(pod(name, 3, serving=True), answer(name, 3, ModelState.AVAILABLE))
        gaps = [worker.probes.states[name].next_at - before for name in "abcdefgh"]
        assert all(100.0 <= g <= 100.0 * (1 + PROBE_JITTER) + 1 for g in gaps), gaps
        assert max(gaps) - min(gaps) > 1.0, gaps

    run(scenario())


@pytest.mark.parametrize(
    ("observed", "desired", "same"),
    [
        ({"a": 1, "extra": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, {"c": 2, "d": 3}]}}, {"a": {"b": [1, {"c": 2}]}}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({}, {"a": None}, False),
        ({"a": "1"}, {"a": 1}, False),
    ],
)
def test_contains(observed: Any, desired: Any, same: bool) -> None:
    assert contains(observed, desired) is same


def test_status_the_worker_wrote_wins_over_an_older_watch_event() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3, rv=50))
        await worker.reconcile()
        assert worker.body is not None
        written = worker.status.current(worker.body)
        assert written == h.applier.status
        worker.body = body(version=3, status={"stale": True}, rv=10)
        assert worker.status.current(worker.body) == written

    run(scenario())


def test_memory_survives_a_restart_through_the_status() -> None:
    """A new worker (the operator restarted) keeps the refusal it finds in the status."""

    async def scenario() -> None:
        status = {
            "lastGood": {"versions": [2], "labels": {}},
            "refused": decide.Refusal(
                (3,), (), "VersionLoadFailed", LOAD_ERROR, "2026-01-01T00:00:00Z"
            ).to_status(),
        }
        h = Harness()
        worker = await h.start(body(version=3, status=status))
        h.applier.status = dict(status)
        await worker.reconcile()
        (deployment,) = [m for m in h.applier.applied if m["kind"] == "Deployment"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations[api.ANNOTATION_VERSIONS] == "2"

    run(scenario())


def test_a_label_dropped_from_last_good_leaves_no_write_loop() -> None:
    """lastGood loses a label: the merge patch must delete it, or the stored status
    never matches and every pass writes again."""

    async def scenario() -> None:
        before = {"lastGood": {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}}
        sm_body = body(version=2, status=before)
        sm_body["spec"]["versionLabels"] = {"stable": 2}
        labelled = VersionSet.specific([2], {"stable": 2})
        sm = spec.parse(sm_body, "img", "img-gpu")
        new_hash = render.render(sm, labelled).config_hash
        h = Harness()
        worker = await h.start(sm_body)
        h.applier.status = copy.deepcopy(before)
        h.pods(pod("a", 2, serving=True, config_hash=new_hash))
        h.prober.answers["a"] = answer("a", 2, ModelState.AVAILABLE)
        await worker.reconcile()
        await h.settle_children()
        h.ctx.cache.deployments[KEY] = builders.deployment(new_hash)
        await h.next_pass()
        assert h.applier.status["lastGood"] == {"versions": [2], "labels": {"stable": 2}}
        writes = len(h.applier.status_patches)
        await h.next_pass()
        await h.next_pass()
        assert len(h.applier.status_patches) == writes

    run(scenario())


def test_channels_of_gone_pods_are_closed() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        h.pods(pod("a", 3, ip="10.0.0.1"), pod("b", 3, ip="10.0.0.2"))
        await worker.reconcile()
        h.pods(pod("b", 3, ip="10.0.0.2"))
        await h.next_pass()
        assert h.prober.forgotten == ["10.0.0.1:8500"]
        assert set(worker.probes.states) == {"b"}
        await h.ctx.forget(KEY)
        assert h.prober.forgotten == ["10.0.0.1:8500", "10.0.0.2:8500"]

    run(scenario())


def test_children_no_longer_rendered_are_deleted() -> None:
    """Two replicas render a PDB; back at one replica it goes. Objects this
    ServedModel does not control are never deleted, whatever their labels."""

    async def scenario() -> None:
        h = Harness()
        two = body(version=2)
        two["spec"]["replicas"] = 2
        worker = await h.start(two)
        await worker.reconcile()
        assert "PodDisruptionBudget" in [m["kind"] for m in h.applier.applied]
        await h.settle_children()
        foreign = {
            "kind": "Service",
            "metadata": {
                "name": "mnist-extra",
                "namespace": "ml",
                "labels": {api.LABEL_SERVEDMODEL: "mnist"},
                "ownerReferences": [{"uid": "someone-else", "controller": True}],
            },
        }
        h.ctx.cache.observe("Service", foreign, deleted=False)

        one = body(version=2)
        worker.body = one
        await worker.reconcile()
        assert h.applier.deleted == [("PodDisruptionBudget", "mnist")]
        await worker.reconcile()
        assert h.applier.deleted == [("PodDisruptionBudget", "mnist")], "deleted once"

    run(scenario())


def test_timeouts_below_the_threshold_keep_a_serving_pod_in_and_show_in_status() -> None:
    """Probe timeouts from a busy server: the gate stays open (no write) for two,
    status.pods shows the failing probe, the third closes it; recovery counts anew."""

    async def scenario() -> None:
        h = Harness(Settings(probe_failure_threshold=3))
        worker = await serving_steadily(h)
        assert h.applier.gates == []

        h.prober.answers["a"] = probe_error("a", "ProbeTimeout", "deadline exceeded")
        for failures in (1, 2):
            await h.next_pass()
            assert worker.probes.failures() == {"a": failures}
            assert h.applier.gates == [], "held open: no gate write"
            (entry,) = h.applier.status["pods"]
            assert (entry["ready"], entry["gate"]) == (True, GateReason.TIMEOUT)
            assert h.applier.status["readyReplicas"] == 1
        await h.next_pass()
        assert h.applier.gates == [("a", False, GateReason.TIMEOUT)]
        (entry,) = h.applier.status["pods"]
        assert (entry["ready"], entry["gate"]) == (False, GateReason.TIMEOUT)

        # The pod's gate is closed now; the first good answer opens it and resets the count.
        h.pods(pod("a", 2, ready=False, gate=False, gate_reason=GateReason.TIMEOUT))
        h.prober.answers["a"] = answer("a", 2, ModelState.AVAILABLE)
        await h.next_pass()
        assert h.applier.gates[-1] == ("a", True, GateReason.AVAILABLE)
        assert worker.probes.failures() == {"a": 0}

    run(scenario())


def test_a_not_found_answer_closes_an_open_gate_at_once() -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_failure_threshold=3))
        worker = await h.start(body(version=2))
        h.pods(pod("a", 2, serving=True))
        h.prober.answers["a"] = probe_error("a", "ModelNotFound", "Could not find any versions")
        await worker.reconcile()
        assert h.applier.gates == [("a", False, GateReason.NOT_FOUND)]

    run(scenario())


def test_failure_count_resets_on_success() -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_failure_threshold=3))
        worker = await h.start(body(version=2))
        serving = pod("a", 2, serving=True)
        timeout = probe_error("a", "ProbeTimeout")
        for result in (timeout, timeout, answer("a", 2, ModelState.AVAILABLE), timeout):
            worker.probes.record(serving, result)
        assert worker.probes.failures() == {"a": 1}

    run(scenario())


@pytest.mark.parametrize(
    ("event_rv", "event_status", "caught"),
    [
        ("101", {"old": True}, True),  # the event of our own patch
        ("100", {"old": True}, False),  # the event we decided from, delivered again
        ("99", {"old": True}, False),  # another event from before our write
        ("7", {"written": True}, True),  # a later event (after a relist) with our status
        ("1000", {"other": True}, False),  # an intermediate event that lacks our status
    ],
)
def test_the_written_status_holds_until_the_watch_shows_it(
    event_rv: str, event_status: dict[str, Any], caught: bool
) -> None:
    """resourceVersions are opaque: compared for equality, never ordered."""
    written = Written(status={"written": True}, resource_version="101")
    event = {"metadata": {"resourceVersion": event_rv}, "status": event_status}
    assert caught_up(event, written) is caught


def test_once_caught_up_the_watch_is_current_again() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3, rv=50))
        await worker.reconcile()
        assert worker.status.written is not None
        ours = body(version=3, status=h.applier.status, rv=h.applier.rv)
        assert worker.status.current(ours) == h.applier.status
        assert worker.status.written is None
        # Someone else changed the status later: their event wins.
        theirs = body(version=3, status={"edited": True}, rv=h.applier.rv + 5)
        assert worker.status.current(theirs) == {"edited": True}

    run(scenario())


def test_a_paused_replica_stops_every_worker_and_keeps_only_the_cache() -> None:
    """Peering pause (pause.py): no worker and no probe channel survives it, and
    nothing starts again until the replica resumes; the cache stays (the child
    watches keep it current), so the replica resumes warm."""
    h = Harness()

    async def scenario() -> None:
        h.ctx.poke(KEY, body())
        h.pods(pod("p1", 3, ip="10.0.0.1"))
        h.ctx.workers[KEY].probes.states["p1"] = ProbeState(target="10.0.0.1:8500")
        await h.ctx.pause()
        assert h.ctx.workers == {} and list(h.ctx.cache.pods[KEY]) == ["p1"]
        assert h.prober.forgotten == ["10.0.0.1:8500"]
        h.ctx.poke(KEY, body())  # an event kopf delivered while pausing
        assert h.ctx.workers == {}
        h.ctx.resume()
        h.ctx.poke(KEY, body())  # kopf's re-list after the pause
        assert list(h.ctx.workers) == [KEY]
        await h.ctx.stop()

    run(scenario())


# ----- when the next pass is due ---------------------------------------------------

# The worker's waits are recorded by replacing Worker._sleep.


def test_a_steady_pass_waits_until_the_next_probe_is_due() -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_interval_seconds=30.0))
        await serving_steadily(h)
        delay = await h.next_pass()
        assert 29.0 < delay <= 30.0 * (1 + PROBE_JITTER)

    run(scenario())


def test_a_steady_pass_waits_at_most_the_idle_maximum() -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_interval_seconds=600.0))
        await serving_steadily(h)
        assert await h.next_pass() == MAX_IDLE_SECONDS

    run(scenario())


def test_a_servedmodel_at_rest_with_no_pod_is_passed_rarely() -> None:
    """Zero replicas, converged: nothing it reads changes with time, so the
    safety-net pass comes every QUIET_SECONDS, not every minute; a pod brings
    the minute back."""

    async def scenario() -> None:
        h = Harness()
        zero = body()
        zero["spec"]["replicas"] = 0
        await h.start(zero)
        assert await h.next_pass() == QUIET_SECONDS
        assert h.applier.status["conditions"], "converged: its status was written"
        h.pods(pod("a", 3, serving=True, terminating=True))
        assert await h.next_pass() <= MAX_IDLE_SECONDS

    run(scenario())


def test_a_terminating_pod_whose_probe_is_overdue_does_not_spin_the_worker() -> None:
    """A terminating pod is never probed again, so its overdue schedule must
    not set the next pass: it made passes run every 50 ms through an old
    pod's whole grace period (40 s of preStop) in every rollout."""

    async def scenario() -> None:
        h = Harness(Settings(probe_interval_seconds=30.0))
        await serving_steadily(h)
        worker = h.worker
        assert worker is not None
        worker.probes.states["a"].next_at = 1.0  # overdue long ago
        h.pods(pod("a", 2, serving=True, terminating=True))
        delay = await worker.reconcile()
        assert delay == MAX_IDLE_SECONDS
        assert h.prober.calls["a"] == 2  # the two passes before it turned terminating

    run(scenario())


def test_a_loading_pod_brings_the_next_pass_to_its_probe_backoff() -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_backoff_initial_seconds=0.25))
        worker = await h.start(body(version=3))
        h.pods(pod("b", 3))
        h.prober.answers["b"] = answer("b", 3, ModelState.LOADING)
        delay = await worker.reconcile()
        assert 0.05 <= delay <= 0.25

    run(scenario())


def test_a_rollout_without_probes_wakes_at_its_availability_deadline() -> None:
    async def scenario() -> None:
        h = Harness()
        sm_body = body(version=3)
        sm_body["spec"]["rollout"] = {"availabilityTimeoutSeconds": 20}
        worker = await h.start(sm_body)
        h.pods(pod("b", 3, phase="Pending", running=False, ip=""))  # nothing to probe
        delay = await worker.reconcile()
        # The deadline plus a second's margin, from a rollout that just started.
        assert 19.0 < delay <= 21.0
        # Half a second before the deadline: the pass after it runs a second after it.
        start = datetime.now(UTC) - timedelta(seconds=19.5)
        h.applier.status["rollout"]["startTime"] = decide.format_time(start)
        assert 1.3 < await h.next_pass() <= 1.5

    run(scenario())


def test_a_spec_that_cannot_be_parsed_waits_the_idle_maximum() -> None:
    async def scenario() -> None:
        h = Harness()
        broken = body(version=3)
        del broken["spec"]["storage"]
        worker = await h.start(broken)
        assert await worker.reconcile() == MAX_IDLE_SECONDS
        assert h.applier.applied == [] and h.applier.dry_runs == 0
        ready = next(c for c in h.applier.status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert ready["message"].startswith("spec cannot be used: ")
        assert h.applier.status["observedGeneration"] == 2

    run(scenario())


def run_worker(
    monkeypatch: pytest.MonkeyPatch, h: Harness, script: list[float | Exception]
) -> list[float]:
    """Run the worker's loop over scripted passes (a delay or an error each); the
    waits it asked for, the wait after the last pass included."""
    waits: list[float] = []
    done = asyncio.Event()

    async def no_wait(_: Worker, seconds: float) -> None:
        waits.append(seconds)  # no wake-up comes: every wait runs out at once
        if len(waits) > len(script):
            done.set()
            await asyncio.Event().wait()  # until the test stops the worker

    async def scripted_pass() -> float:
        step = script[len(waits) - 1]
        if isinstance(step, Exception):
            raise step
        return step

    async def scenario() -> None:
        worker = Worker(KEY, h.ctx)
        worker.body = body(version=3)
        worker.reconcile = scripted_pass  # type: ignore[method-assign]
        async with asyncio.timeout(5):
            await done.wait()
        await worker.stop()

    monkeypatch.setattr(Worker, "_sleep", no_wait)
    run(scenario())
    return waits


def test_failed_passes_back_off_exponentially_up_to_30_s_and_reset_on_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's waits over a scripted run of passes: seven failures, a
    success that asks for 7 s, one more failure."""
    script: list[float | Exception] = [RuntimeError("boom") for _ in range(7)]
    script += [7.0, RuntimeError("again")]
    waits = run_worker(monkeypatch, Harness(), script)
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 7.0, 1.0]


def test_a_worker_keeps_nothing_of_the_context_it_was_created_in() -> None:
    """kopf runs the event handler that creates a Worker with context variables
    holding the event (its whole body); the worker's task must not keep them."""

    class Cause:  # what kopf's cause_var holds
        pass

    cause_var: contextvars.ContextVar[Cause] = contextvars.ContextVar("cause")

    async def scenario() -> None:
        cause = Cause()
        gone = weakref.ref(cause)
        handler_context = contextvars.copy_context()
        handler_context.run(cause_var.set, cause)
        worker = handler_context.run(Worker, KEY, Harness().ctx)
        del cause, handler_context
        gc.collect()
        assert gone() is None, "the worker's task holds the handler's context variables"
        await worker.stop()

    run(scenario())


@pytest.mark.parametrize("turns", range(6))
def test_a_stop_that_meets_a_wake_up_ends_the_worker(turns: int) -> None:
    """stop() lands `turns` loop turns after a wake-up, at each point of the
    worker's wait. With asyncio.wait_for (Python 3.11) a cancellation that met
    the wait's completion was swallowed: the loop went on and the operator's
    cleanup waited for it for ever (CI: the operator did not stop on SIGTERM)."""

    async def scenario(settled: int) -> None:
        worker = Worker(KEY, Harness().ctx)  # no body: it waits the idle maximum
        for _ in range(settled):
            await asyncio.sleep(0)
        worker.wake(None)
        for _ in range(turns):
            await asyncio.sleep(0)
        where = f"{settled} turns in, {turns} after the wake-up"
        try:
            async with asyncio.timeout(2) as deadline:
                await worker.stop()
        except TimeoutError:
            pytest.fail(f"the worker did not stop within 2 s ({where})")
        # The deadline's cancellation also reaches the worker: a stop() that
        # returned only then had lost its own.
        assert not deadline.expired(), f"the worker stopped only at the test's deadline ({where})"
        assert worker._task.done()

    for settled in range(12):
        run(scenario(settled))


def test_a_worker_without_a_body_sleeps_the_idle_maximum(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []
    done = asyncio.Event()

    async def no_wait(_: Worker, seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            done.set()
            await asyncio.Event().wait()

    async def scenario() -> None:
        worker = Worker(KEY, Harness().ctx)
        async with asyncio.timeout(5):
            await done.wait()
        await worker.stop()

    monkeypatch.setattr(Worker, "_sleep", no_wait)
    with caplog.at_level(logging.DEBUG, logger="tfserving_operator.reconcile"):
        run(scenario())
    assert waits == [0.0, MAX_IDLE_SECONDS]
    # TFSO_LOG_LEVEL=DEBUG says why no pass ran.
    assert "ml/mnist: no pass (no body)" in caplog.messages


def test_the_debug_line_of_a_pass_says_what_it_saw_and_when_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        h = Harness(Settings(probe_interval_seconds=30.0))
        await serving_steadily(h)
        # A second pod, scheduled but not started: nothing to probe yet.
        h.pods(pod("a", 2, serving=True), pod("b", 2, phase="Pending", running=False, ip=""))
        await h.next_pass()

    with caplog.at_level(logging.DEBUG, logger="tfserving_operator.reconcile"):
        run(scenario())
    line = caplog.messages[-1]
    assert line.startswith("ml/mnist: pass 3: serve "), line
    assert "versions=(2,)" in line.partition(", complete")[0], line
    # One entry per pod; "-" for a pod this pass did not probe.
    assert "; b Pending ready=False gate=None term=False probe=-; next pass in " in line
    assert "complete True, pods a Running ready=True gate=True term=False probe=" in line
    assert "state=<ModelState.AVAILABLE: 30>" in line
    head, _, delay = line.rpartition("; next pass in ")
    assert head and delay.endswith(" s"), line
    assert 29.0 < float(delay.removesuffix(" s")) <= 30.0 * (1 + PROBE_JITTER), line


# ----- a spec the API server refuses rendered --------------------------------------


async def reconciled_at_generation_2(h: Harness, version: int = 3) -> Worker:
    """A worker whose ServedModel was reconciled once: children applied, status written."""
    worker = await h.start(body(version=version))
    await worker.reconcile()
    await h.settle_children()
    await h.next_pass()
    return worker


def at_generation(worker: Worker, generation: int, version: int) -> None:
    assert worker.body is not None
    worker.body = {
        **worker.body,
        "metadata": {**worker.body["metadata"], "generation": generation},
        "spec": {**worker.body["spec"], "version": version},
    }


def assert_invalid_spec(h: Harness, message: str, generation: int) -> None:
    conditions = {c["type"]: c for c in h.applier.status["conditions"]}
    ready = conditions["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"] == message
    assert ready["observedGeneration"] == generation
    assert h.applier.status["observedGeneration"] == generation
    assert conditions["Degraded"]["status"] == "True"


@pytest.mark.parametrize("code", [400, 403, 422])
def test_a_refused_first_apply_is_undone_and_reported_as_invalid_spec(code: int) -> None:
    """A new ServedModel is applied without a dry run: the first refusal deletes
    what the pass applied, before the Deployment (last) could start a pod."""

    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        h.applier.refusals["Service"] = ApiError(
            code, {"reason": "Invalid", "message": "spec.ports: bad value"}
        )
        assert await worker.reconcile() == MAX_IDLE_SECONDS
        assert [m["kind"] for m in h.applier.applied] == ["ConfigMap"]
        assert h.applier.deleted == [("ConfigMap", h.applier.applied[0]["metadata"]["name"])]
        assert h.applier.objects == {} and h.applier.gates == [] and h.applier.dry_runs == 0
        assert_invalid_spec(h, "Service mnist-grpc: spec.ports: bad value", 2)
        assert h.ctx.cache.children.get(KEY, {}) == {}

    run(scenario())


def test_a_refused_first_apply_also_undoes_what_an_earlier_failed_pass_left() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        h.applier.refusals["Service"] = ApiError(503, {"reason": "ServiceUnavailable"})
        with pytest.raises(ApiError):
            await worker.reconcile()  # the ConfigMap stays: a retry will go on
        h.applier.refusals["Service"] = ApiError(422, {"reason": "Invalid", "message": "no"})
        await worker.reconcile()
        assert h.applier.objects == {}
        assert_invalid_spec(h, "Service mnist-grpc: no", 2)

    run(scenario())


@pytest.mark.parametrize("code", [400, 403, 422])
def test_a_refused_new_generation_is_dry_run_and_applies_nothing(code: int) -> None:
    """A ServedModel that serves keeps its children when an edit is refused."""

    async def scenario() -> None:
        h = Harness()
        worker = await reconciled_at_generation_2(h)
        before = copy.deepcopy(h.applier.objects)
        at_generation(worker, 3, version=4)
        h.applier.refusals["Deployment"] = ApiError(
            code, {"reason": "Invalid", "message": "spec.template: bad value"}
        )
        assert await h.next_pass() == MAX_IDLE_SECONDS
        assert h.applier.applied == [] and h.applier.deleted == []
        assert h.applier.objects == before
        # Only the children the edit changes are dry-run: the new ConfigMap and the Deployment.
        assert h.applier.dry_runs == 2
        assert_invalid_spec(h, "Deployment mnist: spec.template: bad value", 3)

    run(scenario())


def test_a_dry_run_the_server_could_not_answer_fails_the_pass() -> None:
    """Not the spec's fault (a 503 from a busy API server): no InvalidSpec, the
    pass fails and the worker retries it."""

    async def scenario() -> None:
        h = Harness()
        worker = await reconciled_at_generation_2(h)
        status = copy.deepcopy(h.applier.status)
        at_generation(worker, 3, version=4)
        h.applier.refusals["ConfigMap"] = ApiError(503, {"reason": "ServiceUnavailable"})
        with pytest.raises(ApiError):
            await h.next_pass()
        assert h.applier.status == status and h.applier.applied == []

    run(scenario())


def test_a_new_generation_dry_runs_what_changes_once_and_an_old_one_is_not() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await reconciled_at_generation_2(h)
        assert h.applier.dry_runs == 0
        # A restarted operator (a fresh worker) trusts the status it wrote.
        fresh = await h.start(worker.body or {})
        await h.next_pass()
        assert fresh is h.worker and h.applier.dry_runs == 0 and h.applier.applied == []
        at_generation(fresh, 3, version=4)
        await h.next_pass()
        assert h.applier.dry_runs == 2  # the new ConfigMap and the Deployment
        assert [m["kind"] for m in h.applier.applied] == ["ConfigMap", "Deployment"]
        await h.settle_children()
        await h.next_pass()
        assert h.applier.dry_runs == 2  # same generation: validated once
        # A new generation that changes no child is not dry-run at all.
        at_generation(fresh, 4, version=4)
        await h.next_pass()
        assert h.applier.dry_runs == 2 and h.applier.applied == []

    run(scenario())


# ----- waking workers ----------------------------------------------------------------


def test_poke_starts_a_worker_for_a_new_servedmodel_only_with_its_body() -> None:
    async def scenario() -> None:
        h = Harness()
        h.ctx.poke(KEY)  # a child event before the ServedModel was seen
        assert h.ctx.workers == {}
        h.ctx.poke(KEY, body(version=3))
        worker = h.ctx.workers[KEY]
        assert worker.body is not None and worker.body["spec"]["version"] == 3
        h.ctx.poke(KEY)  # a child event: same worker, same body
        assert h.ctx.workers[KEY] is worker and worker.body["spec"]["version"] == 3
        h.ctx.poke(KEY, body(version=4))
        assert h.ctx.workers[KEY] is worker and worker.body["spec"]["version"] == 4
        await h.ctx.stop()
        assert h.ctx.workers == {}
        assert worker._task.done()

    run(scenario())


def test_wake_keeps_the_body_without_its_managed_fields() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        sent = body(version=5)
        sent["metadata"]["managedFields"] = [{"manager": "kubectl"}]
        worker.wake(sent)
        assert worker.body is not None
        assert "managedFields" not in worker.body["metadata"]
        assert worker.body["metadata"]["name"] == "mnist"
        assert worker.body["spec"]["version"] == 5
        assert "managedFields" in sent["metadata"], "the caller's object is left alone"
        assert worker._wake.is_set()
        worker._wake.clear()
        worker.wake(None)
        assert worker._wake.is_set() and worker.body["spec"]["version"] == 5

    run(scenario())


# ----- what a gate write carries, and the figures it leaves -------------------------


class GateRecordingApplier(FakeApplier):
    """Also keeps every argument of each gate write."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_writes: list[tuple[str, str, bool, str, str]] = []

    async def set_gate(
        self, namespace: str, pod: str, is_open: bool, reason: str, message: str
    ) -> Any:
        self.gate_writes.append((namespace, pod, is_open, reason, message))
        return await super().set_gate(namespace, pod, is_open, reason, message)


def sample(metrics: Metrics, family: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(family, labels) or 0.0


def test_gate_writes_name_the_pod_in_its_namespace_and_are_counted_and_timed() -> None:
    async def scenario() -> None:
        h = Harness()
        h.applier = h.ctx.applier = GateRecordingApplier()
        metrics = h.ctx.metrics = Metrics()
        worker = await h.start(body(version=3))
        h.pods(pod("b", 3))
        h.prober.answers["b"] = answer("b", 3, ModelState.LOADING)
        await worker.reconcile()
        ((namespace, name, is_open, reason, message),) = h.applier.gate_writes
        assert (namespace, name, is_open, reason) == ("ml", "b", False, GateReason.LOADING)
        assert "LOADING" in message
        closed = {"decision": "closed", "reason": GateReason.LOADING}
        assert sample(metrics, "tfserving_operator_gate_decisions_total", **closed) == 1

        h.pods(pod("b", 3, gate=False, gate_reason=GateReason.LOADING))
        h.prober.answers["b"] = answer("b", 3, ModelState.AVAILABLE)
        await h.next_pass()
        assert h.applier.gate_writes[-1][:4] == ("ml", "b", True, GateReason.AVAILABLE)
        opened = {"decision": "open", "reason": GateReason.AVAILABLE}
        assert sample(metrics, "tfserving_operator_gate_decisions_total", **opened) == 1
        assert list(worker._opened) == ["b"]

        # The kubelet saw the gate: the pod is Ready. Its latency is observed once.
        h.pods(pod("b", 3, serving=True))
        await h.next_pass()
        latency = "tfserving_operator_gate_latency_seconds"
        assert sample(metrics, f"{latency}_count") == 1
        assert 0 <= sample(metrics, f"{latency}_sum") < 3600  # seconds since the write
        assert worker._opened == {}
        await h.next_pass()
        assert sample(metrics, f"{latency}_count") == 1

    run(scenario())


class SlowGateApplier(FakeApplier):
    """Each gate write waits until every gate write of the pass has started."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.started: list[str] = []
        self._all_started = asyncio.Event()
        self._expected = expected

    async def set_gate(
        self, namespace: str, pod: str, is_open: bool, reason: str, message: str
    ) -> bool:
        self.started.append(pod)
        if len(self.started) == self._expected:
            self._all_started.set()
        async with asyncio.timeout(5):  # one at a time would never get here
            await self._all_started.wait()
        return await super().set_gate(namespace, pod, is_open, reason, message)


def test_gates_of_pods_available_together_are_written_side_by_side() -> None:
    """Replicas started together turn AVAILABLE together: the last pod's gate
    must not wait for the others' patches."""

    async def scenario() -> None:
        h = Harness()
        h.applier = h.ctx.applier = SlowGateApplier(expected=3)
        worker = await h.start(body(version=3))
        names = ["a", "b", "c"]
        h.pods(*(pod(n, 3, gate=False, gate_reason=GateReason.LOADING) for n in names))
        for n in names:
            h.prober.answers[n] = answer(n, 3, ModelState.AVAILABLE)
        await worker.reconcile()
        assert sorted(h.applier.started) == names
        assert sorted((p, o) for p, o, _ in h.applier.gates) == [(n, True) for n in names]
        assert sorted(worker._opened) == names

    run(scenario())


def test_one_failed_gate_write_fails_the_pass_after_the_others_are_written() -> None:
    class RefusingApplier(FakeApplier):
        async def set_gate(
            self, namespace: str, pod: str, is_open: bool, reason: str, message: str
        ) -> bool:
            if pod == "b":
                raise ApiError(500, {"message": "etcdserver: request timed out"})
            return await super().set_gate(namespace, pod, is_open, reason, message)

    async def scenario() -> None:
        h = Harness()
        h.applier = h.ctx.applier = RefusingApplier()
        worker = await h.start(body(version=3))
        h.pods(*(pod(n, 3, gate=False, gate_reason=GateReason.LOADING) for n in "abc"))
        for n in "abc":
            h.prober.answers[n] = answer(n, 3, ModelState.AVAILABLE)
        with pytest.raises(ApiError):
            await worker.reconcile()
        assert sorted(p for p, _, _ in h.applier.gates) == ["a", "c"]
        assert sorted(worker._opened) == ["a", "c"]

    run(scenario())


def test_a_pod_gone_before_it_was_seen_ready_leaves_no_latency() -> None:
    async def scenario() -> None:
        h = Harness()
        metrics = h.ctx.metrics = Metrics()
        worker = await h.start(body(version=3))
        h.pods(pod("b", 3, gate=False, gate_reason=GateReason.LOADING))
        h.prober.answers["b"] = answer("b", 3, ModelState.AVAILABLE)
        await worker.reconcile()
        assert list(worker._opened) == ["b"]
        h.pods(pod("b", 3, terminating=True))
        await h.next_pass()
        assert worker._opened == {}
        h.pods()
        await h.next_pass()
        assert sample(metrics, "tfserving_operator_gate_latency_seconds_count") == 0

    run(scenario())


def test_every_pass_is_counted() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        for _ in range(3):
            await h.next_pass()
        assert worker.passes == 3

    run(scenario())


def test_a_hung_pass_is_cancelled_and_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass watchdog: a pass that never returns is cancelled after
    PASS_TIMEOUT_SECONDS and the worker runs the next one (with the failure backoff)."""
    from tfserving_operator import reconcile as reconcile_module

    monkeypatch.setattr(reconcile_module, "PASS_TIMEOUT_SECONDS", 0.05)
    calls: list[int] = []
    done = asyncio.Event()

    async def hangs_once() -> float:
        calls.append(len(calls))
        if len(calls) == 1:
            await asyncio.Event().wait()  # never set: the first pass hangs
        done.set()
        return MAX_IDLE_SECONDS

    async def scenario() -> None:
        worker = Worker(KEY, Harness().ctx)
        worker.body = body(version=3)
        worker.reconcile = hangs_once  # type: ignore[method-assign]
        await asyncio.wait_for(done.wait(), timeout=5)
        await worker.stop()

    run(scenario())
    assert calls == [0, 1]


# ----- requests per ServedModel --------------------------------------------------------


class ApiServerLikeApplier(FakeApplier):
    """Answers a Deployment's apply as the API server does: generation 1 when
    created, one more when the spec changes, and no status until the Deployment
    controller writes one (`controller_catches_up`)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []  # kinds applied (settle_children clears `applied`)

    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        old = self.objects.get((manifest["kind"], manifest["metadata"]["name"]))
        result = await super().apply(manifest, dry_run)
        if not dry_run:
            self.sent.append(manifest["kind"])
        if manifest["kind"] == "Deployment" and not dry_run:
            generation = int((old or {}).get("metadata", {}).get("generation") or 0)
            changed = old is None or old["spec"] != result["spec"]
            result["metadata"]["generation"] = generation + 1 if changed else generation
            result["status"] = (old or {}).get("status") or {}
            self.objects[("Deployment", manifest["metadata"]["name"])] = copy.deepcopy(result)
        return result

    def controller_catches_up(self, cache: Cache) -> None:
        deployment = self.objects[("Deployment", "mnist")]
        generation = deployment["metadata"]["generation"]
        deployment["status"] = {"observedGeneration": generation, "replicas": 0}
        cache.observe("Deployment", copy.deepcopy(deployment), deleted=False)


def requests_made(applier: ApiServerLikeApplier) -> dict[str, int]:
    return {
        "apply": len(applier.sent),
        "dry run": applier.dry_runs,
        "status": len(applier.status_patches),
        "event": len(applier.events),
        "delete": len(applier.deleted),
    }


def test_requests_for_a_new_servedmodel_and_for_a_changed_version() -> None:
    """Replicas 0, as the benchmark counts them in a cluster: a new ServedModel
    costs its five applies, one status patch and one Event; a version change
    dry-runs and applies what changes (config and Deployment), one status patch,
    and deletes the old config once the rollout is done."""

    async def scenario() -> None:
        h = Harness()
        applier = h.applier = ApiServerLikeApplier()
        h.ctx.applier = applier
        zero = body(version=3)
        zero["spec"]["replicas"] = 0
        worker = await h.start(zero)
        await worker.reconcile()
        await h.settle_children()
        applier.controller_catches_up(h.ctx.cache)
        await h.next_pass()
        await h.next_pass()
        made = requests_made(applier)
        assert made == {"apply": 5, "dry run": 0, "status": 1, "event": 1, "delete": 0}, made
        applier.status_patches.clear()
        applier.events.clear()
        applier.sent.clear()
        at_generation(worker, 3, version=4)
        await h.next_pass()
        await h.settle_children()
        applier.controller_catches_up(h.ctx.cache)
        await h.next_pass()
        await h.next_pass()
        assert applier.sent == ["ConfigMap", "Deployment"]
        made = requests_made(applier)
        assert made == {"apply": 2, "dry run": 2, "status": 1, "event": 0, "delete": 1}, made

    run(scenario())


def test_after_a_start_a_reconciled_servedmodel_waits_for_the_first_lists() -> None:
    """The child watches' first lists arrive after the ServedModels': a pass on
    part of them would re-apply what only the cache has not seen yet, or write a
    status from half the pods. Until the lists are in (or WARM_UP_SECONDS), a
    ServedModel reconciled before waits; Context.caches_synced wakes it."""

    async def scenario() -> None:
        h = Harness()
        worker = await reconciled_at_generation_2(h)
        children = dict(h.ctx.cache.children[KEY])
        writes = h.applier.writes
        # A restarted operator: a fresh worker, nothing cached yet, warming up.
        h.ctx.cache.children.clear()
        h.ctx.cache.deployments.clear()
        h.ctx.warm_until = time.monotonic() + 30
        fresh = await h.start(worker.body or {})
        delay = await h.next_pass()
        assert 25 < delay <= 30 and fresh.waits_for_cache and h.applier.writes == writes
        # Its children arrive (each event wakes the worker): it still waits.
        for (kind, _), obj in children.items():
            if kind != "Service":
                h.ctx.cache.observe(kind, obj, deleted=False)
        assert 25 < await h.next_pass() <= 30 and h.applier.writes == writes
        h.ctx.warm_until = time.monotonic() + 0.5
        assert 0 < await h.next_pass() <= 0.5, "waits out the warm-up, however little is left"
        # The lists are in: the pass runs, and a child really gone is applied.
        fresh._wake.clear()
        h.ctx.caches_synced()
        assert fresh._wake.is_set() and h.ctx.warm_until == 0.0
        await h.next_pass()
        assert not fresh.waits_for_cache
        assert sorted(m["metadata"]["name"] for m in h.applier.applied) == sorted(
            n for k, n in children if k == "Service"
        )
        fresh._wake.clear()
        h.ctx.caches_synced()  # a worker that does not wait is left alone
        assert not fresh._wake.is_set()
        assert fresh is h.worker

    run(scenario())


def test_a_servedmodel_never_reconciled_does_not_wait_for_the_first_lists() -> None:
    """Nothing of it serves yet: its children are applied at once after a start."""

    async def scenario() -> None:
        h = Harness()
        h.ctx.warm_until = time.monotonic() + 30
        worker = await h.start(body())
        await h.next_pass()
        assert not worker.waits_for_cache
        assert h.applier.applied, "a new ServedModel's children wait for nothing"

    run(scenario())


# ----- a canary, pass by pass ------------------------------------------------------------

CANARY = {"steps": [{"replicas": 1}], "analysisIntervalSeconds": 10, "minRequests": 10}
LONG_AGO = "2000-01-01T00:00:00Z"


def canary_body(version: int) -> dict[str, Any]:
    sm_body = body(version=version)
    sm_body["spec"]["rollout"] = {"canary": dict(CANARY)}
    return sm_body


def canary_hash(version: int) -> str:
    """The config hash of the canary's pods (monitoring on, as the canary renders it)."""
    sm = spec.parse(canary_body(version), "img", "img-gpu")
    return render.render(sm, VersionSet.specific([version])).config_hash


def reading(pod_name: str, requests: int, errors: int) -> ServingCounts:
    return ServingCounts(
        pod=pod_name,
        requests=requests,
        errors=errors,
        latency_buckets=(("1000", requests - errors), ("+Inf", requests - errors)),
    )


def test_an_erroring_canary_is_refused_pass_by_pass_and_its_deployment_removed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The Worker's canary sequence: a new target starts a canary Deployment
    beside the stable one, its pod's gate opens on AVAILABLE, a baseline is
    read, and a window whose canary answered only errors refuses the target
    (CanaryAnalysisFailed, the numbers, a Warning Event) and renders the last
    good set without the canary."""
    pages: dict[str, ServingCounts] = {}
    scraped: list[list[str]] = []

    async def read_all(pods: Iterable[PodView], model_name: str) -> dict[str, Any]:
        assert model_name == "mnist", "the pages are read for the served model's series"
        names = [p.name for p in pods]
        scraped.append(names)
        return {name: pages[name] for name in names}

    from tfserving_operator import scrape

    monkeypatch.setattr(scrape, "read_all", read_all)

    async def scenario() -> None:
        h = Harness()
        metrics = h.ctx.metrics = Metrics()
        worker = await serving_steadily(h)  # version 2 serves on pod a, last good 2
        worker.body = {**canary_body(3), "status": h.applier.status}
        stable = pod("a", 2, serving=True)
        h.pods(stable)
        await h.next_pass()
        deployments = {
            m["metadata"]["name"]: m for m in h.applier.applied if m["kind"] == "Deployment"
        }
        assert deployments["mnist-canary"]["spec"]["replicas"] == 1, "step 1: one replica"
        assert h.applier.status["canary"]["phase"] == "Starting"
        assert h.applier.status["servingVersions"] == "2"
        await h.settle_children()

        # The canary pod loads version 3; its gate opens on AVAILABLE.
        target = canary_hash(3)
        new = pod("c", 3, config_hash=target, canary=True)
        h.pods(stable, new)
        h.prober.answers["c"] = answer("c", 3, ModelState.AVAILABLE)
        await h.next_pass()
        assert ("c", True) in [(p, is_open) for p, is_open, _ in h.applier.gates]
        assert scraped == []  # not Ready yet: no analysis

        # Ready: a baseline reading of the canary and the stable pod.
        h.pods(stable, pod("c", 3, config_hash=target, canary=True, serving=True))
        pages.update(c=reading("c", 100, 0), a=reading("a", 200, 0))
        await h.next_pass()
        assert scraped == [["c", "a"]]
        assert h.applier.status["canary"]["baseline"]["canary"]["requests"] == 100
        assert h.applier.status["canary"]["readyReplicas"] == 1
        assert not h.applier.status.get("refused")
        # Within the window: nothing to read, the next pass is due when it ends.
        assert 9.0 < await h.next_pass() <= 10.0
        assert scraped == [["c", "a"]]

        # The window ends: every canary request since the baseline failed.
        h.applier.status["canary"]["windowStartTime"] = LONG_AGO
        pages.update(c=reading("c", 150, 50), a=reading("a", 300, 0))
        await h.next_pass()
        refused = h.applier.status["refused"]
        assert refused["reason"] == "CanaryAnalysisFailed"
        assert refused["versions"] == [3]
        assert "50/50" in refused["message"], refused["message"]
        refusals = "tfserving_operator_refusals_total"
        assert sample(metrics, refusals, reason="CanaryAnalysisFailed") == 1
        assert f"ml/mnist: canary 3 refused: {refused['message']}" in caplog.messages
        assert ("Warning", "CanaryAnalysisFailed") in [(t, r) for t, r, _ in h.applier.events]
        assert ("Deployment", "mnist-canary") in h.applier.deleted
        assert "canary" not in h.applier.status
        # Its pod gone, version 2 alone serves; the refused target starts no new canary.
        h.pods(stable)
        await h.next_pass()
        assert h.applier.status["servingVersions"] == "2"
        assert "canary" not in h.applier.status
        assert ("Deployment", "mnist-canary") not in {
            (m["kind"], m["metadata"]["name"]) for m in h.applier.applied
        }

    with caplog.at_level(logging.WARNING, logger="tfserving_operator.reconcile"):
        run(scenario())


def test_while_a_canary_starts_the_stable_side_is_judged_on_the_last_good_set() -> None:
    """The canary's pod is not created yet and the stable Deployment, still on the
    last good set, finishes its own rollout (the canary turned monitoring on): no
    rollout is reported, unused configs go, the canary's (no pod uses it yet) stays."""

    async def scenario() -> None:
        h = Harness()
        worker = await serving_steadily(h)
        worker.body = {**canary_body(3), "status": h.applier.status}
        h.pods(pod("a", 2, serving=True))
        await h.next_pass()
        await h.settle_children()
        sm = spec.parse(canary_body(3), "img", "img-gpu")
        stable_hash = render.render(sm, VersionSet.specific([2])).config_hash
        h.ctx.cache.deployments[KEY] = builders.deployment(stable_hash)
        h.pods(pod("a", 2, serving=True, config_hash=stable_hash))
        await h.next_pass()
        assert h.applier.status["canary"]["phase"] == "Starting"
        assert "rollout" not in h.applier.status, "the stable side is done"
        assert h.applier.deleted == [("ConfigMap", f"mnist-config-{config_hash(2)}")]
        assert ("ConfigMap", f"mnist-config-{canary_hash(3)}") in h.ctx.cache.children[KEY]

    run(scenario())


def test_a_good_canary_is_promoted_and_the_stable_deployment_takes_the_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A window whose canary answered as well as the stable pods promotes the
    target: the stable Deployment is rendered for it and the canary one goes."""
    pages: dict[str, ServingCounts] = {}

    async def read_all(pods: Iterable[PodView], model_name: str) -> dict[str, Any]:
        return {p.name: pages[p.name] for p in pods}

    from tfserving_operator import scrape

    monkeypatch.setattr(scrape, "read_all", read_all)

    async def scenario() -> None:
        h = Harness()
        worker = await serving_steadily(h)
        worker.body = {**canary_body(3), "status": h.applier.status}
        stable = pod("a", 2, serving=True)
        h.pods(stable)
        await h.next_pass()
        await h.settle_children()
        before = h.applier.objects[("Deployment", "mnist")]
        ready = pod("c", 3, config_hash=canary_hash(3), canary=True, serving=True)
        h.pods(stable, ready)
        h.prober.answers["c"] = answer("c", 3, ModelState.AVAILABLE)
        pages.update(c=reading("c", 100, 0), a=reading("a", 200, 0))
        await h.next_pass()
        assert h.applier.status["canary"]["baseline"]["stable"]["requests"] == 200
        h.applier.status["canary"]["windowStartTime"] = LONG_AGO
        pages.update(c=reading("c", 160, 0), a=reading("a", 260, 0))
        await h.next_pass()
        assert not h.applier.status.get("refused")
        assert h.applier.status["canary"]["phase"] == "Promoted"
        after = h.applier.objects[("Deployment", "mnist")]
        assert contains(after, before) is False  # re-rendered for version 3
        assert after["spec"]["template"]["metadata"]["annotations"][api.ANNOTATION_VERSIONS] == "3"
        assert ("Normal", "CanaryAnalysed") in [(t, r) for t, r, _ in h.applier.events]
        # The canary keeps serving while the stable Deployment rolls to the target.
        assert ("Deployment", "mnist-canary") in h.applier.objects
        assert h.applier.deleted == []

    run(scenario())


# ----- what the operator is configured with reaches the children ------------------------


def test_the_configured_images_carried_labels_and_operator_namespace_reach_the_children() -> None:
    """TFSO_DEFAULT_IMAGE, TFSO_DEFAULT_GPU_IMAGE, TFSO_PULLER_IMAGE, the labels of
    TFSO_LABEL_SELECTOR and the operator's own namespace are what a pass renders with."""
    settings = Settings(
        default_image="registry.local/serving:cpu",
        default_gpu_image="registry.local/serving:gpu",
        puller_image="registry.local/puller:1",
        label_selector={"team": "vision"},
        operator_namespace="ops",
    )

    def applied(h: Harness, kind: str) -> dict[str, Any]:
        (manifest,) = [m for m in h.applier.applied if m["kind"] == kind]
        return manifest

    async def scenario() -> None:
        h = Harness(settings)
        sm_body = body(version=3)
        sm_body["metadata"]["labels"] = {"team": "vision"}
        sm_body["spec"]["storage"] = {"uri": "s3://models/mnist"}
        sm_body["spec"]["networkPolicy"] = {"clientSelector": {"matchLabels": {"app": "web"}}}
        worker = await h.start(sm_body)
        await worker.reconcile()
        deployment = applied(h, "Deployment")
        template = deployment["spec"]["template"]["spec"]
        assert [c["image"] for c in template["containers"]] == ["registry.local/serving:cpu"]
        assert {c["image"] for c in template["initContainers"]} == {"registry.local/puller:1"}
        assert deployment["metadata"]["labels"]["team"] == "vision"
        operator_rule = applied(h, "NetworkPolicy")["spec"]["ingress"][1]
        namespace = operator_rule["from"][0]["namespaceSelector"]["matchLabels"]
        assert namespace == {render.NAMESPACE_NAME_LABEL: "ops"}

        gpu = Harness(settings)
        gpu_body = body(version=3)
        gpu_body["spec"]["gpus"] = 1
        worker = await gpu.start(gpu_body)
        await worker.reconcile()
        template = applied(gpu, "Deployment")["spec"]["template"]["spec"]
        assert [c["image"] for c in template["containers"]] == ["registry.local/serving:gpu"]

    run(scenario())


def test_while_autoscaling_the_status_expects_the_autoscalers_replica_count() -> None:
    """The HPA set 3 replicas: one Ready pod is 1/3, not a ServedModel at its count."""

    async def scenario() -> None:
        h = Harness()
        sm_body = body(version=2)
        sm_body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 5}
        worker = await h.start(sm_body)
        h.pods(pod("a", 2, serving=True))
        h.prober.answers["a"] = answer("a", 2, ModelState.AVAILABLE)
        h.ctx.cache.deployments[KEY] = builders.deployment(config_hash(2), replicas=3)
        await worker.reconcile()
        assert h.applier.status["replicasSummary"] == "1/3"

    run(scenario())


def test_a_deployment_that_cannot_create_pods_shows_in_the_status() -> None:
    refused = 'FailedCreate: pods "mnist-x" is forbidden: exceeded quota: compute'

    async def scenario() -> None:
        h = Harness()
        await reconciled_at_generation_2(h)
        h.ctx.cache.deployments[KEY] = builders.deployment(config_hash(3), replica_failure=refused)
        await h.next_pass()
        degraded = {c["type"]: c for c in h.applier.status["conditions"]}["Degraded"]
        assert (degraded["status"], degraded["reason"]) == ("True", "PodsNotCreated")
        assert degraded["message"].endswith(refused)

    run(scenario())


# ----- dry runs after a restart or a failed pass -----------------------------------------


def test_a_restarted_operator_dry_runs_a_first_generation_it_had_refused() -> None:
    """Generation 1 was refused on its first apply (undone, InvalidSpec). A fresh
    worker dry-runs it again instead of applying children the API server refuses."""

    async def scenario() -> None:
        h = Harness()
        first = body(version=3)
        first["metadata"]["generation"] = 1
        worker = await h.start(first)
        h.applier.refusals["Service"] = ApiError(
            422, {"reason": "Invalid", "message": "spec.ports: bad value"}
        )
        await worker.reconcile()
        assert h.applier.objects == {}
        h.applier.applied.clear()
        h.applier.deleted.clear()
        await h.start(worker.body or {})
        assert await h.next_pass() == MAX_IDLE_SECONDS
        assert h.applier.dry_runs > 0
        assert h.applier.applied == [] and h.applier.objects == {}
        assert_invalid_spec(h, "Service mnist-grpc: spec.ports: bad value", 1)

    run(scenario())


def test_a_pass_retried_after_its_status_write_failed_does_not_dry_run_again() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await reconciled_at_generation_2(h)
        at_generation(worker, 3, version=4)
        patch_status = h.applier.patch_status
        failures = [ApiError(500, {"message": "etcdserver: request timed out"})]

        async def flaky(namespace: str, name: str, status_patch: dict[str, Any]) -> Any:
            if failures:
                raise failures.pop()
            return await patch_status(namespace, name, status_patch)

        h.applier.patch_status = flaky  # type: ignore[method-assign]
        with pytest.raises(ApiError):
            await h.next_pass()
        assert h.applier.dry_runs == 2  # the new ConfigMap and the Deployment
        await h.next_pass()
        assert h.applier.dry_runs == 2, "validated once per generation"
        assert h.applier.status["observedGeneration"] == 3

    run(scenario())


# ----- config generations ------------------------------------------------------------------


def test_a_finished_rollout_keeps_the_config_of_a_pod_still_terminating() -> None:
    """An old pod in its grace period still mounts its ConfigMap: it goes once the pod is gone."""

    async def scenario() -> None:
        h = Harness()
        worker = await serving_steadily(h)
        old = ("ConfigMap", f"mnist-config-{config_hash(2)}")
        assert old in h.ctx.cache.children[KEY]
        at_generation(worker, 3, version=3)
        await h.next_pass()
        await h.settle_children()
        h.ctx.cache.deployments[KEY] = settled_deployment(3)
        h.pods(pod("a", 2, serving=True, terminating=True), pod("b", 3, serving=True))
        h.prober.answers["b"] = answer("b", 3, ModelState.AVAILABLE)
        await h.next_pass()
        assert h.applier.status["servingVersions"] == "3"
        assert "rollout" not in h.applier.status, "the rollout is over"
        assert old not in h.applier.deleted
        h.pods(pod("b", 3, serving=True))
        await h.next_pass()
        assert h.applier.deleted == [old]

    run(scenario())


def test_forgetting_a_servedmodel_drops_its_cache_even_without_a_worker() -> None:
    """A ServedModel deleted before (or while paused, after) this replica ran a worker for it."""

    async def scenario() -> None:
        h = Harness()
        other = ("ml", "other")
        h.pods(pod("a", 3))
        h.ctx.cache.pods[other] = {"x": pod("x", 3)}
        await h.ctx.forget(KEY)
        assert KEY not in h.ctx.cache.pods
        assert list(h.ctx.cache.pods) == [other]

    run(scenario())


# ----- a gate written to a pod that is gone --------------------------------------------


# ----- the worker loop: failures, metrics, a paused replica ----------------------------


def test_passes_are_counted_and_timed_by_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    metrics = h.ctx.metrics = Metrics()
    run_worker(monkeypatch, h, [RuntimeError("boom"), 5.0, 5.0])
    passes = "tfserving_operator_reconcile_passes_total"
    assert sample(metrics, passes, outcome="success") == 2
    assert sample(metrics, passes, outcome="error") == 1
    duration = "tfserving_operator_reconcile_duration_seconds"
    for outcome in ("success", "error"):
        # Scripted passes take no time: the figure is the pass's, not a clock reading.
        assert 0 <= sample(metrics, f"{duration}_sum", outcome=outcome) < 1.0


def test_a_failed_pass_is_logged_shortened_with_a_traceback_only_for_our_own_errors(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    script: list[float | Exception] = [
        RuntimeError("a" * 299),
        RuntimeError("b" * 300),
        RuntimeError("c" * 400),
        ApiError(500, {"message": "etcdserver: request timed out"}),
    ]
    with caplog.at_level(logging.WARNING, logger="tfserving_operator.reconcile"):
        run_worker(monkeypatch, Harness(), script)
    records = [r for r in caplog.records if "pass failed" in r.getMessage()]
    assert [r.getMessage() for r in records[:3]] == [
        f"ml/mnist: pass failed ({'a' * 299}), retrying in 1.0 s",
        f"ml/mnist: pass failed ({'b' * 300}...), retrying in 2.0 s",
        f"ml/mnist: pass failed ({'c' * 300}...), retrying in 4.0 s",
    ]
    assert str(script[3]) in records[3].getMessage()
    # A bug of ours needs its traceback; an API server's refusal says it all.
    assert [bool(r.exc_info) for r in records] == [True, True, True, False]


def test_a_paused_replicas_worker_runs_no_pass(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness()
    h.ctx.pause_source = lambda: True
    with caplog.at_level(logging.DEBUG, logger="tfserving_operator.reconcile"):
        waits = run_worker(monkeypatch, h, [5.0])  # a pass that must not run
    assert waits == [0.0, MAX_IDLE_SECONDS]
    assert "ml/mnist: no pass (paused)" in caplog.messages
