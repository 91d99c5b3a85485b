"""Init containers run on this machine for real (localdev/standin/kubelet_init.py).

No cluster: the pod is a dict, Secrets come from a dict lookup, and the
program is the rclone the local cluster builds (skipped when not built yet),
copying with its local backend into the pod's emptyDir folder, which the
stand-in server then resolves its own mount of the same volume to. The
lifecycle part uses a recording API and fake runs (test_kubelet_lifecycle.py's
harness), following Pod Lifecycle, "Init containers".
"""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from localdev.sim import toolchain
from localdev.standin.kubelet import PodKubelets
from localdev.standin.kubelet_init import (
    CreateContainerConfigError,
    HostInitRunner,
    container_env,
)
from localdev.standin.paths import HostPath, PathResolver, empty_dir_path
from tests.tooling.test_kubelet_lifecycle import (
    ExitingProcess,
    RecordingApi,
    model_pod,
    until,
)

SECRET_VALUE = "s3cr3t-value"


class Lookup:
    """Secrets and ConfigMaps from dicts (the ClusterLookup the stand-in reads)."""

    def __init__(self) -> None:
        self.secrets = {
            ("ns", "creds"): {"data": {"KEY": base64.b64encode(SECRET_VALUE.encode()).decode()}}
        }

    def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.secrets.get((namespace, name))

    def get_configmap(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return {"data": {"region": "eu-west-1"}} if name == "settings" else None

    def get_pvc(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    def get_pv(self, name: str) -> Mapping[str, Any] | None:
        return None


def secret_ref(key: str, optional: bool = False, name: str = "creds") -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key, "optional": optional}}


def test_env_is_resolved_as_the_kubelet_does() -> None:
    container = {
        "env": [
            {"name": "PLAIN", "value": "x"},
            {"name": "FROM_SECRET", "valueFrom": secret_ref("KEY")},
            {"name": "OPTIONAL_MISSING", "valueFrom": secret_ref("NOPE", optional=True)},
            {"name": "NO_SECRET", "valueFrom": secret_ref("KEY", optional=True, name="gone")},
            {
                "name": "FROM_CM",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "region"}},
            },
        ]
    }
    assert container_env(container, "ns", Lookup()) == {
        "PLAIN": "x",
        "FROM_SECRET": SECRET_VALUE,
        "FROM_CM": "eu-west-1",
    }


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        (secret_ref("NOPE"), "couldn't find key NOPE in Secret ns/creds"),
        (secret_ref("KEY", name="gone"), 'secret "gone" not found'),
    ],
)
def test_a_required_key_or_secret_missing_is_a_config_error(
    ref: dict[str, Any], words: str
) -> None:
    with pytest.raises(CreateContainerConfigError, match=words):
        container_env({"env": [{"name": "X", "valueFrom": ref}]}, "ns", Lookup())


def puller_pod(source: Path) -> dict[str, Any]:
    """A pod whose init container copies `source` into an emptyDir, as the puller does."""
    pod = model_pod(volumeMounts=[{"name": "models", "mountPath": "/models", "readOnly": True}])
    pod["spec"]["volumes"] = [{"name": "models", "emptyDir": {}}]
    pod["spec"]["initContainers"] = [
        {
            "name": "model-pull-1",
            "image": "docker.io/rclone/rclone:1.76.0",
            "command": ["rclone"],
            "args": ["copy", str(source), "/models/.partial/1", "--error-on-no-transfer"],
            "env": [
                {"name": "RCLONE_CONFIG", "value": "/dev/null"},
                {"name": "SEEN_SECRET", "valueFrom": secret_ref("KEY")},
            ],
            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        },
        {
            "name": "model-publish",
            "image": "docker.io/rclone/rclone:1.76.0",
            "command": ["rclone"],
            "args": ["moveto", "/models/.partial", "/models/m"],
            "env": [{"name": "RCLONE_CONFIG", "value": "/dev/null"}],
            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
        },
    ]
    return pod


def rclone_binary() -> Path:
    tool = toolchain.tool("rclone")
    path = toolchain.tool_path(tool)
    if not path.is_file():
        pytest.skip("rclone not built yet (make sim-build)")
    return path


def test_the_exact_command_runs_with_mounts_mapped_to_the_pods_empty_dir(tmp_path: Path) -> None:
    source = tmp_path / "store" / "1"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"graph")
    (source / "variables" / "variables.index").write_bytes(b"index")
    root = tmp_path / "pods"
    runner = HostInitRunner(Lookup(), str(root), {"rclone": str(rclone_binary())})
    pod = puller_pod(source)

    async def run_all() -> list[int]:
        codes = []
        for container in pod["spec"]["initContainers"]:
            process = runner.prepare(pod, container)
            codes.append(await process.run())
        return codes

    first = runner.prepare(pod, pod["spec"]["initContainers"][0])
    volume = empty_dir_path(str(root), "u", "models")
    assert first.argv[1:4] == ["copy", str(source), f"{volume}/.partial/1"]
    assert first.argv[0] == str(rclone_binary())
    assert asyncio.run(run_all()) == [0, 0]
    # The server's read-only mount of the same volume leads to what was written.
    server = pod["spec"]["containers"][0]
    resolved = PathResolver(pod, server, Lookup(), str(root)).resolve("/models/m/1")
    assert resolved == HostPath(f"{volume}/m/1")
    assert (Path(volume) / "m" / "1" / "variables" / "variables.index").read_bytes() == b"index"
    assert not (Path(volume) / ".partial").exists()


def test_a_failing_program_exits_with_its_own_words(tmp_path: Path) -> None:
    runner = HostInitRunner(Lookup(), str(tmp_path / "pods"), {"rclone": str(rclone_binary())})
    pod = puller_pod(tmp_path / "no-such-version")
    process = runner.prepare(pod, pod["spec"]["initContainers"][0])
    assert asyncio.run(process.run()) != 0
    assert "directory not found" in "\n".join(process.log_lines)
    assert not any(SECRET_VALUE in line for line in process.log_lines)


class FailingInit:
    """An init run that fails once with the store's words, then succeeds."""

    runs = 0

    def __init__(self) -> None:
        self.log_lines: list[str] = []

    async def run(self) -> int:
        FailingInit.runs += 1
        await asyncio.sleep(0.01)
        if FailingInit.runs == 1:
            self.log_lines = ["NOTICE: Failed to copy: api error SignatureDoesNotMatch"]
            return 1
        return 0

    async def kill(self) -> None:
        return None


class FakeRunner:
    def prepare(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> FailingInit:
        return FailingInit()


def test_a_failed_init_container_crash_loops_and_the_server_waits() -> None:
    """Pod Lifecycle, "Init containers": a failed init container is restarted
    with the back-off (restartPolicy Always); the pod stays Pending, not
    Initialized, its server waiting in PodInitializing; the exit shows in
    lastState.terminated with the log's end (FallbackToLogsOnError)."""

    async def scenario() -> None:
        pod = puller_pod(Path("/nowhere"))
        api = RecordingApi(pod)
        starts: list[ExitingProcess] = []

        def factory(_: Mapping[str, Any]) -> ExitingProcess:
            starts.append(ExitingProcess())
            return starts[-1]

        kubelets = PodKubelets(api, factory, init_runner=FakeRunner())
        api.kubelets = kubelets
        kubelets.event("ADDED", copy.deepcopy(pod))

        def init_status() -> dict[str, Any]:
            return dict((api.pod["status"].get("initContainerStatuses") or [{}])[0])

        failed = await until(
            lambda: (s := init_status()).get("restartCount") == 1 and s, 5, "the failed pull"
        )
        assert failed["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        terminated = failed["lastState"]["terminated"]
        assert terminated["exitCode"] == 1
        assert "SignatureDoesNotMatch" in terminated["message"]
        status = api.pod["status"]
        assert status["phase"] == "Pending"
        initialized = next(c for c in status["conditions"] if c["type"] == "Initialized")
        assert (initialized["status"], initialized["reason"]) == (
            "False",
            "ContainersNotInitialized",
        )
        server = status["containerStatuses"][0]
        assert server["state"]["waiting"]["reason"] == "PodInitializing"
        assert not starts
        # After the 10 s back-off the retry succeeds; the next init runs, then the server.
        await until(lambda: starts, 20, "the server started after both init containers")
        done = api.pod["status"]["initContainerStatuses"]
        assert [s["state"]["terminated"]["reason"] for s in done] == ["Completed", "Completed"]
        kubelets.event(
            "MODIFIED",
            {**copy.deepcopy(api.pod), "metadata": {**pod["metadata"], "deletionTimestamp": "x"}},
        )
        await until(lambda: api.deleted, 5, "the pod object deleted")
        await kubelets.stop_all()

    asyncio.run(scenario())
