"""Fixtures: one event loop thread and one stand-in runtime per session, and a
factory that starts a per-pod server on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from localdev.standin.models import configure_tensorflow
from localdev.standin.paths import ClusterLookup, NoCluster
from localdev.standin.server import ExitStatus, PodServer, Runtime, serving_spec_from_pod

from .helpers import (
    LoopThread,
    add_version,
    pod_dict,
    save_example_scorer,
    save_half_plus_three,
    wait_until,
)

STATE_NAMES = dict(get_model_status_pb2.ModelVersionStatus.State.items())
STATE_BY_NUMBER = {v: k for k, v in STATE_NAMES.items()}
CONFIG_PATH = "/etc/tfserving/models.config"


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    """The event loop the pod servers run in."""
    configure_tensorflow(2)
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    """Shared model cache and thread pools, as in the stand-in process."""
    rt = Runtime.create(load_threads=2, infer_threads=2)
    yield rt
    rt.shutdown()


@pytest.fixture(scope="session")
def half_plus_three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A half_plus_three SavedModel to copy in as versions."""
    return save_half_plus_three(tmp_path_factory.mktemp("templates") / "half_plus_three")


@pytest.fixture(scope="session")
def example_scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tf.Example classifier/regressor SavedModel."""
    return save_example_scorer(tmp_path_factory.mktemp("templates") / "example_scorer")


@dataclass
class Served:
    """A started pod server and clients for it."""

    server: PodServer
    channel: grpc.Channel
    models_dir: Path
    config_file: Path
    models: model_service_pb2_grpc.ModelServiceStub = field(init=False)
    predictions: prediction_service_pb2_grpc.PredictionServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    @property
    def rest_url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.server.rest_port}"

    def status(
        self, name: str, version: int | None = None
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus over gRPC."""
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        return self.models.GetModelStatus(request, timeout=10)

    def states(self, name: str) -> dict[int, str]:
        """Version -> state name; empty while the model is unknown."""
        try:
            response = self.status(name)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return {}
            raise
        return {s.version: STATE_BY_NUMBER[s.state] for s in response.model_version_status}

    def rest(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One REST call; returns (HTTP status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.rest_url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None


StartFn = Callable[..., Served]


@dataclass
class Launched:
    """A pod server whose run goes on in the background (ports maybe never open)."""

    server: PodServer
    run: Future[ExitStatus]
    models_dir: Path
    config_file: Path
    loop: LoopThread

    def kill(self) -> None:
        """SIGKILL the run and wait until it ended."""
        self.loop.run(self.server.kill())

    def exit_status(self, timeout: float = 30.0) -> ExitStatus:
        """Wait for the run to end by itself."""
        return self.run.result(timeout)

    def printed(self, text: str) -> bool:
        """Whether a line the run printed contains ``text``."""
        return any(text in line for line in self.server.log_lines)

    def channel(self) -> grpc.Channel:
        """A channel to the gRPC port (only once it is open)."""
        wait_until(lambda: self.server.listening, what="the gRPC port to open")
        return grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")


LaunchFn = Callable[..., Launched]


@pytest.fixture
def launch(
    loop_thread: LoopThread, runtime: Runtime, tmp_path: Path, half_plus_three: Path
) -> Iterator[LaunchFn]:
    """Build a pod server like ``serve`` does and start its run without waiting
    for it to serve: for start-up failures and waits."""
    launched: list[Launched] = []

    def go(
        config_text: str | None = None,
        extra_args: tuple[str, ...] = (),
        versions: Mapping[str, Iterable[int]] | None = None,
        annotations: dict[str, str] | None = None,
        name: str = "demo-0",
        runtime_override: Runtime | None = None,
    ) -> Launched:
        server, models, config_file = _build(
            tmp_path,
            runtime_override or runtime,
            half_plus_three,
            name,
            config_text,
            extra_args,
            versions,
            annotations,
            None,
            None,
        )
        run = loop_thread.submit(server.run())
        item = Launched(server, run, models, config_file, loop_thread)
        launched.append(item)
        return item

    yield go
    for item in launched:
        loop_thread.run(item.server.kill())


def _build(
    tmp_path: Path,
    runtime: Runtime,
    template: Path,
    name: str,
    config_text: str | None,
    extra_args: tuple[str, ...],
    versions: Mapping[str, Iterable[int]] | None,
    annotations: dict[str, str] | None,
    lookup: ClusterLookup | None,
    models_dir: Path | None,
) -> tuple[PodServer, Path, Path]:
    """A pod server: models under host ``tmp/models`` mounted at ``/models``,
    the config file at ``/etc/tfserving/models.config``; ``versions`` are
    copied in (from half_plus_three) before it starts."""
    models = models_dir or tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    for model, numbers in (versions or {}).items():
        for number in numbers:
            add_version(models / model, number, template)
    config_dir = tmp_path / f"config-{name}"
    config_dir.mkdir(parents=True, exist_ok=True)
    config_file = config_dir / "models.config"
    args = ["--port=8500", "--rest_api_port=8501"]
    if config_text is not None:
        config_file.write_text(config_text)
        args.append(f"--model_config_file={CONFIG_PATH}")
    args.extend(extra_args)
    pod = pod_dict(
        name=name,
        args=args,
        annotations=annotations,
        volumes=[
            {"name": "models", "hostPath": {"path": str(models)}},
            {"name": "config", "hostPath": {"path": str(config_dir)}},
        ],
        mounts=[
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "config", "mountPath": "/etc/tfserving"},
        ],
    )
    spec = serving_spec_from_pod(pod, lookup or NoCluster())
    server = PodServer(spec, runtime, host="127.0.0.1", grpc_port=0, rest_port=0)
    return server, models, config_file


@pytest.fixture
def serve(
    loop_thread: LoopThread, runtime: Runtime, tmp_path: Path, half_plus_three: Path
) -> Iterator[StartFn]:
    """Start a pod server and wait until it serves (see ``_build``). The real
    server opens its ports only after the initial load: put the first versions
    in with ``versions`` (or ``models_dir``), else the start never returns."""
    started: list[Served] = []

    def start(
        config_text: str | None = None,
        extra_args: tuple[str, ...] = (),
        annotations: dict[str, str] | None = None,
        lookup: ClusterLookup | None = None,
        name: str = "demo-0",
        models_dir: Path | None = None,
        versions: Mapping[str, Iterable[int]] | None = None,
    ) -> Served:
        server, models, config_file = _build(
            tmp_path,
            runtime,
            half_plus_three,
            name,
            config_text,
            extra_args,
            versions,
            annotations,
            lookup,
            models_dir,
        )
        loop_thread.run(server.start())
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        served = Served(server, channel, models, config_file)
        started.append(served)
        return served

    yield start
    for served in started:
        served.channel.close()
        loop_thread.run(served.server.stop())
