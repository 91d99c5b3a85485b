"""One bounded pool for every RPC: ResourceQuota::SetMaxThreads(--grpc_max_threads)
in model_servers/server.cc at 2.20.0. Slow Predicts that hold every thread
make a GetModelStatus wait past its deadline."""

from __future__ import annotations

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
