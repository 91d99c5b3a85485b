"""The canary step machine and analysis verdict (canary.py), and the page parser (scrape.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from localdev.standin.monitoring import ServingMetrics
from tests.unit.builders import LOAD_ERROR, answer, pod
from tfserving_operator import api, canary, decide, observe, render, scrape, spec
from tfserving_operator.spec import VersionSet
from tfserving_operator.views import ModelState, ServingCounts

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
HASH = "hash-v2"


def sm(replicas: int = 3, **canary_spec: Any) -> spec.ServedModel:
    body = {
        "metadata": {"name": "m", "namespace": "ml", "annotations": {}},
        "spec": {
            "storage": {"hostPath": {"path": "/x"}},
            "version": 2,
            "replicas": replicas,
            "rollout": {
                "canary": {
                    "steps": [{"replicas": 1}, {"percent": 50}],
                    "analysisIntervalSeconds": 30,
                    "minRequests": 20,
                    "insufficientTrafficTimeoutSeconds": 120,
                    **canary_spec,
                }
            },
        },
    }
    return spec.parse(body, "img", "gpu-img")


def memory() -> decide.Memory:
    return decide.Memory(last_good=VersionSet.specific([1]))


def stable_pods(n: int = 3) -> list[Any]:
    return [pod(f"s{i}", config_hash="hash-v1", versions="1", serving=True) for i in range(n)]


def canary_pods(n: int = 1, serving: bool = True) -> list[Any]:
    return [
        pod(f"c{i}", config_hash=HASH, versions="2", serving=serving, canary=True) for i in range(n)
    ]


def reading(name: str, requests: int, errors: int = 0, micros: float = 1000.0) -> ServingCounts:
    """What a server's page says after `requests` requests of `micros` each."""
    metrics = ServingMetrics()
    for i in range(requests):
        metrics.record(
            "mnist", "INVALID_ARGUMENT" if i < errors else "OK", "Predict", "GRPC", micros
        )
    return scrape.parse_page(name, metrics.page(), "mnist")


def test_percent_steps_size_the_canary_by_its_share_of_endpoints() -> None:
    assert spec.CanaryStep(percent=50).canary_replicas(3) == 3
    assert spec.CanaryStep(percent=10).canary_replicas(3) == 1
    assert spec.CanaryStep(percent=25).canary_replicas(6) == 2
    assert spec.CanaryStep(replicas=2).canary_replicas(10) == 2


def test_no_canary_for_a_first_rollout_or_the_last_good_target() -> None:
    model = sm()
    assert canary.current(model, decide.Memory(), {}, T0) is None
    assert canary.current(model, decide.Memory(last_good=VersionSet.specific([2])), {}, T0) is None
    state = canary.current(model, memory(), {}, T0)
    assert state is not None and state.step == 0 and state.phase == canary.STARTING


def test_refused_target_runs_no_canary_until_retried() -> None:
    refusal = decide.Refusal((2,), (), api.Reason.CANARY_ANALYSIS_FAILED, "x", "t")
    refused = decide.Memory(last_good=VersionSet.specific([1]), refused=refusal)
    assert canary.current(sm(), refused, {}, T0) is None


def test_stable_keeps_the_last_good_set_until_promotion() -> None:
    model = sm()
    state = canary.current(model, memory(), {}, T0)
    assert canary.stable_view(model, memory(), state).target == VersionSet.specific([1])
    promoted = canary.State((2,), (), 1, canary.PROMOTED, "")
    assert canary.stable_view(model, memory(), promoted).target == VersionSet.specific([2])


def test_analysis_waits_for_ready_canary_pods_then_reads_a_baseline() -> None:
    model = sm()
    state = canary.current(model, memory(), {}, T0)
    assert state is not None
    loading = stable_pods() + canary_pods(serving=False)
    assert canary.scrape_targets(model, state, loading, HASH, T0) == []
    result = canary.advance(model, state, HASH, loading, {}, None, T0)
    assert result.state is not None and result.state.phase == canary.STARTING
    pods = stable_pods() + canary_pods()
    targets = canary.scrape_targets(model, state, pods, HASH, T0)
    assert [p.name for p in targets] == ["c0", "s0", "s1", "s2"]
    readings = {p.name: reading(p.name, 5) for p in targets}
    result = canary.advance(model, state, HASH, pods, {}, readings, T0)
    assert result.state is not None and result.state.phase == canary.ANALYSING
    assert result.state.baseline is not None and result.due_in == 30


def _window(model: spec.ServedModel, pods: list[Any], before: dict[str, ServingCounts]) -> Any:
    state = canary.current(model, memory(), {}, T0)
    assert state is not None
    first = canary.advance(model, state, HASH, pods, {}, before, T0)
    assert first.state is not None
    return first.state


def test_a_good_canary_passes_to_the_next_step_then_promotes() -> None:
    model = sm()
    pods = stable_pods() + canary_pods()
    names = [p.name for p in pods]
    state = _window(model, pods, {n: reading(n, 0) for n in names})
    later = T0 + timedelta(seconds=31)
    # Between the readings: no window end yet at +10 s.
    assert canary.scrape_targets(model, state, pods, HASH, T0 + timedelta(seconds=10)) == []
    after = {n: reading(n, 40) for n in names}
    result = canary.advance(model, state, HASH, pods, {}, after, later)
    assert result.refusal is None and result.rerender
    assert result.state is not None and result.state.step == 1
    assert result.state.last_analysis is not None
    assert result.state.last_analysis["verdict"] == canary.PASS
    assert canary.canary_replicas(model, result.state) == 3  # 50 % of 3 stable
    # Last step passes: promoted.
    last = canary.State(
        (2,),
        (),
        1,
        canary.ANALYSING,
        "",
        baseline=state.baseline,
        window_start=state.window_start,
        analysis_start=state.analysis_start,
    )
    pods3 = stable_pods() + canary_pods(3)
    base = {p.name: reading(p.name, 0) for p in pods3}
    last = _advance_window(model, last, pods3, base)
    done = canary.advance(
        model,
        last,
        HASH,
        pods3,
        {},
        {p.name: reading(p.name, 40) for p in pods3},
        later + timedelta(seconds=31),
    )
    assert done.state is not None and done.state.phase == canary.PROMOTED


def _advance_window(
    model: spec.ServedModel, state: Any, pods: list[Any], base: dict[str, ServingCounts]
) -> Any:
    fresh = canary.advance(
        model,
        canary.State(state.versions, state.labels, state.step, canary.STARTING, ""),
        HASH,
        pods,
        {},
        base,
        T0 + timedelta(seconds=31),
    )
    assert fresh.state is not None
    return fresh.state


def test_an_erroring_canary_is_refused_with_the_numbers() -> None:
    model = sm()
    pods = stable_pods() + canary_pods()
    names = [p.name for p in pods]
    state = _window(model, pods, {n: reading(n, 0) for n in names})
    after = {n: reading(n, 40, errors=40 if n == "c0" else 0) for n in names}
    result = canary.advance(model, state, HASH, pods, {}, after, T0 + timedelta(seconds=31))
    assert result.state is None and result.refusal is not None
    assert result.refusal.reason == api.Reason.CANARY_ANALYSIS_FAILED
    assert result.refusal.versions == (2,)
    assert "40/40" in result.refusal.message and "100.0%" in result.refusal.message


def test_a_slow_canary_is_refused_on_its_p99_ratio() -> None:
    model = sm()
    pods = stable_pods() + canary_pods()
    names = [p.name for p in pods]
    state = _window(model, pods, {n: reading(n, 0) for n in names})
    after = {n: reading(n, 40, micros=300_000 if n == "c0" else 2_000) for n in names}
    result = canary.advance(model, state, HASH, pods, {}, after, T0 + timedelta(seconds=31))
    assert result.refusal is not None and "latency" in result.refusal.message


def test_too_little_traffic_waits_then_follows_the_policy() -> None:
    for policy, refused in (("Refuse", True), ("Promote", False)):
        model = sm(onInsufficientTraffic=policy)
        pods = stable_pods() + canary_pods()
        names = [p.name for p in pods]
        state = _window(model, pods, {n: reading(n, 0) for n in names})
        few = {n: reading(n, 3) for n in names}
        waiting = canary.advance(model, state, HASH, pods, {}, few, T0 + timedelta(seconds=31))
        assert waiting.state is not None and waiting.refusal is None
        assert waiting.state.last_analysis is not None
        assert waiting.state.last_analysis["verdict"] == canary.WAITING
        assert waiting.state.baseline == state.baseline  # the window grows
        late = canary.advance(
            model, waiting.state, HASH, pods, {}, few, T0 + timedelta(seconds=121)
        )
        assert (late.refusal is not None) is refused, policy
        if not refused:
            assert late.state is not None and late.state.step == 1


def test_a_restarted_server_starts_a_new_window() -> None:
    model = sm()
    pods = stable_pods() + canary_pods()
    names = [p.name for p in pods]
    state = _window(model, pods, {n: reading(n, 50) for n in names})
    restarted = [*stable_pods(), replace(canary_pods()[0], restart_count=1)]
    after = {n: reading(n, 2) for n in names}
    result = canary.advance(model, state, HASH, restarted, {}, after, T0 + timedelta(seconds=31))
    assert result.refusal is None and result.state is not None
    assert result.state.window_start == decide.format_time(T0 + timedelta(seconds=31))


def test_state_survives_the_status_round_trip() -> None:
    model = sm()
    pods = stable_pods() + canary_pods()
    state = _window(model, pods, {p.name: reading(p.name, 7) for p in pods})
    written = canary.to_status(model, state, pods, HASH)
    assert written is not None
    assert canary.state_from_status({"canary": written}) == state
    assert written["share"] == "1/4 ready endpoints (25%)"


def annotated(key: str, value: str) -> spec.ServedModel:
    """A canary ServedModel carrying one annotation (promote or abort)."""
    body = {
        "metadata": {"name": "m", "annotations": {key: value}},
        "spec": {"storage": {"hostPath": {"path": "/x"}}, "version": 2, "rollout": {"canary": {}}},
    }
    return spec.parse(body, "img", "gpu")


def test_manual_abort_and_promote() -> None:
    model = sm()
    state = canary.current(model, memory(), {}, T0)
    assert state is not None
    aborting = annotated(api.ANNOTATION_CANARY_ABORT, "now")
    result = canary.advance(aborting, state, HASH, [], {}, None, T0)
    assert result.refusal is not None and result.refusal.reason == api.Reason.CANARY_ABORTED
    promoting = annotated(api.ANNOTATION_CANARY_PROMOTE, "go")
    result = canary.advance(promoting, state, HASH, [], {}, None, T0)
    assert result.state is not None and result.state.phase == canary.PROMOTED


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = (("10", 0), ("20", 50), ("40", 100), ("+Inf", 100))
    d = canary.Delta(100, 0, buckets)
    assert d.quantile(0.5) == 20.0
    assert d.quantile(0.99) == 20 + 20 * 49 / 50
    assert canary.Delta(0, 0, ()).quantile(0.99) is None


def test_page_parser_reads_the_real_servers_names() -> None:
    """A page as TF Serving 2.20 writes it (util/prometheus_exporter.cc)."""
    labels = 'model_name="mnist",API="Predict",entrypoint="GRPC"'
    page = (
        "# TYPE :tensorflow:serving:request_count counter\n"
        ':tensorflow:serving:request_count{model_name="mnist",status="OK"} 7\n'
        ':tensorflow:serving:request_count{model_name="mnist",status="INVALID_ARGUMENT"} 3\n'
        ':tensorflow:serving:request_count{model_name="other",status="OK"} 100\n'
        "# TYPE :tensorflow:serving:request_latency histogram\n"
        f':tensorflow:serving:request_latency_bucket{{{labels},le="10"}} 0\n'
        f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}} 7\n'
        f":tensorflow:serving:request_latency_sum{{{labels}}} 700\n"
        f":tensorflow:serving:request_latency_count{{{labels}}} 7\n"
    )
    counts = scrape.parse_page("p", page, "mnist")
    assert (counts.requests, counts.errors) == (10, 3)
    assert counts.latency_buckets == (("10", 0), ("+Inf", 7))


def test_canary_deployment_is_selected_by_the_services_and_keeps_its_own_pods() -> None:
    model = sm()
    children = render.render(model, VersionSet.specific([1]))
    config_map, deployment = render.render_canary(model, model.target, 2)
    assert deployment["metadata"]["name"] == "m-canary"
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[api.LABEL_TRACK] == api.TRACK_CANARY
    for service in children.services:
        assert service["spec"]["selector"].items() <= labels.items()
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector[api.LABEL_TRACK] == api.TRACK_CANARY
    # The stable template never carries the track label: enabling canaries
    # rolls nothing of the stable Deployment.
    stable_labels = children.deployment["spec"]["template"]["metadata"]["labels"]
    assert api.LABEL_TRACK not in stable_labels
    assert config_map["metadata"]["name"].endswith(render.render(model, model.target).config_hash)
    assert children.config_hash != render.render(model, model.target).config_hash
    # The canary's pods mount the canary's ConfigMap, which holds the target's config.
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (config_volume,) = [v for v in volumes if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"] == render.render(model, model.target).config_map["data"]


def test_cache_keeps_the_stable_deployment_view_apart_from_the_canary() -> None:
    model = sm()
    cache = observe.Cache()
    stable = render.render(model, VersionSet.specific([1])).deployment
    _, canary_deployment = render.render_canary(model, model.target, 1)
    cache.observe("Deployment", stable, deleted=False)
    cache.observe("Deployment", canary_deployment, deleted=False)
    view = cache.deployments[("ml", "m")]
    assert view.replicas == 3
    cache.observe("Deployment", canary_deployment, deleted=True)
    assert ("ml", "m") in cache.deployments
    assert ("Deployment", "m-canary") not in cache.children[("ml", "m")]


def test_canary_turns_monitoring_on() -> None:
    model = sm()
    assert model.monitoring_path == "/monitoring/prometheus/metrics"
    assert "--monitoring_config_file=/etc/tfserving/monitoring.config" in render.server_args(
        model, model.target
    )


def test_events_for_a_canary_start_and_a_passed_step() -> None:
    first = {"canary": {"versions": [2], "steps": 2, "step": 1}}
    events = decide.events_for({}, first)
    assert [e.reason for e in events] == [api.Reason.CANARY_STARTED]
    passed = {
        "canary": {
            "versions": [2],
            "steps": 2,
            "step": 2,
            "lastAnalysis": {"step": 1, "verdict": "Pass", "message": "canary 0/40 failed"},
        }
    }
    events = decide.events_for(first, passed)
    assert [e.reason for e in events] == [api.Reason.CANARY_ANALYSED]
    assert "passed step 1/2: canary 0/40 failed" in events[0].message
    assert decide.events_for(passed, passed) == []


def test_gate_first_a_canary_that_fails_to_load_is_refused_without_analysis() -> None:
    """The canary pod's server reports version 2 END with an error: refused like
    any failed load, before any metrics are read."""
    model = sm()
    state = canary.current(model, memory(), {}, T0)
    assert state is not None
    pods = stable_pods() + canary_pods(serving=False)
    probes = {"c0": answer("c0", 2, ModelState.END, LOAD_ERROR)}
    assert canary.scrape_targets(model, state, pods, HASH, T0) == []
    result = canary.advance(model, state, HASH, pods, probes, None, T0)
    assert result.refusal is not None
    assert result.refusal.reason == api.Reason.VERSION_LOAD_FAILED
    assert result.refusal.message.startswith("canary: model server on pod c0")


def test_network_policy_lets_the_operator_read_a_canarys_metrics() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "ml"},
        "spec": {
            "storage": {"hostPath": {"path": "/x"}},
            "version": 2,
            "networkPolicy": {"clientSelector": {"matchLabels": {"app": "c"}}},
        },
    }
    plain = spec.parse(body, "img", "gpu")
    with_canary = spec.parse(
        {**body, "spec": {**body["spec"], "rollout": {"canary": {}}}}, "img", "gpu"
    )

    def operator_ports(model: spec.ServedModel) -> list[dict[str, Any]]:
        policy = render.render_network_policy(model, render.OperatorPeer())
        assert policy is not None
        ports: list[dict[str, Any]] = policy["spec"]["ingress"][1]["ports"]
        return ports

    grpc = {"protocol": "TCP", "port": 8500}
    assert operator_ports(plain) == [grpc]
    assert operator_ports(with_canary) == [grpc, {"protocol": "TCP", "port": 8501}]


def test_a_window_longer_than_the_availability_timeout_is_no_load_timeout() -> None:
    model = sm(analysisIntervalSeconds=3600)
    pods = stable_pods() + canary_pods()
    state = _window(model, pods, {p.name: reading(p.name, 0) for p in pods})
    later = T0 + timedelta(seconds=model.availability_timeout_seconds + 60)
    result = canary.advance(model, state, HASH, pods, {}, None, later)
    assert result.refusal is None and result.state == state
    # While the step's pods are still loading, the timeout applies.
    loading = stable_pods() + canary_pods(serving=False)
    result = canary.advance(model, state, HASH, loading, {}, None, later)
    assert result.refusal is not None
    assert result.refusal.reason == api.Reason.VERSION_LOAD_TIMEOUT
