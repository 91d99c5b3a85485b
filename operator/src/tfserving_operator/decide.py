"""Decide: given what was observed, what should be true next, and why (pure).

Every function here takes plain values (the ServedModel, the pods, the
model servers' answers, the clock) and returns plain values (which versions
to serve, which gates to open, the status, the Events), each with a reason
and message fit for a status condition. Nothing here does I/O; the tests
call these directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from tfserving_operator import api, autoscaling, puller
from tfserving_operator.api import Condition, GateReason, Reason
from tfserving_operator.spec import ServedModel, VersionSet
from tfserving_operator.views import DeploymentView, ModelState, PodView, ProbeResult

# ----------------------------------------------------------------------------
# Memory: what earlier reconciles recorded in the status (survives restarts).


@dataclass(frozen=True)
class Refusal:
    """A target version set the operator refused, and why."""

    versions: tuple[int, ...]
    labels: tuple[tuple[str, int], ...]
    reason: str
    message: str
    time: str
    retry_token: str = ""

    def matches(self, target: VersionSet, retry_token: str) -> bool:
        """Still in force: the spec asks for the same set and nobody asked to retry."""
        return (
            target.explicit
            and self.versions == target.versions
            and self.labels == target.labels
            and self.retry_token == retry_token
        )

    def to_status(self) -> dict[str, Any]:
        return {
            "versions": list(self.versions),
            "labels": dict(self.labels),
            "reason": self.reason,
            "message": self.message,
            "time": self.time,
            "retryToken": self.retry_token,
        }


@dataclass(frozen=True)
class Memory:
    """The parts of the status that carry decisions from one reconcile to the next."""

    last_good: VersionSet | None = None
    refused: Refusal | None = None
    rollout_hash: str = ""
    rollout_start: str = ""
    conditions: tuple[Mapping[str, Any], ...] = ()


def memory_from_status(status: Mapping[str, Any] | None) -> Memory:
    """Read back what earlier reconciles recorded."""
    status = status or {}
    last_good = None
    if status.get("lastGood"):
        lg = status["lastGood"]
        last_good = VersionSet.specific(lg.get("versions") or [], lg.get("labels") or {})
    refused = None
    if status.get("refused"):
        rf = status["refused"]
        refused = Refusal(
            versions=tuple(int(v) for v in rf.get("versions") or ()),
            labels=tuple(sorted((str(k), int(v)) for k, v in (rf.get("labels") or {}).items())),
            reason=rf.get("reason", ""),
            message=rf.get("message", ""),
            time=rf.get("time", ""),
            retry_token=rf.get("retryToken", ""),
        )
    rollout = status.get("rollout") or {}
    return Memory(
        last_good=last_good,
        refused=refused,
        rollout_hash=rollout.get("configHash", ""),
        rollout_start=rollout.get("startTime", ""),
        conditions=tuple(status.get("conditions") or ()),
    )


def choose_serving_set(sm: ServedModel, memory: Memory) -> tuple[VersionSet, Refusal | None]:
    """The version set to render, and the refusal still in force (if any).

    The spec's target, unless that exact target was refused: then the last
    good set keeps serving (or, with nothing good yet, the target stays
    deployed but reported).
    """
    refused = memory.refused
    if refused is not None and refused.matches(sm.target, sm.retry_token):
        return (memory.last_good or sm.target), refused
    return sm.target, None


# ----------------------------------------------------------------------------
# The availability gate, per pod.


@dataclass(frozen=True)
class GateDecision:
    """Open or close one pod's readiness gate."""

    pod: str
    open: bool
    reason: str
    message: str
    # Kept open through a probe failure below the threshold: the gate is not
    # written, but the status shows the failing probe's reason.
    held: bool = False


def required_versions(annotation: str) -> tuple[int, ...] | None:
    """Versions a pod must report AVAILABLE; None for a policy (latest/all)."""
    parts = [p for p in annotation.split(",") if p.strip()]
    if parts and all(p.strip().isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return None


_PROBE_ERROR_GATE = {
    "ServerUnreachable": GateReason.UNREACHABLE,
    "ProbeTimeout": GateReason.TIMEOUT,
    "ModelNotFound": GateReason.NOT_FOUND,
}

# Probe failures that say nothing about the model: the real server serves
# GetModelStatus from the same bounded gRPC pool as Predict
# (--grpc_max_threads; tensorflow_serving/model_servers/server.cc at 2.19.1),
# so under load a status call can time out while every version is AVAILABLE.
# NOT_FOUND and an answer naming a state are definite.
UNCERTAIN_GATE_REASONS = frozenset(
    {GateReason.TIMEOUT, GateReason.UNREACHABLE, GateReason.PROBE_FAILED}
)


def uncertain(probe: ProbeResult) -> bool:
    """A timeout or transport error: counts toward the failure threshold."""
    return (
        not probe.ok
        and _PROBE_ERROR_GATE.get(probe.error_reason, GateReason.PROBE_FAILED)
        in UNCERTAIN_GATE_REASONS
    )


def gate_for(
    pod: PodView, probe: ProbeResult, failures: int = 0, failure_threshold: int = 1
) -> GateDecision:
    """Whether the pod's server serves everything its pod was started for.

    An open gate closes at once on a definite answer (a version not
    AVAILABLE, failed, or NOT_FOUND), but on an uncertain one (timeout,
    transport error) only once `failures` (consecutive, this answer
    included) reaches `failure_threshold`, like a readiness probe's
    failureThreshold; one slow answer under load does not pull the pod out of
    its Service and push its traffic onto the others. A closed gate opens on
    the first good answer.
    """
    if not probe.ok:
        reason = _PROBE_ERROR_GATE.get(probe.error_reason, GateReason.PROBE_FAILED)
        message = probe.error_message or probe.error_reason
        if (
            reason in UNCERTAIN_GATE_REASONS
            and pod.gate is True
            and failure_threshold > 1
            and failures < failure_threshold
        ):
            held = (
                f"{message} ({failures} of {failure_threshold} failures in a row: gate kept open)"
            )
            return GateDecision(pod.name, True, reason, held, held=True)
        return GateDecision(pod.name, False, reason, message)
    required = required_versions(pod.versions)
    if required is None:
        available = probe.available_versions
        if available:
            listed = ",".join(map(str, available))
            return GateDecision(pod.name, True, GateReason.AVAILABLE, f"AVAILABLE: {listed}")
        failed = [s for s in probe.statuses if s.failed]
        if failed and len(failed) == len(probe.statuses):
            return GateDecision(pod.name, False, GateReason.FAILED, _failure_text(failed[0]))
        return GateDecision(pod.name, False, GateReason.LOADING, "no version AVAILABLE yet")
    for version in required:
        status = probe.state_of(version)
        if status is None:
            return GateDecision(
                pod.name,
                False,
                GateReason.LOADING,
                f"version {version} not yet known to the server",
            )
        if status.failed:
            return GateDecision(pod.name, False, GateReason.FAILED, _failure_text(status))
        if status.state != ModelState.AVAILABLE:
            return GateDecision(
                pod.name, False, GateReason.LOADING, f"version {version} is {status.state.name}"
            )
    listed = ",".join(map(str, required))
    return GateDecision(pod.name, True, GateReason.AVAILABLE, f"AVAILABLE: {listed}")


def _failure_text(status: Any) -> str:
    return f"version {status.version}: {status.error_message or status.error_code_name}"


def gate_decisions(
    pods: Iterable[PodView],
    probes: Mapping[str, ProbeResult],
    failures: Mapping[str, int] | None = None,
    failure_threshold: int = 1,
) -> list[GateDecision]:
    """The gate of every probed pod that is not on its way out."""
    failures = failures or {}
    return [
        gate_for(pod, probes[pod.name], failures.get(pod.name, 0), failure_threshold)
        for pod in pods
        if pod.name in probes and not pod.terminating
    ]


def gate_changes(
    pods: Iterable[PodView],
    probes: Mapping[str, ProbeResult],
    failures: Mapping[str, int] | None = None,
    failure_threshold: int = 1,
) -> list[GateDecision]:
    """Gate writes needed: only where the decision differs from the pod's condition."""
    pods = list(pods)
    by_name = {p.name: p for p in pods}
    return [
        d
        for d in gate_decisions(pods, probes, failures, failure_threshold)
        if gate_differs(by_name[d.pod], d)
    ]


def gate_differs(pod: PodView, decision: GateDecision) -> bool:
    """The decision must be written: it opens or closes the gate, or changes why it is closed."""
    return decision.open != pod.gate or (not decision.open and decision.reason != pod.gate_reason)


def with_gates(pods: Iterable[PodView], decisions: Iterable[GateDecision]) -> list[PodView]:
    """The pods as they are once the gate changes are written.

    Ready follows the gate (the kubelet's rule) once the node reports it; a
    gate held open through a failing probe keeps Ready but shows the probe's
    reason, so status.pods tells that its server stopped answering.
    """
    by_name = {d.pod: d for d in decisions}
    updated = []
    for pod in pods:
        decision = by_name.get(pod.name)
        if decision is not None and gate_differs(pod, decision):
            pod = replace(
                pod,
                gate=decision.open,
                gate_reason=decision.reason,
                ready=pod.ready and decision.open,
            )
        elif decision is not None and decision.held:
            pod = replace(pod, gate_reason=decision.reason)
        updated.append(pod)
    return updated


# ----------------------------------------------------------------------------
# Rollout: done, failed, or still going.


@dataclass(frozen=True)
class Failure:
    """Why the version set being rolled out is refused."""

    reason: str
    message: str


def current_pods(pods: Iterable[PodView], config_hash: str) -> list[PodView]:
    """Pods started from the config being rolled out, not on their way out."""
    return [p for p in pods if p.config_hash == config_hash and not p.terminating]


def detect_failure(
    sm: ServedModel,
    config_hash: str,
    pods: Sequence[PodView],
    probes: Mapping[str, ProbeResult],
    rollout_start: datetime | None,
    now: datetime,
) -> Failure | None:
    """A rollout fails when a new server reports a load error, exits, or takes too long."""
    current = current_pods(pods, config_hash)
    for pod in current:
        if pod.pull_failure and pod.gate is not True:
            # The store refused the copy (missing version, bad credentials,
            # no such bucket): the server never started; quote the puller.
            return Failure(Reason.MODEL_PULL_FAILED, _pull_failure_message(pod))
    for pod in current:
        probe = probes.get(pod.name)
        if probe is not None and probe.ok:
            decision = gate_for(pod, probe)
            if decision.reason == GateReason.FAILED:
                return Failure(
                    Reason.VERSION_LOAD_FAILED,
                    f"model server on pod {pod.name}: {decision.message}",
                )
    for pod in current:
        exited = _exited_while_loading(pod)
        if exited is not None:
            return exited
    if rollout_start is not None:
        elapsed = (now - rollout_start).total_seconds()
        if elapsed > sm.availability_timeout_seconds:
            states = "; ".join(_waiting_state(p) for p in current) or "no new pod running"
            return Failure(
                Reason.VERSION_LOAD_TIMEOUT,
                f"versions {_describe_target(pods, config_hash)} not AVAILABLE on every new "
                f"replica within {sm.availability_timeout_seconds} s ({states})",
            )
    return None


# SIGKILL's exit code: the kubelet killed the container (its startup or liveness
# probe failed) rather than the server giving up by itself.
KILLED_EXIT_CODE = 137


def _exited_while_loading(pod: PodView) -> Failure | None:
    """The server of a pod that never passed its gate ended while loading.

    The real server exits -1 when its first version ends in END (main.cc), and
    its last log lines become the termination message (FallbackToLogsOnError):
    a load failure in its own words. Out of memory is one too. A container the
    kubelet killed after its startup probe gave up is not: that is a server
    still loading when its time ran out, which the availability timeout reports.
    """
    if pod.restart_count == 0 or pod.gate is True or not pod.termination_message:
        return None
    if pod.exit_reason == "OOMKilled":
        return Failure(
            Reason.VERSION_LOAD_FAILED,
            f"model server on pod {pod.name} ran out of memory while loading "
            f"(OOMKilled): {last_lines(pod.termination_message, 500)}",
        )
    if pod.exit_code == KILLED_EXIT_CODE:
        return None
    return Failure(
        Reason.VERSION_LOAD_FAILED,
        f"model server on pod {pod.name} exited while loading: "
        f"{last_lines(pod.termination_message, 600)}",
    )


def _pull_failure_message(pod: PodView) -> str:
    """The puller's own last log lines; S3 answers a missing version folder
    with an empty listing, not an error, so its exit code is spelled out."""
    why = ""
    if pod.pull_exit_code == puller.NO_FILES_EXIT_CODE:
        why = " (nothing to copy: the version folder is missing or empty in the store)"
    return (
        f"model puller {pod.pull_container} on pod {pod.name} failed{why}: "
        f"{last_lines(pod.pull_failure, 600)}"
    )


def last_lines(text: str, limit: int) -> str:
    """The last whole lines of a log that fit in `limit` characters (the last
    line alone, cut from its start, when it is longer): the real server's
    final line, "Failed to start server. Error: ...", holds the load error."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if kept and size + len(line) + 1 > limit:
            break
        kept.insert(0, line)
        size += len(line) + 1
    joined = "\n".join(kept)
    return joined if len(joined) <= limit else "..." + joined[-(limit - 3) :]


def _waiting_state(pod: PodView) -> str:
    """How a new pod stands when time ran out; a server the kubelet killed while
    it waited (a missing version folder: "No versions of servable ... found")
    says why in its last log lines."""
    state = f"{pod.name}: {pod.gate_reason or 'not probed'}"
    if pod.restart_count and pod.termination_message:
        last_log = last_lines(pod.termination_message, 300)
        state += f", restarted {pod.restart_count}x, last log: {last_log}"
    return state


def _describe_target(pods: Sequence[PodView], config_hash: str) -> str:
    return next((p.versions for p in pods if p.config_hash == config_hash), "?")


def serving_pods(pods: Iterable[PodView]) -> list[PodView]:
    """Pods taking traffic: Ready (which includes the open gate) and not terminating."""
    return [p for p in pods if p.ready and p.gate is True and not p.terminating]


def rollout_complete(
    sm: ServedModel,
    config_hash: str,
    deployment: DeploymentView | None,
    pods: Sequence[PodView],
) -> bool:
    """Every replica runs the current config, passed the gate, and old pods are gone."""
    if deployment is None or deployment.config_hash != config_hash:
        return False
    # At zero replicas with no pod left there is nothing to roll out: no need
    # to wait for the Deployment controller (a status patch and an Event less
    # per new ServedModel). Scaling down to zero still waits: the stale status
    # counts the pods, and so does the pod cache.
    idle = sm.replicas == 0 == deployment.replicas == deployment.current_replicas and not pods
    if not deployment.settled and not idle:
        return False
    # Every pod must come from the newest ReplicaSet: a pod-template change
    # that keeps the config (an image, a resource) is a rollout too, and its
    # old pods carry the same config hash.
    if (
        deployment.updated_replicas < sm.replicas
        or deployment.current_replicas > deployment.updated_replicas
    ):
        return False
    live = [p for p in pods if not p.terminating]
    if any(p.config_hash != config_hash for p in live):
        return False
    ready = [p for p in serving_pods(live) if p.config_hash == config_hash]
    return len(ready) >= sm.replicas


# ----------------------------------------------------------------------------
# The rollout plan: carry on, finish, or refuse the target and fall back.


@dataclass(frozen=True)
class Outcome:
    """Everything one reconcile concluded, for the children, the status and the Events."""

    serve: VersionSet
    config_hash: str
    refused: Refusal | None
    failure: Failure | None  # a failure with nothing to fall back to
    complete: bool
    last_good: VersionSet | None
    rollout_start: str
    # The target was refused in this pass: `serve` (the last good set) must be
    # rendered and applied in place of the target applied before the probes.
    rerender: bool = False
    # status.canary while a canary runs (canary.to_status), else None.
    canary: Mapping[str, Any] | None = None


def plan_rollout(
    sm: ServedModel,
    memory: Memory,
    config_hash_of: Callable[[VersionSet], str],
    deployment: DeploymentView | None,
    pods: Sequence[PodView],
    probes: Mapping[str, ProbeResult],
    now: datetime,
) -> Outcome:
    """What this pass concludes about the rollout, refusal included.

    The set to serve is the spec's target unless a refusal is in force
    (`choose_serving_set`). A rollout of an explicit target that fails
    (`detect_failure`) is refused when there is a different last good set to
    go back to: the outcome then serves that set and asks for a re-render.
    Without one, the failure is reported and the target stays deployed (a
    policy target, latest or all, is never refused: what it loads is not known
    up front). `config_hash_of` names the config of a version set (render's
    hash): the rollout clock restarts whenever the config changes.
    """
    serve, refused = choose_serving_set(sm, memory)
    config_hash = config_hash_of(serve)
    rollout_start = (
        memory.rollout_start
        if memory.rollout_hash == config_hash and memory.rollout_start
        else format_time(now)
    )
    complete = rollout_complete(sm, config_hash, deployment, pods)
    failure = None
    if not complete:
        failure = detect_failure(sm, config_hash, pods, probes, parse_time(rollout_start), now)
    last_good = serve if complete and serve.explicit else memory.last_good
    if (
        failure is not None
        and refused is None
        and serve.explicit
        and last_good is not None
        and last_good != serve
    ):
        refused = Refusal(
            versions=serve.versions,
            labels=serve.labels,
            reason=failure.reason,
            message=failure.message,
            time=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            retry_token=sm.retry_token,
        )
        fallback_hash = config_hash_of(last_good)
        return Outcome(
            serve=last_good,
            config_hash=fallback_hash,
            refused=refused,
            failure=None,
            complete=rollout_complete(sm, fallback_hash, deployment, pods),
            last_good=last_good,
            rollout_start=format_time(now),
            rerender=True,
        )
    return Outcome(
        serve=serve,
        config_hash=config_hash,
        refused=refused,
        failure=failure,
        complete=complete,
        last_good=last_good,
        rollout_start=rollout_start,
    )


# ----------------------------------------------------------------------------
# Status.


def condition(
    ctype: str,
    is_true: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Iterable[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """A metav1.Condition; lastTransitionTime moves only when the status flips."""
    status = "True" if is_true else "False"
    old = next((c for c in previous if c.get("type") == ctype), None)
    transition = old["lastTransitionTime"] if old and old.get("status") == status else now
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }


def already_validated(status: Mapping[str, Any], generation: int) -> bool:
    """The status already describes this generation without InvalidSpec: a restarted
    operator need not dry-run every child again (thousands of requests at start-up)."""
    if status.get("observedGeneration") != generation:
        return False
    degraded: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or () if c.get("type") == Condition.DEGRADED), {}
    )
    return bool(status.get("conditions")) and degraded.get("reason") != Reason.INVALID_SPEC


@dataclass(frozen=True)
class Check:
    """One condition's verdict: whether it holds, and why (reason, message)."""

    status: bool
    reason: str
    message: str

    def condition(
        self, ctype: str, generation: int, previous: Iterable[Mapping[str, Any]], now: str
    ) -> dict[str, Any]:
        """This verdict as a metav1.Condition of type `ctype`."""
        return condition(ctype, self.status, self.reason, self.message, generation, previous, now)


AS_EXPECTED = Check(False, Reason.AS_EXPECTED, "")


def invalid_status(
    old: Mapping[str, Any], generation: int, message: str, now: str
) -> dict[str, Any]:
    """The status for a spec the API server refuses to accept rendered: nothing applied."""
    previous = old.get("conditions") or []
    failed = Check(False, Reason.INVALID_SPEC, message)
    degraded = Check(True, Reason.INVALID_SPEC, message)
    return {
        **old,
        "observedGeneration": generation,
        "conditions": [
            failed.condition(Condition.READY, generation, previous, now),
            failed.condition(Condition.PROGRESSING, generation, previous, now),
            degraded.condition(Condition.DEGRADED, generation, previous, now),
            *kstatus_conditions(failed, True, degraded, generation, previous, now),
        ],
    }


def kstatus_conditions(
    ready: Check,
    stalled: bool,
    degraded: Check,
    gen: int,
    previous: Sequence[Mapping[str, Any]],
    now: str,
) -> list[dict[str, Any]]:
    """Reconciling (work left to do) and Stalled (no progress without a spec change).

    A refused target or a failure with nothing to fall back to is Stalled;
    anything else short of Ready is Reconciling (an unschedulable replica may
    still fit once the cluster scales up).
    """
    if stalled:
        reconciling = Check(False, degraded.reason, "waiting for a spec change")
        stalled_check = Check(True, degraded.reason, degraded.message)
    else:
        reconciling = Check(not ready.status, ready.reason, "" if ready.status else ready.message)
        stalled_check = AS_EXPECTED
    return [
        reconciling.condition(Condition.RECONCILING, gen, previous, now),
        stalled_check.condition(Condition.STALLED, gen, previous, now),
    ]


def serving_versions(pods: Sequence[PodView], probes: Mapping[str, ProbeResult]) -> str:
    """Versions served to traffic: what the serving pods were started for (explicit
    sets), or what their servers report AVAILABLE (policies)."""
    versions: set[int] = set()
    for pod in serving_pods(pods):
        required = required_versions(pod.versions)
        if required is not None:
            versions.update(required)
        elif pod.name in probes:
            versions.update(probes[pod.name].available_versions)
    return ",".join(str(v) for v in sorted(versions))


def _pods_status(
    pods: Sequence[PodView], probes: Mapping[str, ProbeResult], limit: int = 20
) -> list[dict[str, Any]]:
    out = []
    for pod in sorted(pods, key=lambda p: p.name)[:limit]:
        entry: dict[str, Any] = {
            "name": pod.name,
            "ready": pod.ready and pod.gate is True,
            "gate": pod.gate_reason or "Pending",
        }
        probe = probes.get(pod.name)
        if probe is not None and probe.ok:
            entry["versions"] = [
                {
                    "version": s.version,
                    "state": s.state.name,
                    **({"errorMessage": s.error_message[:512]} if s.error_message else {}),
                }
                for s in probe.statuses
            ]
        out.append(entry)
    return out


Verdict = TypeVar("Verdict", Check, "Rollout")

# The conditions, as chains of named checks (cert-manager's policy chain): each
# check looks at one situation and returns its verdict, or None when the
# situation does not apply; the first verdict wins.


@dataclass(frozen=True)
class Observed:
    """What the condition checks read: the spec, the outcome, and the live replicas."""

    sm: ServedModel
    outcome: Outcome
    live: Sequence[PodView]  # not terminating
    ready: int  # replicas taking traffic
    serving: str  # servingVersions
    updated: int  # replicas of the new config taking traffic
    probes: Mapping[str, ProbeResult] = field(default_factory=dict)
    replica_failure: str = ""  # DeploymentView.replica_failure


@dataclass(frozen=True)
class Rollout:
    """The verdicts of Progressing and Ready, which one situation decides together."""

    progressing: Check
    ready: Check


def observed_for(
    sm: ServedModel,
    outcome: Outcome,
    pods: Sequence[PodView],
    probes: Mapping[str, ProbeResult],
    deployment: DeploymentView | None = None,
) -> Observed:
    """Gather what the checks read, once."""
    live = [p for p in pods if not p.terminating]
    serving = serving_pods(live)
    return Observed(
        sm=sm,
        outcome=outcome,
        live=live,
        ready=len(serving),
        serving=serving_versions(live, probes),
        updated=len([p for p in serving if p.config_hash == outcome.config_hash]),
        probes=probes,
        replica_failure=deployment.replica_failure if deployment is not None else "",
    )


# ----- Degraded


def pods_not_created(o: Observed) -> Check | None:
    """The ReplicaSet cannot create pods (Pod Security, a quota, an admission
    webhook): the cause behind any timeout or refusal that follows, in the API
    server's words."""
    if not o.replica_failure:
        return None
    message = f"the Deployment's ReplicaSet cannot create pods: {o.replica_failure}"
    return Check(True, Reason.PODS_NOT_CREATED, message)


def target_refused(o: Observed) -> Check | None:
    """The target was refused: what serves instead, and the server's words."""
    refused = o.outcome.refused
    if refused is None:
        return None
    fallback = o.outcome.serve.describe() if o.outcome.last_good else "nothing"
    message = f"target {o.sm.target.describe()} refused, serving {fallback}: {refused.message}"
    return Check(True, refused.reason, message)


def rollout_failed(o: Observed) -> Check | None:
    """The rollout failed with nothing to fall back to."""
    failure = o.outcome.failure
    return None if failure is None else Check(True, failure.reason, failure.message)


def replica_unschedulable(o: Observed) -> Check | None:
    """The scheduler cannot place a replica (its own message)."""
    pod = next((p for p in o.live if p.unschedulable), None)
    if pod is None:
        return None
    message = f"pod {pod.name} cannot be scheduled: {pod.unschedulable}"
    return Check(True, Reason.UNSCHEDULABLE, message)


def version_load_failed(o: Observed) -> Check | None:
    """Under a latest/all policy a server serves what it loaded and its gate opens
    on that, so a newer version that failed to load is said only here."""
    for pod in sorted(o.live, key=lambda p: p.name):
        probe = o.probes.get(pod.name)
        if required_versions(pod.versions) is not None or probe is None or not probe.ok:
            continue
        failed = [s for s in probe.statuses if s.failed]
        if failed:
            newest = max(failed, key=lambda s: s.version)
            message = (
                f"model server on pod {pod.name}: {_failure_text(newest)} "
                f"(serving {o.serving or 'nothing'})"
            )
            return Check(True, Reason.VERSION_LOAD_FAILED, message)
    return None


def nothing_degraded(o: Observed) -> Check:
    """None of the above."""
    return AS_EXPECTED


DEGRADED_CHECKS: tuple[Callable[[Observed], Check | None], ...] = (
    pods_not_created,
    target_refused,
    rollout_failed,
    replica_unschedulable,
    version_load_failed,
    nothing_degraded,
)


# ----- Progressing and Ready


def scaled_to_zero(o: Observed) -> Rollout | None:
    """replicas: 0 is a finished state with nothing to serve."""
    if o.sm.replicas != 0:
        return None
    return Rollout(
        progressing=Check(False, Reason.SCALED_TO_ZERO, "replicas is 0"),
        ready=Check(True, Reason.SCALED_TO_ZERO, "replicas is 0: nothing to serve"),
    )


def canary_running(o: Observed) -> Rollout | None:
    """A canary runs beside the stable version: in progress, not yet the target."""
    status = o.outcome.canary
    if not status or o.outcome.refused is not None:
        return None
    promoted = status.get("phase") == "Promoted"
    reason = Reason.CANARY_PROMOTED if promoted else Reason.CANARY_ANALYSIS
    from_canary = _canary_line(status)
    return Rollout(
        progressing=Check(True, reason, from_canary),
        ready=Check(
            False, reason, f"{o.ready}/{o.sm.replicas} stable replicas ready; {from_canary}"
        ),
    )


def _canary_line(status: Mapping[str, Any]) -> str:
    versions = ",".join(str(v) for v in status.get("versions") or [])
    text = (
        f"canary {versions}: step {status.get('step')}/{status.get('steps')} "
        f"{status.get('phase')}, {status.get('share')}"
    )
    last = status.get("lastAnalysis") or {}
    if last:
        verdict = f"{last.get('verdict')}: {last.get('message')}"
        text += f"; last analysis (step {last.get('step')}): {verdict}"
    return text


def rollout_done(o: Observed) -> Rollout | None:
    """The target rolled out; Ready while every replica still serves."""
    if not o.outcome.complete or o.outcome.refused is not None:
        return None
    enough = o.ready >= o.sm.replicas
    return Rollout(
        progressing=Check(False, Reason.ROLLOUT_COMPLETE, f"serving {o.outcome.serve.describe()}"),
        ready=Check(
            enough,
            Reason.AVAILABLE if enough else Reason.WAITING_FOR_REPLICAS,
            f"{o.ready}/{o.sm.replicas} replicas serve {o.serving or 'nothing'}",
        ),
    )


def rolled_back(o: Observed) -> Rollout | None:
    """Back on the last good set after a refusal: done, but not what the spec asks."""
    refused = o.outcome.refused
    if not o.outcome.complete or refused is None:
        return None
    target = o.sm.target.describe()
    return Rollout(
        progressing=Check(
            False,
            Reason.ROLLED_BACK,
            f"back on {o.outcome.serve.describe()} after refusing {target}",
        ),
        ready=Check(
            False, refused.reason, f"target {target} refused, serving {o.serving or 'nothing'}"
        ),
    )


def rolling_out(o: Observed) -> Rollout:
    """Anything else: new replicas are on their way."""
    versions = o.outcome.serve.describe()
    return Rollout(
        progressing=Check(
            True,
            Reason.ROLLING_OUT,
            f"rolling out {versions}: {o.updated}/{o.sm.replicas} new "
            f"replicas AVAILABLE, serving {o.serving or 'nothing'}",
        ),
        ready=Check(
            False, Reason.ROLLING_OUT, f"{o.updated}/{o.sm.replicas} replicas serve {versions}"
        ),
    )


ROLLOUT_CHECKS: tuple[Callable[[Observed], Rollout | None], ...] = (
    scaled_to_zero,
    canary_running,
    rollout_done,
    rolled_back,
    rolling_out,
)


def first_verdict(checks: Iterable[Callable[[Observed], Verdict | None]], o: Observed) -> Verdict:
    """The verdict of the first check that applies (the last check always does)."""
    for check in checks:
        verdict = check(o)
        if verdict is not None:
            return verdict
    raise ValueError("no check applied: the chain must end with a catch-all")


def ready_check(rollout: Rollout, degraded: Check, o: Observed) -> Check:
    """Not Ready because of a degradation: Ready names it (a refusal says it itself)."""
    if degraded.status and o.outcome.refused is None and not rollout.ready.status:
        return Check(False, degraded.reason, degraded.message)
    return rollout.ready


def compute_status(
    sm: ServedModel,
    outcome: Outcome,
    deployment: DeploymentView | None,
    pods: Sequence[PodView],
    probes: Mapping[str, ProbeResult],
    previous_conditions: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """The whole status subresource for this reconcile."""
    o = observed_for(sm, outcome, pods, probes, deployment)
    gen = sm.generation
    degraded = first_verdict(DEGRADED_CHECKS, o)
    rollout = first_verdict(ROLLOUT_CHECKS, o)
    ready = ready_check(rollout, degraded, o)
    stalled = outcome.refused is not None or outcome.failure is not None
    previous = previous_conditions
    conditions = [
        ready.condition(Condition.READY, gen, previous, now),
        rollout.progressing.condition(Condition.PROGRESSING, gen, previous, now),
        degraded.condition(Condition.DEGRADED, gen, previous, now),
        *kstatus_conditions(ready, stalled, degraded, gen, previous, now),
    ]
    return {
        "observedGeneration": gen,
        "modelName": sm.model_name,
        "servingVersions": o.serving,
        "targetVersions": sm.target.describe(),
        "lastGood": outcome.last_good.to_status() if outcome.last_good else None,
        "refused": outcome.refused.to_status() if outcome.refused else None,
        "rollout": None
        if outcome.complete
        else {
            "versions": [*outcome.serve.versions],
            "configHash": outcome.config_hash,
            "startTime": outcome.rollout_start,
        },
        "replicas": len(o.live),
        "readyReplicas": o.ready,
        "updatedReplicas": len(current_pods(o.live, outcome.config_hash)),
        "replicasSummary": f"{o.ready}/{sm.replicas}",
        "selector": f"{api.LABEL_SERVEDMODEL}={sm.name}",
        "endpoints": _endpoints(sm),
        "pods": _pods_status(o.live, probes),
        "conditions": conditions,
        "autoscaling": autoscaling.status_of(sm),
        "canary": dict(outcome.canary) if outcome.canary else None,
    }


def _endpoints(sm: ServedModel) -> dict[str, str]:
    names = {
        "grpc": f"{sm.name}-grpc.{sm.namespace}.svc:{sm.grpc_port}",
        "headless": f"{sm.name}-headless.{sm.namespace}.svc",
    }
    if sm.rest_port:
        names["rest"] = (
            f"http://{sm.name}-rest.{sm.namespace}.svc:{sm.rest_port}/v1/models/{sm.model_name}"
        )
    return names


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch turning `old` into `new` (None when nothing changed).

    `condition` keeps lastTransitionTime while a condition's status holds, so
    an idle ServedModel computes the status it already has and causes no
    write at all.
    """
    return _merge_diff(old, new) or None


def _merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    # A merge patch merges nested objects key by key (RFC 7386): a key an
    # object loses (a version label dropped from lastGood) must be sent as
    # null, or it survives in the stored status and every pass writes again.
    # Lists are replaced whole. None in `new` means "absent".
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if value is None:
            if before is not None:
                patch[key] = None
        elif isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = _merge_diff(before, value)
            if nested:
                patch[key] = nested
        elif before != value:
            patch[key] = value
    for key, before in old.items():
        if key not in new and before is not None:
            patch[key] = None
    return patch


# ----------------------------------------------------------------------------
# Events.


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event to record."""

    type: str
    reason: str
    message: str


def events_for(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[EventSpec]:
    """Events for the transitions between two statuses."""
    events: list[EventSpec] = []
    old_rollout = (old.get("rollout") or {}).get("configHash")
    new_rollout = (new.get("rollout") or {}).get("configHash")
    if new_rollout and new_rollout != old_rollout:
        versions = ",".join(map(str, (new.get("rollout") or {}).get("versions") or [])) or (
            new.get("targetVersions", "")
        )
        if new.get("refused"):
            # The rollout to the last good versions that follows a refusal.
            target = new.get("targetVersions", "")
            message = f"rolling back to versions {versions} (target {target} refused)"
            events.append(EventSpec("Normal", Reason.ROLLING_BACK, message))
        else:
            events.append(
                EventSpec("Normal", Reason.ROLLOUT_STARTED, f"rolling out versions {versions}")
            )
    if new.get("servingVersions") != old.get("servingVersions") and new.get("servingVersions"):
        was = old.get("servingVersions") or "nothing"
        events.append(
            EventSpec(
                "Normal",
                Reason.SERVING_VERSIONS,
                f"now serving {new['servingVersions']} (was {was})",
            )
        )
    events += _canary_events(old.get("canary") or {}, new.get("canary") or {})
    old_refused, new_refused = old.get("refused"), new.get("refused")
    if new_refused and new_refused != old_refused:
        events.append(EventSpec("Warning", new_refused["reason"], _degraded_message(new)))
    old_deg = _cond(old, Condition.DEGRADED)
    new_deg = _cond(new, Condition.DEGRADED)
    if (
        new_deg.get("status") == "True"
        and not new_refused
        and (old_deg.get("status"), old_deg.get("reason")) != ("True", new_deg.get("reason"))
    ):
        events.append(EventSpec("Warning", new_deg["reason"], new_deg.get("message", "")))
    old_ready, new_ready = _cond(old, Condition.READY), _cond(new, Condition.READY)
    if new_ready.get("status") == "True" and old_ready.get("status") != "True":
        events.append(EventSpec("Normal", Reason.READY, new_ready.get("message", "")))
    return events


def _canary_events(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[EventSpec]:
    """A canary started; an analysis passed (a failed one is the refusal's Warning)."""
    if not new:
        return []
    versions = ",".join(str(v) for v in new.get("versions") or [])
    events = []
    if old.get("versions") != new.get("versions"):
        message = f"canary {versions} started beside the last good versions"
        events.append(EventSpec("Normal", Reason.CANARY_STARTED, message))
    analysis = new.get("lastAnalysis") or {}
    if analysis.get("verdict") == "Pass" and analysis != (old.get("lastAnalysis") or {}):
        message = (
            f"canary {versions} passed step {analysis.get('step')}/{new.get('steps')}: "
            f"{analysis.get('message')}"
        )
        events.append(EventSpec("Normal", Reason.CANARY_ANALYSED, message))
    return events


def _cond(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or () if c.get("type") == ctype), {})


def _degraded_message(status: Mapping[str, Any]) -> str:
    return str(_cond(status, Condition.DEGRADED).get("message", ""))


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, for times the operator measures against.

    Whole seconds (as conditions carry) would start a rollout's clock up to a
    second early, and a 10 s deadline would fire after 9.
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: str) -> datetime | None:
    """Parse an RFC 3339 UTC timestamp, whole seconds or fractional (None for empty/bad)."""
    if not value:
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(value, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None
