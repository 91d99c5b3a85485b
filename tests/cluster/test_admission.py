"""The real API server refuses invalid ServedModels at admission, naming the field.

Each case is a ServedModel a user could plausibly write; the CRD's schema or
one of its CEL rules must refuse it with HTTP 422, a message that names the
field, and nothing may be created. The same checks cover what the CRD
publishes (kubectl explain) and what the rendered children must pass.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.support.k8s import custom, servedmodel
from localdev.support.keda_crds import scaledobject_crd
from localdev.support.waiting import wait_until
from tests.unit.golden.cases import CASES
from tfserving_operator import api, release, render, spec
from tfserving_operator.children import contains
from tfserving_operator.observe import strip_object
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {"storage": {"hostPath": {"path": "/srv/models/m"}}, "version": 1}
DROP = object()  # a change that removes the key


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


GPU_IMAGE = release.DEFAULT_GPU_IMAGE
CPU_IMAGE = release.DEFAULT_IMAGE
PVC = {"persistentVolumeClaim": {"claimName": "models"}}

# (id, metadata.name, spec, text the message must contain: the field's path)
INVALID: list[tuple[str, str, dict[str, Any], str]] = [
    # storage
    ("storage-missing", "m", changed(BASE, storage=DROP), "spec.storage"),
    ("storage-empty", "m", changed(BASE, storage={}), "spec.storage"),
    (
        "storage-two-sources",
        "m",
        changed(BASE, storage={**PVC, "hostPath": {"path": "/m"}}),
        "spec.storage",
    ),
    (
        "credentials-without-uri",
        "m",
        changed(BASE, storage={**PVC, "credentials": {"secretName": "s"}}),
        "spec.storage.credentials",
    ),
    ("uri-bad-scheme", "m", changed(BASE, storage={"uri": "http://bucket/m"}), "spec.storage.uri"),
    ("uri-no-bucket", "m", changed(BASE, storage={"uri": "s3:///m"}), "spec.storage.uri"),
    (
        "host-path-relative",
        "m",
        changed(BASE, storage={"hostPath": {"path": "models/m"}}),
        "spec.storage.hostPath.path",
    ),
    (
        "mount-path-relative",
        "m",
        changed(BASE, storage={**PVC, "mountPath": "models"}),
        "spec.storage.mountPath",
    ),
    (
        "sub-path-dot-dot",
        "m",
        changed(BASE, storage={"persistentVolumeClaim": {"claimName": "c", "subPath": "a/../b"}}),
        "spec.storage.persistentVolumeClaim.subPath",
    ),
    (
        "sub-path-absolute",
        "m",
        changed(BASE, storage={"persistentVolumeClaim": {"claimName": "c", "subPath": "/a"}}),
        "spec.storage.persistentVolumeClaim.subPath",
    ),
    (
        "claim-name-not-dns",
        "m",
        changed(BASE, storage={"persistentVolumeClaim": {"claimName": "My_Claim"}}),
        "spec.storage.persistentVolumeClaim.claimName",
    ),
    (
        "nfs-without-server",
        "m",
        changed(BASE, storage={"nfs": {"path": "/exports/m"}}),
        "spec.storage.nfs.server",
    ),
    # versions
    ("version-zero", "m", changed(BASE, version=0), "spec.version"),
    (
        "version-and-policy",
        "m",
        changed(BASE, versionPolicy={"latest": {}}),
        "spec.version and spec.versionPolicy",
    ),
    ("policy-empty", "m", changed(BASE, version=DROP, versionPolicy={}), "spec.versionPolicy"),
    (
        "policy-two-kinds",
        "m",
        changed(BASE, version=DROP, versionPolicy={"latest": {}, "all": {}}),
        "spec.versionPolicy",
    ),
    (
        "specific-version-zero",
        "m",
        changed(BASE, version=DROP, versionPolicy={"specific": {"versions": [0]}}),
        "spec.versionPolicy.specific.versions[0]",
    ),
    (
        "specific-versions-empty",
        "m",
        changed(BASE, version=DROP, versionPolicy={"specific": {"versions": []}}),
        "spec.versionPolicy.specific.versions",
    ),
    (
        "latest-num-versions-zero",
        "m",
        changed(BASE, version=DROP, versionPolicy={"latest": {"numVersions": 0}}),
        "spec.versionPolicy.latest.numVersions",
    ),
    (
        "labels-without-version",
        "m",
        changed(BASE, version=DROP, versionLabels={"stable": 1}),
        "spec.versionLabels",
    ),
    (
        "labels-with-latest-policy",
        "m",
        changed(BASE, version=DROP, versionPolicy={"latest": {}}, versionLabels={"stable": 1}),
        "spec.versionLabels",
    ),
    (
        "label-not-in-specific-list",
        "m",
        changed(
            BASE,
            version=DROP,
            versionPolicy={"specific": {"versions": [1, 2]}},
            versionLabels={"stable": 1, "canary": 3},
        ),
        "spec.versionLabels",
    ),
    ("label-key-uppercase", "m", changed(BASE, versionLabels={"Stable": 1}), "spec.versionLabels"),
    ("label-version-zero", "m", changed(BASE, versionLabels={"stable": 0}), "spec.versionLabels"),
    # image and GPUs
    ("gpu-image-without-gpus", "m", changed(BASE, image=GPU_IMAGE), "spec.image"),
    ("gpus-with-cpu-image", "m", changed(BASE, image=CPU_IMAGE, gpus=1), "spec.image"),
    ("gpus-too-many", "m", changed(BASE, gpus=17), "spec.gpus"),
    (
        "gpu-resource-not-a-resource-name",
        "m",
        changed(BASE, gpus=1, gpuResource="mig-1g.5gb"),
        "spec.gpuResource",
    ),
    (
        "non-nvidia-gpus-without-image",
        "m",
        changed(BASE, gpus=1, gpuResource="amd.com/gpu"),
        "spec.image",
    ),
    (
        "gpu-image-on-a-non-nvidia-resource",
        "m",
        changed(BASE, gpus=1, gpuResource="amd.com/gpu", image=GPU_IMAGE),
        "spec.image",
    ),
    (
        "gpu-resource-in-resource-limits",
        "m",
        changed(
            BASE,
            gpuResource="nvidia.com/mig-1g.5gb",
            resources={"limits": {"nvidia.com/mig-1g.5gb": 1}},
        ),
        "spec.resources",
    ),
    # Kubernetes' own schemas for the embedded types (localdev/kube_schemas.py)
    (
        "env-repeated-name",
        "m",
        changed(BASE, env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        "spec.env",
    ),
    (
        "image-pull-secrets-repeated-name",
        "m",
        changed(BASE, imagePullSecrets=[{"name": "r"}, {"name": "r"}]),
        "spec.imagePullSecrets",
    ),
    (
        "affinity-wrong-type",
        "m",
        changed(BASE, affinity={"nodeAffinity": ["zone-a"]}),
        "spec.affinity.nodeAffinity",
    ),
    (
        "toleration-seconds-not-a-number",
        "m",
        changed(BASE, tolerations=[{"key": "k", "tolerationSeconds": "soon"}]),
        "spec.tolerations[0].tolerationSeconds",
    ),
    (
        "client-selector-wrong-type",
        "m",
        changed(BASE, networkPolicy={"clientSelector": {"matchLabels": ["a"]}}),
        "spec.networkPolicy.clientSelector.matchLabels",
    ),
    ("gpu-memory-fraction-zero", "m", changed(BASE, gpuMemoryFraction=0), "spec.gpuMemoryFraction"),
    (
        "gpu-memory-fraction-above-one",
        "m",
        changed(BASE, gpuMemoryFraction=1.5),
        "spec.gpuMemoryFraction",
    ),
    (
        "gpu-in-resource-limits",
        "m",
        changed(BASE, resources={"limits": {"nvidia.com/gpu": 1}}),
        "spec.resources",
    ),
    (
        "gpu-in-resource-requests",
        "m",
        changed(BASE, resources={"requests": {"nvidia.com/gpu": "1"}}),
        "spec.resources",
    ),
    (
        "resource-quantity-bad",
        "m",
        changed(BASE, resources={"requests": {"cpu": "lots"}}),
        "spec.resources.requests.cpu",
    ),
    ("image-with-space", "m", changed(BASE, image="tensorflow/serving 2"), "spec.image"),
    (
        "pull-policy-unknown",
        "m",
        changed(BASE, imagePullPolicy="Sometimes"),
        "spec.imagePullPolicy",
    ),
    # ports, monitoring, batching, flags
    ("rest-equals-grpc", "m", changed(BASE, ports={"grpc": 9000, "rest": 9000}), "spec.ports.rest"),
    ("grpc-port-zero", "m", changed(BASE, ports={"grpc": 0}), "spec.ports.grpc"),
    ("rest-port-too-high", "m", changed(BASE, ports={"rest": 70000}), "spec.ports.rest"),
    (
        "monitoring-with-rest-off",
        "m",
        changed(BASE, ports={"rest": 0}, monitoring={}),
        "spec.monitoring",
    ),
    (
        "monitoring-path-relative",
        "m",
        changed(BASE, monitoring={"path": "metrics"}),
        "spec.monitoring.path",
    ),
    (
        "batch-sizes-unsorted",
        "m",
        changed(BASE, batching={"maxBatchSize": 32, "allowedBatchSizes": [16, 8, 32]}),
        "spec.batching.allowedBatchSizes",
    ),
    (
        "batch-sizes-not-ending-at-max",
        "m",
        changed(BASE, batching={"maxBatchSize": 32, "allowedBatchSizes": [8, 16]}),
        "spec.batching.allowedBatchSizes",
    ),
    (
        "batch-size-zero",
        "m",
        changed(BASE, batching={"maxBatchSize": 0}),
        "spec.batching.maxBatchSize",
    ),
    ("server-arg-owned-port", "m", changed(BASE, serverArgs=["--port=9000"]), "spec.serverArgs"),
    (
        "server-arg-owned-config-poll",
        "m",
        changed(BASE, serverArgs=["--model_config_file_poll_wait_seconds=5"]),
        "spec.serverArgs",
    ),
    (
        "server-arg-owned-bare-flag",
        "m",
        changed(BASE, serverArgs=["--rest_api_timeout_in_ms=100", "--enable_batching"]),
        "spec.serverArgs",
    ),
    (
        "server-arg-not-a-flag",
        "m",
        changed(BASE, serverArgs=["rest_api_timeout_in_ms=5"]),
        "spec.serverArgs[0]",
    ),
    # serverArgs grammar: tensorflow_model_server 2.20.0's own parser
    # (tensorflow/core/util/command_line_flags.cc) ignores what it cannot read as
    # --name=value, exits on a bad value; admission refuses both up front.
    ("server-arg-single-dash", "m", changed(BASE, serverArgs=["-grpc_max_threads=8"]), "[0]"),
    (
        "server-arg-misspelt",
        "m",
        changed(BASE, serverArgs=["--rest_api_timeout_in_ms=5", "--grpc_max_thread=8"]),
        # The API server quotes the item; the rule names the release.
        'spec.serverArgs[1]: Invalid value: "--grpc_max_thread=8": spec.serverArgs: not a flag '
        "of tensorflow_model_server 2.20.0",
    ),
    ("server-arg-port-abc", "m", changed(BASE, serverArgs=["--port=abc"]), "spec.serverArgs[0]"),
    (
        "server-arg-int-abc",
        "m",
        changed(BASE, serverArgs=["--grpc_max_threads=abc"]),
        "an int32 flag takes a whole number",
    ),
    (
        "server-arg-int32-overflow",
        "m",
        changed(BASE, serverArgs=["--rest_api_timeout_in_ms=99999999999"]),
        "an int32 flag takes a whole number",
    ),
    (
        "server-arg-int64-fraction",
        "m",
        changed(BASE, serverArgs=["--tensorflow_intra_op_parallelism=1.5"]),
        "an int64 flag takes a whole number",
    ),
    (
        "server-arg-owned-bool-maybe",
        "m",
        changed(BASE, serverArgs=["--enable_batching=maybe"]),
        "spec.serverArgs must not set flags the operator owns",
    ),
    (
        "server-arg-bool-maybe",
        "m",
        changed(BASE, serverArgs=["--enable_grpc_healthcheck_service=maybe"]),
        "a bool flag takes =true, =false, =1 or =0",
    ),
    (
        "server-arg-space-separated",
        "m",
        changed(BASE, serverArgs=["--rest_api_timeout_in_ms 5000"]),
        "each item must be one flag",
    ),
    (
        "server-arg-value-as-next-item",
        "m",
        changed(BASE, serverArgs=["--rest_api_timeout_in_ms", "5000"]),
        "only bool flags may be given without =value",
    ),
    ("server-arg-version", "m", changed(BASE, serverArgs=["--version"]), "--version"),
    # pods and Services
    ("replicas-negative", "m", changed(BASE, replicas=-1), "spec.replicas"),
    (
        "pod-label-owned-selector",
        "m",
        changed(BASE, podLabels={api.LABEL_SERVEDMODEL: "other"}),
        "spec.podLabels",
    ),
    (
        "pod-label-owned-app-name",
        "m",
        changed(BASE, podLabels={"app.kubernetes.io/name": "x"}),
        "spec.podLabels",
    ),
    (
        "service-type-external-name",
        "m",
        changed(BASE, service={"type": "ExternalName"}),
        "spec.service.type",
    ),
    (
        "grace-period-too-short",
        "m",
        changed(BASE, terminationGracePeriodSeconds=1),
        "spec.terminationGracePeriodSeconds",
    ),
    (
        "availability-timeout-too-short",
        "m",
        changed(BASE, rollout={"availabilityTimeoutSeconds": 1}),
        "spec.rollout.availabilityTimeoutSeconds",
    ),
    ("model-name-with-space", "m", changed(BASE, modelName="my model"), "spec.modelName"),
    # the object's name
    ("name-too-long", "m" * 46, BASE, "metadata.name"),
    ("name-starts-with-digit", "1model", BASE, "metadata.name"),
    ("name-with-dot", "my.model", BASE, "metadata.name"),
    # s3:// needs a fixed version set (puller.py)
    (
        "s3-latest-policy",
        "m",
        changed(
            BASE,
            storage={"uri": "s3://bucket/m"},
            version=DROP,
            versionPolicy={"latest": {"numVersions": 1}},
        ),
        "spec.storage.uri",
    ),
    # autoscaling
    (
        "autoscaling-max-below-min",
        "m",
        changed(BASE, autoscaling={"minReplicas": 3, "maxReplicas": 2}),
        "spec.autoscaling.maxReplicas",
    ),
    (
        "autoscaling-zero-with-hpa",
        "m",
        changed(BASE, autoscaling={"minReplicas": 0, "maxReplicas": 2, "requestsPerSecond": "10"}),
        "spec.autoscaling.minReplicas",
    ),
    (
        "autoscaling-zero-without-requests",
        "m",
        changed(
            BASE,
            autoscaling={
                "provider": "keda",
                "minReplicas": 0,
                "maxReplicas": 2,
                "targetCPUUtilization": 50,
            },
        ),
        "spec.autoscaling.minReplicas",
    ),
    (
        "autoscaling-keda-settings-with-hpa",
        "m",
        changed(BASE, autoscaling={"maxReplicas": 2, "keda": {"pollingIntervalSeconds": 10}}),
        "spec.autoscaling.keda",
    ),
    (
        "autoscaling-metrics-with-keda",
        "m",
        changed(
            BASE,
            autoscaling={
                "provider": "keda",
                "maxReplicas": 2,
                "requestsPerSecond": "10",
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        ),
        "spec.autoscaling.metrics",
    ),
    # canary rollouts
    (
        "canary-with-autoscaling",
        "m",
        changed(BASE, rollout={"canary": {}}, autoscaling={"maxReplicas": 3}),
        "spec.rollout.canary",
    ),
    (
        "canary-monitoring-off",
        "m",
        changed(BASE, rollout={"canary": {}}, monitoring={"enabled": False}),
        "spec.rollout.canary",
    ),
    (
        "canary-rest-off",
        "m",
        changed(BASE, rollout={"canary": {}}, ports={"rest": 0}),
        "spec.rollout.canary",
    ),
    (
        "canary-step-both",
        "m",
        changed(BASE, rollout={"canary": {"steps": [{"replicas": 1, "percent": 10}]}}),
        "spec.rollout.canary.steps[0]",
    ),
    (
        "canary-percent-over-half",
        "m",
        changed(BASE, rollout={"canary": {"steps": [{"percent": 60}]}}),
        "spec.rollout.canary.steps[0].percent",
    ),
    (
        "canary-unknown-policy",
        "m",
        changed(BASE, rollout={"canary": {"onInsufficientTraffic": "Wait"}}),
        "spec.rollout.canary.onInsufficientTraffic",
    ),
]


@pytest.fixture(scope="module")
def admission_namespace(api_client, operator) -> Iterator[str]:
    """One namespace for the module, watched by the running operator (so a wrongly
    admitted ServedModel would get children)."""
    core = client.CoreV1Api(api_client)
    name = f"{operator.namespaces.rstrip('*')}adm-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"tfso-test": "true"}}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def create(api_client: Any, namespace: str, body: dict[str, Any], dry_run: bool = False) -> Any:
    kwargs = {"dry_run": "All"} if dry_run else {}
    return custom(api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, body, **kwargs
    )


def servedmodels(api_client: Any, namespace: str) -> list[Any]:
    result = custom(api_client).list_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL
    )
    return list(result["items"])


def test_the_base_spec_is_valid(api_client, admission_namespace) -> None:
    """The spec every case changes is accepted, so each refusal is its change's doing."""
    create(api_client, admission_namespace, servedmodel("m", BASE), dry_run=True)
    for _, name, spec_, _ in INVALID:
        if name != "m":  # the name cases use the base spec itself
            assert spec_ == BASE


@pytest.mark.parametrize(
    ("name", "spec_", "field"),
    [pytest.param(n, s, f, id=i) for i, n, s, f in INVALID],
)
def test_invalid_servedmodel_is_refused(
    api_client, admission_namespace, name, spec_, field
) -> None:
    with pytest.raises(ApiException) as refused:
        create(api_client, admission_namespace, servedmodel(name, spec_))
    assert refused.value.status == 422, refused.value.body
    message = json.loads(refused.value.body)["message"]
    assert field in message, message
    assert servedmodels(api_client, admission_namespace) == []


# What the embedded-type and GPU-resource rules must still admit.
VALID_EMBEDDED: dict[str, dict[str, Any]] = {
    "mig-slice-on-the-gpu-image": {
        "gpus": 1,
        "gpuResource": "nvidia.com/mig-1g.5gb",
        "image": GPU_IMAGE,
    },
    "another-vendor-with-its-image": {
        "gpus": 1,
        "gpuResource": "amd.com/gpu",
        "image": "example.com/tfs-rocm:2.20",
    },
    "everything-kubernetes-takes": {
        "env": [
            {"name": "A", "value": "1"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "imagePullSecrets": [{"name": "a"}, {"name": "b"}],
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
            {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]},
                    }
                ],
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "x"}},
                            "topologyKey": "kubernetes.io/hostname",
                            "matchLabelKeys": ["pod-template-hash"],
                        },
                    }
                ]
            },
        },
        "networkPolicy": {
            "clientSelector": {
                "matchExpressions": [{"key": "role", "operator": "In", "values": ["web"]}]
            },
            "namespaceSelector": {"matchLabels": {"team": "search"}},
        },
    },
}


@pytest.mark.parametrize("case", sorted(VALID_EMBEDDED))
def test_valid_embedded_types_are_admitted_unchanged(api_client, admission_namespace, case):
    fields = VALID_EMBEDDED[case]
    body = servedmodel("m", changed(BASE, **fields))
    created = create(api_client, admission_namespace, body, dry_run=True)
    for key, value in fields.items():
        assert created["spec"][key] == value, key


# Flags tensorflow_model_server 2.20.0 reads as given: each must be admitted.
VALID_SERVER_ARGS = [
    "--rest_api_timeout_in_ms=5000",
    "--rest_api_timeout_in_ms=+5000",
    "--grpc_max_threads=2147483647",
    "--tensorflow_intra_op_parallelism=-1",
    "--enable_grpc_healthcheck_service",
    "--enable_profiler=FALSE",
    "--flush_filesystem_caches=0",
    "--rest_api_enable_cors_support=True",
    "--saved_model_tags=serve,gpu",
    "--grpc_channel_arguments=grpc.max_connection_age_ms=2000",
    "--mixed_precision=bfloat16",
    "--ssl_config_file=",
]


def test_valid_server_args_are_admitted(api_client, admission_namespace) -> None:
    """The grammar refuses no flag the server would take (all in one object: the
    rules are per item, so one refusal would fail the whole list)."""
    body = servedmodel("m", changed(BASE, serverArgs=VALID_SERVER_ARGS))
    created = create(api_client, admission_namespace, body, dry_run=True)
    assert created["spec"]["serverArgs"] == VALID_SERVER_ARGS


@pytest.mark.parametrize("arg", VALID_SERVER_ARGS)
def test_each_valid_server_arg_is_a_flag_of_the_pinned_release(arg: str) -> None:
    assert arg.removeprefix("--").partition("=")[0] in release.SERVER_FLAGS


def test_nothing_was_created(api_client, admission_namespace) -> None:
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    selector = api.LABEL_SERVEDMODEL
    assert servedmodels(api_client, admission_namespace) == []
    assert apps.list_namespaced_deployment(admission_namespace, label_selector=selector).items == []
    assert core.list_namespaced_service(admission_namespace, label_selector=selector).items == []
    assert core.list_namespaced_config_map(admission_namespace, label_selector=selector).items == []


def _cel_messages() -> list[str]:
    import yaml

    crd = yaml.safe_load((REPO_ROOT / "crds" / f"{api.PLURAL}.{api.GROUP}.yaml").read_text())
    messages: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        messages.extend(r["message"] for r in node.get("x-kubernetes-validations") or ())
        for child in (node.get("properties") or {}).values():
            walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])

    walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return messages


def test_every_cel_rule_refuses_some_case(api_client, admission_namespace) -> None:
    """Each CEL rule of the CRD is exercised: its message comes back for some case."""
    answers = []
    for _, name, spec_, _ in INVALID:
        with pytest.raises(ApiException) as refused:
            create(api_client, admission_namespace, servedmodel(name, spec_), dry_run=True)
        answers.append(json.loads(refused.value.body)["message"])
    rules = _cel_messages()
    assert len(INVALID) >= 20 and len(rules) >= 14
    silent = [m for m in rules if not any(m in answer for answer in answers)]
    assert not silent, f"CEL rules no case triggers: {silent}"


# ----- what the CRD publishes ---------------------------------------------------


def kubectl(sim: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(sim.kubectl_path()), f"--kubeconfig={sim.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kubectl_explain_teaches_the_api(sim, crds) -> None:
    def explained() -> str | None:
        result = kubectl(sim, "explain", "servedmodel.spec.storage")
        return (
            result.stdout
            if result.returncode == 0 and "persistentVolumeClaim" in result.stdout
            else None
        )

    out = wait_until(explained, timeout=30, what="kubectl explain servedmodel.spec.storage")
    assert "Where the model's numbered version folders live" in out
    for field, words in {
        "persistentVolumeClaim": "mounted read-only",
        "hostPath": "A folder on the node",
        "nfs": "An NFS export",
        "uri": "s3://bucket/path",
        "credentials": "from a Secret",
        "mountPath": "Defaults to /models/<modelName>",
    }.items():
        assert f"{field}\t<" in out, field
        assert words in " ".join(out.split()), (field, words)
    deep = kubectl(sim, "explain", "servedmodel.spec.versionPolicy.latest.numVersions")
    assert deep.returncode == 0, deep.stderr
    assert "How many of the highest versions to serve" in deep.stdout


# ----- the rendered children pass the API server --------------------------------


def _rendered(case: str, namespace: str) -> render.Children:
    body = copy.deepcopy(CASES[case])
    body["metadata"]["namespace"] = namespace
    sm = spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)
    return render.render(sm, sm.target)


@pytest.fixture(scope="module")
def keda_crd(sim: Any) -> None:
    """KEDA's real ScaledObject CRD (no KEDA runs): the keda case is checked against it."""
    path = scaledobject_crd()
    result = kubectl(sim, "apply", "--server-side", "--field-manager=tfso-tests", "-f", str(path))
    assert result.returncode == 0, result.stderr
    sim.wait_established(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_golden_case_passes_the_api_server(sim, admission_namespace, keda_crd, case) -> None:
    """Server-side apply as a dry run, as the operator does before its first write."""
    manifests = _rendered(case, admission_namespace).all()
    result = kubectl(
        sim,
        "apply",
        "--server-side",
        "--field-manager=tfso-tests",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)["items"]
    assert len(stored) == len(manifests)
    for manifest, obj in zip(manifests, stored, strict=True):
        # Stored as rendered: the operator's drift check will find nothing to re-apply.
        assert contains(strip_object(obj), manifest), (manifest["kind"], obj)


# What users write, and what the API server's own parser turns them into.
QUANTITIES_TEXT = """
    0.5 .5 +0.5 0.500 00.5 1.5 1.50 1.500 1.000 1.0 10.0 0.1 0.100 0.25 1.0001 3.3333333333
    0.1m 100m 250m 100.000m 0.5u 5u 1000u 0.0000000001 1e-9 1e-3 3e-2 5e-1 123e-3 1000e-3
    0 -0 00 0.0 1 2 16 +1 1. 007 1024 2048 1500 2000 1500.000 1000000000000000000
    1k 01k 1.5k 1.500k 1000k 1M 1G 1E 1e0 1e3 1e9 12e1 0.1e1 1.5e3 1.2345e2 129e6
    1Ki 2Ki 8Ki 01Ki +2Ki 0.5Ki 1.5Ki 100Ki 1023Ki 64Mi 16Mi 512Mi 1000Mi 1024Mi
    1536Mi 0.25Mi 1.5Gi 2.5Gi +1.5Gi 4Gi 7Ti 128974848
    123456789012345.678 1234567890123456.789 +11111111111Ki +111111111111Ki +11111111Mi
    +111111111Mi +11111Gi +111111Gi +11Ti +111Ti +1Pi +1Ki +8Ki 1.0Ki +1.5Ki 1024Pi 7Ei 8Ei
"""


def test_rendered_quantities_are_what_the_api_server_stores(sim, admission_namespace) -> None:
    rng = random.Random(7)
    suffixes = ["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "e3", "e-2"]
    generated = [
        f"{rng.randint(0, 5000) / rng.choice([1, 10, 100, 1000]):g}{rng.choice(suffixes)}"
        for _ in range(60)
    ]
    quantities = QUANTITIES_TEXT.split() + generated
    for resource in ("cpu", "memory"):
        containers = [
            {"name": f"c{i}", "image": "x", "resources": {"requests": {resource: q}}}
            for i, q in enumerate(quantities)
        ]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quantities"}}
        pod["spec"] = {"containers": containers}
        result = kubectl(sim, "create", "--dry-run=server", "-n", admission_namespace, "-o",
                         "json", "-f", "-", stdin=json.dumps(pod))  # fmt: skip
        assert result.returncode == 0, result.stderr
        stored = [
            c["resources"]["requests"][resource]
            for c in json.loads(result.stdout)["spec"]["containers"]
        ]
        wrong = [
            f"{q!r}: stored {s!r}, rendered {render.canonical_quantity(q)!r}"
            for q, s in zip(quantities, stored, strict=True)
            if render.canonical_quantity(q) != s
        ]
        assert not wrong, f"{resource}: " + "; ".join(wrong)


@pytest.fixture(scope="module")
def restricted_namespace(api_client, operator) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    name = f"{operator.namespaces.rstrip('*')}psa-{uuid.uuid4().hex[:6]}"
    labels = {"tfso-test": "true", "pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    # The pod-options case runs as its own ServiceAccount.
    core.create_namespaced_service_account(name, {"metadata": {"name": "model-reader"}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def _pod_of(case: str, namespace: str) -> dict[str, Any]:
    deployment = _rendered(case, namespace).deployment
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{case}-pod", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


@pytest.mark.parametrize(
    "case",
    ["pvc-subpath-replicas", "s3-credentials", "gs-uri", "batching-monitoring", "pod-options"],
)
def test_model_server_pod_passes_pod_security_restricted(
    api_client, restricted_namespace, case
) -> None:
    pod = _pod_of(case, restricted_namespace)
    client.CoreV1Api(api_client).create_namespaced_pod(restricted_namespace, pod, dry_run="All")


def test_gpu_pod_passes_pod_security_restricted(api_client, restricted_namespace) -> None:
    body = copy.deepcopy(CASES["gpu"])
    body["spec"]["storage"] = PVC  # nfs is not a restricted volume type; the GPU bits are
    sm = spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)
    template = render.render(sm, sm.target).deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gpu"}, "spec": template["spec"]}
    client.CoreV1Api(api_client).create_namespaced_pod(restricted_namespace, pod, dry_run="All")


def test_pod_security_check_can_fail(api_client, restricted_namespace) -> None:
    """hostPath storage is the user's choice, and restricted namespaces refuse it."""
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api_client).create_namespaced_pod(
            restricted_namespace, _pod_of("minimal-hostpath", restricted_namespace), dry_run="All"
        )
    assert refused.value.status == 403
    assert "hostPath" in json.loads(refused.value.body)["message"]


# ----- the example manifest -----------------------------------------------------


def test_mnist_manifest_applies_cleanly(sim, admission_namespace) -> None:
    manifest = REPO_ROOT / "manifests" / "mnist-servedmodel.yaml"
    result = kubectl(
        sim,
        "apply",
        "--dry-run=server",
        "-n",
        admission_namespace,
        "-f",
        str(manifest),
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no warnings either
    applied = json.loads(result.stdout)
    assert applied["kind"] == api.KIND and applied["metadata"]["name"] == "mnist"
    spec_ = applied["spec"]
    assert spec_["modelName"] == "mnist"
    assert spec_["storage"]["persistentVolumeClaim"]["claimName"] == "mnist-models"
    assert spec_["storage"]["mountPath"] == "/models/mnist"
    assert spec_["version"] == 1
    assert spec_["ports"] == {"grpc": 8500, "rest": 8501}
    sm = spec.parse(applied, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)
    assert sm.storage.base_path == "/models/mnist"
