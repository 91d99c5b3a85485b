"""The kubelet's decisions for model-server pods, as pure functions.

``localdev.standin.kubelet`` observes a pod and its server process, asks
these functions what a kubelet would do or write, and applies the answer.
Nothing here does I/O, reads a clock or knows about asyncio, so every rule is
unit-tested on its own (tests/tooling/test_kubelet_decisions.py).

Each rule names the Kubernetes documentation page it follows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

Body = dict[str, Any]

# Pod Lifecycle, "Container restarts"
# (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-restarts):
# 10 s, doubling, capped at 300 s; reset once a container ran 10 minutes.
BACKOFF_INITIAL_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0
BACKOFF_RESET_AFTER_SECONDS = 600.0

# Determine the Reason for Pod Failure, "Customizing the termination message"
# (https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/):
# FallbackToLogsOnError uses the last chunk of the log, "limited to 2048
# bytes or 80 lines, whichever is smaller".
LOG_FALLBACK_MAX_LINES = 80
LOG_FALLBACK_MAX_BYTES = 2048

# Configure Liveness, Readiness and Startup Probes, "Configure Probes"
# (https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/#configure-probes).
PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}


# ----- back-off ---------------------------------------------------------------


def next_backoff(previous: float | None, ran_seconds: float) -> float:
    """The delay before restarting a container that just exited.

    ``previous`` is the delay used before its last start (None: never backed
    off); ``ran_seconds`` how long that run lasted. Follows Pod Lifecycle,
    "Container restarts": 10 s, 20 s, 40 s, ... capped at 300 s, and back to
    10 s once the container ran 10 minutes without a problem.
    """
    if previous is None or ran_seconds >= BACKOFF_RESET_AFTER_SECONDS:
        return BACKOFF_INITIAL_SECONDS
    return min(previous * 2, BACKOFF_MAX_SECONDS)


def go_duration(seconds: float) -> str:
    """A whole number of seconds the way Go's ``time.Duration`` prints it
    (``10s``, ``1m20s``, ``5m0s``): the kubelet's back-off messages use it."""
    total = int(seconds)
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def pod_ref(pod: Mapping[str, Any]) -> str:
    """``name_namespace(uid)``, how the kubelet names a pod in messages."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})"


def crash_loop_message(delay: float, container: str, pod: Mapping[str, Any]) -> str:
    """The waiting message of a container in CrashLoopBackOff, worded like the kubelet's."""
    return (
        f"back-off {go_duration(delay)} restarting failed container={container} pod={pod_ref(pod)}"
    )


# ----- termination ------------------------------------------------------------


def log_fallback(log_tail: Sequence[str]) -> str:
    """The end of a container's log as FallbackToLogsOnError uses it: the
    last 80 lines, of those the last 2048 bytes (whichever is smaller)
    (Determine the Reason for Pod Failure)."""
    lines = list(log_tail)[-LOG_FALLBACK_MAX_LINES:]
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    raw = text.encode()
    if len(raw) <= LOG_FALLBACK_MAX_BYTES:
        return text
    return raw[-LOG_FALLBACK_MAX_BYTES:].decode(errors="replace")


def termination_message(
    policy: str | None, exit_code: int, message_file: str, log_tail: Sequence[str]
) -> str:
    """``state.terminated.message``: the termination message file, or with
    ``FallbackToLogsOnError`` and an empty file after a failure, the log's end
    (Determine the Reason for Pod Failure)."""
    if message_file:
        return message_file
    if policy == "FallbackToLogsOnError" and exit_code != 0:
        return log_fallback(log_tail)
    return ""


def exit_reason(exit_code: int) -> str:
    """``state.terminated.reason`` for an exit code: Completed for 0, Error otherwise."""
    return "Completed" if exit_code == 0 else "Error"


# ----- probes -----------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSpec:
    """One tcpSocket probe of a container, defaults filled in."""

    kind: str  # startup, readiness or liveness
    port: int
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int


def container_port(container: Mapping[str, Any], port: int | str) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    return None


def probe_spec(container: Mapping[str, Any], kind: str) -> ProbeSpec | None:
    """The container's ``<kind>Probe`` if it is a tcpSocket probe whose port resolves.

    Missing fields take the documented defaults (Configure Liveness, Readiness
    and Startup Probes); other handlers (exec, httpGet, grpc) are not emulated.
    """
    probe = container.get(f"{kind}Probe")
    if not probe or "tcpSocket" not in probe:
        return None
    port = container_port(container, probe["tcpSocket"].get("port", ""))
    if port is None:
        return None
    values = {key: probe.get(key, default) for key, default in PROBE_DEFAULTS.items()}
    return ProbeSpec(
        kind=kind,
        port=port,
        initial_delay=float(values["initialDelaySeconds"]),
        period=float(values["periodSeconds"]),
        timeout=float(values["timeoutSeconds"]),
        # Liveness and startup probes must use successThreshold 1 (API validation).
        success_threshold=int(values["successThreshold"]) if kind == "readiness" else 1,
        failure_threshold=int(values["failureThreshold"]),
    )


@dataclass(frozen=True)
class ProbeState:
    """A probe's current result and its run of equal outcomes.

    ``result`` only flips after ``successThreshold`` consecutive successes or
    ``failureThreshold`` consecutive failures (Configure Probes).
    """

    result: bool | None
    successes: int = 0
    failures: int = 0


def first_probe_at(container_start: float, now: float, spec: ProbeSpec) -> float:
    """When a probe worker first probes, on the clock of `container_start`.

    The kubelet starts one worker per probe when the container starts; each
    ticks every periodSeconds, skips ticks before initialDelaySeconds, and a
    liveness or readiness worker also skips its ticks until the startup probe
    has succeeded (kubelet pkg/kubelet/prober/worker.go; docs: Configure
    Liveness, Readiness and Startup Probes). So the first probe comes at the
    first tick at or after both the initial delay and `now`.
    """
    earliest = container_start + spec.initial_delay
    if now <= earliest or spec.period <= 0:
        return max(earliest, now)
    ticks = math.ceil((now - earliest) / spec.period)
    return earliest + ticks * spec.period


def initial_probe_state(kind: str) -> ProbeState:
    """A fresh container: not ready, alive, not yet started (the kubelet's
    initial results for readiness, liveness and startup probes)."""
    return ProbeState(result={"readiness": False, "liveness": True}.get(kind))


def record_probe(state: ProbeState, ok: bool, spec: ProbeSpec) -> ProbeState:
    """The state after one probe outcome."""
    if ok:
        successes = state.successes + 1
        result = True if successes >= spec.success_threshold else state.result
        return replace(state, result=result, successes=successes, failures=0)
    failures = state.failures + 1
    result = False if failures >= spec.failure_threshold else state.result
    return replace(state, result=result, successes=0, failures=failures)


# ----- pod conditions ---------------------------------------------------------


@dataclass(frozen=True)
class ConditionValue:
    """A condition's status, reason and message (no transition time)."""

    status: str
    reason: str = ""
    message: str = ""


def containers_ready(unready: Sequence[str]) -> ConditionValue:
    """ContainersReady: True when every container is ready (Pod Lifecycle, "Pod conditions")."""
    if not unready:
        return ConditionValue("True")
    names = " ".join(unready)
    return ConditionValue(
        "False", "ContainersNotReady", f"containers with unready status: [{names}]"
    )


def pod_ready(
    unready: Sequence[str], gates: Sequence[str], conditions: Sequence[Mapping[str, Any]]
) -> ConditionValue:
    """Ready = ContainersReady AND every readiness gate's condition True
    (Pod Lifecycle, "Pod readiness"; worded like the kubelet's status manager)."""
    containers = containers_ready(unready)
    if containers.status != "True":
        return containers
    by_type = {c.get("type"): c.get("status") for c in conditions}
    for gate in gates:
        if gate not in by_type:
            message = f'corresponding condition of pod readiness gate "{gate}" does not exist.'
            return ConditionValue("False", "ReadinessGatesNotReady", message)
        if by_type[gate] != "True":
            message = (
                f'the status of pod readiness gate "{gate}" is not "True", but {by_type[gate]}'
            )
            return ConditionValue("False", "ReadinessGatesNotReady", message)
    return ConditionValue("True")


def condition_patch(
    kind: str, value: ConditionValue, observed: Sequence[Mapping[str, Any]], now: str
) -> Body:
    """One condition for a strategic-merge status patch; its transition time
    moves only when its status changes."""
    previous = next((c for c in observed if c.get("type") == kind), None)
    since = now
    if previous is not None and previous.get("status") == value.status:
        since = previous.get("lastTransitionTime") or now
    return {
        "type": kind,
        "status": value.status,
        "reason": value.reason or None,
        "message": value.message or None,
        "lastTransitionTime": since,
    }


def conditions_differ(
    wanted: Sequence[Mapping[str, Any]], observed: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether any wanted condition's status, reason or message differs from the pod's."""
    by_type = {c.get("type"): c for c in observed}
    for cond in wanted:
        have = by_type.get(cond["type"]) or {}
        for key in ("status", "reason", "message"):
            if (have.get(key) or None) != (cond.get(key) or None):
                return True
    return False


def readiness_gates(pod: Mapping[str, Any]) -> list[str]:
    """The condition types the pod's readiness gates name."""
    return [g["conditionType"] for g in (pod.get("spec") or {}).get("readinessGates") or []]


# ----- container and pod status -----------------------------------------------


@dataclass(frozen=True)
class ContainerRecord:
    """What the kubelet knows of one container; the status is built from it."""

    name: str
    image: str
    container_id: str = ""
    restart_count: int = 0
    running_since: str | None = None
    started: bool = False
    ready: bool = False
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: Body | None = None
    # state.terminated: a finished init container (Completed) or one that
    # just failed, before its restart.
    terminated: Body | None = None

    @property
    def ever_started(self) -> bool:
        """The container ran at least once (the pod has left Pending)."""
        return self.running_since is not None or self.restart_count > 0


def terminated_state(
    exit_code: int, message: str, started_at: str, finished_at: str, container_id: str
) -> Body:
    """``state.terminated`` / ``lastState.terminated`` of a finished run
    (Pod Lifecycle, "Container states")."""
    body: Body = {
        "exitCode": exit_code,
        "reason": exit_reason(exit_code),
        "startedAt": started_at,
        "finishedAt": finished_at,
        "containerID": container_id,
    }
    if message:
        body["message"] = message
    return body


def container_status(record: ContainerRecord) -> Body:
    """One entry of ``status.containerStatuses`` (Pod Lifecycle, "Container states")."""
    state: Body
    if record.terminated is not None:
        state = {"terminated": record.terminated}
    elif record.running_since is not None:
        state = {"running": {"startedAt": record.running_since}}
    else:
        waiting: Body = {"reason": record.waiting_reason}
        if record.waiting_message:
            waiting["message"] = record.waiting_message
        state = {"waiting": waiting}
    status: Body = {
        "name": record.name,
        "image": record.image,
        "imageID": "",
        "ready": record.ready,
        "started": record.started,
        "restartCount": record.restart_count,
        "state": state,
        "lastState": {"terminated": record.last_terminated} if record.last_terminated else {},
    }
    if record.container_id:
        status["containerID"] = record.container_id
    return status


def _same_container_status(wanted: Body, observed: Mapping[str, Any]) -> bool:
    return all(observed.get(key) == value for key, value in wanted.items() if key != "imageID")


def _shows(status: Mapping[str, Any], key: str, wanted: Sequence[Body]) -> bool:
    observed = {c.get("name"): c for c in status.get(key) or []}
    return all(_same_container_status(c, observed.get(c["name"]) or {}) for c in wanted)


def initialized(init_records: Sequence[ContainerRecord]) -> ConditionValue:
    """Initialized: True once every init container exited 0 (Pod Lifecycle,
    "Pod conditions"; worded like the kubelet's status manager)."""
    pending = [
        r.name for r in init_records if not (r.terminated and r.terminated.get("exitCode") == 0)
    ]
    if not pending:
        return ConditionValue("True")
    names = " ".join(pending)
    return ConditionValue(
        "False", "ContainersNotInitialized", f"containers with incomplete status: [{names}]"
    )


def status_patch(
    pod: Mapping[str, Any],
    records: Sequence[ContainerRecord],
    start_time: str,
    now: str,
    init_records: Sequence[ContainerRecord] = (),
    sandbox_ip: str = "",
) -> Body | None:
    """The strategic-merge status patch that makes the pod show ``records``
    (and its init containers' ``init_records``), or None when it shows them already.

    Conditions merge by type, so the patch never touches a readiness-gate
    condition someone else (the operator) owns; it only reads them.

    ``sandbox_ip``: the IP the pod's containers run on. A pod keeps its IP for
    its whole life (Kubernetes docs, "Pod networking": the containers of a
    pod share one network namespace, which the kubelet creates once with the
    pod sandbox), and the kubelet's status sync reports the sandbox's IP, so
    a podIP written by anyone else is put back at the next sync. kwok's
    pod-create stage can run twice for one pod (a failed patch retried while
    a fresh event queues it again) and allocates a new IP each time.
    """
    status = pod.get("status") or {}
    observed_conditions = status.get("conditions") or []
    unready = [r.name for r in records if not r.ready]
    values = {
        "ContainersReady": containers_ready(unready),
        "Ready": pod_ready(unready, readiness_gates(pod), observed_conditions),
    }
    if init_records:
        values = {"Initialized": initialized(init_records), **values}
    conditions = [condition_patch(k, v, observed_conditions, now) for k, v in values.items()]
    groups = {"containerStatuses": [container_status(r) for r in records]}
    if init_records:
        groups["initContainerStatuses"] = [container_status(r) for r in init_records]
    phase = "Running" if any(r.ever_started for r in records) else "Pending"
    ip_fields: Body = {}
    if sandbox_ip and status.get("podIP") != sandbox_ip:
        # {"$patch": "replace"}: podIPs merges by ip otherwise, keeping the wrong one.
        ip_fields = {"podIP": sandbox_ip, "podIPs": [{"ip": sandbox_ip}, {"$patch": "replace"}]}
    unchanged = (
        not ip_fields
        and status.get("phase") == phase
        and bool(status.get("startTime"))
        and not conditions_differ(conditions, observed_conditions)
        and all(_shows(status, key, wanted) for key, wanted in groups.items())
    )
    if unchanged:
        return None
    return {
        "status": {
            "phase": phase,
            "startTime": status.get("startTime") or start_time,
            "conditions": conditions,
            **groups,
            **ip_fields,
        }
    }
