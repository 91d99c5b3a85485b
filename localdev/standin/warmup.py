"""Model warm-up: replaying ``assets.extra/tf_serving_warmup_requests`` while LOADING.

Follows ``servables/tensorflow/saved_model_warmup_util.cc`` and
``saved_model_warmup.cc`` at tag 2.20.0 (facts only):

* no file: nothing to do (``No warmup data file found at ...``);
* the file is read as TFRecord; a record that is not a ``PredictionLog`` is
  INVALID_ARGUMENT ``Failed to parse warmup record: <record> from <path>``;
  a reader error other than end-of-file fails the load, DATA_LOSS with
  ``. Please verify your warmup data is in TFRecord format.`` appended;
* each record runs ``--num_request_iterations_for_warmup`` times (1 unless
  > 0) through the version being loaded; an error of the request fails the load;
* more than 1000 records: INVALID_ARGUMENT ``Number of warmup records exceeds
  the maximum (1000) at <path>`` (checked after each record, so the 1001st
  record has run);
* predict, classify and regress logs run; session-run and streamed-predict
  logs are UNIMPLEMENTED ``Unsupported log_type for warmup: <field number>``;
  multi-inference logs are accepted without running (the stand-in has no
  MultiInference).

Runs in a worker thread (it calls TensorFlow), never on the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import grpc
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from .errors import ServingError, code_from_number, failed_precondition
from .grpc_service import serialized_examples
from .models import DEFAULT_SIGNATURE, LoadedModel
from .tensors import tensor_proto_to_ndarray

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000
_UNSUPPORTED = ("predict_streamed_log", "session_run_log")

Say = Callable[[str], None]


def _run_record(model: LoadedModel, record: prediction_log_pb2.PredictionLog) -> None:
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        request = record.predict_log.request
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature not in model.signature_defs:
            raise failed_precondition(f'Serving signature key "{signature}" not found.')
        inputs = {k: tensor_proto_to_ndarray(v, k) for k, v in request.inputs.items()}
        model.predict(signature, inputs, list(request.output_filter))
    elif kind == "classify_log":
        request_c = record.classify_log.request
        signature = request_c.model_spec.signature_name or DEFAULT_SIGNATURE
        model.classify(signature, serialized_examples(request_c.input))
    elif kind == "regress_log":
        request_r = record.regress_log.request
        signature = request_r.model_spec.signature_name or DEFAULT_SIGNATURE
        model.regress(signature, serialized_examples(request_r.input))
    elif kind in _UNSUPPORTED:
        number = record.DESCRIPTOR.fields_by_name[kind].number
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}"
        )


def run_warmup(model: LoadedModel, version_dir: str, iterations: int, say: Say) -> None:
    """Replay the version's warm-up file through ``model``; raises ``ServingError``."""
    path = os.path.join(version_dir, WARMUP_FILE)
    if not os.path.exists(path):
        say(f"No warmup data file found at {path}")
        return
    repeat = iterations if iterations > 0 else 1
    say(f"Starting to read warmup data for model at {path} with model-warmup-options ")
    count = 0
    try:
        for data in tf.compat.v1.io.tf_record_iterator(path):
            record = prediction_log_pb2.PredictionLog()
            try:
                record.ParseFromString(data)
            except DecodeError:
                text = data.decode("utf-8", errors="replace")
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Failed to parse warmup record: {text} from {path}",
                ) from None
            for _ in range(repeat):
                _run_record(model, record)
            count += 1
            if count > MAX_RECORDS:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                )
    except tf.errors.DataLossError as e:
        raise ServingError(
            grpc.StatusCode.DATA_LOSS,
            f"{e.message}. Please verify your warmup data is in TFRecord format.",
        ) from None
    except tf.errors.OpError as e:
        raise ServingError(code_from_number(e.error_code), e.message) from None
    say(
        f"Finished reading warmup data for model at {path}. Number of warmup records read: {count}."
    )
