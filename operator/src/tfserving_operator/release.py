"""The one TensorFlow Serving release this project pins, and what follows from it.

Everything that depends on the release reads it from here: the default model
server images (settings.py), the flags spec.serverArgs may use and their
admission rules in the CRD (`python -m tfserving_operator.release --cel`
prints them, `--write-crd PATH` rewrites them, `make manifests` runs that;
tests/contract/test_server_args_crd.py fails when the CRD differs), and the
stand-in model server's notion of the flags (localdev/standin).
tests/contract/test_release_pin.py fails when the Python pins, the chart,
the docs, the manifests or the golden renders drift from the release.

Pure: no I/O at import, no TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

TF_SERVING_VERSION = "2.20.0"
# TensorFlow promises graph compatibility within a minor release only: the
# TensorFlow that exports SavedModels (training jobs, the stand-in) pins this.
TF_MINOR = ".".join(TF_SERVING_VERSION.split(".")[:2])

IMAGE_REPOSITORY = "tensorflow/serving"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{TF_SERVING_VERSION}"
DEFAULT_GPU_IMAGE = f"{IMAGE_REPOSITORY}:{TF_SERVING_VERSION}-gpu"
# tensorflow/serving images are published for linux/amd64 only.
DEFAULT_IMAGE_ARCHITECTURES = ("amd64",)

# Every flag tensorflow_model_server defines, name -> type, as listed by the
# tensorflow::Flag(...) entries of tensorflow_serving/model_servers/main.cc at
# tag 2.20.0 (the type is the C++ type of the option each entry binds:
# main.cc's locals and Server::Options in model_servers/server.h). main.cc
# passes only this list to tensorflow::Flags::Parse: no TensorFlow flag lists
# are appended.
SERVER_FLAGS: dict[str, str] = {
    "port": "int32",
    "grpc_socket_path": "string",
    "rest_api_port": "int32",
    "rest_api_num_threads": "int32",
    "rest_api_timeout_in_ms": "int32",
    "rest_api_enable_cors_support": "bool",
    "enable_batching": "bool",
    "allow_version_labels_for_unavailable_models": "bool",
    "batching_parameters_file": "string",
    "enable_per_model_batching_parameters": "bool",
    "model_config_file": "string",
    "model_config_file_poll_wait_seconds": "int32",
    "model_name": "string",
    "model_base_path": "string",
    "num_load_threads": "int32",
    "num_unload_threads": "int32",
    "max_num_load_retries": "int32",
    "load_retry_interval_micros": "int64",
    "file_system_poll_wait_seconds": "int32",
    "flush_filesystem_caches": "bool",
    "tensorflow_session_parallelism": "int64",
    "tensorflow_session_config_file": "string",
    "tensorflow_intra_op_parallelism": "int64",
    "tensorflow_inter_op_parallelism": "int64",
    "use_alts_credentials": "bool",
    "ssl_config_file": "string",
    "platform_config_file": "string",
    "per_process_gpu_memory_fraction": "float",
    "saved_model_tags": "string",
    "grpc_channel_arguments": "string",
    "grpc_max_threads": "int32",
    "enable_model_warmup": "bool",
    "num_request_iterations_for_warmup": "int32",
    "version": "bool",
    "monitoring_config_file": "string",
    "remove_unused_fields_from_bundle_metagraph": "bool",
    "prefer_tflite_model": "bool",
    "num_tflite_pools": "int32",
    "num_tflite_interpreters_per_pool": "int32",
    "enable_signature_method_name_check": "bool",
    "xla_cpu_compilation_enabled": "bool",
    "xla_gpu_compilation_enabled": "bool",
    "enable_profiler": "bool",
    "thread_pool_factory_config_file": "string",
    "mixed_precision": "string",
    "skip_initialize_tpu": "bool",
    "enable_grpc_healthcheck_service": "bool",
    "enable_serialization_as_tensor_content": "bool",
}

# Flags render.server_args sets from spec fields: a repeat in serverArgs would
# silently override what the gate and the config rely on (the parser keeps the
# last value).
RENDERED_FLAGS: tuple[str, ...] = (
    "port",
    "rest_api_port",
    "model_config_file",
    "file_system_poll_wait_seconds",
    "enable_model_warmup",
    "max_num_load_retries",
    "load_retry_interval_micros",
    "allow_version_labels_for_unavailable_models",
    "monitoring_config_file",
    "enable_batching",
    "batching_parameters_file",
    "per_process_gpu_memory_fraction",
)
# Flags the operator leaves unset on purpose, because they contradict what it
# renders: a second listener it does not probe, a model named outside the
# config file (ignored with --model_config_file), and config polling (each
# config generation is an immutable ConfigMap rolled out through the gate).
RESERVED_FLAGS: tuple[str, ...] = (
    "grpc_socket_path",
    "model_name",
    "model_base_path",
    "model_config_file_poll_wait_seconds",
)
OPERATOR_FLAGS: tuple[str, ...] = RENDERED_FLAGS + RESERVED_FLAGS
# Flags that make the server do something other than serve: --version prints
# the version and exits 0 (main.cc), so the pod would restart forever.
NON_SERVING_FLAGS: tuple[str, ...] = ("version",)

# Value grammar per type, as RE2 (CEL's matches()) and Python's re agree on it.
# tensorflow/core/util/command_line_flags.cc parses ints and floats with
# sscanf and refuses trailing characters; bools take no value or one of
# true/false (any case), 1, 0. Checked against the parser TensorFlow's wheel
# ships (a small program calling tensorflow::Flags::Parse, TensorFlow 2.21).
# Ints are limited to what fits without a range check on int64 (18 digits),
# and int32 values are range-checked; floats are decimal (the parser would
# also take inf, nan and hex floats, which no flag of the server means).
INT_VALUE = "[+-]?[0-9]{1,18}"
INT32_RANGE = (-(2**31), 2**31 - 1)
FLOAT_VALUE = "[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"
BOOL_VALUE = "([tT][rR][uU][eE]|[fF][aA][lL][sS][eE]|1|0)"

FIELD = "spec.serverArgs"


def flags_of_type(flag_type: str, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the server's flags of one type, sorted, minus `exclude`."""
    skip = set(exclude)
    return sorted(n for n, t in SERVER_FLAGS.items() if t == flag_type and n not in skip)


def _alternation(names: Iterable[str]) -> str:
    return "(" + "|".join(names) + ")"


def _named(names: Iterable[str], rest: str) -> str:
    """A CEL regex literal (single-quoted) for `--<one of names><rest>`."""
    return f"'^--{_alternation(names)}{rest}'"


def item_rules() -> list[dict[str, str]]:
    """The CEL rules on each item of spec.serverArgs (`self` is one argument).

    Order matters for the messages a user sees: the API server reports every
    rule that fails, and the later rules assume the earlier shape holds.
    """
    owned = sorted(OPERATOR_FLAGS)
    settable_bools = flags_of_type("bool", OPERATOR_FLAGS + NON_SERVING_FLAGS)
    rules = [
        {
            "rule": "self.matches('^--[a-z0-9_]+(=.*)?$')",
            "message": (
                f"{FIELD}: each item must be one flag, --name=value (a bool flag may be a "
                "bare --name): tensorflow_model_server ignores single-dash flags and values "
                "given as a separate item"
            ),
        },
        {
            "rule": f"!self.startsWith('--') || self.matches({_named(SERVER_FLAGS, '(=|$)')})",
            "message": f"{FIELD}: not a flag of tensorflow_model_server {TF_SERVING_VERSION}",
        },
        {
            "rule": f"!self.matches({_named(owned, '(=|$)')})",
            "reason": "FieldValueForbidden",
            "message": (
                f"{FIELD} must not set flags the operator owns ("
                + ", ".join(f"--{n}" for n in owned)
                + "): use the matching spec field"
            ),
        },
        {
            "rule": f"!self.matches({_named(NON_SERVING_FLAGS, '(=|$)')})",
            "reason": "FieldValueForbidden",
            "message": f"{FIELD} must not set --version: the server would print it and exit",
        },
        {
            "rule": (
                "!self.matches('^--[a-z0-9_]+$') || "
                f"self.matches({_named(flags_of_type('bool'), '$')})"
            ),
            "message": f"{FIELD}: only bool flags may be given without =value",
        },
        {
            "rule": (
                f"!self.matches({_named(settable_bools, '=')}) || "
                f"self.matches({_named(settable_bools, '=' + BOOL_VALUE + '$')})"
            ),
            "message": f"{FIELD}: a bool flag takes =true, =false, =1 or =0 (or no value)",
        },
    ]
    rules += _number_rules()
    return rules


def _number_rules() -> list[dict[str, str]]:
    int32 = flags_of_type("int32", OPERATOR_FLAGS)
    int64 = flags_of_type("int64", OPERATOR_FLAGS)
    floats = flags_of_type("float", OPERATOR_FLAGS)
    low, high = INT32_RANGE
    value = "int(self.substring(self.indexOf('=') + 1))"
    rules = []
    if int32:
        rules.append(
            {
                "rule": (
                    f"!self.matches({_named(int32, '=')}) || "
                    f"(self.matches({_named(int32, '=' + INT_VALUE + '$')}) && "
                    f"{value} >= {low} && {value} <= {high})"
                ),
                "message": (
                    f"{FIELD}: an int32 flag takes a whole number from {low} to {high} "
                    "(optional sign, digits only)"
                ),
            }
        )
    if int64:
        rules.append(
            {
                "rule": (
                    f"!self.matches({_named(int64, '=')}) || "
                    f"self.matches({_named(int64, '=' + INT_VALUE + '$')})"
                ),
                "message": (
                    f"{FIELD}: an int64 flag takes a whole number "
                    "(optional sign, at most 18 digits)"
                ),
            }
        )
    if floats:
        rules.append(
            {
                "rule": (
                    f"!self.matches({_named(floats, '=')}) || "
                    f"self.matches({_named(floats, '=' + FLOAT_VALUE + '$')})"
                ),
                "message": f"{FIELD}: a float flag takes a decimal number (e.g. 0.5, 1e-3)",
            }
        )
    return rules


# Bounds that keep the CEL cost estimate within the API server's budget.
MAX_ITEMS = 64
MAX_ITEM_LENGTH = 1024


def server_args_schema() -> dict[str, Any]:
    """The CRD's schema node for spec.serverArgs, rules included."""
    return {
        "type": "array",
        "maxItems": MAX_ITEMS,
        "description": (
            f"Extra tensorflow_model_server {TF_SERVING_VERSION} flags, one per item: "
            "--name=value, or a bare --name for a bool flag (e.g. "
            "--rest_api_timeout_in_ms=5000, --enable_grpc_healthcheck_service). "
            "Refused at admission: single-dash flags, names the server does not define, "
            "values of the wrong type, and flags the operator owns (use the matching spec field)."
        ),
        "items": {
            "type": "string",
            "maxLength": MAX_ITEM_LENGTH,
            "x-kubernetes-validations": item_rules(),
        },
    }


def server_args_yaml(indent: int) -> str:
    """server_args_schema() as the CRD file spells it (`serverArgs:` at `indent` spaces)."""
    pad = " " * indent
    node = server_args_schema()
    lines = [
        f"{pad}serverArgs:",
        f"{pad}  type: array",
        f"{pad}  maxItems: {node['maxItems']}",
        f"{pad}  description: {json.dumps(node['description'])}",
        f"{pad}  items:",
        f"{pad}    type: string",
        f"{pad}    maxLength: {MAX_ITEM_LENGTH}",
        f"{pad}    x-kubernetes-validations:",
    ]
    for rule in item_rules():
        lines.append(f"{pad}    - rule: {json.dumps(rule['rule'])}")
        if "reason" in rule:
            lines.append(f"{pad}      reason: {rule['reason']}")
        lines.append(f"{pad}      message: {json.dumps(rule['message'])}")
    return "\n".join(lines) + "\n"


def replace_node(text: str, path: Sequence[str], render: Callable[[int], str]) -> str:
    """YAML text with one node replaced by `render(indent)`: the node's line and
    everything indented under it.

    `path` names the node by keys, each the shallowest such key inside the
    previous one's block (which must hold it once at that depth).
    """
    lines = text.splitlines(keepends=True)
    start, end = -1, len(lines)
    for key in path:
        found = [i for i in range(start + 1, end) if lines[i].strip() == f"{key}:"]
        depth = min((_indent(lines[i]) for i in found), default=0)
        found = [i for i in found if _indent(lines[i]) == depth]
        if len(found) != 1:
            raise ValueError(f"{'.'.join(path)}: {key} found {len(found)} times, want once")
        start = found[0]
        end = start + 1
        while end < len(lines) and (
            not lines[end].strip() or _indent(lines[end]) > _indent(lines[start])
        ):
            end += 1
    return "".join(lines[:start]) + render(_indent(lines[start])) + "".join(lines[end:])


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rewrite_crd(text: str) -> str:
    """The CRD file's text with its serverArgs node replaced by the generated one."""
    return replace_node(text, ("serverArgs",), server_args_yaml)


def main(argv: list[str] | None = None) -> int:
    """`--cel`: print the serverArgs schema node; `--write-crd PATH`: update it in a CRD file."""
    parser = argparse.ArgumentParser(prog="python -m tfserving_operator.release")
    parser.add_argument("--cel", action="store_true", help="print the serverArgs schema (YAML)")
    parser.add_argument("--write-crd", metavar="PATH", help="rewrite serverArgs in this CRD file")
    args = parser.parse_args(argv)
    if args.write_crd:
        path = Path(args.write_crd)
        path.write_text(rewrite_crd(path.read_text()))
    elif args.cel:
        sys.stdout.write(server_args_yaml(0))
    else:
        sys.stdout.write(TF_SERVING_VERSION + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
