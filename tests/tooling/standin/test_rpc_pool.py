"""One bounded pool for every RPC: ResourceQuota::SetMaxThreads(--grpc_max_threads)
in model_servers/server.cc at 2.20.0. Slow Predicts that hold every thread
make a GetModelStatus wait past its deadline."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

from .conftest import StartFn
from .helpers import add_version, models_config, save_slow_model, wait_until

pytestmark = pytest.mark.tensorflow

DEMO = 'name: "demo" base_path: "/models/demo" model_platform: "tensorflow"'


def slow_predict(seconds: float) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto(seconds, dtype=tf.float32))
    return request


def status_request() -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "demo"
    return request


def test_status_waits_behind_predicts_holding_every_grpc_thread(
    serve: StartFn, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    slow = save_slow_model(tmp_path_factory.mktemp("templates") / "slow")
    add_version(tmp_path / "models" / "demo", 1, slow)
    served = serve(models_config(DEMO), extra_args=("--grpc_max_threads=2",))
    pool = served.server.rpc_pool
    assert pool is not None and pool.size == 2

    first = served.predictions.Predict.future(slow_predict(3.0), timeout=20)
    wait_until(lambda: pool.busy == 1, what="one Predict in flight")
    # A free thread: the status call answers at once.
    assert served.models.GetModelStatus(status_request(), timeout=1.0).model_version_status

    second = served.predictions.Predict.future(slow_predict(3.0), timeout=20)
    wait_until(lambda: pool.busy == 2, what="two Predicts in flight")
    with pytest.raises(grpc.RpcError) as info:
        served.models.GetModelStatus(status_request(), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    assert first.result().outputs["slept"].float_val == [3.0]
    assert second.result().outputs["slept"].float_val == [3.0]
    assert served.models.GetModelStatus(status_request(), timeout=1.0).model_version_status


def test_default_pool_is_four_per_cpu(
    serve: StartFn, tmp_path: Path, half_plus_three: Path
) -> None:
    served = serve(models_config(DEMO), versions={"demo": [1]})
    assert served.server.rpc_pool is not None
    assert served.server.rpc_pool.size == 4 * served.server.runtime.cpus
    assert served.server.rest_threads == 4 * served.server.runtime.cpus


def test_rest_requests_wait_for_a_rest_thread(
    serve: StartFn, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """--rest_api_num_threads bounds the REST handlers (http_server.cc); the
    gRPC pool is separate."""
    slow = save_slow_model(tmp_path_factory.mktemp("templates") / "slow")
    add_version(tmp_path / "models" / "demo", 1, slow)
    served = serve(models_config(DEMO), extra_args=("--rest_api_num_threads=1",))
    rest = served.server.rest_api
    assert rest is not None

    def post() -> object:
        body = json.dumps({"inputs": 2.0}).encode()
        request = urllib.request.Request(
            served.rest_url + "/v1/models/demo:predict", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.loads(response.read())

    with ThreadPoolExecutor(1) as pool:
        predicted = pool.submit(post)
        wait_until(lambda: rest.busy == 1, what="the REST Predict to hold the thread")
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            urllib.request.urlopen(served.rest_url + "/v1/models/demo", timeout=0.5)
        assert served.models.GetModelStatus(status_request(), timeout=1.0).model_version_status
        assert predicted.result() == {"outputs": 2.0}
    code, _ = served.rest("GET", "/v1/models/demo")
    assert code == 200
