"""What a pod asks tensorflow_model_server to do: its flags and its model config.

Pure functions over plain data (the pod's container as a dict, the config
file's text), so they can be tested without Kubernetes or TensorFlow loaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from .errors import ServingError, failed_precondition, invalid_argument
from .flags import SERVER_FLAGS, parse_command_line

log = logging.getLogger(__name__)

SERVER_BINARY = "tensorflow_model_server"
CONTAINER_NAME = "tensorflow-serving"
LOAD_DELAY_ANNOTATION = "standin.tests.tfoperator.dev/load-delay-seconds"


@dataclass(frozen=True)
class ServerFlags:
    """The flags of tensorflow_model_server that change what the stand-in does.

    Defaults are the real server's (``Server::Options`` in
    ``model_servers/server.h`` at 2.20.0). ``None`` for a thread count means
    the real default, ``4 x NumSchedulableCPUs()``, which the pod server
    resolves. ``unknown_args`` are the arguments ``Flags::Parse`` left over,
    ``flag_errors`` the values it could not interpret.
    """

    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int | None = None
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    num_load_threads: int = 0
    file_system_poll_wait_seconds: int = 1
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    allow_version_labels_for_unavailable_models: bool = False
    use_alts_credentials: bool = False
    ssl_config_file: str = ""
    monitoring_config_file: str = ""
    grpc_max_threads: int | None = None
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    version: bool = False
    unknown_args: tuple[str, ...] = field(default=())
    flag_errors: tuple[str, ...] = field(default=())
    help_requested: bool = False

    @property
    def load_retry_interval_seconds(self) -> float:
        """The pause between load retries; a negative flag value means none."""
        return max(self.load_retry_interval_micros, 0) / 1_000_000

    @property
    def unknown_flags(self) -> tuple[str, ...]:
        """Names of the unknown ``--name[=value]`` arguments (for logs and older callers)."""
        return tuple(
            a.lstrip("-").partition("=")[0] for a in self.unknown_args if a.startswith("-")
        )

    def defaults_for_usage(self, cpus: int) -> dict[str, Any]:
        """Default values as the usage text shows them (thread counts resolved)."""
        shown: dict[str, Any] = {
            name: getattr(ServerFlags, name)
            for name in SERVER_FLAGS
            if isinstance(getattr(ServerFlags, name, None), (bool, int, str))
        }
        shown.update(
            grpc_max_threads=4 * cpus,
            rest_api_num_threads=4 * cpus,
            model_name="",
            enable_profiler=True,
            flush_filesystem_caches=True,
            remove_unused_fields_from_bundle_metagraph=True,
            num_tflite_pools=cpus,
            num_tflite_interpreters_per_pool=1,
            rest_api_timeout_in_ms=30000,
        )
        return shown


_FIELDS = set(ServerFlags.__dataclass_fields__)


def parse_server_args(argv: Sequence[str]) -> ServerFlags:
    """Parse tensorflow_model_server's command line (without the binary itself).

    Follows the real grammar (see ``flags.py``): problems are not raised but
    kept in ``flag_errors``/``unknown_args``/``help_requested``, because the
    process reports them (``PodServer.run`` exits 255 or goes on, like main.cc).
    """
    parsed = parse_command_line(argv)
    values = {k: v for k, v in parsed.values.items() if k in _FIELDS}
    return ServerFlags(
        **values,
        unknown_args=parsed.unknown,
        flag_errors=parsed.errors,
        help_requested=parsed.help_requested,
    )


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references like the kubelet does for command and args."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, text)


def find_server_container(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's model server container: named ``tensorflow-serving``, or else
    the first one whose command runs ``tensorflow_model_server``."""
    containers = (pod.get("spec") or {}).get("containers") or []
    for container in containers:
        if container.get("name") == CONTAINER_NAME:
            return container
    for container in containers:
        command = container.get("command") or []
        if command and str(command[0]).endswith(SERVER_BINARY):
            return container
    return None


def server_argv(container: Mapping[str, Any]) -> list[str]:
    """The model server's arguments as the container would run it.

    Uses ``command[1:] + args`` with ``$(VAR)`` expanded from literal ``env``
    values. A container without ``command`` runs the image's entrypoint, which
    for ``tensorflow/serving`` builds the flags from ``MODEL_NAME`` and
    ``MODEL_BASE_PATH``.
    """
    env = {
        e["name"]: str(e["value"])
        for e in container.get("env") or []
        if "name" in e and e.get("value") is not None
    }
    command = [expand_env(str(c), env) for c in container.get("command") or []]
    args = [expand_env(str(a), env) for a in container.get("args") or []]
    if command:
        return command[1:] + args
    model_name = env.get("MODEL_NAME", "model")
    model_base_path = env.get("MODEL_BASE_PATH", "/models")
    entrypoint = [
        "--port=8500",
        "--rest_api_port=8501",
        f"--model_name={model_name}",
        f"--model_base_path={model_base_path}/{model_name}",
    ]
    return entrypoint + args


def parse_model_server_config(text: str, source: str = "config") -> ModelServerConfig:
    """Parse a text-format ``ModelServerConfig`` (what ``--model_config_file`` holds)."""
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise invalid_argument(f"Invalid protobuf file: '{source}': {e}") from None
    return config


def single_model_config(model_name: str, model_base_path: str) -> ModelServerConfig:
    """The config the real server builds from ``--model_name``/``--model_base_path``."""
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = model_base_path
    model.model_platform = "tensorflow"
    return config


def is_uri(path: str) -> bool:
    """Whether a base path is a URI (``s3://``, ``gs://``, ...) rather than a file path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def validate_config(config: ModelServerConfig) -> None:
    """Reject a config the real server would reject (raises ``ServingError``)."""
    if config.WhichOneof("config") == "custom_model_config":
        raise failed_precondition("ModelServer does not yet support custom model config.")
    names: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        names.add(model.name)
        if not model.base_path.startswith("/") and not is_uri(model.base_path):
            raise invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; "
                f"got base_path()={model.base_path}"
            )
        platform = model.model_platform
        if model.model_type != 0:
            if platform:
                raise invalid_argument(
                    "Illegal setting both model_type(deprecated) and model_platform."
                )
            platform = "tensorflow"
        if not platform:
            raise invalid_argument(
                "Illegal setting neither model_type(deprecated) nor model_platform."
            )
        if platform != "tensorflow":
            raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")


@dataclass(frozen=True)
class LoadDelays:
    """Per-test artificial load delays from the pod annotation."""

    default: float = 0.0
    per_version: Mapping[int, float] = field(default_factory=dict)

    def for_version(self, version: int) -> float:
        """Seconds version ``version`` stays LOADING before the real load starts."""
        return self.per_version.get(version, self.default)


def parse_load_delays(value: str | None) -> LoadDelays:
    """Parse the load-delay annotation: ``"3"`` (every version) or ``"4=30,5=2.5"``.

    Raises ``ValueError`` on anything else, so a typo in a test is loud.
    """
    if value is None or not value.strip():
        return LoadDelays()
    text = value.strip()
    if "=" not in text:
        seconds = float(text)
        if seconds < 0:
            raise ValueError(f"negative load delay: {value!r}")
        return LoadDelays(default=seconds)
    per_version: dict[int, float] = {}
    for part in text.split(","):
        version, eq, seconds_text = part.strip().partition("=")
        if not eq:
            raise ValueError(f"expected VERSION=SECONDS, got {part!r}")
        seconds = float(seconds_text)
        if seconds < 0:
            raise ValueError(f"negative load delay: {part!r}")
        per_version[int(version)] = seconds
    return LoadDelays(per_version=per_version)


def describe_error(error: ServingError) -> str:
    """``CODE: message``, the way the real server's logs print a status."""
    return f"{error.code.name}: {error.message}"
