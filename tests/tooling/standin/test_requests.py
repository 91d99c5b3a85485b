"""Requests as clients send them: real tensorflow-serving-api stubs and urllib."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from .conftest import Served, StartFn
from .helpers import add_version, models_config, wait_until

pytestmark = pytest.mark.tensorflow

DEMO = 'name: "demo" base_path: "/models/demo" model_platform: "tensorflow"'
PINNED = (
    DEMO
    + " model_version_policy { specific { versions: 1 versions: 2 } }"
    + ' version_labels { key: "stable" value: 1 }'
    + ' version_labels { key: "canary" value: 2 }'
)


def predict_request(
    version: int | None = None, label: str | None = None, signature: str = ""
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0, 5.0], dtype=tf.float32))
    return request


@pytest.fixture
def pinned(serve: StartFn, half_plus_three: Path) -> Served:
    """Versions 1 and 2 AVAILABLE, labelled stable=1 and canary=2."""
    served = serve(
        models_config(PINNED),
        extra_args=("--allow_version_labels_for_unavailable_models",),
        versions={"demo": [1, 2]},
    )
    wait_until(lambda: served.states("demo") == {2: "AVAILABLE", 1: "AVAILABLE"}, what="v1, v2 up")
    return served


def test_predict_by_version_label_and_latest(pinned: Served) -> None:
    """model_spec chooses the version; the response says which one answered."""
    for kwargs, expected in (
        ({"version": 1}, 1),
        ({"label": "stable"}, 1),
        ({"label": "canary"}, 2),
        ({}, 2),  # no version: the highest AVAILABLE one
    ):
        response = pinned.predictions.Predict(predict_request(**kwargs), timeout=10)
        assert response.model_spec.version.value == expected, kwargs
        assert response.model_spec.name == "demo"
        assert response.model_spec.signature_name == "serving_default"
        assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.5, 4.0, 5.5]
        # Typed fields, like the real server (not tensor_content).
        assert list(response.outputs["y"].float_val) == [3.5, 4.0, 5.5]


def test_grpc_errors(pinned: Served) -> None:
    """NOT_FOUND, INVALID_ARGUMENT and FAILED_PRECONDITION where the real server uses them."""

    def error(call: grpc.UnaryUnaryMultiCallable, request: object) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        return info.value

    with pytest.raises(grpc.RpcError) as info:
        pinned.status("nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Could not find any versions of model nope"

    with pytest.raises(grpc.RpcError) as info:
        pinned.status("demo", 9)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    request = predict_request()
    request.model_spec.name = "nope"
    e = error(pinned.predictions.Predict, request)
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert e.details() == "Servable not found for request: Latest(nope)"

    e = error(pinned.predictions.Predict, predict_request(version=7))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert e.details() == "Servable not found for request: Specific(demo, 7)"

    e = error(pinned.predictions.Predict, predict_request(label="nightly"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.details() == "Unrecognized servable version label: nightly"

    e = error(pinned.predictions.Predict, predict_request(signature="nope"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert e.details() == 'Serving signature key "nope" not found.'

    request = predict_request()
    request.inputs["z"].CopyFrom(tf.make_tensor_proto([1.0]))
    e = error(pinned.predictions.Predict, request)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input size does not match signature" in e.details()


def test_get_model_metadata(pinned: Served) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "demo"
    request.metadata_field.append("signature_def")
    response = pinned.predictions.GetModelMetadata(request, timeout=10)
    assert response.model_spec.version.value == 2
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert list(serving.inputs) == ["x"]
    assert serving.method_name == "tensorflow/serving/predict"


def test_rest_api(pinned: Served) -> None:
    """Row and columnar predict, status, metadata, errors as {"error": ...}."""
    code, body = pinned.rest("POST", "/v1/models/demo:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (code, body) == (200, {"predictions": [3.5, 4.0, 5.5]})

    code, body = pinned.rest(
        "POST", "/v1/models/demo/versions/1:predict", {"inputs": {"x": [1.0, 2.0]}}
    )
    assert (code, body) == (200, {"outputs": [3.5, 4.0]})

    code, body = pinned.rest(
        "POST",
        "/v1/models/demo/labels/canary:predict",
        {"signature_name": "serving_default", "instances": [{"x": 5.0}]},
    )
    assert (code, body) == (200, {"predictions": [5.5]})

    code, body = pinned.rest("GET", "/v1/models/demo")
    assert code == 200
    assert body == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }
    code, body = pinned.rest("GET", "/v1/models/demo/versions/1")
    assert code == 200 and [s["version"] for s in body["model_version_status"]] == ["1"]

    code, body = pinned.rest("GET", "/v1/models/demo/versions/1/metadata")
    assert code == 200
    assert body["model_spec"]["version"] == "1"
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"

    assert pinned.rest("GET", "/v1/models/nope") == (
        404,
        {"error": "Could not find any versions of model nope"},
    )
    code, body = pinned.rest("POST", "/v1/models/demo:predict", {"instances": ["a"]})
    assert code == 400 and "is not of expected type: float" in body["error"]
    code, body = pinned.rest(
        "POST", "/v1/models/demo:predict", {"signature_name": "nope", "instances": [1.0]}
    )
    assert (code, body) == (
        400,
        {"error": 'Serving signature name: "nope" not found in signature def'},
    )
    code, body = pinned.rest("POST", "/v1/models/demo/labels/nightly:predict", {"instances": [1.0]})
    assert (code, body) == (400, {"error": "Unrecognized servable version label: nightly"})
    code, body = pinned.rest("GET", "/v1/nothing")
    assert code == 400 and body["error"].startswith("Malformed request: GET /v1/nothing")


def test_reload_config_replaces_whole_and_guards_labels(pinned: Served) -> None:
    """HandleReloadConfigRequest swaps the config; a label on a version that is
    not AVAILABLE is refused with FAILED_PRECONDITION and the old config stays."""
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(
        models_config(
            DEMO
            + " model_version_policy { specific { versions: 1 versions: 2 } }"
            + ' version_labels { key: "stable" value: 3 }'
        ),
        request.config,
    )
    with pytest.raises(grpc.RpcError) as info:
        pinned.models.HandleReloadConfigRequest(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not currently available for inference" in info.value.details()
    assert pinned.predictions.Predict(predict_request(label="stable"), timeout=10)

    request.config.Clear()
    text_format.Parse(
        models_config(
            DEMO
            + " model_version_policy { specific { versions: 2 } }"
            + ' version_labels { key: "stable" value: 2 }'
        ),
        request.config,
    )
    response = pinned.models.HandleReloadConfigRequest(request, timeout=10)
    assert response.status.error_code == 0
    wait_until(lambda: pinned.states("demo") == {2: "AVAILABLE", 1: "END"}, what="v1 END")
    stable = pinned.predictions.Predict(predict_request(label="stable"), timeout=10)
    assert stable.model_spec.version.value == 2

    request.config.Clear()
    text_format.Parse(models_config(), request.config)
    pinned.models.HandleReloadConfigRequest(request, timeout=10)
    wait_until(lambda: pinned.states("demo") == {2: "END", 1: "END"}, what="model unloaded")


def test_classify_and_regress(serve: StartFn, example_scorer: Path, tmp_path: Path) -> None:
    add_version(tmp_path / "models" / "demo", 1, example_scorer)
    served = serve(models_config(DEMO))
    wait_until(lambda: served.states("demo") == {1: "AVAILABLE"}, what="v1 AVAILABLE")

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "demo"
    for x in (0.0, 2.0):
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)
    response = served.predictions.Classify(request, timeout=10)
    assert response.model_spec.version.value == 1
    first, second = response.result.classifications
    assert [c.label for c in first.classes] == ["yes", "no"]
    assert first.classes[0].score == pytest.approx(0.5)
    assert second.classes[0].score == pytest.approx(1 / (1 + np.exp(-2.0)))

    regression = regression_pb2.RegressionRequest()
    regression.model_spec.name = "demo"
    regression.model_spec.signature_name = "regress"
    regression.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.5)
    result = served.predictions.Regress(regression, timeout=10)
    assert [r.value for r in result.result.regressions] == [3.0]

    code, body = served.rest("POST", "/v1/models/demo:classify", {"examples": [{"x": 0.0}]})
    assert (code, body) == (200, {"results": [[["yes", 0.5], ["no", 0.5]]]})
    code, body = served.rest(
        "POST", "/v1/models/demo:regress", {"signature_name": "regress", "examples": [{"x": 2.0}]}
    )
    assert (code, body) == (200, {"results": [4.0]})


def test_reload_waits_for_new_models(pinned: Served, half_plus_three: Path) -> None:
    """A reload adding a model returns once it is AVAILABLE; one whose base path
    does not exist never becomes available, so the call runs into its deadline."""
    add_version(pinned.models_dir / "other", 3, half_plus_three)
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(
        models_config(
            PINNED,
            'name: "other" base_path: "/models/other" model_platform: "tensorflow"',
        ),
        request.config,
    )
    pinned.models.HandleReloadConfigRequest(request, timeout=20)
    assert pinned.states("other") == {3: "AVAILABLE"}

    request.config.model_config_list.config.add(
        name="ghost", base_path="/models/ghost", model_platform="tensorflow"
    )
    with pytest.raises(grpc.RpcError) as info:
        pinned.models.HandleReloadConfigRequest(request, timeout=2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_config_file_poll(serve: StartFn, half_plus_three: Path) -> None:
    """With --model_config_file_poll_wait_seconds the edited file takes effect
    at a later poll: here labels on versions already AVAILABLE."""
    served = serve(
        models_config(DEMO + " model_version_policy { specific { versions: 1 versions: 2 } }"),
        extra_args=("--model_config_file_poll_wait_seconds=1",),
        versions={"demo": [1, 2]},
    )
    wait_until(lambda: served.states("demo") == {2: "AVAILABLE", 1: "AVAILABLE"}, what="v1, v2 up")
    served.config_file.write_text(models_config(PINNED))
    canary = wait_until(
        lambda: served.predictions.Predict(predict_request(label="canary"), timeout=5),
        what="labels applied by a config poll",
    )
    assert canary.model_spec.version.value == 2

    served.config_file.write_text(
        models_config(DEMO + ' version_labels { key: "stable" value: 2 }')
    )
    wait_until(lambda: served.states("demo") == {2: "AVAILABLE", 1: "END"}, what="v1 END")
    stable = served.predictions.Predict(predict_request(label="stable"), timeout=5)
    assert stable.model_spec.version.value == 2
