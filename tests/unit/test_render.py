"""render.py: golden files for representative ServedModels, plus the properties
every rendering must have whatever the spec (restricted pods, read-only
storage, owned children, a content-named immutable config).

A golden mismatch fails with a unified diff; `UPDATE_GOLDEN=1 pytest
tests/unit/test_render.py` rewrites the files that differ and fails the run (review
the diff, then run again without it).
"""

from __future__ import annotations

import difflib
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.golden.cases import CASES, NAMESPACE, UID, servedmodel
from tfserving_operator import api, puller, release, render, spec
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

GOLDEN_DIR = Path(__file__).parent / "golden"
CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "servedmodels.serving.tfoperator.dev.yaml"
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))

Manifest = dict[str, Any]


def parse(body: Manifest) -> spec.ServedModel:
    return spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)


def render_body(body: Manifest) -> render.Children:
    sm = parse(body)
    return render.render(sm, sm.target)


def render_case(case: str) -> render.Children:
    return render_body(CASES[case])


def container(children: render.Children) -> Manifest:
    containers = children.deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Manifest = containers[0]
    return result


def pod_spec(children: render.Children) -> Manifest:
    result: Manifest = children.deployment["spec"]["template"]["spec"]
    return result


def flags(children: render.Children) -> dict[str, str]:
    """--name=value args as a dict (the value "" for a bare flag)."""
    out = {}
    for arg in container(children)["args"]:
        name, _, value = arg.lstrip("-").partition("=")
        assert name not in out, f"flag --{name} given twice"
        out[name] = value
    return out


# ----- golden files -------------------------------------------------------------


class _GoldenDumper(yaml.SafeDumper):
    """Multi-line strings (the config files) as literal blocks: diffs read line by line."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a shared sub-dict must read as itself, not as *id001


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_GoldenDumper.add_representer(str, _str)


def golden_text(case: str) -> str:
    """The golden file of a case: its input as a comment, then every child in apply order."""
    body = CASES[case]
    source = yaml.dump(body, Dumper=_GoldenDumper, sort_keys=True).rstrip("\n")
    header = [
        f"# Golden file for case {case!r} of tests/unit/golden/cases.py: what render.py",
        "# makes of the ServedModel below. Regenerate with",
        "# UPDATE_GOLDEN=1 pytest tests/unit/test_render.py",
        "#",
        *[f"#   {line}" for line in source.splitlines()],
    ]
    docs = yaml.dump_all(render_case(case).all(), Dumper=_GoldenDumper, sort_keys=True)
    return "\n".join(header) + "\n---\n" + docs


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    path = GOLDEN_DIR / f"{case}.yaml"
    actual = golden_text(case)
    expected = path.read_text() if path.exists() else ""
    if UPDATE and actual != expected:
        path.write_text(actual)
        # A run that rewrote golden files proves nothing about them: fail, so
        # the rewrite is reviewed and the suite run again without the switch.
        pytest.fail(
            f"rewrote {path} (UPDATE_GOLDEN=1); review `git diff` and run again without it",
            pytrace=False,
        )
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{path.name} (golden)",
                tofile=f"{path.name} (rendered now)",
            )
        )
        pytest.fail(
            f"render output for {case!r} differs from {path}; if the change is intended, "
            f"regenerate with UPDATE_GOLDEN=1 and review the diff:\n{diff}",
            pytrace=False,
        )


def test_golden_files_parse_back_to_the_rendered_objects() -> None:
    """The text compare is enough: each golden file is exactly the rendered objects."""
    for case in CASES:
        path = GOLDEN_DIR / f"{case}.yaml"
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs == render_case(case).all(), case


def test_no_orphan_golden_files() -> None:
    """A golden file whose case was removed would pin nothing."""
    files = {p.stem for p in GOLDEN_DIR.glob("*.yaml")}
    assert files == set(CASES)


def test_golden_mismatch_fails_with_a_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The golden check can fail, and says where."""
    case = "minimal-hostpath"
    (tmp_path / f"{case}.yaml").write_text(golden_text(case).replace("--port=8500", "--port=1"))
    monkeypatch.setattr(f"{__name__}.GOLDEN_DIR", tmp_path)
    monkeypatch.setattr(f"{__name__}.UPDATE", False)
    with pytest.raises(pytest.fail.Exception) as failure:
        test_golden(case)
    assert "-        - --port=1" in str(failure.value)
    assert "+        - --port=8500" in str(failure.value)


# ----- the pod ------------------------------------------------------------------


STORAGE_CASES = [c for c in CASES if "uri" not in CASES[c]["spec"]["storage"]]
URI_CASES = [c for c in CASES if "uri" in CASES[c]["spec"]["storage"]]


@pytest.mark.parametrize("case", STORAGE_CASES)
def test_storage_is_mounted_read_only_at_the_base_path(case: str) -> None:
    children = render_case(case)
    sm = parse(CASES[case])
    mounts = {m["name"]: m for m in container(children)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(children)["volumes"]}
    storage = mounts["model-storage"]
    assert storage["readOnly"] is True
    assert storage["mountPath"] == sm.storage.base_path
    assert f'base_path: "{sm.storage.base_path}"' in children.config_map["data"]["models.config"]
    volume = volumes["model-storage"]
    for source in ("persistentVolumeClaim", "nfs"):
        if source in volume:
            assert volume[source]["readOnly"] is True
    # Only the scratch dir is writable.
    writable = [m["name"] for m in container(children)["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["tmp"]


def test_pvc_sub_path_and_mount_path() -> None:
    mount = next(
        m
        for m in container(render_case("pvc-subpath-replicas"))["volumeMounts"]
        if m["name"] == "model-storage"
    )
    assert mount == {
        "name": "model-storage",
        "mountPath": "/models/mnist",
        "subPath": "mnist",
        "readOnly": True,
    }
    custom = parse(CASES["pod-options"]).storage
    assert (custom.mount_path, custom.base_path) == ("/data/tuned", "/data/tuned")


@pytest.mark.parametrize("case", URI_CASES)
def test_uri_storage_mounts_no_model_volume(case: str) -> None:
    children = render_case(case)
    names = {v["name"] for v in pod_spec(children)["volumes"]}
    assert "model-storage" not in names
    uri = CASES[case]["spec"]["storage"]["uri"].rstrip("/")
    base_path = f"/models/{parse(CASES[case]).model_name}" if uri.startswith("s3://") else uri
    assert f'base_path: "{base_path}"' in children.config_map["data"]["models.config"]


def test_gs_is_read_by_the_server_and_gets_no_puller() -> None:
    pod = pod_spec(render_case("gs-uri"))
    assert "initContainers" not in pod
    assert puller.VOLUME not in {v["name"] for v in pod["volumes"]}


def test_s3_is_pulled_into_a_volume_the_server_reads_only() -> None:
    children = render_case("s3-credentials")
    pod = pod_spec(children)
    assert {"name": puller.VOLUME, "emptyDir": {}} in pod["volumes"]
    mounts = {m["name"]: m for m in container(children)["volumeMounts"]}
    assert mounts[puller.VOLUME] == {
        "name": puller.VOLUME,
        "mountPath": "/models",
        "readOnly": True,
    }
    inits = pod["initContainers"]
    assert [c["name"] for c in inits] == ["model-pull-12", "model-publish"]
    pull, publish = inits
    assert pull["command"] == ["rclone"]
    assert pull["args"][:3] == ["copy", "store:ml-models/ranker/12", "/models/.partial/12"]
    # A missing version is an empty S3 listing: it must still fail the pull.
    assert "--error-on-no-transfer" in pull["args"]
    # One rename on the same volume: the base path appears whole or not at all.
    assert publish["args"] == ["moveto", "/models/.partial", "/models/ranker"]
    for init in inits:
        assert init["image"] == puller.PULLER_IMAGE
        assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert init["volumeMounts"] == [{"name": puller.VOLUME, "mountPath": "/models"}]


def test_every_version_the_config_names_is_pulled() -> None:
    body = servedmodel(
        "ranker",
        {
            "storage": {"uri": "s3://b/deep/prefix"},
            "versionPolicy": {"specific": {"versions": [3, 4]}},
            "versionLabels": {"stable": 3, "canary": 4},
        },
    )
    inits = pod_spec(render_body(body))["initContainers"]
    assert [c["args"][1] for c in inits[:-1]] == ["store:b/deep/prefix/3", "store:b/deep/prefix/4"]


def test_s3_credentials_reach_the_puller_only() -> None:
    children = render_case("s3-credentials")
    assert not any(
        "AWS" in e["name"] or "RCLONE" in e["name"] for e in container(children).get("env", [])
    )
    pull, publish = pod_spec(children)["initContainers"]
    assert "env" not in publish
    env = {e["name"]: e for e in pull["env"]}
    assert env["RCLONE_CONFIG_STORE_TYPE"] == {"name": "RCLONE_CONFIG_STORE_TYPE", "value": "s3"}
    assert env["RCLONE_CONFIG_STORE_ENV_AUTH"]["value"] == "true"
    for key, option in puller.SECRET_KEYS:
        ref = env[f"RCLONE_CONFIG_STORE_{option}"]["valueFrom"]["secretKeyRef"]
        # Every key optional: IRSA users may keep only the region in the Secret.
        assert ref == {"name": "s3-reader", "key": key, "optional": True}


def test_s3_without_a_secret_leaves_credentials_to_the_service_account() -> None:
    body = servedmodel("r", {"storage": {"uri": "s3://b/r"}, "version": 1})
    (pull, _) = pod_spec(render_body(body))["initContainers"]
    assert all("valueFrom" not in e for e in pull["env"])


def test_puller_image_comes_from_the_settings() -> None:
    body = servedmodel("r", {"storage": {"uri": "s3://b/r"}, "version": 1})
    sm = spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE, "mirror/rclone@sha256:" + "0" * 64)
    pod = render.render(sm, sm.target).deployment["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["initContainers"]} == {"mirror/rclone@sha256:" + "0" * 64}


def test_gs_credentials_are_a_read_only_secret_file() -> None:
    children = render_case("gs-uri")
    env = {e["name"]: e for e in container(children)["env"]}
    mounts = {m["name"]: m for m in container(children)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(children)["volumes"]}
    key_file = env["GOOGLE_APPLICATION_CREDENTIALS"]["value"]
    mount = mounts["gcs-credentials"]
    assert mount["readOnly"] is True
    assert key_file == f"{mount['mountPath']}/service-account.json"
    assert volumes["gcs-credentials"] == {
        "name": "gcs-credentials",
        "secret": {"secretName": "gcs-reader"},
    }


# Pod Security Standards, "restricted" profile: the volume types it allows.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pod_meets_the_restricted_profile(case: str) -> None:
    children = render_case(case)
    pod = pod_spec(children)
    ctr = container(children)
    pod_sc, ctr_sc = pod["securityContext"], ctr["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and ctr_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert ctr_sc["allowPrivilegeEscalation"] is False
    assert ctr_sc["capabilities"] == {"drop": ["ALL"]}
    assert ctr_sc["readOnlyRootFilesystem"] is True
    assert "privileged" not in ctr_sc
    for sc in (pod_sc, ctr_sc):
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for host_field in ("hostNetwork", "hostPID", "hostIPC"):
        assert host_field not in pod
    assert all("hostPort" not in p for p in ctr["ports"])
    for init in pod.get("initContainers", []):
        assert init["securityContext"] == {**ctr_sc}
    assert pod["automountServiceAccountToken"] is False
    # Volumes: all of restricted's types, except the storage the user picked
    # (hostPath and nfs are theirs to choose; the cluster's policy decides).
    for volume in pod["volumes"]:
        kinds = set(volume) - {"name"}
        assert len(kinds) == 1, volume
        if volume["name"] != "model-storage":
            assert kinds <= RESTRICTED_VOLUME_TYPES, volume


@pytest.mark.parametrize("case", ["minimal-hostpath", "pod-options"])
def test_graceful_termination(case: str) -> None:
    children = render_case(case)
    grace = parse(CASES[case]).termination_grace_period_seconds
    assert pod_spec(children)["terminationGracePeriodSeconds"] == grace
    pre_stop = container(children)["lifecycle"]["preStop"]
    # The server ignores SIGTERM: the preStop sleep is the drain, and it ends
    # before the kill at the end of the grace period.
    assert pre_stop == {"sleep": {"seconds": grace - render.PRESTOP_MARGIN_SECONDS}}
    assert grace == (45 if case == "minimal-hostpath" else 90)


def test_short_grace_period_still_sleeps() -> None:
    body = servedmodel("quick", {"storage": {"hostPath": {"path": "/m"}}, "version": 1})
    body["spec"]["terminationGracePeriodSeconds"] = 5
    pre_stop = container(render_body(body))["lifecycle"]["preStop"]
    assert pre_stop["sleep"]["seconds"] == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_readiness_gate_and_honest_probes(case: str) -> None:
    children = render_case(case)
    assert pod_spec(children)["readinessGates"] == [{"conditionType": api.GATE_CONDITION}]
    ctr = container(children)
    for probe in ("startupProbe", "livenessProbe"):
        # Never REST: GET /v1/models/NAME answers 200 with no version AVAILABLE.
        assert "httpGet" not in ctr[probe]
        assert ctr[probe]["tcpSocket"] == {"port": "grpc"}
    # The gate is the readiness signal: a readiness probe could only hold an
    # AVAILABLE pod out of traffic until its next tick.
    assert "readinessProbe" not in ctr
    # The startup probe notices open ports within a second and waits as long
    # as a version may take to load.
    startup = ctr["startupProbe"]
    timeout = parse(CASES[case]).availability_timeout_seconds
    assert startup["periodSeconds"] == 1
    assert startup["periodSeconds"] * startup["failureThreshold"] >= timeout


@pytest.mark.parametrize("case", sorted(CASES))
def test_rolling_update_never_drops_capacity(case: str) -> None:
    deployment = render_case(case).deployment
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rolling == {"maxUnavailable": 0, "maxSurge": parse(CASES[case]).max_surge}
    sm = parse(CASES[case])
    # Autoscaled: the count is the autoscaler's, the Deployment leaves it out.
    assert deployment["spec"].get("replicas") == (None if sm.autoscaling else sm.replicas)


def test_gpu_limits_toleration_image_and_memory_fraction() -> None:
    children = render_case("gpu")
    ctr = container(children)
    assert ctr["image"] == DEFAULT_GPU_IMAGE
    assert ctr["image"].endswith("-gpu")
    assert ctr["resources"]["limits"] == {api.GPU_RESOURCE: "2"}
    assert ctr["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert {"key": api.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod_spec(
        children
    )["tolerations"]
    assert flags(children)["per_process_gpu_memory_fraction"] == "0.45"


@pytest.mark.parametrize("case", [c for c in CASES if c != "gpu"])
def test_cpu_models_get_no_gpu(case: str) -> None:
    children = render_case(case)
    ctr = container(children)
    assert "-gpu" not in ctr["image"]
    assert api.GPU_RESOURCE not in (ctr.get("resources") or {}).get("limits", {})
    tolerations = pod_spec(children).get("tolerations") or []
    assert all(t.get("key") != api.GPU_RESOURCE for t in tolerations)
    assert "per_process_gpu_memory_fraction" not in flags(children)


def test_user_image_wins() -> None:
    assert container(render_case("pod-options"))["image"] == (
        "registry.example.com/serving:2.19.1-custom"
    )
    assert container(render_case("minimal-hostpath"))["image"] == DEFAULT_IMAGE


# ----- flags --------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_owned_flags(case: str) -> None:
    children = render_case(case)
    sm = parse(CASES[case])
    got = flags(children)
    data = children.config_map["data"]
    assert got["port"] == str(sm.grpc_port)
    assert got["rest_api_port"] == str(sm.rest_port)
    assert got["model_config_file"] == f"{api.CONFIG_DIR}/{api.MODEL_CONFIG_FILE}"
    assert got["file_system_poll_wait_seconds"] == str(sm.file_system_poll_wait_seconds)
    assert got["enable_model_warmup"] == ("true" if sm.warmup else "false")
    assert got["max_num_load_retries"] == str(sm.load_retries)
    assert got["load_retry_interval_micros"] == str(sm.load_retry_interval_seconds * 1_000_000)
    # Flags that follow from the spec, and the files they name exist.
    assert ("allow_version_labels_for_unavailable_models" in got) == bool(sm.target.labels)
    assert ("monitoring_config_file" in got) == (api.MONITORING_CONFIG_FILE in data)
    assert ("monitoring_config_file" in got) == bool(sm.monitoring_path)
    assert ("enable_batching" in got) == ("batching_parameters_file" in got)
    assert ("enable_batching" in got) == (api.BATCHING_CONFIG_FILE in data)
    for flag in ("model_config_file", "monitoring_config_file", "batching_parameters_file"):
        if flag in got:
            assert got[flag].startswith(f"{api.CONFIG_DIR}/")
            assert got[flag].removeprefix(f"{api.CONFIG_DIR}/") in data
    # The server never gets a model named on the command line: the config file says it all.
    assert "model_name" not in got and "model_base_path" not in got
    # The user's extra flags come last, unchanged.
    args = container(children)["args"]
    assert args[len(args) - len(sm.server_args) :] == list(sm.server_args)


def test_rest_off_means_no_rest_anywhere() -> None:
    children = render_case("rest-off-all")
    assert flags(children)["rest_api_port"] == "0"
    assert flags(children)["port"] == "9000"
    assert [p["name"] for p in container(children)["ports"]] == ["grpc"]
    names = [s["metadata"]["name"] for s in children.services]
    assert names == ["grpc-only-grpc", "grpc-only-headless"]
    for service in children.services:
        assert [p["port"] for p in service["spec"]["ports"]] == [9000]


def test_crd_refuses_every_flag_the_operator_renders() -> None:
    """spec.serverArgs could otherwise override what the gate and the config rely on
    (release.OPERATOR_FLAGS feeds the CRD's rule; the contract tests pin the CRD to it)."""
    rendered = set()
    for case in CASES:
        sm = parse(CASES[case])
        for arg in render.server_args(sm, sm.target):
            if arg not in sm.server_args:
                rendered.add(arg.removeprefix("--").partition("=")[0])
    assert rendered
    assert rendered <= set(release.OPERATOR_FLAGS), rendered - set(release.OPERATOR_FLAGS)
    assert set(release.RENDERED_FLAGS) <= rendered, "a rendered flag no case shows"
    for arg in CASES["pod-options"]["spec"]["serverArgs"]:
        name = arg.removeprefix("--").partition("=")[0]
        assert name in release.SERVER_FLAGS and name not in release.OPERATOR_FLAGS, arg


# ----- architecture -------------------------------------------------------------

ARCH = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}


def required_terms(children: render.Children) -> list[Manifest]:
    affinity = pod_spec(children).get("affinity") or {}
    required = (affinity.get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    return list((required or {}).get("nodeSelectorTerms") or [])


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_image_requires_amd64_in_every_term(case: str) -> None:
    """tensorflow/serving images are linux/amd64 only; terms are ORed, so each carries it."""
    children = render_case(case)
    terms = required_terms(children)
    if "image" in CASES[case]["spec"]:
        assert all(ARCH not in t.get("matchExpressions", []) for t in terms)
        return
    assert terms, "no required node affinity with the default image"
    for term in terms:
        assert term["matchExpressions"].count(ARCH) == 1, term


def test_default_image_alone_gets_one_term_with_only_the_architecture() -> None:
    assert required_terms(render_case("minimal-hostpath")) == [{"matchExpressions": [ARCH]}]
    assert set(pod_spec(render_case("minimal-hostpath"))["affinity"]) == {"nodeAffinity"}


def test_users_affinity_is_merged_not_replaced() -> None:
    body = CASES["default-image-affinity"]
    user = body["spec"]["affinity"]
    affinity = pod_spec(render_case("default-image-affinity"))["affinity"]
    # Each user term keeps its own requirements, ANDed with the architecture.
    user_terms = user["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert len(terms) == len(user_terms) == 2
    assert terms[0]["matchExpressions"] == [*user_terms[0]["matchExpressions"], ARCH]
    assert terms[1]["matchFields"] == user_terms[1]["matchFields"]
    assert terms[1]["matchExpressions"] == [ARCH]
    # Preferred terms only weigh nodes: untouched, like the pod (anti-)affinity.
    preferred = "preferredDuringSchedulingIgnoredDuringExecution"
    assert affinity["nodeAffinity"][preferred] == user["nodeAffinity"][preferred]
    assert affinity["podAntiAffinity"] == user["podAntiAffinity"]
    # The spec's own objects are not modified by rendering.
    assert ARCH not in user_terms[0]["matchExpressions"]


def test_architecture_already_required_is_not_repeated() -> None:
    term = {"matchExpressions": [dict(ARCH)]}
    body = _with(
        CASES["minimal-hostpath"],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        },
    )
    assert required_terms(render_body(body)) == [{"matchExpressions": [ARCH]}]


def test_user_image_drops_the_architecture_but_keeps_the_users_affinity() -> None:
    body = _with(CASES["default-image-affinity"], image="registry.example.com/serving:multiarch")
    affinity = pod_spec(render_body(body))["affinity"]
    assert affinity == CASES["default-image-affinity"]["spec"]["affinity"]
    plain = _with(CASES["minimal-hostpath"], image="registry.example.com/serving:multiarch")
    assert "affinity" not in pod_spec(render_body(plain))


def test_gpu_default_image_also_requires_amd64() -> None:
    assert required_terms(render_case("gpu")) == [{"matchExpressions": [ARCH]}]


# ----- the config ---------------------------------------------------------------


def _with(body: Manifest, **changes: Any) -> Manifest:
    out = {**body, "spec": {**body["spec"], **changes}}
    return out


BASE = CASES["pvc-subpath-replicas"]
SAME_CONFIG = {
    "replicas": 5,
    "resources": {"requests": {"cpu": "2"}},
    "image": "tensorflow/serving:2.18.0",
    "service": {"type": "NodePort"},
    "podLabels": {"team": "x"},
    "terminationGracePeriodSeconds": 60,
    "serverArgs": ["--rest_api_timeout_in_ms=1000"],
}
OTHER_CONFIG = {
    "version": 3,
    "modelName": "mnist2",
    "storage": {"persistentVolumeClaim": {"claimName": "models"}, "mountPath": "/m"},
    "batching": {"maxBatchSize": 8},
    "monitoring": {"path": "/metrics"},
    "versionLabels": {"stable": 2},
}


def test_config_map_is_immutable_and_named_by_its_content() -> None:
    children = render_case("minimal-hostpath")
    cm = children.config_map
    assert cm["immutable"] is True
    assert children.config_hash == render.short_hash(cm["data"])
    assert cm["metadata"]["name"] == f"half-plus-three-config-{children.config_hash}"
    volumes = {v["name"]: v for v in pod_spec(children)["volumes"]}
    assert volumes["config"]["configMap"] == {"name": cm["metadata"]["name"]}
    annotations = children.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[api.ANNOTATION_CONFIG_HASH] == children.config_hash
    mounts = {m["name"]: m for m in container(children)["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": api.CONFIG_DIR, "readOnly": True}


@pytest.mark.parametrize("field", sorted(SAME_CONFIG))
def test_config_hash_ignores_what_is_not_config(field: str) -> None:
    base = render_body(BASE)
    changed = render_body(_with(BASE, **{field: SAME_CONFIG[field]}))
    assert changed.config_hash == base.config_hash
    assert changed.config_map == base.config_map


@pytest.mark.parametrize("field", sorted(OTHER_CONFIG))
def test_config_hash_follows_the_config(field: str) -> None:
    base = render_body(BASE)
    changed = render_body(_with(BASE, **{field: OTHER_CONFIG[field]}))
    assert changed.config_map["data"] != base.config_map["data"]
    assert changed.config_hash != base.config_hash
    assert changed.config_map["metadata"]["name"] != base.config_map["metadata"]["name"]


def test_rendering_the_last_good_set_differs_from_the_target() -> None:
    """After a refusal the operator renders other versions than the spec's."""
    sm = parse(BASE)
    target = render.render(sm, sm.target)
    fallback = render.render(sm, spec.VersionSet.specific([1]))
    assert fallback.config_hash != target.config_hash
    annotations = fallback.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations[api.ANNOTATION_VERSIONS] == "1"


# ----- ownership, labels, Services, PDB, NetworkPolicy ---------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_child_is_owned_and_labelled(case: str) -> None:
    sm = parse(CASES[case])
    children = render_case(case)
    for obj in children.all():
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["ownerReferences"] == [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": sm.name,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][api.LABEL_SERVEDMODEL] == sm.name
        assert meta["labels"][api.LABEL_MANAGED_BY] == api.MANAGED_BY
    # The Deployment is applied last: its pods never start without their config.
    assert children.all()[0] is children.config_map
    assert children.all()[-1] is children.deployment


def test_pod_labels_cannot_override_the_selector() -> None:
    body = _with(CASES["pod-options"], podLabels={api.LABEL_SERVEDMODEL: "other", "team": "x"})
    deployment = render_body(body).deployment
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[api.LABEL_SERVEDMODEL] == "tuned"
    assert labels["team"] == "x"
    assert deployment["spec"]["selector"] == {"matchLabels": {api.LABEL_SERVEDMODEL: "tuned"}}


def test_pod_annotations_tell_the_gate_what_to_check() -> None:
    annotations = render_case("labels-specific").deployment["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations[api.ANNOTATION_VERSIONS] == "3,4"
    assert annotations[api.ANNOTATION_MODEL_NAME] == "classifier"
    assert annotations[api.ANNOTATION_GRPC_PORT] == "8500"
    latest = render_case("latest-policy").deployment["spec"]["template"]["metadata"]
    assert latest["annotations"][api.ANNOTATION_VERSIONS] == "latest:2"
    monitored = render_case("batching-monitoring").deployment["spec"]["template"]["metadata"]
    assert monitored["annotations"]["prometheus.io/path"] == "/monitoring/prometheus/metrics"
    assert monitored["annotations"]["prometheus.io/port"] == "8501"
    custom = render_case("pod-options").deployment["spec"]["template"]["metadata"]
    assert custom["annotations"]["example.com/owner"] == "search"


def test_services() -> None:
    children = render_case("pod-options")
    by_name = {s["metadata"]["name"]: s for s in children.services}
    assert sorted(by_name) == ["tuned-grpc", "tuned-headless", "tuned-rest"]
    grpc, rest, headless = by_name["tuned-grpc"], by_name["tuned-rest"], by_name["tuned-headless"]
    assert grpc["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 8500,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }
    ]
    assert rest["spec"]["ports"][0]["appProtocol"] == "http"
    assert rest["spec"]["ports"][0]["targetPort"] == "http"
    for service in (grpc, rest):
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["metadata"]["annotations"] == {"example.com/lb-scheme": "internal"}
    assert headless["spec"]["clusterIP"] == "None"
    assert "type" not in headless["spec"]
    assert "annotations" not in headless["metadata"]
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc", "http"]
    for service in children.services:
        assert service["spec"]["selector"] == {api.LABEL_SERVEDMODEL: "tuned"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pdb_only_with_several_replicas(case: str) -> None:
    sm = parse(CASES[case])
    pdb = render_case(case).pod_disruption_budget
    # Autoscaled: as many as the autoscaler may make.
    if (sm.autoscaling.max_replicas if sm.autoscaling else sm.replicas) <= 1:
        assert pdb is None
        return
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {api.LABEL_SERVEDMODEL: sm.name}}


def test_pdb_appears_and_disappears_with_replicas() -> None:
    assert render_body(_with(BASE, replicas=1)).pod_disruption_budget is None
    assert render_body(_with(BASE, replicas=0)).pod_disruption_budget is None
    assert render_body(_with(BASE, replicas=2)).pod_disruption_budget is not None


def test_network_policy() -> None:
    assert render_case("minimal-hostpath").network_policy is None
    policy = render_case("network-policy").network_policy
    assert policy is not None
    spec_ = policy["spec"]
    assert spec_["podSelector"] == {"matchLabels": {api.LABEL_SERVEDMODEL: "private"}}
    assert spec_["policyTypes"] == ["Ingress"]
    clients, operator = spec_["ingress"]
    assert clients["from"] == [
        {
            "podSelector": {"matchLabels": {"app": "frontend"}},
            "namespaceSelector": {"matchLabels": {"team": "search"}},
        }
    ]
    assert [p["port"] for p in clients["ports"]] == [8500, 8501]
    # The operator reaches the gRPC port only: that is where it probes.
    assert operator["ports"] == [{"protocol": "TCP", "port": 8500}]
    assert operator["from"] == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "tfserving-operator-system"}
            },
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tfserving-operator"}},
        }
    ]


def test_network_policy_admits_the_operator_where_the_settings_say() -> None:
    """The chart's nameOverride and install namespace reach the peer through settings."""
    sm = spec.parse(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {
                "storage": {"persistentVolumeClaim": {"claimName": "models"}},
                "version": 1,
                "networkPolicy": {"clientSelector": {}},
            },
        },
        DEFAULT_IMAGE,
        DEFAULT_GPU_IMAGE,
    )
    labels = {"app.kubernetes.io/name": "serving-ops", "app.kubernetes.io/instance": "prod"}
    peer = render.OperatorPeer("platform", labels)
    policy = render.render(sm, sm.target, peer).network_policy
    assert policy is not None
    assert policy["spec"]["ingress"][1]["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}},
            "podSelector": {"matchLabels": labels},
        }
    ]


def gpu_body(**fields: Any) -> Manifest:
    return servedmodel(
        "gpu", {"storage": {"persistentVolumeClaim": {"claimName": "m"}}, "version": 1, **fields}
    )


def test_gpus_default_to_whole_nvidia_gpus() -> None:
    children = render_body(gpu_body(gpus=2))
    assert container(children)["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container(children)["image"] == DEFAULT_GPU_IMAGE
    assert pod_spec(children)["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_a_mig_slice_is_asked_for_by_name_on_the_cuda_image() -> None:
    children = render_body(gpu_body(gpus=1, gpuResource="nvidia.com/mig-1g.5gb"))
    assert container(children)["resources"]["limits"] == {"nvidia.com/mig-1g.5gb": "1"}
    assert container(children)["image"] == DEFAULT_GPU_IMAGE
    # MIG nodes carry the usual nvidia.com/gpu taint too.
    assert [t["key"] for t in pod_spec(children)["tolerations"]] == [
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/gpu",
    ]


def test_another_vendors_resource_uses_its_own_taint_and_the_given_image() -> None:
    body = gpu_body(gpus=1, gpuResource="amd.com/gpu", image="example.com/tfs-rocm:2.20")
    children = render_body(body)
    assert container(children)["resources"]["limits"] == {"amd.com/gpu": "1"}
    assert container(children)["image"] == "example.com/tfs-rocm:2.20"
    assert [t["key"] for t in pod_spec(children)["tolerations"]] == ["amd.com/gpu"]


# ----- properties over generated specs ------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,20}", fullmatch=True)
VERSIONS = st.integers(min_value=1, max_value=10**6)


POLICIES = ("latest", "all")


@st.composite
def specs(draw: st.DrawFn) -> Manifest:
    """Valid ServedModel specs, across the fields that change the rendering."""
    storage: Manifest = draw(
        st.sampled_from(
            [
                {"hostPath": {"path": "/srv/m"}},
                {"persistentVolumeClaim": {"claimName": "models", "subPath": "m"}},
                {"nfs": {"server": "nfs", "path": "/exports/m"}},
                {"uri": "s3://bucket/m", "credentials": {"secretName": "s"}},
                {"uri": "gs://bucket/m"},
            ]
        )
    )
    out: Manifest = {"storage": storage}
    selection = draw(st.sampled_from(["version", "specific", "latest", "all", "none"]))
    if selection == "version":
        out["version"] = draw(VERSIONS)
    elif selection == "specific":
        versions = draw(st.lists(VERSIONS, min_size=1, max_size=4, unique=True))
        out["versionPolicy"] = {"specific": {"versions": versions}}
        labels = draw(st.dictionaries(NAMES, st.sampled_from(versions), max_size=3))
        if labels:
            out["versionLabels"] = labels
    elif selection == "latest":
        out["versionPolicy"] = {"latest": {"numVersions": draw(st.integers(1, 5))}}
    elif selection == "all":
        out["versionPolicy"] = {"all": {}}
    from_s3 = str(storage.get("uri", "")).startswith("s3://")
    if from_s3 and selection in POLICIES:
        # The CRD refuses latest and all with s3:// (puller.py).
        del out["versionPolicy"]
        out["version"] = draw(VERSIONS)
    elif from_s3 and selection == "none":
        out["version"] = draw(VERSIONS)
    out["replicas"] = draw(st.integers(0, 6))
    out["gpus"] = draw(st.integers(0, 4))
    rest = draw(st.sampled_from([0, 8501, 9001]))
    out["ports"] = {"grpc": 8500, "rest": rest}
    if draw(st.booleans()):
        size = draw(st.integers(1, 64))
        out["batching"] = {"maxBatchSize": size, "allowedBatchSizes": [size]}
    if rest and draw(st.booleans()):
        out["monitoring"] = {}
    if draw(st.booleans()):
        out["networkPolicy"] = {"clientSelector": {"matchLabels": {"app": "x"}}}
    # The pod and Service settings a user passes through: each may be absent.
    for key, values in POD_SETTINGS.items():
        if draw(st.booleans()):
            out[key] = draw(values)
    return out


QUANTITIES = st.sampled_from(["100m", "0.5", "1", "2", "1.5Gi", "512Mi", "2000", "1e3"])
RESOURCES = st.fixed_dictionaries(
    {},
    optional={
        "requests": st.fixed_dictionaries({}, optional={"cpu": QUANTITIES, "memory": QUANTITIES}),
        "limits": st.fixed_dictionaries({}, optional={"cpu": QUANTITIES, "memory": QUANTITIES}),
    },
)
ENV = st.lists(
    st.fixed_dictionaries(
        {"name": st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)},
        optional={"value": st.text(max_size=12)},
    ),
    max_size=4,
    unique_by=lambda e: e["name"],
)
SERVER_ARGS = st.lists(
    st.sampled_from(
        [
            "--rest_api_timeout_in_ms=5000",
            "--enable_grpc_healthcheck_service",
            "--grpc_max_threads=8",
            "--tensorflow_intra_op_parallelism=2",
            "--enable_profiler=false",
        ]
    ),
    max_size=3,
    unique=True,
)
TOLERATIONS = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["dedicated", "example.com/gpu-pool"]),
            "operator": st.sampled_from(["Exists", "Equal"]),
            "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]),
        }
    ),
    max_size=2,
)
TERM = st.fixed_dictionaries(
    {
        "matchExpressions": st.lists(
            st.fixed_dictionaries(
                {
                    "key": st.sampled_from(["zone", "example.com/pool"]),
                    "operator": st.just("In"),
                    "values": st.lists(NAMES, min_size=1, max_size=2),
                }
            ),
            min_size=1,
            max_size=2,
        )
    }
)
AFFINITY = st.one_of(
    st.fixed_dictionaries(
        {
            "nodeAffinity": st.fixed_dictionaries(
                {
                    "requiredDuringSchedulingIgnoredDuringExecution": st.fixed_dictionaries(
                        {"nodeSelectorTerms": st.lists(TERM, min_size=1, max_size=2)}
                    )
                }
            )
        }
    ),
    st.just(
        {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"},
                    }
                ]
            }
        }
    ),
)
SERVICE = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]),
        "annotations": st.dictionaries(
            st.sampled_from(["example.com/lb", "team"]), NAMES, max_size=2
        ),
    },
)
POD_SETTINGS: dict[str, st.SearchStrategy[Any]] = {
    "resources": RESOURCES,
    "env": ENV,
    "serverArgs": SERVER_ARGS,
    "tolerations": TOLERATIONS,
    "affinity": AFFINITY,
    "service": SERVICE,
    "image": st.sampled_from(["registry.example.com/serving:2.20.0"]),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_=specs())
def test_property_pod_and_service_settings_reach_the_children(spec_: Manifest) -> None:
    """What a user passes through arrives where Kubernetes reads it, unchanged
    but for the canonical form of quantities and what the operator adds."""
    children = render_body(servedmodel("m", spec_))
    box = container(children)
    pod = children.deployment["spec"]["template"]["spec"]
    for kind, wanted in (spec_.get("resources") or {}).items():
        for resource, quantity in wanted.items():
            assert box["resources"][kind][resource] == render.canonical_quantity(quantity)
    if spec_.get("gpus"):
        assert box["resources"]["limits"][api.GPU_RESOURCE] == str(spec_["gpus"])
    elif not any((spec_.get("resources") or {}).values()):
        assert "resources" not in box
    user_env = spec_.get("env") or []
    assert box.get("env", [])[len(box.get("env", [])) - len(user_env) :] == user_env
    args = spec_.get("serverArgs") or []
    assert box["args"][len(box["args"]) - len(args) :] == args
    assert pod.get("tolerations", [])[: len(spec_.get("tolerations") or [])] == (
        spec_.get("tolerations") or []
    )
    affinity = spec_.get("affinity") or {}
    default_image = "image" not in spec_
    if "podAntiAffinity" in affinity:
        assert pod["affinity"]["podAntiAffinity"] == affinity["podAntiAffinity"]
    terms = pod.get("affinity", {}).get("nodeAffinity", {})
    terms = terms.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get(
        "nodeSelectorTerms", []
    )
    wanted_terms = (
        affinity.get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    # The default image adds its architecture to every term (ANDed), else none.
    assert len(terms) == (max(1, len(wanted_terms)) if default_image else len(wanted_terms))
    for got, wanted in zip(terms, wanted_terms, strict=False):
        extra = got["matchExpressions"][len(wanted["matchExpressions"]) :]
        assert (
            got["matchExpressions"][: len(wanted["matchExpressions"])] == wanted["matchExpressions"]
        )
        assert extra == ([render.arch_requirement()] if default_image else [])
    service = spec_.get("service") or {}
    for svc in children.services:
        if svc["spec"].get("clusterIP") == "None":
            assert "type" not in svc["spec"]
            continue
        assert svc["spec"]["type"] == service.get("type", "ClusterIP")
        assert svc["metadata"].get("annotations") == (service.get("annotations") or None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, spec_=specs())
def test_property_every_child_owned_labelled_and_config_named_by_hash(
    name: str, spec_: Manifest
) -> None:
    body = servedmodel(name, spec_)
    children = render_body(body)
    again = render_body(body)
    assert children == again, "render must be deterministic"
    for obj in children.all():
        meta = obj["metadata"]
        (owner,) = meta["ownerReferences"]
        assert owner["controller"] is True and owner["uid"] == UID and owner["name"] == name
        assert meta["labels"][api.LABEL_SERVEDMODEL] == name
    assert children.config_hash == render.short_hash(children.config_map["data"])
    assert children.config_map["metadata"]["name"].endswith(f"-config-{children.config_hash}")
    # Scaling never touches the config.
    scaled = render_body(_with(body, replicas=spec_["replicas"] + 1))
    assert scaled.config_hash == children.config_hash
    assert (children.pod_disruption_budget is not None) == (spec_["replicas"] > 1)
    assert (children.network_policy is not None) == ("networkPolicy" in spec_)
    # Every child's name is a DNS label even at the longest name the CRD allows.
    for obj in render_body(servedmodel("a" * 45, spec_)).all():
        assert len(obj["metadata"]["name"]) <= 63


# ----- resource quantities --------------------------------------------------------

# Pairs observed from the API server (tests/cluster/test_admission.py checks
# canonical_quantity against it for many more).
STORED_AS = {
    "0.5": "500m",
    "1.5": "1500m",
    "2000": "2k",
    "1500": "1500",
    "1024Mi": "1Gi",
    "1536Mi": "1536Mi",
    "1.5Gi": "1536Mi",
    "0.5Ki": "512",
    "1.2345e2": "123450e-3",
    "1e3": "1e3",
    "0.1m": "1m",
    "1.0001": "1001m",
    "1.500": "1.500",
    "+1": "+1",
    "007": "007",
    "8Ki": "8Ki",
    "lots": "lots",
}


@pytest.mark.parametrize(("written", "stored"), sorted(STORED_AS.items()))
def test_quantities_render_as_the_api_server_stores_them(written: str, stored: str) -> None:
    assert render.canonical_quantity(written) == stored


# Where "kept as written" ends, read off ParseQuantity's fast path
# (k8s.io/apimachinery pkg/api/resource/quantity.go): text is stored verbatim
# when its digits fit that path (at most 18 of them; with a binary suffix,
# 15 - digits - exponent*3/10 - 1 must not go below 0) and look canonical.
# A leading "+" makes the kept text differ from the canonical one. The
# non-negative ones are in tests/cluster/test_admission.py's list too.
KEPT_OR_CANONICAL = {
    "123456789012345.678": "123456789012345.678",  # 18 digits: kept
    "1234567890123456.789": "1234567890123456789m",  # 19: canonical
    "+11111111111Ki": "+11111111111Ki",
    "+111111111111Ki": "111111111111Ki",
    "+11111111Mi": "+11111111Mi",
    "+111111111Mi": "111111111Mi",
    "+11111Gi": "+11111Gi",
    "+111111Gi": "111111Gi",
    "+11Ti": "+11Ti",
    "+111Ti": "111Ti",
    "+1Pi": "1Pi",
    "+1Ki": "+1Ki",
    "+8Ki": "8Ki",  # a multiple of 8 is not kept
    "12e1": "120",  # an exponent that is not a multiple of 3
    "0.500": "500m",  # a leading zero digit
    "0.0": "0",
    "1.0": "1",
    "1.0Ki": "1Ki",  # exactly 1024: still a binary suffix
    "+1.5Ki": "1536",
    "-1.5": "-1500m",
    "-2Ki": "-2Ki",
    "1024Pi": "1Ei",
    "7Ei": "7Ei",
    "8Ei": "9223372036854775807",  # capped at the largest int64
    "1024Ei": "9223372036854775807",
    "-8Ei": "-9223372036854775807",
}


@pytest.mark.parametrize(("written", "stored"), sorted(KEPT_OR_CANONICAL.items()))
def test_quantities_at_the_edges_of_kept_as_written(written: str, stored: str) -> None:
    assert render.canonical_quantity(written) == stored


def test_quantities_in_the_rendered_container() -> None:
    resources = container(render_case("pod-options"))["resources"]
    assert resources == {
        "requests": {"cpu": "500m", "memory": "1536Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }


def _value(quantity: str) -> Decimal:
    """The number a quantity stands for (an independent reading, for the property below)."""
    quantity = quantity.lstrip("+")
    if re.search(r"e-?[0-9]+$", quantity):
        return Decimal(quantity)
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal_ = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
    for suffix, factor in binary.items():
        if quantity.endswith(suffix):
            return Decimal(quantity[: -len(suffix)]) * factor
    if quantity[-1] in decimal_:
        return Decimal(quantity[:-1]).scaleb(decimal_[quantity[-1]])
    return Decimal(quantity)


@settings(max_examples=300, deadline=None)
@given(
    number=st.decimals(min_value=0, max_value=10**7, places=4, allow_nan=False),
    suffix=st.sampled_from(["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "e-3"]),
)
def test_property_canonical_quantity_keeps_the_value(number: Decimal, suffix: str) -> None:
    written = f"{number}{suffix}"
    canonical = render.canonical_quantity(written)
    exact, got = _value(written), _value(canonical)
    # Rounded up to a thousandth, never down, never more.
    assert exact <= got < exact + Decimal("0.001"), (written, canonical)
