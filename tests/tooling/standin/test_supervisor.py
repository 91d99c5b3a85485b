"""Which pods get served, fed with watch events directly (no API server)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from localdev.standin.paths import NoCluster
from localdev.standin.pods import PodSupervisor
from localdev.standin.server import Runtime

from .helpers import LoopThread, add_version, models_config, pod_dict, wait_until

pytestmark = pytest.mark.tensorflow

IP = "127.1.254.7"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_pod(name: str, models: Path, port: int, **changes: Any) -> dict[str, Any]:
    config_dir = models.parent / "config"
    config_dir.mkdir(exist_ok=True)
    config_file = config_dir / "models.config"
    if not config_file.exists():
        # Written once: a run reading it while it is rewritten would start with an
        # empty config (and serve no model), as the real server would.
        config_file.write_text(
            models_config('name: "demo" base_path: "/models/demo" model_platform: "tensorflow"')
        )
    pod = pod_dict(
        name=name,
        ip=IP,
        args=[f"--port={port}", "--model_config_file=/etc/tfserving/models.config"],
        volumes=[
            {"name": "models", "hostPath": {"path": str(models)}},
            {"name": "config", "hostPath": {"path": str(config_dir)}},
        ],
        mounts=[
            {"name": "models", "mountPath": "/models"},
            {"name": "config", "mountPath": "/etc/tfserving"},
        ],
    )
    pod["metadata"].update(changes.get("metadata", {}))
    pod["status"].update(changes.get("status", {}))
    return pod


def states(port: int) -> dict[int, int]:
    with grpc.insecure_channel(f"{IP}:{port}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "demo"
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, timeout=5
        )
        return {s.version: s.state for s in response.model_version_status}


def test_pod_events(
    loop_thread: LoopThread, runtime: Runtime, tmp_path: Path, half_plus_three: Path
) -> None:
    models = tmp_path / "models"
    add_version(models / "demo", 1, half_plus_three)
    port = free_port(IP)
    supervisor = PodSupervisor(runtime, NoCluster())

    def event(kind: str, pod: dict[str, Any]) -> None:
        loop_thread.loop.call_soon_threadsafe(supervisor.event, kind, pod)

    def served() -> set[str]:
        return {s.spec.name for s in supervisor.servers.values()}

    try:
        # Pending, then Running without an IP: not served yet.
        event("ADDED", make_pod("a", models, port, status={"phase": "Pending", "podIP": ""}))
        event("MODIFIED", make_pod("a", models, port, status={"podIP": ""}))
        # A pod the stand-in cannot serve is logged and skipped.
        broken = make_pod("broken", models, port)
        broken["spec"]["containers"][0]["name"] = "sidecar"
        broken["spec"]["containers"][0]["command"] = ["/bin/sleep"]
        event("ADDED", broken)
        event("MODIFIED", make_pod("a", models, port))
        wait_until(lambda: states(port) == {1: 30}, what="pod a serving v1")
        assert served() == {"a"}

        # A second pod on the same address waits for the first one to go.
        event("ADDED", make_pod("b", models, port, metadata={"uid": "uid-b"}))
        # Terminating: still served, like the real server during the grace period.
        terminating = make_pod(
            "a", models, port, metadata={"deletionTimestamp": "2030-01-01T00:00:00Z"}
        )
        event("MODIFIED", terminating)
        wait_until(lambda: served() == {"a"}, what="a still served")
        event("DELETED", terminating)
        wait_until(lambda: served() == {"b"}, what="b served once a is gone")
        wait_until(lambda: states(port) == {1: 30}, what="pod b serving v1")

        # A pod that leaves Running is stopped; a relist without it too.
        event(
            "MODIFIED",
            make_pod("b", models, port, metadata={"uid": "uid-b"}, status={"phase": "Failed"}),
        )
        wait_until(lambda: not served(), what="b stopped")
        event("ADDED", make_pod("c", models, port))
        wait_until(lambda: served() == {"c"}, what="c served")
        loop_thread.loop.call_soon_threadsafe(supervisor.resync, [])
        wait_until(lambda: not served(), what="c stopped after an empty relist")
    finally:
        loop_thread.run(supervisor.stop_all())
