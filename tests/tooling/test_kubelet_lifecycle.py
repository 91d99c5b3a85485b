"""The kubelet emulation's lifecycle with fake processes (no cluster, no TensorFlow).

The process exiting by itself cannot happen with today's ``PodServer`` (it
never exits), so the crash-loop path is shown here with a fake process, and
the writes go to a recording ``PodApi`` that applies them to a pod dict the
way the API server's strategic merge does. Each test names the Kubernetes
documentation page it follows.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from localdev.standin.kubelet import ExitStatus, PodApi, PodKubelets, ServerProcess

GATE = "serving.tfoperator.dev/model-available"
LOG = ("Loading servable: {name: m version: 3}", "Failed to start server. Error: NOT_FOUND: x")


def model_pod(**container: Any) -> dict[str, Any]:
    """A labelled pod as kwok's create stage leaves it (IP, Pending)."""
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}},
        "spec": {
            "nodeName": "sim-cpu-1",
            "terminationGracePeriodSeconds": 1,
            "readinessGates": [{"conditionType": GATE}],
            "containers": [
                {
                    "name": "tensorflow-serving",
                    "image": "tensorflow/serving:2.19.1",
                    "ports": [{"name": "grpc", "containerPort": 8500}],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    **container,
                }
            ],
        },
        "status": {"phase": "Pending", "podIP": "127.0.0.1", "conditions": []},
    }


class RecordingApi(PodApi):
    """Applies status patches to one pod dict (conditions merge by type, the
    rest is replaced) and feeds the result back like a watch event."""

    def __init__(self, pod: dict[str, Any]) -> None:
        super().__init__(core=None)
        self.pod = pod
        self.events: list[tuple[str, str]] = []
        self.deleted = False
        self.kubelets: PodKubelets | None = None

    async def patch_status(self, pod: Mapping[str, Any], body: dict[str, Any]) -> None:
        status = self.pod["status"]
        for key, value in body["status"].items():
            if key == "conditions":
                kept = [
                    c for c in status["conditions"] if c["type"] not in {v["type"] for v in value}
                ]
                status["conditions"] = kept + value
            else:
                status[key] = value
        assert self.kubelets is not None
        self.kubelets.event("MODIFIED", copy.deepcopy(self.pod))

    async def delete_now(self, pod: Mapping[str, Any]) -> None:
        self.deleted = True

    async def event(
        self, pod: Mapping[str, Any], container: str, kind: str, reason: str, message: str
    ) -> None:
        self.events.append((reason, message))


class ExitingProcess:
    """A server that fails its initial load and exits 255 (what main.cc does
    at 2.19.1 when the first version ends in END)."""

    listening = False
    grpc_port = 8500
    log_lines: Sequence[str] = LOG

    async def run(self) -> ExitStatus:
        await asyncio.sleep(0.05)
        return ExitStatus(255, "Error", LOG)

    async def kill(self) -> None:
        return None


class SilentProcess:
    """A server that runs but never opens its port (a missing base path)."""

    listening = False
    grpc_port = 8500
    log_lines: Sequence[str] = ("waiting for the model",)

    def __init__(self) -> None:
        self._killed = asyncio.Event()

    async def run(self) -> ExitStatus:
        await self._killed.wait()
        return ExitStatus(137, "Error", tuple(self.log_lines))

    async def kill(self) -> None:
        self._killed.set()


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` in the event loop until it is truthy."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def container_status(api: RecordingApi) -> dict[str, Any]:
    statuses = api.pod["status"].get("containerStatuses") or [{}]
    return dict(statuses[0])


def test_exit_shows_terminated_state_and_crash_loop_back_off() -> None:
    """Pod Lifecycle, "Container restarts" and "Container states"; Determine
    the Reason for Pod Failure (FallbackToLogsOnError): an exit shows
    lastState.terminated with the log's end, restartCount + 1, waiting
    CrashLoopBackOff with 10 s, then a restart and 20 s."""

    async def scenario() -> None:
        pod = model_pod()
        api = RecordingApi(pod)
        starts: list[ServerProcess] = []

        def factory(_: Mapping[str, Any]) -> ServerProcess:
            starts.append(ExitingProcess())
            return starts[-1]

        kubelets = PodKubelets(api, factory)
        api.kubelets = kubelets
        kubelets.event("ADDED", copy.deepcopy(pod))
        first = await until(
            lambda: (s := container_status(api)).get("restartCount") == 1 and s, 5, "first exit"
        )
        assert first["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert first["state"]["waiting"]["message"] == (
            "back-off 10s restarting failed container=tensorflow-serving pod=p_ns(u)"
        )
        terminated = first["lastState"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (255, "Error")
        assert terminated["message"] == "\n".join(LOG) + "\n"
        assert api.pod["status"]["phase"] == "Running"
        assert (
            "BackOff",
            "Back-off restarting failed container tensorflow-serving in pod p_ns(u)",
        ) in api.events
        began = time.monotonic()
        second = await until(
            lambda: (s := container_status(api)).get("restartCount") == 2 and s, 20, "second exit"
        )
        assert time.monotonic() - began >= 9, "restarted before the 10 s back-off"
        assert "back-off 20s" in second["state"]["waiting"]["message"]
        assert len(starts) == 2
        # Deleted while backing off: no container runs, the pod goes at once.
        kubelets.event(
            "MODIFIED",
            {**copy.deepcopy(api.pod), "metadata": {**pod["metadata"], "deletionTimestamp": "x"}},
        )
        await until(lambda: api.deleted, 2, "the pod object deleted at once")
        assert len(starts) == 2
        await kubelets.stop_all()

    asyncio.run(scenario())


def test_startup_probe_exhausting_its_threshold_kills_and_restarts() -> None:
    """Configure Liveness, Readiness and Startup Probes ("Protect slow
    starting containers with startup probes"): after failureThreshold failed
    startup probes the kubelet kills the container (exit 137 after the grace
    period: the server ignores SIGTERM) and restarts it."""

    async def probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
        return False, f"dial tcp {host}:{port}: connect: connection refused"

    async def scenario() -> None:
        pod = model_pod(
            startupProbe={
                "tcpSocket": {"port": "grpc"},
                "periodSeconds": 0.1,
                "failureThreshold": 3,
            },
            lifecycle={"preStop": {"sleep": {"seconds": 5}}},
        )
        api = RecordingApi(pod)
        kubelets = PodKubelets(api, lambda _: SilentProcess(), probe=probe)
        api.kubelets = kubelets
        kubelets.event("ADDED", copy.deepcopy(pod))
        began = time.monotonic()
        status = await until(
            lambda: (s := container_status(api)).get("restartCount") == 1 and s, 5, "the kill"
        )
        # preStop (5 s) is cut at the grace period (1 s).
        assert time.monotonic() - began < 3
        assert status["lastState"]["terminated"]["exitCode"] == 137
        reasons = [reason for reason, _ in api.events]
        assert reasons.count("Unhealthy") == 3
        assert (
            "Killing",
            "Container tensorflow-serving failed startup probe, will be restarted",
        ) in api.events
        assert not status["started"]
        await kubelets.stop_all()

    asyncio.run(scenario())
