"""Version lifecycle as GetModelStatus reports it: loads, rollouts, failures, delays."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from .conftest import StartFn
from .helpers import add_corrupt_version, add_version, models_config, wait_until

pytestmark = pytest.mark.tensorflow

DEMO = 'name: "demo" base_path: "/models/demo" model_platform: "tensorflow"'


def test_latest_policy_rollout_and_failed_version(serve: StartFn, half_plus_three: Path) -> None:
    """v1 loads; v2 replaces it; a corrupt v3 ends in END with TensorFlow's error
    while v2 keeps serving."""
    served = serve(models_config(DEMO), extra_args=("--max_num_load_retries=0",))
    base = served.models_dir / "demo"
    add_version(base, 1, half_plus_three)
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
        annotations={"standin.tests.tfoperator.dev/load-delay-seconds": f"1={delay}"},
    )
    start = time.monotonic()
    add_version(served.models_dir / "demo", 1, half_plus_three)
    wait_until(lambda: served.states("demo") == {1: "LOADING"}, what="v1 LOADING")
    code, body = served.rest("GET", "/v1/models/demo")
    assert code == 200
    assert body["model_version_status"][0]["state"] == "LOADING"
    wait_until(lambda: served.states("demo") == {1: "AVAILABLE"}, what="v1 AVAILABLE")
    assert time.monotonic() - start >= delay


def test_failed_load_is_retried_while_loading(serve: StartFn) -> None:
    """With retries left, a failing version stays LOADING, then ends in END."""
    served = serve(
        models_config(DEMO),
        extra_args=("--max_num_load_retries=1", "--load_retry_interval_micros=1500000"),
    )
    add_corrupt_version(served.models_dir / "demo", 1)
    wait_until(lambda: served.states("demo") == {1: "LOADING"}, what="v1 LOADING")
    # Still LOADING after the first failure, while the retry waits.
    time_seen = time.monotonic()
    wait_until(lambda: served.states("demo") == {1: "END"}, what="v1 END after retries")
    assert time.monotonic() - time_seen >= 1.0
    assert served.status("demo", 1).model_version_status[0].status.error_message


def test_specific_policy_missing_version_appears_later(
    serve: StartFn, half_plus_three: Path
) -> None:
    """A specific version with no folder is not managed (NOT_FOUND) until its
    folder appears; then it loads."""
    config = models_config(DEMO + " model_version_policy { specific { versions: 1 versions: 5 } }")
    served = serve(config)
    base = served.models_dir / "demo"
    add_version(base, 1, half_plus_three)
    add_version(base, 2, half_plus_three)  # not in the policy
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
    served = serve(models_config(DEMO + " model_version_policy { all {} }"))
    base = served.models_dir / "demo"
    for version in (1, 2, 3):
        add_version(base, version, half_plus_three)
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
    file system poll, as in the real server: no model gets versions until it is
    fixed or removed from the config."""
    ghost = 'name: "ghost" base_path: "s3://bucket/ghost" model_platform: "tensorflow"'
    served = serve(
        models_config(DEMO, ghost), extra_args=("--model_config_file_poll_wait_seconds=1",)
    )
    add_version(served.models_dir / "demo", 1, half_plus_three)
    # Give a few polls the chance to (wrongly) load demo.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert served.states("demo") == {}
        time.sleep(0.25)
    code, body = served.rest("GET", "/v1/models/ghost")
    assert (code, body) == (404, {"error": "Could not find any versions of model ghost"})
    served.config_file.write_text(models_config(DEMO))
    wait_until(lambda: served.states("demo") == {1: "AVAILABLE"}, what="demo loads once fixed")


def test_single_model_flags_and_missing_saved_model(serve: StartFn, half_plus_three: Path) -> None:
    """``--model_name``/``--model_base_path`` without a config file; a version
    folder without saved_model.pb fails with TensorFlow's NOT_FOUND text."""
    served = serve(
        None,
        extra_args=(
            "--model_name=demo",
            "--model_base_path=/models/demo",
            "--max_num_load_retries=0",
        ),
    )
    (served.models_dir / "demo" / "1" / "variables").mkdir(parents=True)
    wait_until(lambda: served.states("demo") == {1: "END"}, what="v1 END")
    status = served.status("demo", 1).model_version_status[0].status
    assert status.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "does not exist" in status.error_message
    add_version(served.models_dir / "demo", 2, half_plus_three)
    wait_until(lambda: served.states("demo") == {2: "AVAILABLE", 1: "END"}, what="v2 AVAILABLE")
    code, body = served.rest("POST", "/v1/models/demo:predict", {"instances": [1.0, 2.0, 5.0]})
    assert (code, body) == (200, {"predictions": [3.5, 4.0, 5.5]})
