"""Test helpers: tiny SavedModels, fake pods, an event loop in a thread, deadlines."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import tensorflow as tf

T = TypeVar("T")


class HalfPlusThree(tf.Module):
    """y = 0.5 * x + 3, with variables so the SavedModel has a variables/ folder."""

    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(3.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}


class ExampleScorer(tf.Module):
    """Classification and regression signatures over serialized tf.Examples
    (feature ``x``, one float): scores [sigmoid(x), 1 - sigmoid(x)] for classes
    ["yes", "no"], and regression output 2x."""

    def _parse(self, examples: tf.Tensor) -> tf.Tensor:
        spec = {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
        return tf.io.parse_example(examples, spec)["x"][:, 0]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        x = self._parse(inputs)
        p = tf.sigmoid(x)
        n = tf.shape(x)[0]
        return {
            "scores": tf.stack([p, 1.0 - p], axis=1),
            "classes": tf.tile(tf.constant([["yes", "no"]]), [n, 1]),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": 2.0 * self._parse(inputs)}


def save_half_plus_three(path: Path) -> Path:
    """Write the half_plus_three SavedModel to ``path``."""
    module = HalfPlusThree()
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve.get_concrete_function()}
    )
    return path


def save_example_scorer(path: Path) -> Path:
    """Write the tf.Example classifier/regressor SavedModel to ``path``."""
    module = ExampleScorer()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.classify.get_concrete_function(),
            "regress": module.regress.get_concrete_function(),
        },
    )
    return path


def add_version(base: Path, version: int, template: Path) -> Path:
    """Copy a SavedModel in as ``base/version``, atomically (copy to a hidden
    name, then rename), so a poll never sees it half-written."""
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".tmp-{version}"
    shutil.copytree(template, staging)
    target = base / str(version)
    os.rename(staging, target)
    return target


def add_corrupt_version(base: Path, version: int) -> Path:
    """A version folder whose saved_model.pb is garbage."""
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".tmp-{version}"
    (staging / "variables").mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"\x08\xff garbage, not a SavedModel \xff" * 8)
    target = base / str(version)
    os.rename(staging, target)
    return target


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as e:  # a not-yet-ready server may refuse: keep polling
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class LoopThread:
    """An asyncio event loop in a background thread, like the stand-in's own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule a coroutine; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine in the loop and wait for its result."""
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def pod_dict(
    *,
    args: list[str],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    name: str = "demo-0",
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
    ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """A pod as the operator renders it and the API returns it."""
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "labels": {"serving.tfoperator.dev/servedmodel": "demo"},
            "annotations": annotations or {},
        },
        "spec": {
            "containers": [
                {
                    "name": "tensorflow-serving",
                    "command": ["/usr/bin/tensorflow_model_server"],
                    "args": args,
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
        "status": {"phase": "Running", "podIP": ip},
    }


def models_config(*models: str) -> str:
    """A text-format ModelServerConfig holding these ``config { ... }`` bodies."""
    body = "".join(f"  config {{\n{m}\n  }}\n" for m in models)
    return f"model_config_list {{\n{body}}}\n"


class SlowModel(tf.Module):
    """Sleeps ``seconds`` (a scalar input) inside TensorFlow, then answers it:
    a Predict that holds a server thread without burning a CPU."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="seconds")])
    def serve(self, seconds: tf.Tensor) -> dict[str, tf.Tensor]:
        # A test-only dataset transformation of TensorFlow's; no public sleep op exists.
        from tensorflow.python.data.experimental.ops import testing

        micros = tf.cast(seconds * 1e6, tf.int64)
        slept = tf.data.Dataset.from_tensors(seconds).apply(testing.sleep(micros))
        return {"slept": slept.reduce(tf.constant(0.0), lambda total, x: total + x)}


def save_slow_model(path: Path) -> Path:
    """Write the SlowModel SavedModel to ``path``."""
    module = SlowModel()
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve.get_concrete_function()}
    )
    return path


def write_warmup_file(version_dir: Path, records: list[bytes]) -> Path:
    """Write ``assets.extra/tf_serving_warmup_requests`` as a TFRecord file of ``records``."""
    target = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for record in records:
            writer.write(record)
    return target


def predict_log(values: list[float], input_name: str = "x") -> bytes:
    """A serialized PredictionLog holding a half_plus_three Predict request."""
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "demo"
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.float32))
    return log.SerializeToString()


def add_version_with_warmup(base: Path, version: int, template: Path, records: list[bytes]) -> Path:
    """Like ``add_version``, with a warm-up file written before the folder appears."""
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".tmp-{version}"
    shutil.copytree(template, staging)
    write_warmup_file(staging, records)
    target = base / str(version)
    os.rename(staging, target)
    return target
