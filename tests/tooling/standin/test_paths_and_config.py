"""Pure parts: container path resolution and the server's flags and config."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from localdev.standin.config import (
    ServerFlags,
    parse_load_delays,
    parse_model_server_config,
    parse_server_args,
    server_argv,
    validate_config,
)
from localdev.standin.errors import ServingError
from localdev.standin.paths import (
    ConfigMapFile,
    HostPath,
    PathError,
    PathResolver,
    Unreachable,
)

from .helpers import pod_dict

pytestmark = pytest.mark.tensorflow


class FakeCluster:
    """A ClusterLookup over plain dicts, as the API would return them."""

    def __init__(self, objects: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
        self.objects = objects
        self.reads: list[tuple[str, str]] = []

    def get_configmap(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads.append(("ConfigMap", f"{namespace}/{name}"))
        return self.objects.get(("ConfigMap", f"{namespace}/{name}"))

    def get_pvc(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads.append(("PVC", f"{namespace}/{name}"))
        return self.objects.get(("PVC", f"{namespace}/{name}"))

    def get_pv(self, name: str) -> Mapping[str, Any] | None:
        self.reads.append(("PV", name))
        return self.objects.get(("PV", name))


def resolver(
    volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], cluster: FakeCluster | None = None
) -> PathResolver:
    pod = pod_dict(args=[], volumes=volumes, mounts=mounts, namespace="ml")
    return PathResolver(pod, pod["spec"]["containers"][0], cluster or FakeCluster({}))


def test_host_path_longest_mount_wins() -> None:
    r = resolver(
        volumes=[
            {"name": "root", "hostPath": {"path": "/srv/root"}},
            {"name": "models", "hostPath": {"path": "/srv/models"}},
        ],
        mounts=[
            {"name": "root", "mountPath": "/data"},
            {"name": "models", "mountPath": "/data/models/"},
        ],
    )
    assert r.resolve("/data/models/mnist") == HostPath("/srv/models/mnist")
    assert r.resolve("/data/other") == HostPath("/srv/root/other")
    assert r.resolve("/data/models") == HostPath("/srv/models")
    # "/data/modelsX" is not under "/data/models"
    assert r.resolve("/data/modelsX/a") == HostPath("/srv/root/modelsX/a")


def test_sub_path() -> None:
    r = resolver(
        volumes=[{"name": "store", "hostPath": {"path": "/srv/store"}}],
        mounts=[{"name": "store", "mountPath": "/models/mnist", "subPath": "teams/a/mnist"}],
    )
    assert r.resolve("/models/mnist") == HostPath("/srv/store/teams/a/mnist")
    assert r.resolve("/models/mnist/1") == HostPath("/srv/store/teams/a/mnist/1")


def test_pvc_to_bound_pv_host_path_and_local() -> None:
    cluster = FakeCluster(
        {
            ("PVC", "ml/models"): {"spec": {"volumeName": "pv-models"}},
            ("PV", "pv-models"): {"spec": {"hostPath": {"path": "/mnt/pv"}}},
            ("PVC", "ml/local"): {"spec": {"volumeName": "pv-local"}},
            ("PV", "pv-local"): {"spec": {"local": {"path": "/mnt/local"}}},
            ("PVC", "ml/pending"): {"spec": {}},
        }
    )
    r = resolver(
        volumes=[
            {"name": "m", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "l", "persistentVolumeClaim": {"claimName": "local"}},
            {"name": "p", "persistentVolumeClaim": {"claimName": "pending"}},
            {"name": "x", "persistentVolumeClaim": {"claimName": "missing"}},
        ],
        mounts=[
            {"name": "m", "mountPath": "/models", "subPath": "sub"},
            {"name": "l", "mountPath": "/local"},
            {"name": "p", "mountPath": "/pending"},
            {"name": "x", "mountPath": "/missing"},
        ],
        cluster=cluster,
    )
    assert r.host_dir("/models/mnist") == "/mnt/pv/sub/mnist"
    assert r.host_dir("/local/a") == "/mnt/local/a"
    reads = len(cluster.reads)
    r.host_dir("/models/other")  # a bound claim is looked up once
    assert len(cluster.reads) == reads
    pending = r.resolve("/pending/a")
    assert isinstance(pending, Unreachable) and "not bound" in pending.reason
    missing = r.resolve("/missing/a")
    assert isinstance(missing, Unreachable) and "not found" in missing.reason


def test_unreachable_paths() -> None:
    r = resolver(
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "share", "nfs": {"server": "nfs", "path": "/x"}},
        ],
        mounts=[
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "share", "mountPath": "/share"},
        ],
    )
    for path, words in (
        ("/scratch/m", "emptyDir"),
        ("/share/m", "nfs"),
        ("s3://bucket/m", "URI"),
        ("gs://bucket/m", "URI"),
        ("/elsewhere/m", "no volume"),
        ("relative/m", "not an absolute path"),
    ):
        result = r.resolve(path)
        assert isinstance(result, Unreachable), path
        assert words in result.reason, (path, result.reason)
        with pytest.raises(PathError):
            r.host_dir(path)


def test_config_map_files_items_and_frozen_sub_path(tmp_path: Path) -> None:
    config = {"data": {"models.config": "v1"}}
    cluster = FakeCluster(
        {
            ("ConfigMap", "ml/cfg"): config,
            ("ConfigMap", "ml/bin"): {
                "binaryData": {"raw": base64.b64encode(b"binary text").decode()}
            },
        }
    )
    r = resolver(
        volumes=[
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {
                "name": "renamed",
                "configMap": {
                    "name": "cfg",
                    "items": [{"key": "models.config", "path": "a/b.cfg"}],
                },
            },
            {"name": "bin", "configMap": {"name": "bin"}},
        ],
        mounts=[
            {"name": "cfg", "mountPath": "/etc/tfserving"},
            {"name": "cfg", "mountPath": "/etc/single.config", "subPath": "models.config"},
            {"name": "renamed", "mountPath": "/etc/renamed"},
            {"name": "bin", "mountPath": "/etc/bin"},
        ],
        cluster=cluster,
    )
    assert isinstance(r.resolve("/etc/tfserving/models.config"), ConfigMapFile)
    assert r.read_text("/etc/tfserving/models.config") == "v1"
    assert r.read_text("/etc/single.config") == "v1"
    assert r.read_text("/etc/renamed/a/b.cfg") == "v1"
    assert r.read_text("/etc/bin/raw") == "binary text"
    with pytest.raises(PathError, match="no file"):
        r.read_text("/etc/renamed/models.config")
    # The kubelet updates configMap volumes, but never files mounted with subPath.
    config["data"]["models.config"] = "v2"
    assert r.read_text("/etc/tfserving/models.config") == "v2"
    assert r.read_text("/etc/single.config") == "v1"


def test_host_file_read(tmp_path: Path) -> None:
    (tmp_path / "models.config").write_text("hello")
    r = resolver(
        volumes=[{"name": "c", "hostPath": {"path": str(tmp_path)}}],
        mounts=[{"name": "c", "mountPath": "/etc/tfserving"}],
    )
    assert r.read_text("/etc/tfserving/models.config") == "hello"
    with pytest.raises(PathError):
        r.read_text("/etc/tfserving/absent.config")


def test_server_args() -> None:
    """The real grammar: ``--name=value`` (bare ``--name`` for booleans); the
    spaced form and unknown flags are left over, a bad value is an error."""
    flags = parse_server_args(
        [
            "--port=9000",
            "--rest_api_port",
            "0",
            "--model_config_file=/etc/tfserving/models.config",
            "--file_system_poll_wait_seconds=5",
            "--allow_version_labels_for_unavailable_models",
            "--enable_batching",
            "--monitoring_config_file=/etc/tfserving/monitoring.config",
            "--prot=1",
        ]
    )
    assert flags.port == 9000
    assert flags.rest_api_port == 0  # "--rest_api_port" alone is no int flag: unknown
    assert flags.unknown_args == ("--rest_api_port", "0", "--prot=1")
    assert flags.model_config_file == "/etc/tfserving/models.config"
    assert flags.file_system_poll_wait_seconds == 5
    assert flags.allow_version_labels_for_unavailable_models is True
    assert flags.unknown_flags == ("rest_api_port", "prot")
    assert flags.max_num_load_retries == ServerFlags().max_num_load_retries == 5
    assert flags.flag_errors == ()
    bad = parse_server_args(["--port=http", "--enable_batching=maybe"])
    assert bad.flag_errors == (
        "Couldn't interpret value http for flag port.",
        "Couldn't interpret value maybe for flag enable_batching.",
    )


def test_server_argv_from_command_env_and_entrypoint() -> None:
    container = {
        "command": ["/usr/bin/tensorflow_model_server", "--port=$(GRPC_PORT)"],
        "args": ["--model_name=$(NAME)", "--x=$$(NAME)"],
        "env": [{"name": "GRPC_PORT", "value": "8600"}, {"name": "NAME", "value": "mnist"}],
    }
    assert server_argv(container) == ["--port=8600", "--model_name=mnist", "--x=$(NAME)"]
    image_default = {"env": [{"name": "MODEL_NAME", "value": "mnist"}]}
    assert parse_server_args(server_argv(image_default)).model_base_path == "/models/mnist"


def test_load_delays() -> None:
    assert parse_load_delays(None).for_version(3) == 0
    assert parse_load_delays("2.5").for_version(9) == 2.5
    delays = parse_load_delays("4=30, 5=2.5")
    assert (delays.for_version(4), delays.for_version(5), delays.for_version(6)) == (30, 2.5, 0)
    for bad in ("x", "4=", "-1", "a=1"):
        with pytest.raises(ValueError):
            parse_load_delays(bad)


def test_config_validation() -> None:
    ok = parse_model_server_config(
        'model_config_list { config { name: "a" base_path: "/m/a" model_platform: "tensorflow" }'
        ' config { name: "b" base_path: "gs://bucket/b" model_platform: "tensorflow" } }'
    )
    validate_config(ok)
    for text, words in (
        (
            'model_config_list { config { name: "a" base_path: "m/a" '
            'model_platform: "tensorflow" } }',
            "absolute path or URI",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" model_platform: "tensorflow" }'
            ' config { name: "a" base_path: "/n" model_platform: "tensorflow" } }',
            "multiple times",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" model_platform: "onnx" } }',
            "unsupported platform",
        ),
        ('model_config_list { config { name: "a" base_path: "/m" } }', "neither"),
    ):
        with pytest.raises(ServingError, match=words):
            validate_config(parse_model_server_config(text))
    with pytest.raises(ServingError, match="Invalid protobuf file"):
        parse_model_server_config("model_config_list { nonsense }")
