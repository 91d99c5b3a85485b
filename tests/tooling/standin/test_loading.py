"""Loads like core/aspired_versions_manager.cc with ServerCore's load threads
(parallel at start, one at a time later), and warm-up replay while LOADING
(servables/tensorflow/saved_model_warmup_util.cc at 2.20.0)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from localdev.standin.server import Runtime

from .conftest import LaunchFn, StartFn
from .helpers import (
    add_version,
    add_version_with_warmup,
    models_config,
    predict_log,
    wait_until,
    write_warmup_file,
)

pytestmark = pytest.mark.tensorflow

DEMO = 'name: "demo" base_path: "/models/demo" model_platform: "tensorflow"'
ALL = DEMO + " model_version_policy { all {} }"
DELAY = "standin.tests.tfoperator.dev/load-delay-seconds"
GARBAGE = b"\xff\xff\xff\xff not a protobuf message"


def test_parallel_initial_loads_then_one_at_a_time(
    launch: LaunchFn, runtime: Runtime, half_plus_three: Path
) -> None:
    """num_initial_load_threads = 4 x NumSchedulableCPUs (server_core.h): the
    three versions of the initial config load at once; after start-up
    --num_load_threads=0 loads one version at a time."""
    one_cpu = Runtime(runtime.cache, runtime.infer_executor, cpus=1)
    delay = 1.0
    started = launch(
        models_config(ALL),
        versions={"demo": [1, 2, 3]},
        annotations={DELAY: str(delay)},
        runtime_override=one_cpu,
    )
    began = time.monotonic()
    wait_until(lambda: started.server.listening, what="start-up")
    assert started.server.manager.slots.peak == 3
    assert time.monotonic() - began < 3 * delay
    slots = started.server.manager.slots
    assert slots.capacity == 1
    slots.peak = 0
    add_version(started.models_dir / "demo", 4, half_plus_three)
    add_version(started.models_dir / "demo", 5, half_plus_three)
    wait_until(
        lambda: (
            started.printed("Successfully loaded servable version {name: demo version: 4}")
            and started.printed("Successfully loaded servable version {name: demo version: 5}")
        ),
        what="v4 and v5 loaded",
    )
    assert slots.peak == 1


def test_num_load_threads_after_start(launch: LaunchFn, half_plus_three: Path) -> None:
    started = launch(
        models_config(ALL),
        versions={"demo": [1]},
        extra_args=("--num_load_threads=2",),
        annotations={DELAY: "0.5"},
    )
    wait_until(lambda: started.server.listening, what="start-up")
    slots = started.server.manager.slots
    assert slots.capacity == 2
    slots.peak = 0
    add_version(started.models_dir / "demo", 2, half_plus_three)
    add_version(started.models_dir / "demo", 3, half_plus_three)
    wait_until(
        lambda: (
            started.printed("Successfully loaded servable version {name: demo version: 2}")
            and started.printed("Successfully loaded servable version {name: demo version: 3}")
        ),
        what="v2 and v3 loaded",
    )
    assert slots.peak == 2


def test_warmup_replays_before_available(launch: LaunchFn, half_plus_three: Path) -> None:
    started = launch(models_config(DEMO), extra_args=("--num_request_iterations_for_warmup=2",))
    add_version_with_warmup(
        started.models_dir / "demo", 1, half_plus_three, [predict_log([1.0]), predict_log([2.0])]
    )
    wait_until(lambda: started.server.listening, what="start-up")
    lines = started.server.log_lines
    warmed = next(i for i, x in enumerate(lines) if "Number of warmup records read: 2." in x)
    loaded = next(i for i, x in enumerate(lines) if "Successfully loaded servable version" in x)
    assert warmed < loaded
    assert "tf_serving_warmup_requests" in lines[warmed]


@pytest.mark.parametrize(
    ("records", "raw", "expected"),
    [
        (None, b"this is not a TFRecord file at all", "DATA_LOSS: "),
        ([GARBAGE], None, "INVALID_ARGUMENT: Failed to parse warmup record: "),
        ([predict_log([1.0], input_name="nope")], None, "INVALID_ARGUMENT: "),
    ],
    ids=["not-tfrecord", "not-prediction-log", "request-rejected"],
)
def test_broken_warmup_file_ends_the_version(
    serve: StartFn,
    half_plus_three: Path,
    records: list[bytes] | None,
    raw: bytes | None,
    expected: str,
) -> None:
    """A broken warm-up file is a failed load: END with the error, the version
    before keeps serving."""
    served = serve(
        models_config(DEMO), extra_args=("--max_num_load_retries=0",), versions={"demo": [1]}
    )
    base = served.models_dir / "demo"
    staging = base / ".tmp-2"
    shutil.copytree(half_plus_three, staging)
    if raw is not None:
        target = staging / "assets.extra" / "tf_serving_warmup_requests"
        target.parent.mkdir()
        target.write_bytes(raw)
    else:
        assert records is not None
        write_warmup_file(staging, records)
    staging.rename(base / "2")
    wait_until(lambda: served.states("demo").get(2) == "END", what="v2 END")
    error = served.status("demo", 2).model_version_status[0].status.error_message
    line = next(x for x in served.server.log_lines if "{name: demo version: 2} failed: " in x)
    assert line.split("failed: ", 1)[1].startswith(expected), line
    if raw is not None:
        assert error.endswith(". Please verify your warmup data is in TFRecord format.")
    assert served.states("demo")[1] == "AVAILABLE"


def test_warmup_disabled_ignores_the_file(
    serve: StartFn, half_plus_three: Path, tmp_path: Path
) -> None:
    add_version_with_warmup(tmp_path / "models" / "demo", 1, half_plus_three, [GARBAGE])
    served = serve(models_config(DEMO), extra_args=("--enable_model_warmup=false",))
    assert served.states("demo") == {1: "AVAILABLE"}


def test_more_than_1000_warmup_records(serve: StartFn, half_plus_three: Path) -> None:
    served = serve(
        models_config(DEMO), extra_args=("--max_num_load_retries=0",), versions={"demo": [1]}
    )
    add_version_with_warmup(
        served.models_dir / "demo", 2, half_plus_three, [predict_log([1.0])] * 1001
    )
    wait_until(lambda: served.states("demo").get(2) == "END", what="v2 END", timeout=60)
    error = served.status("demo", 2).model_version_status[0].status.error_message
    assert error.startswith("Number of warmup records exceeds the maximum (1000) at ")
