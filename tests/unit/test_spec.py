"""spec.py: the typed view of a ServedModel, its defaults, and the version set it asks for."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.golden.cases import CASES, servedmodel
from tfserving_operator import spec
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE
from tfserving_operator.spec import VersionSet

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "servedmodels.serving.tfoperator.dev.yaml"
HOST = {"hostPath": {"path": "/srv/models/m"}}


def parse(body: dict[str, Any]) -> spec.ServedModel:
    return spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)


def parse_spec(**fields: Any) -> spec.ServedModel:
    return parse(servedmodel("m", {"storage": HOST, **fields}))


# ----- defaults -----------------------------------------------------------------


def test_minimal_spec_gets_what_tf_serving_users_expect() -> None:
    sm = parse(servedmodel("half-plus-three", {"storage": HOST}))
    assert sm.name == sm.model_name == "half-plus-three"
    assert sm.namespace == "models"
    assert sm.target == VersionSet(policy="latest", num_versions=1)
    assert sm.replicas == 1
    assert sm.image == DEFAULT_IMAGE
    assert sm.image_pull_policy == "IfNotPresent"
    assert (sm.gpus, sm.gpu_memory_fraction) == (0, None)
    assert (sm.grpc_port, sm.rest_port) == (8500, 8501)
    assert sm.batching is None and sm.monitoring_path is None
    assert sm.warmup is True
    assert sm.file_system_poll_wait_seconds == 30
    assert sm.server_args == ()
    assert sm.availability_timeout_seconds == 600
    assert (sm.max_surge, sm.load_retries, sm.load_retry_interval_seconds) == (1, 2, 5)
    assert sm.termination_grace_period_seconds == 45
    assert sm.service_type == "ClusterIP"
    assert sm.network_policy is None
    assert sm.retry_token == ""


def test_metadata_without_namespace_or_generation() -> None:
    sm = parse({"metadata": {"name": "x"}, "spec": {"storage": HOST}})
    assert (sm.namespace, sm.uid, sm.generation) == ("default", "", 0)


def _apply_crd_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's defaulting does to `value` (objects only, which is all we need)."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for key, prop in (schema.get("properties") or {}).items():
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        if key in out:
            out[key] = _apply_crd_defaults(prop, out[key])
    return out


SPEC_SCHEMA = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"][
    "openAPIV3Schema"
]["properties"]["spec"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_parse_defaults_agree_with_the_crd_defaults(case: str) -> None:
    """An object straight from admission and one never admitted read the same."""
    body = CASES[case]
    admitted = {**body, "spec": _apply_crd_defaults(SPEC_SCHEMA, body["spec"])}
    assert admitted["spec"] != body["spec"], "the CRD defaults something in every case"
    assert parse(admitted) == parse(body)


def test_crd_defaults_nested_objects_too() -> None:
    admitted = _apply_crd_defaults(
        SPEC_SCHEMA, {"storage": HOST, "versionPolicy": {"latest": {}}, "monitoring": {}}
    )
    assert admitted["versionPolicy"]["latest"] == {"numVersions": 1}
    assert admitted["monitoring"] == {"enabled": True, "path": "/monitoring/prometheus/metrics"}
    assert admitted["ports"] == {"grpc": 8500, "rest": 8501}
    assert parse(servedmodel("m", admitted)) == parse_spec(
        versionPolicy={"latest": {}}, monitoring={}
    )


# ----- target versions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected", "described"),
    [
        ({}, VersionSet(policy="latest", num_versions=1), "latest"),
        ({"version": 3}, VersionSet(policy="specific", versions=(3,)), "3"),
        (
            {"versionPolicy": {"specific": {"versions": [5, 2, 3]}}},
            VersionSet(policy="specific", versions=(2, 3, 5)),
            "2,3,5",
        ),
        ({"versionPolicy": {"latest": {}}}, VersionSet(policy="latest"), "latest"),
        (
            {"versionPolicy": {"latest": {"numVersions": 3}}},
            VersionSet(policy="latest", num_versions=3),
            "latest:3",
        ),
        ({"versionPolicy": {"all": {}}}, VersionSet(policy="all"), "all"),
        (
            {
                "versionPolicy": {"specific": {"versions": [1, 2]}},
                "versionLabels": {"stable": 1, "canary": 2},
            },
            VersionSet(policy="specific", versions=(1, 2), labels=(("canary", 2), ("stable", 1))),
            "1,2",
        ),
        # A pinned version with a label on another one: both are loaded.
        (
            {"version": 4, "versionLabels": {"stable": 3}},
            VersionSet(policy="specific", versions=(3, 4), labels=(("stable", 3),)),
            "3,4",
        ),
    ],
)
def test_target_versions(fields: dict[str, Any], expected: VersionSet, described: str) -> None:
    target = spec.target_versions({"storage": HOST, **fields})
    assert target == expected
    assert target.describe() == described
    assert target.explicit == (expected.policy == "specific")
    assert parse_spec(**fields).target == expected


def test_version_set_status_form_round_trips() -> None:
    target = VersionSet.specific([2, 1], {"stable": 1})
    status = target.to_status()
    assert status == {"versions": [1, 2], "labels": {"stable": 1}}
    assert VersionSet.specific(status["versions"], status["labels"]) == target


def test_version_sets_compare_by_content() -> None:
    """The refusal memory compares sets: order and duplicates must not matter."""
    assert VersionSet.specific([3, 1, 3]) == VersionSet.specific([1, 3])
    assert VersionSet.specific([1], {"b": 1, "a": 1}) == VersionSet.specific([1], {"a": 1, "b": 1})
    assert VersionSet.specific([1]) != VersionSet.specific([1], {"stable": 1})


# ----- storage ------------------------------------------------------------------


def test_storage_host_path() -> None:
    st = parse_spec().storage
    assert (st.kind, st.host_path) == ("hostPath", "/srv/models/m")
    assert st.base_path == st.mount_path == "/models/m"


def test_storage_pvc_with_sub_path_and_mount_path() -> None:
    st = parse_spec(
        storage={
            "persistentVolumeClaim": {"claimName": "models", "subPath": "mnist"},
            "mountPath": "/data/mnist",
        }
    ).storage
    assert (st.kind, st.claim_name, st.sub_path) == ("pvc", "models", "mnist")
    assert st.base_path == st.mount_path == "/data/mnist"


def test_storage_mount_path_follows_model_name() -> None:
    st = parse_spec(modelName="mnist").storage
    assert st.base_path == "/models/mnist"


def test_storage_nfs() -> None:
    st = parse_spec(storage={"nfs": {"server": "nfs.local", "path": "/exports/m"}}).storage
    assert (st.kind, st.nfs_server, st.nfs_path, st.base_path) == (
        "nfs",
        "nfs.local",
        "/exports/m",
        "/models/m",
    )


@pytest.mark.parametrize("uri", ["gs://b/m//", "gs://b/models/m"])
def test_gs_uri_is_the_base_path(uri: str) -> None:
    st = parse_spec(storage={"uri": uri, "credentials": {"secretName": "creds"}}).storage
    assert st.kind == "uri"
    assert st.base_path == st.uri == uri.rstrip("/")
    assert st.mount_path == ""
    assert st.credentials_secret == "creds"


@pytest.mark.parametrize("uri", ["s3://bucket/models/m", "s3://bucket/models/m/"])
def test_s3_uri_is_pulled_into_the_models_folder(uri: str) -> None:
    sm = parse_spec(storage={"uri": uri, "credentials": {"secretName": "creds"}})
    assert sm.storage.kind == "uri"
    assert sm.storage.uri == uri.rstrip("/")
    # The server cannot read s3://: it reads the puller's copy.
    assert sm.storage.base_path == f"/models/{sm.model_name}"
    assert sm.storage.mount_path == "/models"
    assert sm.storage.credentials_secret == "creds"


def test_storage_missing_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"spec\.storage"):
        parse_spec(storage={})


# ----- everything else ----------------------------------------------------------


def test_gpus_pick_the_gpu_image_unless_one_is_given() -> None:
    assert parse_spec(gpus=1).image == DEFAULT_GPU_IMAGE
    assert parse_spec(gpus=1, image="my/serving:gpu").image == "my/serving:gpu"
    assert parse_spec(gpus=1, gpuMemoryFraction=0.5).gpu_memory_fraction == 0.5


def test_monitoring() -> None:
    assert parse_spec(monitoring={}).monitoring_path == "/monitoring/prometheus/metrics"
    assert parse_spec(monitoring={"path": "/metrics"}).monitoring_path == "/metrics"
    assert parse_spec(monitoring={"enabled": False}).monitoring_path is None


def test_pass_through_fields() -> None:
    sm = parse(CASES["pod-options"])
    assert sm.model_name == "tuned_model"
    assert sm.server_args == ("--rest_api_timeout_in_ms=5000", "--grpc_max_threads=64")
    assert sm.image_pull_secrets == ("registry-credentials",)
    assert sm.service_type == "LoadBalancer"
    assert sm.service_annotations == {"example.com/lb-scheme": "internal"}
    assert sm.pod_labels == {"team": "search"}
    assert sm.node_selector == {"pool": "serving"}
    assert sm.warmup is False
    assert (sm.max_surge, sm.availability_timeout_seconds, sm.load_retries) == (2, 120, 0)
    assert sm.termination_grace_period_seconds == 90
    assert sm.env == ({"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"},)


def test_retry_token_comes_from_the_annotation() -> None:
    body = servedmodel("m", {"storage": HOST})
    body["metadata"]["annotations"] = {"serving.tfoperator.dev/retry": "2"}
    assert parse(body).retry_token == "2"


def test_rest_port_zero_is_kept() -> None:
    assert parse_spec(ports={"rest": 0}).rest_port == 0
    assert parse_spec(ports={"grpc": 9000}).rest_port == 8501


def test_a_storage_without_a_known_kind_is_refused_naming_the_kinds() -> None:
    with pytest.raises(ValueError) as refused:
        parse_spec(storage={"emptyDir": {}}, version=1)
    assert str(refused.value) == (
        "spec.storage must set one of persistentVolumeClaim, hostPath, nfs or uri"
    )


def test_only_trailing_slashes_leave_a_uri() -> None:
    sm = parse_spec(storage={"uri": "s3://bucket/MAX//"}, version=1)
    assert sm.storage.uri == "s3://bucket/MAX"


def test_credentials_without_a_secret_name_name_no_secret() -> None:
    sm = parse_spec(storage={"uri": "s3://bucket/m", "credentials": {}}, version=1)
    assert sm.storage.credentials_secret == ""
