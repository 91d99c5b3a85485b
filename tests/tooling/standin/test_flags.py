"""The flag grammar of tensorflow_model_server 2.20.0 (main.cc + TensorFlow's
``Flags::Parse``, xla/tsl/util/command_line_flags.cc), pure: no server runs."""

from __future__ import annotations

import pytest

from localdev.standin.config import parse_server_args
from localdev.standin.flags import SERVER_FLAGS, parse_command_line, usage_lines


def test_flag_table_is_main_cc_at_2_20_0() -> None:
    """One table: the release pin's (test_release_pin checks it against main.cc)."""
    from tfserving_operator import release

    assert SERVER_FLAGS is release.SERVER_FLAGS
    assert list(SERVER_FLAGS)[:3] == ["port", "grpc_socket_path", "rest_api_port"]
    assert SERVER_FLAGS["load_retry_interval_micros"] == "int64"
    assert SERVER_FLAGS["per_process_gpu_memory_fraction"] == "float"
    # A ServerCore option, not a flag of main.cc: the real server calls it unknown.
    assert "num_initial_load_threads" not in SERVER_FLAGS


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("--enable_batching", True),
        ("--enable_batching=true", True),
        ("--enable_batching=TRUE", True),
        ("--enable_batching=1", True),
        ("--enable_batching=false", False),
        ("--enable_batching=0", False),
    ],
)
def test_booleans(arg: str, value: bool) -> None:
    assert parse_command_line([arg]).values == {"enable_batching": value}


def test_only_double_dash_name_equals_value() -> None:
    """``--name value`` and ``-name=value`` are not flags: both words are left over."""
    line = parse_command_line(["--port", "9000", "-rest_api_port=8501", "--port=9001"])
    assert line.values == {"port": 9001}
    assert line.unknown == ("--port", "9000", "-rest_api_port=8501")
    assert line.ok  # unknown arguments do not fail the parse


def test_prefix_of_another_flag_name_is_unknown() -> None:
    line = parse_command_line(["--portx=1", "--enable_batchingfoo", "--model_config_file_x=1"])
    assert line.values == {}
    assert line.unknown == ("--portx=1", "--enable_batchingfoo", "--model_config_file_x=1")
    # The longer names are matched in their own right.
    line = parse_command_line(["--model_config_file_poll_wait_seconds=5"])
    assert line.values == {"model_config_file_poll_wait_seconds": 5}


@pytest.mark.parametrize(
    "arg",
    [
        "--port=abc",
        "--port=",
        "--port=2147483648",  # beyond int32
        "--port=1.5",
        "--enable_batching=maybe",
        "--per_process_gpu_memory_fraction=half",
    ],
)
def test_bad_values_fail_the_parse(arg: str) -> None:
    line = parse_command_line([arg])
    assert not line.ok
    name = arg[2:].partition("=")[0]
    assert line.errors == (f"Couldn't interpret value {arg.partition('=')[2]} for flag {name}.",)


def test_every_argument_is_parsed_and_last_value_wins() -> None:
    line = parse_command_line(["--port=x", "--port=2", "--port=3", "--", "--port=4"])
    assert line.values == {"port": 3}
    assert line.errors == ("Couldn't interpret value x for flag port.",)
    assert line.unknown == ("--", "--port=4")


def test_help_fails_the_parse() -> None:
    assert parse_command_line(["--help"]).help_requested
    assert not parse_command_line(["--help"]).ok


def test_int64_and_float_values() -> None:
    line = parse_command_line(
        ["--load_retry_interval_micros=9000000000", "--per_process_gpu_memory_fraction=0.5"]
    )
    assert line.values == {
        "load_retry_interval_micros": 9_000_000_000,
        "per_process_gpu_memory_fraction": 0.5,
    }


def test_usage_text_lists_every_flag_with_its_type() -> None:
    flags = parse_server_args([])
    lines = usage_lines(flags.defaults_for_usage(cpus=2))
    assert lines[:2] == ["usage: /usr/bin/tensorflow_model_server", "Flags:"]
    assert len(lines) == 2 + len(SERVER_FLAGS)
    port = next(line for line in lines if line.startswith("\t--port="))
    assert port.split("\t")[1:3] == ["--port=8500".ljust(33), "int32"]
    assert any(line.startswith("\t--grpc_max_threads=8 ") for line in lines)
    assert any(line.startswith("\t--enable_model_warmup=true ") for line in lines)
