"""Every config file the operator renders, read by TF Serving's own parsers.

models.config is parsed with tensorflow-serving-api's generated
``ModelServerConfig`` through protobuf's text_format: the same parser the
server runs at start, strict about unknown fields and types.

tensorflow-serving-api (2.21) does not ship the generated classes of
``BatchingParameters`` (session_bundle_config.proto) or ``MonitoringConfig``
(monitoring_config.proto). Their descriptors are built below from the .proto
definitions' facts (package, message and field names, numbers, types), so
text_format is just as strict about those two files.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from google.protobuf.message import Message
from hypothesis import given, settings
from tensorflow_serving.config import model_server_config_pb2

from tests.unit.golden.cases import CASES, servedmodel
from tests.unit.test_render import render_body, render_case, specs
from tfserving_operator import api, model_config, spec
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

pytestmark = pytest.mark.tensorflow

FDP = descriptor_pb2.FieldDescriptorProto


def _tf_serving_messages() -> tuple[type[Message], type[Message]]:
    """BatchingParameters and MonitoringConfig, as TF Serving declares them."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tfso_tests/tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )

    def add_message(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, ftype, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name

    opt, rep = FDP.LABEL_OPTIONAL, FDP.LABEL_REPEATED
    int64_value = ".google.protobuf.Int64Value"
    # tensorflow_serving/servables/tensorflow/session_bundle_config.proto
    add_message(
        "BatchingParameters",
        [
            ("max_batch_size", 1, FDP.TYPE_MESSAGE, opt, int64_value),
            ("batch_timeout_micros", 2, FDP.TYPE_MESSAGE, opt, int64_value),
            ("max_enqueued_batches", 3, FDP.TYPE_MESSAGE, opt, int64_value),
            ("num_batch_threads", 4, FDP.TYPE_MESSAGE, opt, int64_value),
            ("thread_pool_name", 5, FDP.TYPE_MESSAGE, opt, ".google.protobuf.StringValue"),
            ("allowed_batch_sizes", 6, FDP.TYPE_INT64, rep, ""),
            ("pad_variable_length_inputs", 7, FDP.TYPE_BOOL, opt, ""),
        ],
    )
    # tensorflow_serving/config/monitoring_config.proto
    add_message(
        "PrometheusConfig",
        [
            ("enable", 1, FDP.TYPE_BOOL, opt, ""),
            ("path", 2, FDP.TYPE_STRING, opt, ""),
        ],
    )
    add_message(
        "MonitoringConfig",
        [("prometheus_config", 1, FDP.TYPE_MESSAGE, opt, ".tensorflow.serving.PrometheusConfig")],
    )
    pool.Add(proto)
    batching = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )
    monitoring = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )
    return batching, monitoring


BatchingParameters, MonitoringConfig = _tf_serving_messages()
ModelServerConfig = model_server_config_pb2.ModelServerConfig


def parse_models_config(text: str) -> Any:
    return text_format.Parse(text, ModelServerConfig())


def parse_spec(body: dict[str, Any]) -> spec.ServedModel:
    return spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)


# ----- every rendered file ------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_models_config(case: str) -> None:
    sm = parse_spec(CASES[case])
    config = parse_models_config(render_case(case).config_map["data"][api.MODEL_CONFIG_FILE])
    # One model, and nothing else: a reload replaces the whole config.
    assert config.WhichOneof("config") == "model_config_list"
    (model,) = config.model_config_list.config
    assert model.name == sm.model_name
    assert model.base_path == sm.storage.base_path
    assert model.model_platform == "tensorflow"
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    assert kind == sm.target.policy
    if kind == "specific":
        assert tuple(policy.specific.versions) == sm.target.versions
    elif kind == "latest":
        assert policy.latest.num_versions == sm.target.num_versions
    assert dict(model.version_labels) == dict(sm.target.labels)


def test_models_config_values_of_the_labelled_case() -> None:
    text = render_case("labels-specific").config_map["data"][api.MODEL_CONFIG_FILE]
    model = parse_models_config(text).model_config_list.config[0]
    assert model.name == "classifier"
    assert model.base_path == "/models/classifier"
    assert list(model.model_version_policy.specific.versions) == [3, 4]
    assert dict(model.version_labels) == {"stable": 3, "canary": 4}


def test_models_config_uri_base_path() -> None:
    text = render_case("s3-credentials").config_map["data"][api.MODEL_CONFIG_FILE]
    model = parse_models_config(text).model_config_list.config[0]
    # s3:// is pulled into the pod (puller.py); the server reads the copy.
    assert model.base_path == "/models/ranker"
    assert list(model.model_version_policy.specific.versions) == [12]


@pytest.mark.parametrize("case", sorted(CASES))
def test_batching_and_monitoring_files(case: str) -> None:
    sm = parse_spec(CASES[case])
    data = render_case(case).config_map["data"]
    assert (api.BATCHING_CONFIG_FILE in data) == (sm.batching is not None)
    assert (api.MONITORING_CONFIG_FILE in data) == (sm.monitoring_path is not None)
    if sm.batching is not None:
        text_format.Parse(data[api.BATCHING_CONFIG_FILE], BatchingParameters())
    if sm.monitoring_path is not None:
        text_format.Parse(data[api.MONITORING_CONFIG_FILE], MonitoringConfig())


def test_batching_values() -> None:
    text = render_case("batching-monitoring").config_map["data"][api.BATCHING_CONFIG_FILE]
    params: Any = text_format.Parse(text, BatchingParameters())
    assert params.max_batch_size.value == 32
    assert params.batch_timeout_micros.value == 2000
    assert params.max_enqueued_batches.value == 100
    assert params.num_batch_threads.value == 4
    assert list(params.allowed_batch_sizes) == [8, 16, 32]
    assert params.pad_variable_length_inputs is True


def test_batching_leaves_unset_fields_to_tf_serving() -> None:
    params: Any = text_format.Parse(
        model_config.batching_parameters({"maxBatchSize": 8}), BatchingParameters()
    )
    assert params.max_batch_size.value == 8
    # Wrapper fields left unset keep the server's own defaults (not zero).
    for name in ("batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        assert not params.HasField(name)
    assert list(params.allowed_batch_sizes) == []
    assert params.pad_variable_length_inputs is False


def test_empty_batching_is_a_valid_file() -> None:
    text = model_config.batching_parameters({})
    assert text_format.Parse(text, BatchingParameters()) == BatchingParameters()


def test_monitoring_values() -> None:
    text = render_case("batching-monitoring").config_map["data"][api.MONITORING_CONFIG_FILE]
    config: Any = text_format.Parse(text, MonitoringConfig())
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"
    custom: Any = text_format.Parse(model_config.monitoring_config("/m/x"), MonitoringConfig())
    assert custom.prometheus_config.path == "/m/x"


def test_the_parsers_are_strict() -> None:
    """A typo in a rendered file would fail here, as it fails the server at start."""
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 8\n", BatchingParameters())  # not wrapped
    with pytest.raises(text_format.ParseError):
        text_format.Parse("prometheus_config { enabled: true }\n", MonitoringConfig())
    with pytest.raises(text_format.ParseError):
        parse_models_config("model_config_list { config { model_name: 'x' } }")


# ----- any spec -----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(spec_=specs())
def test_property_every_rendered_config_parses(spec_: dict[str, Any]) -> None:
    body = servedmodel("generated", spec_)
    sm = parse_spec(body)
    data = render_body(body).config_map["data"]
    model = parse_models_config(data[api.MODEL_CONFIG_FILE]).model_config_list.config[0]
    assert model.base_path == sm.storage.base_path
    assert model.model_version_policy.WhichOneof("policy_choice") == sm.target.policy
    assert dict(model.version_labels) == dict(sm.target.labels)
    if api.BATCHING_CONFIG_FILE in data:
        params: Any = text_format.Parse(data[api.BATCHING_CONFIG_FILE], BatchingParameters())
        assert params.max_batch_size.value == spec_["batching"]["maxBatchSize"]
    if api.MONITORING_CONFIG_FILE in data:
        text_format.Parse(data[api.MONITORING_CONFIG_FILE], MonitoringConfig())


def test_monitoring_path_is_escaped() -> None:
    config: Any = text_format.Parse(model_config.monitoring_config('/a"b\\c'), MonitoringConfig())
    assert config.prometheus_config.path == '/a"b\\c'
