"""The kubelet emulation's pure decisions (localdev/standin/kubelet_decide.py).

Each test names the Kubernetes documentation page the rule comes from.
"""

from __future__ import annotations

from typing import Any

import pytest

from localdev.standin import kubelet_decide as decide
from localdev.standin.kubelet_decide import ContainerRecord, ProbeSpec, ProbeState

GATE = "serving.tfoperator.dev/model-available"
NOW = "2026-12-01T06:00:00Z"


def test_backoff_doubles_from_10s_to_a_300s_cap() -> None:
    """Pod Lifecycle, "Container restarts": 10 s, 20 s, 40 s, ... capped at 300 s."""
    delays: list[float] = []
    previous: float | None = None
    for _ in range(8):
        previous = decide.next_backoff(previous, ran_seconds=5)
        delays.append(previous)
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]


def test_backoff_resets_after_ten_minutes_of_running() -> None:
    """Pod Lifecycle, "Container restarts": the back-off resets once a
    container ran 10 minutes without a problem."""
    assert decide.next_backoff(160, ran_seconds=599) == 300
    assert decide.next_backoff(300, ran_seconds=600) == 10


def test_crash_loop_message_is_worded_like_the_kubelets() -> None:
    """The waiting message of CrashLoopBackOff (Debug Running Pods shows it in
    `kubectl describe`): Go durations and name_namespace(uid)."""
    pod = {"metadata": {"name": "m-1", "namespace": "ns", "uid": "u1"}}
    message = decide.crash_loop_message(160, "tensorflow-serving", pod)
    assert message == "back-off 2m40s restarting failed container=tensorflow-serving pod=m-1_ns(u1)"
    assert decide.go_duration(300) == "5m0s"
    assert decide.go_duration(10) == "10s"


def test_log_fallback_keeps_at_most_80_lines() -> None:
    """Determine the Reason for Pod Failure: FallbackToLogsOnError takes the
    log's end, "limited to 2048 bytes or 80 lines, whichever is smaller"."""
    lines = [f"line {i}" for i in range(200)]
    text = decide.log_fallback(lines)
    assert text.splitlines() == lines[-80:]


def test_log_fallback_keeps_at_most_the_last_2048_bytes() -> None:
    """Determine the Reason for Pod Failure: 2048 bytes when that is smaller
    than 80 lines; the end of the log is kept (the error is last)."""
    lines = [f"{i:03d}" + "x" * 96 for i in range(50)]
    text = decide.log_fallback(lines)
    assert len(text.encode()) == 2048
    assert text.endswith(lines[-1] + "\n")


def test_termination_message_falls_back_to_logs_only_on_error() -> None:
    """Determine the Reason for Pod Failure: the file wins; the logs are used
    with FallbackToLogsOnError only when the container failed."""
    tail = ("Failed to start server. Error: NOT_FOUND",)
    fallback = "FallbackToLogsOnError"
    assert decide.termination_message(fallback, 255, "", tail) == tail[0] + "\n"
    assert decide.termination_message(fallback, 0, "", tail) == ""
    assert decide.termination_message("File", 255, "", tail) == ""
    assert decide.termination_message(fallback, 255, "from file", tail) == "from file"
    assert decide.exit_reason(0) == "Completed"
    assert decide.exit_reason(137) == "Error"


RENDERED_CONTAINER: dict[str, Any] = {
    "name": "tensorflow-serving",
    "ports": [{"name": "grpc", "containerPort": 8500}],
    "startupProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 5, "failureThreshold": 120},
    "readinessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10, "failureThreshold": 3},
    "livenessProbe": {"tcpSocket": {"port": 8500}, "periodSeconds": 20, "successThreshold": 4},
}


def test_probe_specs_resolve_named_ports_and_take_the_documented_defaults() -> None:
    """Configure Liveness, Readiness and Startup Probes, "Configure Probes":
    defaults initialDelaySeconds 0, timeoutSeconds 1, successThreshold 1
    (liveness and startup must use 1), failureThreshold 3; a named port."""
    startup = decide.probe_spec(RENDERED_CONTAINER, "startup")
    assert startup == ProbeSpec("startup", 8500, 0, 5, 1, 1, 120)
    liveness = decide.probe_spec(RENDERED_CONTAINER, "liveness")
    assert liveness is not None and liveness.success_threshold == 1
    assert decide.probe_spec({"name": "x"}, "readiness") is None
    no_port = {"readinessProbe": {"tcpSocket": {"port": "http"}}}
    assert decide.probe_spec(no_port, "readiness") is None


def _run(spec: ProbeSpec, outcomes: str) -> list[bool | None]:
    state = decide.initial_probe_state(spec.kind)
    results = []
    for outcome in outcomes:
        state = decide.record_probe(state, outcome == "+", spec)
        results.append(state.result)
    return results


def test_probe_result_flips_only_after_consecutive_thresholds() -> None:
    """Configure Probes: failureThreshold consecutive failures make a probe
    fail, successThreshold consecutive successes make it succeed again."""
    readiness = ProbeSpec("readiness", 8500, 0, 1, 1, 2, 3)
    assert decide.initial_probe_state("readiness") == ProbeState(False)
    assert _run(readiness, "+ + - - + - - - + +".replace(" ", "")) == [
        False, True, True, True, True, True, True, False, False, True,
    ]  # fmt: skip


def test_initial_probe_results() -> None:
    """Pod Lifecycle, "Container probes": a container is not ready until its
    readiness probe succeeds; liveness counts as success until it fails;
    startup has no result until it succeeds or exhausts its threshold."""
    assert decide.initial_probe_state("liveness").result is True
    startup = ProbeSpec("startup", 8500, 0, 1, 1, 1, 3)
    assert _run(startup, "--") == [None, None]
    assert _run(startup, "---") == [None, None, False]
    assert _run(startup, "-+") == [None, True]


@pytest.mark.parametrize(
    ("unready", "conditions", "expected"),
    [
        ([], [{"type": GATE, "status": "True"}], ("True", "")),
        (
            ["tensorflow-serving"],
            [{"type": GATE, "status": "True"}],
            ("False", "ContainersNotReady"),
        ),
        ([], [], ("False", "ReadinessGatesNotReady")),
        ([], [{"type": GATE, "status": "False"}], ("False", "ReadinessGatesNotReady")),
    ],
)
def test_ready_needs_ready_containers_and_every_gate_true(
    unready: list[str], conditions: list[dict[str, str]], expected: tuple[str, str]
) -> None:
    """Pod Lifecycle, "Pod readiness": Ready is True only when all containers
    are ready AND every readiness gate's condition is True."""
    value = decide.pod_ready(unready, [GATE], conditions)
    assert (value.status, value.reason) == expected


def _pod(
    conditions: list[dict[str, Any]], statuses: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"readinessGates": [{"conditionType": GATE}]},
        "status": {
            "phase": "Running",
            "startTime": NOW,
            "conditions": conditions,
            "containerStatuses": statuses or [],
        },
    }


def test_status_patch_never_writes_the_gate_condition_and_converges() -> None:
    """Pod Lifecycle, "Pod readiness": the kubelet reads readiness-gate
    conditions and never writes them; a strategic-merge patch by type keeps them."""
    record = ContainerRecord("tensorflow-serving", "img", "standin://1", 0, NOW, True, True, "")
    gate = {"type": GATE, "status": "True", "lastTransitionTime": NOW}
    patch = decide.status_patch(_pod([gate]), [record], NOW, NOW)
    assert patch is not None
    types = [c["type"] for c in patch["status"]["conditions"]]
    assert types == ["ContainersReady", "Ready"]
    assert patch["status"]["conditions"][1]["status"] == "True"
    # The pod as the API returns it after that patch: nothing more to write.
    written = _pod([gate, *patch["status"]["conditions"]], patch["status"]["containerStatuses"])
    assert decide.status_patch(written, [record], NOW, "2026-12-01T06:05:00Z") is None
    # The gate turns False: Ready follows, ContainersReady keeps its transition time.
    closed = dict(gate, status="False")
    later = "2026-12-01T06:10:00Z"
    written["status"]["conditions"][0] = closed
    patch = decide.status_patch(written, [record], NOW, later)
    assert patch is not None
    ready = {c["type"]: c for c in patch["status"]["conditions"]}
    assert ready["Ready"]["status"] == "False"
    assert ready["Ready"]["lastTransitionTime"] == later
    assert ready["ContainersReady"]["lastTransitionTime"] == NOW


def test_status_patch_puts_the_sandbox_ip_back_when_someone_changed_it() -> None:
    """Pod networking: a pod's containers share the network namespace the
    kubelet created with the sandbox, so its IP never changes; the kubelet's
    status sync reports that IP (kwok's pod-create stage, played twice, wrote
    a second one in the API server restart test, and the server answered on
    the first)."""
    record = ContainerRecord("tensorflow-serving", "img", "standin://1", 0, NOW, True, True, "")
    pod = _pod([])
    pod["status"]["podIP"] = "127.3.0.11"
    patch = decide.status_patch(pod, [record], NOW, NOW, sandbox_ip="127.3.0.6")
    assert patch is not None
    assert patch["status"]["podIP"] == "127.3.0.6"
    # A strategic merge of podIPs by ip would keep the wrong one beside it.
    assert patch["status"]["podIPs"] == [{"ip": "127.3.0.6"}, {"$patch": "replace"}]
    # Written back: nothing more to write, and no IP field in later patches.
    written = _pod(patch["status"]["conditions"], patch["status"]["containerStatuses"])
    written["status"]["podIP"] = "127.3.0.6"
    assert decide.status_patch(written, [record], NOW, NOW, sandbox_ip="127.3.0.6") is None
    # Before the sandbox exists (no IP yet) the kubelet reports none.
    assert "podIP" not in (decide.status_patch(pod, [record], NOW, NOW) or {"status": {}})["status"]


def test_container_status_after_an_exit() -> None:
    """Pod Lifecycle, "Container states": a restarted container shows its
    last run in lastState.terminated and waits in CrashLoopBackOff."""
    terminated = decide.terminated_state(255, "Failed to start server\n", NOW, NOW, "standin://1")
    record = ContainerRecord(
        "tensorflow-serving", "img", "standin://1", restart_count=1,
        waiting_reason="CrashLoopBackOff", waiting_message="back-off 10s ...",
        last_terminated=terminated,
    )  # fmt: skip
    status = decide.container_status(record)
    assert status["state"] == {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s ..."}
    }
    assert status["lastState"]["terminated"]["exitCode"] == 255
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert status["restartCount"] == 1 and not status["ready"] and not status["started"]
    assert decide.status_patch(_pod([]), [record], NOW, NOW)["status"]["phase"] == "Running"  # type: ignore[index]


def test_kwok_stages_leave_model_server_pods_to_the_standin_only_when_it_runs() -> None:
    """With the stand-in, kwok's start, readiness and delete stages skip pods
    labelled serving.tfoperator.dev/servedmodel (the stand-in's kubelet owns
    them); without it (benchmarks, test_scale) the stages are the file as written."""
    import yaml

    from localdev.sim.cluster import STAGES_FILE, render_stages

    assert render_stages(exclude_model_servers=False) == STAGES_FILE.read_text()
    stages = {s["metadata"]["name"]: s for s in yaml.safe_load_all(render_stages(True)) if s}
    label = '.metadata.labels["serving.tfoperator.dev/servedmodel"]'
    for name, stage in stages.items():
        keys = {e["key"]: e["operator"] for e in stage["spec"]["selector"]["matchExpressions"]}
        owned = name in ("sim-pod-start", "sim-pod-readiness", "sim-pod-delete")
        assert (keys.get(label) == "DoesNotExist") == owned, name


def test_a_probe_worker_first_probes_at_its_next_tick_after_startup() -> None:
    """Workers tick from the container's start; a readiness probe with a 10 s
    period whose startup probe passed at 23 s first probes at 30 s, not at 23 s."""
    spec = decide.ProbeSpec("readiness", 8500, 0.0, 10.0, 1.0, 1, 3)
    assert decide.first_probe_at(100.0, 123.0, spec) == 130.0
    assert decide.first_probe_at(100.0, 130.0, spec) == 130.0
    delayed = decide.ProbeSpec("liveness", 8500, 15.0, 10.0, 1.0, 1, 3)
    assert decide.first_probe_at(100.0, 101.0, delayed) == 115.0
    assert decide.first_probe_at(100.0, 116.0, delayed) == 125.0
