"""Render the model server's config files (pure).

``models.config`` is built as our own ModelServerConfig message (wire
compatible with TF Serving's, see wire/) and printed with protobuf's
text_format, so its syntax is right by construction. The batching and
monitoring files are short text protos written directly. Tests parse all
three with TF Serving's message definitions (tests/unit/test_model_config.py):
models.config with tensorflow-serving-api's class, the other two with
descriptors built from TF Serving's .proto files, which that package does not
ship.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import text_encoding, text_format

from tfserving_operator.spec import ServedModel, VersionSet
from tfserving_operator.wire import tfserving_wire_pb2 as wire


def model_server_config(sm: ServedModel, serve: VersionSet) -> str:
    """The text-format ModelServerConfig for one model serving `serve`."""
    config = wire.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = sm.model_name
    model.base_path = sm.storage.base_path
    model.model_platform = "tensorflow"
    policy = model.model_version_policy
    if serve.policy == "specific":
        policy.specific.versions.extend(serve.versions)
    elif serve.policy == "all":
        policy.all.SetInParent()
    else:
        policy.latest.num_versions = serve.num_versions
    for label, version in serve.labels:
        model.version_labels[label] = version
    text: str = text_format.MessageToString(config)
    return text


# spec.batching field -> (BatchingParameters field, wrapped in a *Value message?)
_BATCHING_FIELDS: tuple[tuple[str, str], ...] = (
    ("maxBatchSize", "max_batch_size"),
    ("batchTimeoutMicros", "batch_timeout_micros"),
    ("maxEnqueuedBatches", "max_enqueued_batches"),
    ("numBatchThreads", "num_batch_threads"),
)


def batching_parameters(batching: Mapping[str, Any]) -> str:
    """The text-format BatchingParameters for --batching_parameters_file."""
    lines = [
        f"{proto_name} {{ value: {int(batching[spec_name])} }}"
        for spec_name, proto_name in _BATCHING_FIELDS
        if batching.get(spec_name) is not None
    ]
    lines += [f"allowed_batch_sizes: {int(s)}" for s in batching.get("allowedBatchSizes") or ()]
    if batching.get("padVariableLengthInputs"):
        lines.append("pad_variable_length_inputs: true")
    return "\n".join(lines) + "\n"


def monitoring_config(path: str) -> str:
    """The text-format MonitoringConfig for --monitoring_config_file."""
    # The CRD restricts the path to URL-path characters; escape anyway so the
    # file stays a valid text proto whatever reaches it.
    escaped = text_encoding.CEscape(path, as_utf8=True)
    return f'prometheus_config {{\n  enable: true\n  path: "{escaped}"\n}}\n'
