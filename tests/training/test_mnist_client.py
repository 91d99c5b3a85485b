"""The MNIST client: results, gRPC and REST transports, and its one-line errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from training_jobs.mnist import mnist_client

pytestmark = pytest.mark.tensorflow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> Any:
    return mnist_client.build_parser().parse_args(list(argv))


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


# --- results and arguments (no server) ----------------------------------------


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=50))
def test_percentiles_are_observed_and_ordered(latencies: list[float]) -> None:
    result = mnist_client.Result(
        num_tests=len(latencies), num_errors=0, latencies_ms=tuple(latencies)
    )
    p50, p90, p99, p100 = (result.percentile(p) for p in (50, 90, 99, 100))
    assert {p50, p90, p99} <= set(latencies)
    assert min(latencies) <= p50 <= p90 <= p99 <= p100 == max(latencies)


def test_percentiles_use_exact_nearest_rank() -> None:
    result = mnist_client.Result(
        num_tests=100, num_errors=0, latencies_ms=tuple(float(v) for v in range(100, 0, -1))
    )
    assert [result.percentile(p) for p in (1, 7, 50, 90, 99, 100)] == [1, 7, 50, 90, 99, 100]


def test_format_result() -> None:
    result = mnist_client.Result(
        num_tests=4, num_errors=1, latencies_ms=(1.0, 2.0, 3.0, 4.0), versions={2: 3, 1: 1}
    )
    lines = mnist_client.format_result(result).splitlines()
    assert lines == [
        "Inference error rate: 25.0% (1 of 4 requests)",
        "Latency (ms): p50 2.00, p90 4.00, p99 4.00",
        "Model versions: 1 (1 requests), 2 (3 requests)",
    ]


@pytest.mark.parametrize(
    ("argv", "url"),
    [
        ([], "http://h:8501/v1/models/mnist:predict"),
        (["--model_version=3"], "http://h:8501/v1/models/mnist/versions/3:predict"),
        (["--model_version_label=stable"], "http://h:8501/v1/models/mnist/labels/stable:predict"),
    ],
)
def test_rest_url(argv: list[str], url: str) -> None:
    assert mnist_client.rest_predict_url(_args("--server=h:8501", *argv)) == url


def test_version_and_label_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _args("--model_version=1", "--model_version_label=stable")
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


# --- unreachable and silent servers -------------------------------------------


@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_unreachable_server_is_one_clear_line(
    closed_port: int, rest: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [f"--server=127.0.0.1:{closed_port}", "--num_tests=20", "--concurrency=4"]
    code = mnist_client.main([*argv, "--rest"] if rest else argv)
    captured = capsys.readouterr()

    assert code == 1
    assert captured.out == ""
    assert captured.err.startswith(
        f"mnist_client: error: cannot reach the model server at 127.0.0.1:{closed_port}"
    )
    assert captured.err.count("\n") == 1


def test_unreachable_server_from_the_command_line(closed_port: int) -> None:
    script = REPO_ROOT / "training_jobs" / "mnist" / "mnist_client.py"
    completed = subprocess.run(
        [sys.executable, str(script), f"--server=127.0.0.1:{closed_port}", "--num_tests=5"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    ours = [line for line in completed.stderr.splitlines() if line.startswith("mnist_client:")]
    assert len(ours) == 1
    assert ours[0].startswith(
        f"mnist_client: error: cannot reach the model server at 127.0.0.1:{closed_port}: "
    )
    assert "Connection refused" in ours[0] or "failed to connect" in ours[0]


@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_silent_server_times_out(silent_server: str, rest: bool) -> None:
    argv = [f"--server={silent_server}", "--num_tests=1", "--timeout=0.3"]
    with pytest.raises(mnist_client.ClientError, match=r"no answer from .* within 0\.3 s"):
        mnist_client.run(_args(*argv, "--rest") if rest else _args(*argv))


# --- against fake servers backed by the exported version 1 --------------------


@pytest.fixture(params=["grpc", "rest"])
def server_args(request: pytest.FixtureRequest) -> list[str]:
    """Command-line arguments reaching one of the two fake servers."""
    if request.param == "grpc":
        return [f"--server={request.getfixturevalue('fake_grpc_server')}"]
    return ["--rest", f"--server={request.getfixturevalue('fake_rest_server')}"]


def test_error_rate_matches_the_exported_model(
    server_args: list[str], mnist_v1: Any, mnist_data: Any
) -> None:
    result = mnist_client.run(_args(*server_args, "--num_tests=150", "--concurrency=4"))

    test = mnist_data.test
    expected_errors = int(np.sum(mnist_v1.model.predict(test.images[:150]) != test.labels[:150]))
    assert (result.num_tests, result.num_errors) == (150, expected_errors)
    assert len(result.latencies_ms) == 150 and min(result.latencies_ms) > 0
    if "--rest" in server_args:
        assert result.versions == {}
    else:
        assert result.versions == {1: 150}


def test_main_prints_error_rate_latency_and_version(
    fake_grpc_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = mnist_client.main(
        [f"--server={fake_grpc_server}", "--num_tests=30", "--model_version=1"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("Inference error rate: ") and out[0].endswith(" of 30 requests)")
    assert out[1].startswith("Latency (ms): p50 ") and "p90" in out[1] and "p99" in out[1]
    assert out[2] == "Model version: 1 (30 requests)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model_name=nope"], r"model 'nope' not found on "),
        (["--model_version=9"], r"model 'mnist' version 9 not found on "),
        (
            ["--signature_name=serving_default"],
            r"rejected the request for signature 'serving_default'",
        ),
        (["--signature_name=nope"], r"rejected the request for signature 'nope'"),
    ],
    ids=["unknown-model", "unknown-version", "classify-signature", "unknown-signature"],
)
def test_server_refusals_are_one_line_errors(
    server_args: list[str], extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = mnist_client.main([*server_args, "--num_tests=3", *extra])
    err = capsys.readouterr().err

    assert code == 1
    assert err.startswith("mnist_client: error: ")
    assert err.count("\n") == 1
    assert re.search(message, err), err
