"""The server as a process: start-up like model_servers/main.cc and server.cc
at 2.20.0 (ports after the initial load, exit 255 with the real message), and
SIGKILL. Each run is a ``PodServer.run()``; its ``ExitStatus`` is what a
kubelet would record."""

from __future__ import annotations

import pytest

from .conftest import LaunchFn
from .helpers import add_corrupt_version, add_version, models_config, wait_until

pytestmark = pytest.mark.tensorflow

DEMO = 'name: "demo" base_path: "/models/demo" model_platform: "tensorflow"'
LABELLED = DEMO + ' version_labels { key: "stable" value: 1 }'
FAILED = "Failed to start server. Error: "


def test_ports_open_only_after_the_initial_load(launch: LaunchFn) -> None:
    """server.cc: ServerCore::Create (the initial load) before BuildAndStart of gRPC."""
    started = launch(
        models_config(DEMO),
        versions={"demo": [1]},
        annotations={"standin.tests.tfoperator.dev/load-delay-seconds": "1.5"},
    )
    server = started.server
    wait_until(lambda: started.printed("Loading servable version {name: demo version: 1}"))
    assert not server.listening
    assert not started.printed("Running gRPC ModelServer")
    wait_until(lambda: server.listening, what="the gRPC port to open")
    lines = server.log_lines
    loaded = next(i for i, x in enumerate(lines) if "Successfully loaded servable" in x)
    grpc_up = next(
        i for i, x in enumerate(lines) if "Running gRPC ModelServer at 0.0.0.0:8500" in x
    )
    rest_up = next(
        i for i, x in enumerate(lines) if "Exporting HTTP/REST API at:localhost:8501" in x
    )
    assert loaded < grpc_up < rest_up
    assert not started.run.done()


def test_failed_first_version_exits_255_with_the_real_message(launch: LaunchFn) -> None:
    """main.cc: "Failed to start server. Error: <status>" and return -1 (exit 255),
    the status from core/load_servables_fast.cc."""
    started = launch(models_config(DEMO), extra_args=("--max_num_load_retries=0",))
    add_corrupt_version(started.models_dir / "demo", 1)
    status = started.exit_status()
    assert (status.code, status.reason) == (255, "Error")
    last = status.log_tail[-1]
    assert last.startswith(
        FAILED + "UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: demo version: 1} due to error: "
    ), last
    assert last.endswith("}, }")
    assert "Loading servable: {name: demo version: 1} failed: " in status.message
    assert not started.server.listening
    assert started.server.exit_status == status


@pytest.mark.parametrize("make_folder", [False, True], ids=["missing", "empty"])
def test_missing_or_empty_base_path_waits_with_ports_closed(
    launch: LaunchFn, half_plus_three: object, make_folder: bool
) -> None:
    """tensorflow/serving#1693: no version, no end of the initial load; the
    ports stay closed. A version that appears later is loaded and the server opens."""
    started = launch(models_config(DEMO))
    base = started.models_dir / "demo"
    if make_folder:
        base.mkdir(parents=True)
        wanted = "No versions of servable demo found under base path /models/demo"
    else:
        wanted = "Could not find base path /models/demo for servable demo"
    wait_until(lambda: started.printed(wanted), what="the failed poll to be printed")
    assert not started.server.listening and not started.run.done()
    add_version(base, 1, half_plus_three)  # type: ignore[arg-type]
    wait_until(lambda: started.server.listening, what="the ports to open once v1 loaded")


def test_kill_stops_at_once_with_137(launch: LaunchFn) -> None:
    started = launch(models_config(DEMO))  # waits forever for a version
    wait_until(lambda: started.printed("Could not find base path"), what="the first poll")
    started.kill()
    status = started.exit_status(timeout=1)
    assert (status.code, status.reason) == (137, "Error")
    assert "Could not find base path /models/demo for servable demo" in status.message


def test_unreadable_or_invalid_config_file_exits_255(launch: LaunchFn) -> None:
    """server.cc: ParseProtoTextFile (util/proto_util.h) before ServerCore::Create."""
    absent = launch(None, extra_args=("--model_config_file=/etc/tfserving/absent.config",))
    status = absent.exit_status()
    assert status.code == 255
    assert status.log_tail[-1] == (
        FAILED + "NOT_FOUND: /etc/tfserving/absent.config; No such file or directory"
    )
    invalid = launch("model_config_list { config { nme: 'x' } }", name="invalid")
    status = invalid.exit_status()
    assert status.code == 255
    assert status.log_tail[-1] == (
        FAILED + "INVALID_ARGUMENT: Invalid protobuf file: '/etc/tfserving/models.config'"
    )


def test_no_model_at_all_exits_255(launch: LaunchFn) -> None:
    status = launch(None).exit_status()
    assert status.log_tail[-1] == (
        FAILED + "INVALID_ARGUMENT: Both server_options.model_base_path and "
        "server_options.model_config_file are empty!"
    )


def test_version_labels_at_start_need_the_unavailable_models_flag(launch: LaunchFn) -> None:
    """server_core.cc: labels are checked before the first models are added, so
    on the initial config no version is AVAILABLE yet."""
    refused = launch(models_config(LABELLED), versions={"demo": [1]})
    status = refused.exit_status()
    assert status.code == 255
    assert status.log_tail[-1] == (
        FAILED + "FAILED_PRECONDITION: Request to assign label to version 1 of model demo, "
        "which is not currently available for inference"
    )
    allowed = launch(
        models_config(LABELLED),
        extra_args=("--allow_version_labels_for_unavailable_models",),
        name="allowed",
    )
    channel = allowed.channel()
    channel.close()
    assert not allowed.run.done()


def test_bad_flag_value_exits_255_after_the_usage(launch: LaunchFn) -> None:
    """main.cc: Flags::Parse fails -> usage printed, return -1."""
    status = launch(models_config(DEMO), extra_args=("--port=abc",)).exit_status()
    assert status.code == 255
    # The tail is the kubelet's: at most 80 lines and 2048 bytes of the end.
    assert len(status.log_tail) <= 80
    assert len(status.message.encode()) <= 2048
    assert status.log_tail[-1].startswith("\t--enable_serialization_as_tensor_content=false")


def test_bad_flag_value_is_printed_before_the_usage(launch: LaunchFn) -> None:
    started = launch(models_config(DEMO), extra_args=("--enable_batching=maybe",))
    assert started.exit_status().code == 255
    lines = started.server.log_lines
    error = next(i for i, x in enumerate(lines) if "Couldn't interpret value maybe" in x)
    assert lines[error + 1] == "usage: /usr/bin/tensorflow_model_server"


def test_unknown_arguments_are_printed_and_ignored(launch: LaunchFn) -> None:
    """main.cc: "unknown argument: <first>" and the usage, then the server goes on;
    ``--name value`` and ``-name=value`` are unknown arguments too."""
    started = launch(
        models_config(DEMO),
        extra_args=("--prot=1", "-rest_api_port=9", "--file_system_poll_wait_seconds", "5"),
        versions={"demo": [1]},
    )
    channel = started.channel()
    channel.close()
    assert started.printed("unknown argument: --prot=1")
    assert not started.printed("unknown argument: -rest_api_port=9")  # only the first
    assert started.server.spec.flags.file_system_poll_wait_seconds == 1


def test_version_flag_prints_and_exits_0(launch: LaunchFn) -> None:
    status = launch(models_config(DEMO), extra_args=("--version",)).exit_status()
    assert (status.code, status.reason) == (0, "Completed")
    assert status.log_tail[0] == "TensorFlow ModelServer: 2.20.0"
