"""Loading SavedModels with TensorFlow, shared between pods, and running them.

``tf.saved_model.load`` does the real loading, so a missing or corrupt
``saved_model.pb`` fails with TensorFlow's own error. Loaded models are shared
by every pod that serves the same folder: the cache key is the folder's real
path plus the ``saved_model.pb`` modification time and size, and a reference
count frees the model when the last pod lets go of it. 200 pods serving one
folder therefore load it once.

Everything that touches TensorFlow here is synchronous and meant to run in a
thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef

from .errors import ServingError, code_from_number, failed_precondition, invalid_argument
from .tensors import dtype_name

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"


def configure_tensorflow(threads: int = 2) -> None:
    """Keep TensorFlow's own thread pools small: the stand-in shares 2 cores with
    the control plane and the tests. Must run before TensorFlow executes anything;
    later calls are ignored."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # already initialised: keep what is there


def _error_from_exception(e: BaseException) -> ServingError:
    if isinstance(e, ServingError):
        return e
    if isinstance(e, tf.errors.OpError):
        return ServingError(code_from_number(e.error_code), e.message)
    text = str(e) or type(e).__name__
    if isinstance(e, OSError):
        # tf.saved_model.load raises OSError for a missing file and for a
        # file that does not parse; the C++ loader says NOT_FOUND and
        # DATA_LOSS for those.
        code = grpc.StatusCode.NOT_FOUND if "does not exist" in text else grpc.StatusCode.DATA_LOSS
        return ServingError(code, text)
    return ServingError(grpc.StatusCode.UNKNOWN, f"{type(e).__name__}: {text}")


def _read_signature_defs(path: str) -> dict[str, SignatureDef]:
    pb = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            saved_model.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt"), encoding="utf-8") as f:
            text_format.Parse(f.read(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError(
        grpc.StatusCode.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }}.",
    )


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class LoadedModel:
    """One loaded SavedModel version: its signatures and how to run them."""

    def __init__(self, path: str, obj: Any, signature_defs: Mapping[str, SignatureDef]) -> None:
        self.path = path
        self._obj = obj
        self.signature_defs = dict(signature_defs)

    def _function(self, signature_name: str) -> Any:
        functions = getattr(self._obj, "signatures", {})
        if signature_name not in functions:
            raise failed_precondition(f'Serving signature key "{signature_name}" not found.')
        return functions[signature_name]

    @staticmethod
    def _call(function: Any, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        try:
            outputs = function(**inputs)
        except (TypeError, ValueError) as e:
            raise invalid_argument(str(e)) from None
        except tf.errors.OpError as e:
            raise ServingError(code_from_number(e.error_code), e.message) from None
        return {name: np.asarray(t.numpy()) for name, t in outputs.items()}

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run a signature on named inputs; checks inputs as the real Predict does."""
        signature = self.signature_defs.get(signature_name)
        if signature is None:
            raise failed_precondition(f'Serving signature key "{signature_name}" not found.')
        sig_inputs = signature.inputs
        if len(inputs) > len(sig_inputs) or (
            len(inputs) < len(sig_inputs) and not signature.defaults
        ):
            sent, wanted = set(inputs), set(sig_inputs)
            raise invalid_argument(
                f"input size does not match signature: {len(inputs)}!={len(sig_inputs)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
            )
        tensors: dict[str, Any] = {}
        for position, (alias, array) in enumerate(sorted(inputs.items())):
            info = sig_inputs.get(alias)
            if info is None:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. Inputs expected "
                    f"to be in the set {{{','.join(sorted(sig_inputs))}}}."
                )
            got = tf.as_dtype(array.dtype if array.dtype.kind not in "OSU" else tf.string)
            if got.as_datatype_enum != info.dtype:
                raise invalid_argument(
                    f"Expects arg[{position}] to be {dtype_name(info.dtype)} but "
                    f"{dtype_name(got.as_datatype_enum)} is provided"
                )
            if not info.tensor_shape.unknown_rank:
                wanted_dims = [d.size for d in info.tensor_shape.dim]
                if len(wanted_dims) != array.ndim or any(
                    w >= 0 and w != g for w, g in zip(wanted_dims, array.shape, strict=False)
                ):
                    raise invalid_argument(
                        f"input tensor {alias} has shape {_shape_text(array.shape)}, "
                        f"the signature wants {_shape_text(wanted_dims)}"
                    )
            tensors[alias] = tf.constant(array, dtype=tf.as_dtype(info.dtype))
        wanted_outputs: list[str] = []
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected "
                    f"to be in the set {{{','.join(sorted(signature.outputs))}}}."
                )
            if alias in wanted_outputs:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            wanted_outputs.append(alias)
        outputs = self._call(self._function(signature_name), tensors)
        if wanted_outputs:
            return {alias: outputs[alias] for alias in wanted_outputs}
        return outputs

    def _example_signature(
        self, signature_name: str, allowed_outputs: set[str], api: str
    ) -> tuple[SignatureDef, str]:
        signature = self.signature_defs.get(signature_name)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {signature_name}")
        if len(signature.inputs) != 1:
            raise invalid_argument("Expected one input Tensor.")
        if not set(signature.outputs) or not set(signature.outputs) <= allowed_outputs:
            raise invalid_argument(
                f"Expected {api} signature outputs to be among "
                f"{{{','.join(sorted(allowed_outputs))}}}, found "
                f"{{{','.join(sorted(signature.outputs))}}}"
            )
        return signature, next(iter(signature.inputs))

    def classify(
        self, signature_name: str, examples: Sequence[bytes]
    ) -> list[list[tuple[str, float | None]]]:
        """Classify serialized ``tf.Example``s: per example, (label, score) pairs."""
        _, input_name = self._example_signature(
            signature_name, {CLASSIFY_CLASSES, CLASSIFY_SCORES}, "classification"
        )
        batch = tf.constant(list(examples), dtype=tf.string)
        outputs = self._call(self._function(signature_name), {input_name: batch})
        classes = outputs.get(CLASSIFY_CLASSES)
        scores = outputs.get(CLASSIFY_SCORES)
        n = len(examples)
        for name, array in ((CLASSIFY_CLASSES, classes), (CLASSIFY_SCORES, scores)):
            if array is not None and (array.ndim != 2 or array.shape[0] != n):
                raise invalid_argument(
                    f"Expected Tensor shape: [batch_size num_classes] but got "
                    f"{_shape_text(array.shape)} for output {name}"
                )
        if classes is not None and scores is not None and classes.shape != scores.shape:
            raise invalid_argument(
                f"Tensors class and score should match in shape: "
                f"{_shape_text(classes.shape)} != {_shape_text(scores.shape)}"
            )
        reference = classes if classes is not None else scores
        if reference is None:
            raise invalid_argument("Expected classification signature outputs")
        k = reference.shape[1]
        results: list[list[tuple[str, float | None]]] = []
        for i in range(n):
            row: list[tuple[str, float | None]] = []
            for j in range(k):
                label = ""
                if classes is not None:
                    raw = classes[i, j]
                    label = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                score = float(scores[i, j]) if scores is not None else None
                row.append((label, score))
            results.append(row)
        return results

    def regress(self, signature_name: str, examples: Sequence[bytes]) -> list[float]:
        """Regress serialized ``tf.Example``s: one value per example."""
        _, input_name = self._example_signature(signature_name, {REGRESS_OUTPUTS}, "regression")
        batch = tf.constant(list(examples), dtype=tf.string)
        outputs = self._call(self._function(signature_name), {input_name: batch})[REGRESS_OUTPUTS]
        n = len(examples)
        if outputs.shape not in ((n,), (n, 1)):
            raise invalid_argument(
                f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                f"but got {_shape_text(outputs.shape)}"
            )
        return [float(v) for v in outputs.reshape(n)]


def load_saved_model(path: str) -> LoadedModel:
    """Load the SavedModel in ``path`` (blocking); raises ``ServingError`` with
    TensorFlow's own message when it does not load."""
    try:
        obj = tf.saved_model.load(path, tags=[SERVE_TAG])
        signature_defs = _read_signature_defs(path)
    except Exception as e:
        raise _error_from_exception(e) from None
    return LoadedModel(path, obj, signature_defs)


CacheKey = tuple[str, int | None, int | None]


def cache_key(path: str) -> CacheKey:
    """What identifies a loaded version: real path, saved_model.pb mtime and size."""
    real = os.path.realpath(path)
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        try:
            st = os.stat(os.path.join(real, name))
        except OSError:
            continue
        return (real, st.st_mtime_ns, st.st_size)
    return (real, None, None)


@dataclass
class _Entry:
    future: asyncio.Future[LoadedModel]
    refs: int = 0


@dataclass
class ModelLease:
    """A reference to a shared loaded model; ``release`` it when unloading."""

    model: LoadedModel
    _cache: ModelCache
    _key: CacheKey
    _entry: _Entry
    _released: bool = field(default=False)

    def release(self) -> None:
        """Drop this reference; the model is freed with its last reference."""
        if not self._released:
            self._released = True
            self._cache._release(self._key, self._entry)


class ModelCache:
    """Loaded SavedModels shared by every pod, with reference counts."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._entries: dict[CacheKey, _Entry] = {}
        self.loads_started = 0  # real TensorFlow loads, for tests and logs

    def __len__(self) -> int:
        return len(self._entries)

    def shutdown(self) -> None:
        """Stop the load threads without waiting for a load in progress."""
        if hasattr(self._executor, "shutdown"):
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def acquire(self, path: str) -> ModelLease:
        """Load ``path`` or share an existing load of it; raises ``ServingError``."""
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(self._executor, cache_key, path)
        entry = self._entries.get(key)
        if entry is None:
            self.loads_started += 1
            future = loop.run_in_executor(self._executor, load_saved_model, path)
            entry = _Entry(future)
            self._entries[key] = entry
            future.add_done_callback(functools.partial(self._load_done, key, entry))
        entry.refs += 1
        try:
            model = await asyncio.shield(entry.future)
        except BaseException:
            self._release(key, entry)
            raise
        return ModelLease(model, self, key, entry)

    def _load_done(self, key: CacheKey, entry: _Entry, future: asyncio.Future[LoadedModel]) -> None:
        # Failures are not cached: a later attempt (a retry, another pod)
        # really loads again. A success nobody waits for any more is dropped.
        failed = future.cancelled() or future.exception() is not None
        if (failed or entry.refs == 0) and self._entries.get(key) is entry:
            del self._entries[key]

    def _release(self, key: CacheKey, entry: _Entry) -> None:
        entry.refs -= 1
        if entry.refs <= 0 and entry.future.done() and self._entries.get(key) is entry:
            del self._entries[key]
