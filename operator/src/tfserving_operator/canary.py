"""Canary rollouts (pure): the step machine and the analysis verdict.

With ``spec.rollout.canary``, a new explicit target first runs on a few pods
of a second Deployment (``<name>-canary``) beside the stable Deployment, which
keeps serving the last good set at full size; both sit behind the same
Services, so the canary's share of traffic is its share of the ready
endpoints. Each step holds for an analysis interval; the verdict compares
what the model servers themselves counted (their Prometheus pages, read by
scrape.py) between two readings: the canary's error rate against the
stable's, and the canary's p99 latency against the stable's. Every step
passed: promotion (the stable Deployment rolls to the target, then the canary
Deployment goes). A failed analysis: a refusal through decide's mechanism
(status.refused), so the canary Deployment is no longer rendered and the
last good set keeps serving.

Everything the machine needs between passes lives in status.canary (the
baseline readings included), so an operator restarted mid-analysis resumes
the same window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tfserving_operator import decide
from tfserving_operator.api import Reason
from tfserving_operator.decide import Memory, Refusal
from tfserving_operator.spec import ServedModel, VersionSet
from tfserving_operator.views import PodView, ProbeResult, ServingCounts

STARTING = "Starting"  # canary pods asked for, not all Ready yet
ANALYSING = "Analysing"  # every canary pod Ready: a window is running
PROMOTED = "Promoted"  # every step passed: the stable Deployment rolls to the target

# Stable servers read for the comparison: a sample, so a ServedModel with a
# hundred replicas costs a handful of requests per analysis.
STABLE_SAMPLE = 5
# p99 over the two readings' histogram difference.
QUANTILE = 0.99
# While pods start or a reading failed: look again this soon.
RECHECK_SECONDS = 2.0


@dataclass(frozen=True)
class State:
    """status.canary, read back."""

    versions: tuple[int, ...]
    labels: tuple[tuple[str, int], ...]
    step: int  # index into spec.rollout.canary.steps
    phase: str
    step_start: str
    analysis_start: str = ""  # first reading of this step (traffic wait counts from it)
    window_start: str = ""  # the baseline reading's time
    baseline: Mapping[str, Any] | None = None
    promote_token: str = ""
    abort_token: str = ""
    last_analysis: Mapping[str, Any] | None = None

    def for_target(self, target: VersionSet) -> bool:
        return self.versions == target.versions and self.labels == target.labels


def state_from_status(status: Mapping[str, Any] | None) -> State | None:
    """The canary state an earlier pass recorded, if any."""
    raw = (status or {}).get("canary")
    if not raw:
        return None
    return State(
        versions=tuple(int(v) for v in raw.get("versions") or ()),
        labels=tuple(sorted((str(k), int(v)) for k, v in (raw.get("labels") or {}).items())),
        step=max(0, int(raw.get("step") or 1) - 1),
        phase=str(raw.get("phase") or STARTING),
        step_start=str(raw.get("stepStartTime") or ""),
        analysis_start=str(raw.get("analysisStartTime") or ""),
        window_start=str(raw.get("windowStartTime") or ""),
        baseline=raw.get("baseline") or None,
        promote_token=str(raw.get("promoteToken") or ""),
        abort_token=str(raw.get("abortToken") or ""),
        last_analysis=raw.get("lastAnalysis") or None,
    )


def applies(sm: ServedModel, memory: Memory) -> bool:
    """A canary runs: configured, an explicit target that differs from a last
    good set (a first rollout has nothing to compare with), not refused."""
    if sm.canary is None or not sm.target.explicit or memory.last_good is None:
        return False
    if memory.last_good == sm.target:
        return False
    refused = memory.refused
    return not (refused is not None and refused.matches(sm.target, sm.retry_token))


def current(
    sm: ServedModel, memory: Memory, status: Mapping[str, Any], now: datetime
) -> State | None:
    """The canary of this pass: the recorded one when it is for the spec's
    target, a fresh one at step 1 when the target is new, None when no canary runs."""
    if not applies(sm, memory):
        return None
    assert sm.canary is not None
    state = state_from_status(status)
    if state is not None and state.for_target(sm.target):
        return state
    return State(
        versions=sm.target.versions,
        labels=sm.target.labels,
        step=0,
        phase=STARTING,
        step_start=decide.format_time(now),
        # Tokens as they are now: only a later change promotes or aborts.
        promote_token=sm.canary.promote_token,
        abort_token=sm.canary.abort_token,
    )


def holds_stable(state: State | None) -> bool:
    """The stable Deployment keeps the last good set (until promotion)."""
    return state is not None and state.phase != PROMOTED


def stable_view(sm: ServedModel, memory: Memory, state: State | None) -> ServedModel:
    """The ServedModel the stable Deployment is planned from: the last good set
    as its target while the canary holds it."""
    if holds_stable(state) and memory.last_good is not None:
        return replace(sm, target=memory.last_good)
    return sm


def canary_replicas(sm: ServedModel, state: State) -> int:
    """Canary pods the current step asks for."""
    assert sm.canary is not None
    step = sm.canary.steps[min(state.step, len(sm.canary.steps) - 1)]
    return step.canary_replicas(sm.replicas)


def split(pods: Sequence[PodView]) -> tuple[list[PodView], list[PodView]]:
    """(canary pods, stable pods), neither on its way out."""
    live = [p for p in pods if not p.terminating]
    return [p for p in live if p.canary], [p for p in live if not p.canary]


def ready_canaries(pods: Sequence[PodView], config_hash: str) -> list[PodView]:
    """Canary pods serving the target: gate open and Ready."""
    canaries, _ = split(pods)
    return [p for p in decide.serving_pods(canaries) if p.config_hash == config_hash]


def scrape_targets(
    sm: ServedModel, state: State, pods: Sequence[PodView], config_hash: str, now: datetime
) -> list[PodView]:
    """The pods to read this pass ([] when no reading is due): every canary pod
    and a sample of stable ones, once all canary pods are Ready and either no
    baseline exists or the window is over."""
    if state.phase == PROMOTED or sm.canary is None:
        return []
    ready = ready_canaries(pods, config_hash)
    if len(ready) < canary_replicas(sm, state):
        return []
    if state.baseline is not None and _seconds_left(sm, state, now) > 0:
        return []
    _, stable = split(pods)
    sample = sorted(decide.serving_pods(stable), key=lambda p: p.name)[:STABLE_SAMPLE]
    return sorted(ready, key=lambda p: p.name) + sample


def _seconds_left(sm: ServedModel, state: State, now: datetime) -> float:
    assert sm.canary is not None
    start = decide.parse_time(state.window_start)
    if start is None:
        return 0.0
    return sm.canary.analysis_interval_seconds - (now - start).total_seconds()


# ----------------------------------------------------------------------------
# Readings: sums over a group of servers, and what changed between two.


@dataclass(frozen=True)
class Totals:
    """One group's counters at one reading (sums over its servers)."""

    pods: tuple[tuple[str, int], ...]  # (pod, restart count): who was read
    requests: int
    errors: int
    buckets: tuple[tuple[str, int], ...]  # cumulative latency histogram

    def to_status(self) -> dict[str, Any]:
        return {
            "pods": dict(self.pods),
            "requests": self.requests,
            "errors": self.errors,
            "buckets": [[le, n] for le, n in self.buckets],
        }

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> Totals:
        return cls(
            pods=tuple(sorted((str(k), int(v)) for k, v in (raw.get("pods") or {}).items())),
            requests=int(raw.get("requests") or 0),
            errors=int(raw.get("errors") or 0),
            buckets=tuple((str(le), int(n)) for le, n in raw.get("buckets") or ()),
        )


def totals(pods: Sequence[PodView], readings: Mapping[str, ServingCounts]) -> Totals | None:
    """Sum the readings of `pods`; None when one of them could not be read."""
    requests = errors = 0
    buckets: dict[str, int] = {}
    for pod in pods:
        reading = readings.get(pod.name)
        if reading is None or not reading.ok:
            return None
        requests += reading.requests
        errors += reading.errors
        for le, n in reading.latency_buckets:
            buckets[le] = buckets.get(le, 0) + n
    ordered = tuple(sorted(buckets.items(), key=lambda item: _bound(item[0])))
    return Totals(
        pods=tuple(sorted((p.name, p.restart_count) for p in pods)),
        requests=requests,
        errors=errors,
        buckets=ordered,
    )


def _bound(le: str) -> float:
    return math.inf if le.strip() in ("+Inf", "Inf", "inf") else float(le)


@dataclass(frozen=True)
class Delta:
    """What one group served between two readings."""

    requests: int
    errors: int
    buckets: tuple[tuple[str, int], ...]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """The q-quantile of latency in the page's unit (microseconds), by linear
        interpolation inside the bucket that holds it (Prometheus's
        histogram_quantile); None without a successful request."""
        if not self.buckets or self.buckets[-1][1] <= 0:
            return None
        rank = q * self.buckets[-1][1]
        low, below = 0.0, 0
        for le, count in self.buckets:
            bound = _bound(le)
            if count >= rank:
                if math.isinf(bound):
                    return low  # beyond the last finite bound: its bound
                if count == below:
                    return bound
                return low + (bound - low) * (rank - below) / (count - below)
            low, below = bound, count
        return low


def delta(before: Totals, after: Totals) -> Delta | None:
    """`after` minus `before`; None when the group changed in between (a pod
    replaced or restarted: its counters started again from zero)."""
    if before.pods != after.pods:
        return None
    old = dict(before.buckets)
    buckets = tuple((le, n - old.get(le, 0)) for le, n in after.buckets)
    diff = Delta(after.requests - before.requests, after.errors - before.errors, buckets)
    if diff.requests < 0 or diff.errors < 0 or any(n < 0 for _, n in buckets):
        return None
    return diff


@dataclass(frozen=True)
class Analysis:
    """The numbers of one analysis and its verdict: Pass, Fail or Waiting."""

    verdict: str
    message: str
    canary: Delta
    stable: Delta
    canary_p99_ms: float | None
    stable_p99_ms: float | None

    @property
    def latency_ratio(self) -> float | None:
        if self.canary_p99_ms is None or not self.stable_p99_ms:
            return None
        return self.canary_p99_ms / self.stable_p99_ms

    def to_status(self, step: int, now: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": decide.format_time(now),
            "step": step + 1,
            "verdict": self.verdict,
            "message": self.message,
            "canaryRequests": self.canary.requests,
            "canaryErrors": self.canary.errors,
            "canaryErrorRate": round(self.canary.error_rate, 4),
            "stableRequests": self.stable.requests,
            "stableErrors": self.stable.errors,
            "stableErrorRate": round(self.stable.error_rate, 4),
        }
        if self.canary_p99_ms is not None:
            out["canaryP99Milliseconds"] = round(self.canary_p99_ms, 3)
        if self.stable_p99_ms is not None:
            out["stableP99Milliseconds"] = round(self.stable_p99_ms, 3)
        if self.latency_ratio is not None:
            out["latencyRatio"] = round(self.latency_ratio, 3)
        return out


PASS, FAIL, WAITING = "Pass", "Fail", "Waiting"


def judge(sm: ServedModel, canary: Delta, stable: Delta, waited_out: bool) -> Analysis:
    """The verdict on one window: too few canary requests (wait, or the
    policy once `waited_out`), the error rate, then the p99 latency ratio."""
    spec = sm.canary
    assert spec is not None
    c99 = canary.quantile(QUANTILE)
    s99 = stable.quantile(QUANTILE)
    c_ms = None if c99 is None else c99 / 1000
    s_ms = None if s99 is None else s99 / 1000

    def result(verdict: str, message: str) -> Analysis:
        return Analysis(verdict, message, canary, stable, c_ms, s_ms)

    rates = (
        f"canary {canary.errors}/{canary.requests} requests failed "
        f"({canary.error_rate:.1%}), stable {stable.errors}/{stable.requests} "
        f"({stable.error_rate:.1%})"
    )
    if canary.requests < spec.min_requests:
        few = f"{canary.requests} canary requests, fewer than minRequests {spec.min_requests}"
        if not waited_out:
            return result(WAITING, f"{few}: waiting for traffic")
        if spec.on_insufficient_traffic == "Promote":
            return result(
                PASS,
                f"{few} within {spec.insufficient_traffic_timeout_seconds} s: "
                "passed by onInsufficientTraffic Promote",
            )
        return result(
            FAIL,
            f"{few} within {spec.insufficient_traffic_timeout_seconds} s "
            "(onInsufficientTraffic Refuse)",
        )
    if canary.error_rate - stable.error_rate > spec.max_error_rate:
        return result(FAIL, f"error rate: {rates}; allowed {spec.max_error_rate:.1%} above stable")
    latency = ""
    if c_ms is not None and s_ms:
        ratio = c_ms / s_ms
        latency = f"; p99 canary {c_ms:.1f} ms, stable {s_ms:.1f} ms (x{ratio:.2f})"
        if ratio > spec.max_latency_ratio:
            return result(
                FAIL,
                f"latency: p99 canary {c_ms:.1f} ms, stable {s_ms:.1f} ms: x{ratio:.2f}, "
                f"allowed x{spec.max_latency_ratio:g} ({rates})",
            )
    return result(PASS, f"{rates}{latency}")


# ----------------------------------------------------------------------------
# One pass of the machine.


@dataclass(frozen=True)
class Advance:
    """What a pass concludes about the canary."""

    state: State | None  # None: the canary is over (refused)
    refusal: Refusal | None = None
    # The canary's replica count or the stable's target changed: render again.
    rerender: bool = False
    due_in: float | None = None  # seconds until the machine wants another pass


def _refuse(sm: ServedModel, reason: str, message: str, now: datetime) -> Advance:
    refusal = Refusal(
        versions=sm.target.versions,
        labels=sm.target.labels,
        reason=reason,
        message=message,
        time=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        retry_token=sm.retry_token,
    )
    return Advance(state=None, refusal=refusal, rerender=True)


def advance(
    sm: ServedModel,
    state: State,
    config_hash: str,
    pods: Sequence[PodView],
    probes: Mapping[str, ProbeResult],
    readings: Mapping[str, ServingCounts] | None,
    now: datetime,
) -> Advance:
    """The next state: manual promote/abort, a canary pod that fails to load,
    the wait for Ready canary pods, the baseline reading, the verdict."""
    spec = sm.canary
    assert spec is not None
    if spec.abort_token != state.abort_token:
        return _refuse(sm, Reason.CANARY_ABORTED, _aborted(sm, state), now)
    if state.phase == PROMOTED:
        return Advance(state)
    if spec.promote_token != state.promote_token:
        return Advance(
            replace(state, phase=PROMOTED, promote_token=spec.promote_token), rerender=True
        )
    canaries, _ = split(pods)
    ready = ready_canaries(pods, config_hash)
    loading = len(ready) < canary_replicas(sm, state)
    # The availability timeout counts while the step's pods load, not while
    # their analysis runs (a window may well be longer).
    clock = decide.parse_time(state.step_start) if loading else None
    failure = decide.detect_failure(sm, config_hash, canaries, probes, clock, now)
    if failure is not None:
        return _refuse(sm, failure.reason, f"canary: {failure.message}", now)
    if loading:
        return Advance(replace(state, phase=STARTING), due_in=None)
    if readings is None:
        return Advance(state, due_in=max(_seconds_left(sm, state, now), RECHECK_SECONDS))
    targets = scrape_targets(sm, state, pods, config_hash, now)
    canary_now = totals([p for p in targets if p.canary], readings)
    stable_now = totals([p for p in targets if not p.canary], readings)
    if canary_now is None or stable_now is None:
        return Advance(state, due_in=RECHECK_SECONDS)  # a page could not be read
    if state.baseline is None:
        return _new_window(sm, state, canary_now, stable_now, now)
    base_canary = Totals.from_status(state.baseline.get("canary") or {})
    base_stable = Totals.from_status(state.baseline.get("stable") or {})
    canary_delta = delta(base_canary, canary_now)
    stable_delta = delta(base_stable, stable_now)
    if canary_delta is None or stable_delta is None:
        # A server replaced or restarted: its counters restarted. New window.
        return _new_window(sm, state, canary_now, stable_now, now, keep_start=True)
    started = decide.parse_time(state.analysis_start) or now
    waited_out = (now - started).total_seconds() >= spec.insufficient_traffic_timeout_seconds
    analysis = judge(sm, canary_delta, stable_delta, waited_out)
    recorded = analysis.to_status(state.step, now)
    if analysis.verdict == FAIL:
        message = f"step {state.step + 1}/{len(spec.steps)}: {analysis.message}"
        return _refuse(sm, Reason.CANARY_ANALYSIS_FAILED, message, now)
    if analysis.verdict == WAITING:
        # Keep the baseline: the window grows until enough requests came.
        later = replace(state, window_start=decide.format_time(now), last_analysis=recorded)
        return Advance(later, due_in=float(spec.analysis_interval_seconds))
    if state.step + 1 >= len(spec.steps):
        return Advance(replace(state, phase=PROMOTED, last_analysis=recorded), rerender=True)
    return Advance(
        replace(
            state,
            step=state.step + 1,
            phase=STARTING,
            step_start=decide.format_time(now),
            analysis_start="",
            window_start="",
            baseline=None,
            last_analysis=recorded,
        ),
        rerender=True,
    )


def _new_window(
    sm: ServedModel,
    state: State,
    canary_now: Totals,
    stable_now: Totals,
    now: datetime,
    keep_start: bool = False,
) -> Advance:
    assert sm.canary is not None
    stamp = decide.format_time(now)
    return Advance(
        replace(
            state,
            phase=ANALYSING,
            analysis_start=state.analysis_start if keep_start and state.analysis_start else stamp,
            window_start=stamp,
            baseline={"canary": canary_now.to_status(), "stable": stable_now.to_status()},
        ),
        due_in=float(sm.canary.analysis_interval_seconds),
    )


def _aborted(sm: ServedModel, state: State) -> str:
    assert sm.canary is not None
    return (
        f"canary aborted by the {sm.canary.abort_token!r} value of the canary-abort "
        f"annotation at step {state.step + 1}/{len(sm.canary.steps)}"
    )


# ----------------------------------------------------------------------------
# Status.


def to_status(
    sm: ServedModel, state: State | None, pods: Sequence[PodView], config_hash: str
) -> dict[str, Any] | None:
    """status.canary: the step, the canary's share of ready endpoints, the
    last analysis, and what the next pass needs (the baseline)."""
    if state is None or sm.canary is None:
        return None
    canaries = len(ready_canaries(pods, config_hash))
    _, stable = split(pods)
    stables = len(decide.serving_pods(stable))
    share = canaries / (canaries + stables) if canaries + stables else 0.0
    out: dict[str, Any] = {
        "versions": list(state.versions),
        "labels": dict(state.labels),
        "configHash": config_hash,
        "step": state.step + 1,
        "steps": len(sm.canary.steps),
        "phase": state.phase,
        "replicas": canary_replicas(sm, state),
        "readyReplicas": canaries,
        "stableReadyReplicas": stables,
        "share": f"{canaries}/{canaries + stables} ready endpoints ({share:.0%})",
        "stepStartTime": state.step_start,
        "promoteToken": state.promote_token,
        "abortToken": state.abort_token,
    }
    if state.analysis_start:
        out["analysisStartTime"] = state.analysis_start
    if state.window_start:
        out["windowStartTime"] = state.window_start
    if state.baseline is not None:
        out["baseline"] = dict(state.baseline)
    if state.last_analysis is not None:
        out["lastAnalysis"] = dict(state.last_analysis)
    return out
