"""Canary rollouts judged by the model servers' own metrics (issue 15), in the local cluster.

Clients send Predict requests without pause, spread round robin over the
ready pods (what the headless Service and a client-side balancer do): the
canary's share of requests at each step is measured from which version
answered. The stand-in exports the real server's Prometheus counters from
the requests it serves, so the operator judges what the clients saw.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from localdev.support.clients import PodWatcher, PredictLoad
from localdev.support.k8s import condition, create_sm, get_sm, patch_sm, servedmodel
from localdev.support.models import add_renamed_input_version, make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tests.cluster.test_rollout import (
    Body,
    events_of,
    hpt_spec,
    status_of,
    staying,
    wait_refused,
    wait_serving,
)

MODEL = "half_plus_three"
FAULT = "standin.tests.tfoperator.dev/fault"


def canary_spec(**extra: Any) -> Body:
    return {
        "steps": [{"replicas": 1}, {"percent": 50}],
        "analysisIntervalSeconds": 10,
        "minRequests": 20,
        **extra,
    }


@dataclass
class StepSplit:
    """Requests each version answered while a canary step was Analysing."""

    versions: dict[int, Counter[int]] = field(default_factory=dict)
    failures: dict[int, int] = field(default_factory=dict)

    def share(self, step: int, version: int) -> float:
        counts = self.versions.get(step, Counter())
        total = sum(counts.values()) + self.failures.get(step, 0)
        return counts[version] / total if total else 0.0


def follow_canary(
    api_client: Any, namespace: str, name: str, load: PredictLoad, until: Any, timeout: float
) -> tuple[Body, StepSplit, list[Body]]:
    """Poll the ServedModel until `until(body)`; split the load's answers by the
    canary step that was Analysing when they came (a step's pods all Ready)."""
    split = StepSplit()
    seen: list[Body] = []
    last = load.snapshot()
    step = 0
    deadline = time.monotonic() + timeout
    while True:
        body = get_sm(api_client, namespace, name)
        now = load.snapshot()
        if step:
            versions = now.versions - last.versions
            split.versions.setdefault(step, Counter()).update(versions)
            split.failures[step] = (
                split.failures.get(step, 0) + len(now.failures) - len(last.failures)
            )
        last = now
        canary = status_of(body).get("canary") or {}
        if canary:
            seen.append(canary)
        step = int(canary.get("step") or 0) if canary.get("phase") == "Analysing" else 0
        if until(body):
            return body, split, seen
        assert time.monotonic() < deadline, f"timed out; canary states seen: {seen[-3:]}"
        time.sleep(0.2)


def canary_deployment(api_client: Any, namespace: str, name: str) -> Any:
    apps = client.AppsV1Api(api_client)
    found = apps.list_namespaced_deployment(
        namespace, field_selector=f"metadata.name={name}-canary"
    )
    return found.items[0] if found.items else None


# ----------------------------------------------------------------------------


def test_good_canary_promoted_step_by_step(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """1 -> 2 with two steps (1 canary pod beside 2 stable, then 50 %): each
    step's analysis passes, the stable Deployment rolls to 2, the canary goes;
    clients never see an error and the measured split follows the endpoints."""
    base = make_model_dir(model_store, "good-canary", good=(1, 2))
    spec = hpt_spec(base, 1, replicas=2, rollout={"canary": canary_spec()})
    create_sm(api_client, namespace, servedmodel("goodc", spec))
    wait_serving(api_client, namespace, "goodc", "1")

    with PodWatcher(api_client, namespace, "goodc") as pods:
        load = PredictLoad(pods, MODEL, workers=2).start()
        try:
            patch_sm(api_client, namespace, "goodc", {"spec": {"version": 2}})

            def promoted(body: Body) -> bool:
                st = status_of(body)
                return (
                    condition(body, "Ready").get("status") == "True"
                    and st.get("servingVersions") == "2"
                    and not st.get("canary")
                    and not st.get("rollout")
                )

            body, split, seen = follow_canary(
                api_client, namespace, "goodc", load, promoted, timeout=180
            )
        finally:
            report = load.stop()

    assert report.failures == [], report.summary()
    st = status_of(body)
    assert st["lastGood"]["versions"] == [2]
    assert not st.get("refused")
    analyses = [c["lastAnalysis"] for c in seen if c.get("lastAnalysis")]
    assert {a["step"] for a in analyses if a["verdict"] == "Pass"} == {1, 2}, analyses
    passed = next(a for a in analyses if a["step"] == 1 and a["verdict"] == "Pass")
    assert passed["canaryRequests"] >= 20 and passed["canaryErrors"] == 0, passed
    # Step 1: 1 canary of 3 ready endpoints; step 2: 50 % (2 canary pods beside 2).
    assert {c["replicas"] for c in seen if c["step"] == 1} == {1}
    assert {c["replicas"] for c in seen if c["step"] == 2} == {2}
    share1, share2 = split.share(1, 2), split.share(2, 2)
    print(f"canary share measured by the client: step 1 {share1:.0%}, step 2 {share2:.0%}")
    assert 0.2 < share1 < 0.45, split
    assert 0.4 < share2 < 0.6, split
    assert wait_until(
        lambda: canary_deployment(api_client, namespace, "goodc") is None,
        timeout=30,
        what="the canary Deployment to be deleted",
    )


def test_erroring_canary_refused_and_removed(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """A version 2 whose signature rejects what clients send (input "inputs",
    clients send "x"): it loads, passes the gate, and answers every request
    INVALID_ARGUMENT. The first analysis refuses it with the numbers, the
    canary pods go, and clients see only version 1 afterwards."""
    base = make_model_dir(model_store, "bad-canary", good=(1,))
    add_renamed_input_version(model_store, base, 2)
    spec = hpt_spec(base, 1, replicas=2, rollout={"canary": canary_spec()})
    create_sm(api_client, namespace, servedmodel("badc", spec))
    wait_serving(api_client, namespace, "badc", "1")

    with PodWatcher(api_client, namespace, "badc") as pods:
        stable = {p.name for p in pods.serving()}
        load = PredictLoad(pods, MODEL, workers=2).start()
        try:
            before = load.snapshot()
            started = time.monotonic()
            patch_sm(api_client, namespace, "badc", {"spec": {"version": 2}})
            body = wait_refused(api_client, namespace, "badc", "CanaryAnalysisFailed", 120)
            refused_after = time.monotonic() - started
            during = load.snapshot()
            assert pods.wait(lambda p: sorted(staying(p)) == sorted(stable), 60), pods.pods()
            # Requests a worker sent to a canary pod just before it left are
            # still in flight: count from once 50 more (2 workers) were sent.
            gone = load.snapshot().sent
            wait_until(lambda: load.snapshot().sent >= gone + 50, timeout=30, what="50 requests")
            after_removal = load.snapshot()
            wait_until(
                lambda: load.snapshot().sent - after_removal.sent >= 200,
                timeout=60,
                what="200 more requests after the canary pods left",
            )
            after = load.snapshot()
        finally:
            load.stop()

    sent = during.sent - before.sent
    failed = len(during.failures) - len(before.failures)
    print(
        f"bad canary refused {refused_after:.1f} s after the spec change; "
        f"clients saw {failed}/{sent} errors meanwhile ({failed / max(sent, 1):.1%})"
    )
    assert failed > 0, "the canary never took traffic"
    assert all("INVALID_ARGUMENT" in f for f in during.failures), during.failures[:3]
    assert len(after.failures) == len(after_removal.failures), after.failures[-3:]
    assert set((after.versions - after_removal.versions).keys()) == {1}

    # Once the canary pods are gone, only 1 serves.
    body = wait_until(
        lambda: (lambda b: b if status_of(b).get("servingVersions") == "1" else None)(
            get_sm(api_client, namespace, "badc")
        ),
        timeout=30,
        what="servingVersions 1",
    )
    st = status_of(body)
    assert body["spec"]["version"] == 2, "the spec was rewritten"
    assert st["lastGood"]["versions"] == [1]
    assert st["refused"]["versions"] == [2]
    message = st["refused"]["message"]
    assert "error rate" in message and "canary" in message and "stable" in message, message
    assert not st.get("canary")
    warnings = [e for e in events_of(api_client, namespace, "badc") if e.type == "Warning"]
    assert any(e.reason == "CanaryAnalysisFailed" for e in warnings), warnings
    assert wait_until(
        lambda: canary_deployment(api_client, namespace, "badc") is None,
        timeout=30,
        what="the canary Deployment to be deleted",
    )


def wait_canary(
    api_client: Any, namespace: str, name: str, what: str, check: Any, timeout: float = 60
) -> Body:
    """Wait until `check(status.canary)` holds; return status.canary."""

    def probe() -> Body | None:
        found = status_of(get_sm(api_client, namespace, name)).get("canary") or {}
        return found if found and check(found) else None

    return dict(wait_until(probe, timeout=timeout, what=what))


def test_slow_canary_refused_on_latency(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """Version 2's graph is slower (the stand-in's slow-version fault adds 0.25 s
    inside the handler, so the server's own latency histogram shows it): no
    request fails, and the p99 ratio refuses it."""
    base = make_model_dir(model_store, "slow-canary", good=(1, 2))
    spec = hpt_spec(
        base,
        1,
        replicas=2,
        podAnnotations={FAULT: "slow-version=2:0.25"},
        rollout={"canary": canary_spec(minRequests=10)},
    )
    create_sm(api_client, namespace, servedmodel("slowc", spec))
    wait_serving(api_client, namespace, "slowc", "1")
    with PodWatcher(api_client, namespace, "slowc") as pods:
        load = PredictLoad(pods, MODEL, workers=4).start()
        try:
            patch_sm(api_client, namespace, "slowc", {"spec": {"version": 2}})
            body = wait_refused(api_client, namespace, "slowc", "CanaryAnalysisFailed", 120)
        finally:
            report = load.stop()
    assert report.failures == [], report.summary()
    message = status_of(body)["refused"]["message"]
    assert "latency: p99 canary" in message, message
    print(f"slow canary refused: {message}")


def test_too_little_traffic_follows_the_policy(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """Nobody sends requests: each step waits insufficientTrafficTimeoutSeconds
    for minRequests, then onInsufficientTraffic Promote passes it."""
    base = make_model_dir(model_store, "quiet-canary", good=(1, 2))
    quiet = canary_spec(
        steps=[{"replicas": 1}],
        insufficientTrafficTimeoutSeconds=25,
        onInsufficientTraffic="Promote",
    )
    spec = hpt_spec(base, 1, rollout={"canary": quiet})
    create_sm(api_client, namespace, servedmodel("quietc", spec))
    wait_serving(api_client, namespace, "quietc", "1")
    started = time.monotonic()
    patch_sm(api_client, namespace, "quietc", {"spec": {"version": 2}})
    waiting = wait_canary(
        api_client,
        namespace,
        "quietc",
        "a Waiting analysis",
        lambda c: (c.get("lastAnalysis") or {}).get("verdict") == "Waiting",
    )
    assert "waiting for traffic" in waiting["lastAnalysis"]["message"], waiting
    body = wait_serving(api_client, namespace, "quietc", "2", timeout=120)
    took = time.monotonic() - started
    assert took >= 25, f"promoted after {took:.1f} s, before the traffic timeout"
    assert not status_of(body).get("refused")


def test_operator_killed_mid_analysis_resumes_the_window(
    api_client: Any, sim: Any, crds: None, model_store: Path
) -> None:
    """The step, the window's start and its baseline readings live in the
    status: an operator SIGKILLed mid-window and started again judges the same
    window when it ends, not a new one."""
    core = client.CoreV1Api(api_client)
    namespace = f"canary-kill-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {"tfso-test": "true"}}})
    wait_until(
        lambda: bool(core.list_namespaced_service_account(namespace).items),
        timeout=30,
        what="the default ServiceAccount",
    )
    log = sim.state_dir / "logs" / f"operator-{namespace}.log"
    own = OperatorProcess(sim.kubeconfig, namespace, log).start()
    try:
        base = make_model_dir(model_store, "kill-canary", good=(1, 2))
        interval = 15
        spec = hpt_spec(
            base,
            1,
            replicas=2,
            rollout={
                "canary": canary_spec(steps=[{"replicas": 1}], analysisIntervalSeconds=interval)
            },
        )
        create_sm(api_client, namespace, servedmodel("killc", spec))
        wait_serving(api_client, namespace, "killc", "1")
        with PodWatcher(api_client, namespace, "killc") as pods:
            load = PredictLoad(pods, MODEL, workers=2).start()
            try:
                patch_sm(api_client, namespace, "killc", {"spec": {"version": 2}})
                window = wait_canary(
                    api_client, namespace, "killc", "a window", lambda c: c.get("baseline")
                )
                own.kill()
                own.start()
                windows: set[str] = set()

                def analysed() -> Body | None:
                    canary = status_of(get_sm(api_client, namespace, "killc")).get("canary")
                    if not canary:
                        return None
                    if canary.get("windowStartTime"):
                        windows.add(canary["windowStartTime"])
                    return canary if canary.get("lastAnalysis") else None

                judged = wait_until(analysed, timeout=90, what="the analysis after the restart")
                done = wait_serving(api_client, namespace, "killc", "2", timeout=120)
            finally:
                report = load.stop()
        assert report.failures == [], report.summary()
        assert done["status"]["lastGood"]["versions"] == [2]
        # The restarted operator kept the window (and baseline) the killed one
        # started, and judged it when it ended.
        assert windows == {window["windowStartTime"]}, (window, windows)
        assert judged["lastAnalysis"]["verdict"] == "Pass", judged
        start = datetime.fromisoformat(window["windowStartTime"].replace("Z", "+00:00"))
        at = datetime.fromisoformat(judged["lastAnalysis"]["time"].replace("Z", "+00:00"))
        assert interval <= (at - start).total_seconds() < interval + 10, (window, judged)
    finally:
        own.stop()
        core.delete_namespace(namespace)


def test_manual_abort_and_promote_annotations(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """A long analysis window, ended by hand: canary-promote rolls the stable
    Deployment to the target at once; canary-abort refuses the next canary."""
    base = make_model_dir(model_store, "manual-canary", good=(1, 2, 3))
    slow_windows = canary_spec(steps=[{"replicas": 1}], analysisIntervalSeconds=3600)
    spec = hpt_spec(base, 1, rollout={"canary": slow_windows})
    create_sm(api_client, namespace, servedmodel("manualc", spec))
    wait_serving(api_client, namespace, "manualc", "1")

    patch_sm(api_client, namespace, "manualc", {"spec": {"version": 2}})
    wait_canary(api_client, namespace, "manualc", "a window", lambda c: c.get("baseline"))
    promote = {"metadata": {"annotations": {"serving.tfoperator.dev/canary-promote": "now"}}}
    patch_sm(api_client, namespace, "manualc", promote)
    wait_serving(api_client, namespace, "manualc", "2", timeout=90)

    patch_sm(api_client, namespace, "manualc", {"spec": {"version": 3}})
    wait_canary(api_client, namespace, "manualc", "a window", lambda c: c.get("baseline"))
    abort = {"metadata": {"annotations": {"serving.tfoperator.dev/canary-abort": "stop"}}}
    patch_sm(api_client, namespace, "manualc", abort)
    body = wait_refused(api_client, namespace, "manualc", "CanaryAborted", 60)
    assert "canary-abort" in status_of(body)["refused"]["message"]
    assert wait_until(
        lambda: canary_deployment(api_client, namespace, "manualc") is None,
        timeout=30,
        what="the canary Deployment to be deleted",
    )
