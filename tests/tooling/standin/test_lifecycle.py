"""Version lifecycle as GetModelStatus reports it: loads, rollouts, failures, delays."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2

from .conftest import StartFn
from .helpers import add_corrupt_version, add_version, models_config, wait_until

pytestmark = pytest.mark.tensorflow

DEMO = 'name: "demo" base_path: "/models/demo" model_platform: "tensorflow"'


def test_latest_policy_rollout_and_failed_version(serve: StartFn, half_plus_three: Path) -> None:
    """v1 loads; v2 replaces it; a corrupt v3 ends in END with TensorFlow's error
    while v2 keeps serving."""
    served = serve(
        models_config(DEMO), extra_args=("--max_num_load_retries=0",), versions={"demo": [1]}
    )
    base = served.models_dir / "demo"
    (base / "tmp-7").mkdir()  # not a number: never a version

    wait_until(lambda: served.states("demo") == {1: "AVAILABLE"}, what="v1 AVAILABLE")
    status = served.status("demo", 1).model_version_status[0]
    assert status.status.error_code == 0
    assert status.status.error_message == ""

    add_version(base, 2, half_plus_three)
    wait_until(
        lambda: served.states("demo") == {2: "AVAILABLE", 1: "END"},
        what="v2 AVAILABLE and v1 END",
    )
    # Versions are listed highest first, END ones included.
    assert [s.version for s in served.status("demo").model_version_status] == [2, 1]

    add_corrupt_version(base, 3)
    wait_until(lambda: served.states("demo").get(3) == "END", what="v3 END")
    v3 = served.status("demo", 3).model_version_status[0]
    assert v3.status.error_code != 0
    assert v3.status.error_message
    assert "saved_model.pb" in v3.status.error_message
    assert served.states("demo")[2] == "AVAILABLE"


def test_load_delay_annotation_keeps_version_loading(serve: StartFn, half_plus_three: Path) -> None:
    """A per-version delay holds that version in LOADING, and REST status still
    answers 200 meanwhile (the real server's readiness lie)."""
    delay = 1.5
    served = serve(
        models_config(DEMO),
        annotations={"standin.tests.tfoperator.dev/load-delay-seconds": f"2={delay}"},
        versions={"demo": [1]},
    )
    start = time.monotonic()
    add_version(served.models_dir / "demo", 2, half_plus_three)
    wait_until(lambda: served.states("demo").get(2) == "LOADING", what="v2 LOADING")
    code, body = served.rest("GET", "/v1/models/demo")
    assert code == 200
    assert body["model_version_status"][0]["state"] == "LOADING"
    wait_until(lambda: served.states("demo").get(2) == "AVAILABLE", what="v2 AVAILABLE")
    assert time.monotonic() - start >= delay


def test_failed_load_is_retried_while_loading(serve: StartFn) -> None:
    """With retries left, a failing version stays LOADING, then ends in END,
    while the version before it keeps serving; the run prints the retrier's lines."""
    served = serve(
        models_config(DEMO),
        extra_args=("--max_num_load_retries=1", "--load_retry_interval_micros=1500000"),
        versions={"demo": [1]},
    )
    add_corrupt_version(served.models_dir / "demo", 2)
    wait_until(lambda: served.states("demo").get(2) == "LOADING", what="v2 LOADING")
    # Still LOADING after the first failure, while the retry waits.
    time_seen = time.monotonic()
    wait_until(lambda: served.states("demo").get(2) == "END", what="v2 END after retries")
    assert time.monotonic() - time_seen >= 1.0
    assert served.status("demo", 2).model_version_status[0].status.error_message
    assert served.states("demo")[1] == "AVAILABLE"
    lines = "\n".join(served.server.log_lines)
    assert "Loading servable: {name: demo version: 2} failed: " in lines
    assert "Retrying of Loading servable: {name: demo version: 2} retry: 1" in lines
    assert "exhausted max_num_retries: 1" in lines


def test_specific_policy_missing_version_appears_later(
    serve: StartFn, half_plus_three: Path
) -> None:
    """A specific version with no folder is not managed (NOT_FOUND) until its
    folder appears; then it loads."""
    config = models_config(DEMO + " model_version_policy { specific { versions: 1 versions: 5 } }")
    served = serve(config, versions={"demo": [1, 2]})  # 2 is not in the policy
    base = served.models_dir / "demo"
    wait_until(lambda: served.states("demo") == {1: "AVAILABLE"}, what="v1 AVAILABLE")
    with pytest.raises(grpc.RpcError) as info:
        served.status("demo", 5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Could not find version 5 of model demo"
    add_version(base, 5, half_plus_three)
    wait_until(
        lambda: served.states("demo") == {5: "AVAILABLE", 1: "AVAILABLE"}, what="v5 AVAILABLE"
    )


def test_all_policy_and_removed_version(serve: StartFn, half_plus_three: Path) -> None:
    """``all {}`` serves every version; deleting a folder unloads that version."""
    served = serve(
        models_config(DEMO + " model_version_policy { all {} }"), versions={"demo": [1, 2, 3]}
    )
    base = served.models_dir / "demo"
    wait_until(
        lambda: served.states("demo") == {3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"},
        what="all versions AVAILABLE",
    )
    import shutil

    shutil.rmtree(base / "2")
    wait_until(lambda: served.states("demo").get(2) == "END", what="v2 END")
    assert served.states("demo") == {3: "AVAILABLE", 2: "END", 1: "AVAILABLE"}


def test_model_loaded_once_for_many_pods(
    serve: StartFn, half_plus_three: Path, tmp_path: Path
) -> None:
    """Pods serving the same folder share one TensorFlow load."""
    models = tmp_path / "shared"
    add_version(models / "demo", 1, half_plus_three)
    first = serve(models_config(DEMO), name="a", models_dir=models)
    wait_until(lambda: first.states("demo") == {1: "AVAILABLE"}, what="a: v1 AVAILABLE")
    cache = first.server.runtime.cache
    loads = cache.loads_started
    others = [serve(models_config(DEMO), name=f"p{i}", models_dir=models) for i in range(3)]
    wait_until(
        lambda: all(o.states("demo") == {1: "AVAILABLE"} for o in others),
        what="v1 AVAILABLE on every other server",
    )
    assert cache.loads_started == loads


def test_unreachable_base_path_blocks_the_whole_poll(serve: StartFn, half_plus_three: Path) -> None:
    """A base path that cannot be reached (here: on no volume) fails the whole
    file system poll, as in the real server: a model added by a reload gets no
    versions, nor does any other, until the config is fixed."""
    served = serve(models_config(DEMO), versions={"demo": [1]})
    ghost = 'name: "ghost" base_path: "s3://bucket/ghost" model_platform: "tensorflow"'
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(models_config(DEMO, ghost), request.config)
    with pytest.raises(grpc.RpcError) as info:
        served.models.HandleReloadConfigRequest(request, timeout=2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    add_version(served.models_dir / "demo", 2, half_plus_three)
    wait_until(
        lambda: any(
            "Could not find base path s3://bucket/ghost" in line for line in served.server.log_lines
        ),
        what="the failed poll to be printed",
    )
    assert served.states("demo") == {1: "AVAILABLE"}
    code, body = served.rest("GET", "/v1/models/ghost")
    assert (code, body) == (404, {"error": "Could not find any versions of model ghost"})
    request.config.Clear()
    text_format.Parse(models_config(DEMO), request.config)
    served.models.HandleReloadConfigRequest(request, timeout=10)
    wait_until(lambda: served.states("demo").get(2) == "AVAILABLE", what="demo v2 once fixed")


def test_single_model_flags(serve: StartFn) -> None:
    """``--model_name``/``--model_base_path`` without a config file."""
    served = serve(
        None,
        extra_args=("--model_name=demo", "--model_base_path=/models/demo"),
        versions={"demo": [1]},
    )
    code, body = served.rest("POST", "/v1/models/demo:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (code, body) == (200, {"predictions": [3.5, 4.0, 5.5]})
    assert "Building single TensorFlow model file config:  model_name: demo" in "\n".join(
        served.server.log_lines
    )
