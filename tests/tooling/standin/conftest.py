"""Fixtures: one event loop thread and one stand-in runtime per session, and a
factory that starts a per-pod server on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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
from localdev.standin.server import PodServer, Runtime, serving_spec_from_pod

from .helpers import LoopThread, pod_dict, save_example_scorer, save_half_plus_three

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


@pytest.fixture
def serve(loop_thread: LoopThread, runtime: Runtime, tmp_path: Path) -> Iterator[StartFn]:
    """Start a pod server: models under host ``tmp/models`` mounted at
    ``/models``, the config file at ``/etc/tfserving/models.config``."""
    started: list[Served] = []

    def start(
        config_text: str | None = None,
        extra_args: tuple[str, ...] = (),
        annotations: dict[str, str] | None = None,
        lookup: ClusterLookup | None = None,
        name: str = "demo-0",
        models_dir: Path | None = None,
    ) -> Served:
        models = models_dir or tmp_path / "models"
        models.mkdir(parents=True, exist_ok=True)
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
        loop_thread.run(server.start())
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        served = Served(server, channel, models, config_file)
        started.append(served)
        return served

    yield start
    for served in started:
        served.channel.close()
        loop_thread.run(served.server.stop())
