"""ServedModel -> the Kubernetes objects that serve it (pure, no I/O).

Everything here is a function of (ServedModel, the version set to serve):
golden-file tests pin the output, and the apply step sends it with
server-side apply. The version set is an argument, not read from the spec,
because after a refused rollout the operator renders the last good versions
while the spec still names the refused ones.
"""

from __future__ import annotations

import copy
import decimal
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tfserving_operator import api, puller, release
from tfserving_operator.model_config import (
    batching_parameters,
    model_server_config,
    monitoring_config,
)
from tfserving_operator.spec import ServedModel, VersionSet

Manifest = dict[str, Any]

# Seconds the pod keeps serving after it is told to stop, while endpoints
# drop it: the server ignores SIGTERM, so the preStop sleep is the drain and
# the kill at the end of the grace period is the real stop.
PRESTOP_MARGIN_SECONDS = 5
UNPRIVILEGED_UID = 1000
# The well-known node label kubelets set from the node's GOARCH.
ARCH_LABEL = "kubernetes.io/arch"


@dataclass(frozen=True)
class Children:
    """Every object one ServedModel owns, in apply order."""

    config_map: Manifest
    deployment: Manifest
    services: tuple[Manifest, ...]
    pod_disruption_budget: Manifest | None
    network_policy: Manifest | None
    config_hash: str
    # The HorizontalPodAutoscaler or KEDA ScaledObject of spec.autoscaling.
    autoscaler: Manifest | None = None
    # A running canary's ConfigMap and Deployment (render_canary).
    canary: tuple[Manifest, ...] = ()

    def all(self) -> list[Manifest]:
        """Objects to apply, config first so the pods never miss their files."""
        objs = [self.config_map, *self.services]
        if self.pod_disruption_budget:
            objs.append(self.pod_disruption_budget)
        if self.network_policy:
            objs.append(self.network_policy)
        if self.autoscaler:
            # Before the Deployment it targets (the HPA waits for it): the
            # Deployment stays last, so its pods never start without config.
            objs.append(self.autoscaler)
        objs.append(self.deployment)
        return objs + list(self.canary)


def selector_labels(sm: ServedModel) -> dict[str, str]:
    """The labels pods are selected by (a Deployment's selector is immutable: keep it small)."""
    return {api.LABEL_SERVEDMODEL: sm.name}


def common_labels(sm: ServedModel) -> dict[str, str]:
    """Labels on every object the operator creates for `sm`."""
    return {
        **sm.carried_labels,
        api.LABEL_NAME: api.APP_NAME,
        api.LABEL_INSTANCE: sm.name,
        api.LABEL_COMPONENT: "model-server",
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
        **selector_labels(sm),
    }


def owner_reference(sm: ServedModel) -> dict[str, Any]:
    """Controller reference: garbage collection deletes children with the ServedModel."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": sm.name,
        "uid": sm.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(sm: ServedModel, name: str, **extra: Any) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": sm.namespace,
        "labels": common_labels(sm),
        "ownerReferences": [owner_reference(sm)],
    }
    meta.update(extra)
    return meta


def config_data(sm: ServedModel, serve: VersionSet) -> dict[str, str]:
    """The files of the model server's config folder."""
    data = {api.MODEL_CONFIG_FILE: model_server_config(sm, serve)}
    if sm.monitoring_path:
        data[api.MONITORING_CONFIG_FILE] = monitoring_config(sm.monitoring_path)
    if sm.batching is not None:
        data[api.BATCHING_CONFIG_FILE] = batching_parameters(sm.batching)
    return data


def short_hash(obj: Any) -> str:
    """A stable 10-character hash of a JSON-able value."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def config_map_name(sm: ServedModel, config_hash: str) -> str:
    """Config maps are immutable and named by content: pods of an old
    ReplicaSet keep their own file, so no running server sees a new version's
    config before its own pod passed the gate."""
    return f"{sm.name}-config-{config_hash}"


def render_config_map(sm: ServedModel, data: dict[str, str], config_hash: str) -> Manifest:
    """The immutable ConfigMap holding one config generation."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(sm, config_map_name(sm, config_hash)),
        "immutable": True,
        "data": data,
    }


def server_args(sm: ServedModel, serve: VersionSet) -> list[str]:
    """tensorflow_model_server flags; the operator owns every one of these."""
    args = [
        f"--port={sm.grpc_port}",
        f"--rest_api_port={sm.rest_port}",
        f"--model_config_file={api.CONFIG_DIR}/{api.MODEL_CONFIG_FILE}",
        f"--file_system_poll_wait_seconds={sm.file_system_poll_wait_seconds}",
        f"--enable_model_warmup={'true' if sm.warmup else 'false'}",
        # A broken version must reach END (and be refused) in seconds, not
        # after the server's default five one-minute retries.
        f"--max_num_load_retries={sm.load_retries}",
        f"--load_retry_interval_micros={sm.load_retry_interval_seconds * 1_000_000}",
    ]
    if serve.labels:
        # Each pod starts with its final labels; without this flag the server
        # refuses labels on versions still loading. Safe here because the
        # gate keeps the pod out of traffic until every labelled version is
        # AVAILABLE.
        args.append("--allow_version_labels_for_unavailable_models=true")
    if sm.monitoring_path:
        args.append(f"--monitoring_config_file={api.CONFIG_DIR}/{api.MONITORING_CONFIG_FILE}")
    if sm.batching is not None:
        args += [
            "--enable_batching=true",
            f"--batching_parameters_file={api.CONFIG_DIR}/{api.BATCHING_CONFIG_FILE}",
        ]
    if sm.gpu_memory_fraction is not None:
        args.append(f"--per_process_gpu_memory_fraction={sm.gpu_memory_fraction:g}")
    return args + list(sm.server_args)


_QUANTITY = re.compile(
    r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?[0-9]+))?$"
)
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_EXPONENTS = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_SUFFIXES = {exp: suffix for suffix, exp in _DECIMAL_EXPONENTS.items()}


def canonical_quantity(value: Any) -> str:
    """A container resource quantity as the API server stores it ("0.5" -> "500m",
    "1024Mi" -> "1Gi", "1.5Gi" -> "1536Mi").

    Drift detection compares what we render with what we read back: a
    quantity written any other way would look changed forever and be applied
    again on every pass. The API server rounds pod resources up to a
    thousandth, writes the result in canonical form, and keeps the text as
    written when its parser already deems it canonical (`_kept_as_written`).
    Text that is not a quantity is returned unchanged: the API server's
    refusal then names it.
    """
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        return text
    sign, number, suffix, exponent = match.groups()
    with decimal.localcontext() as ctx:
        ctx.prec = 80
        exact = Decimal(number)
        if suffix in _BINARY_SUFFIXES[1:]:
            fmt = "binary"
            exact *= 1024 ** _BINARY_SUFFIXES.index(suffix)
        elif exponent is not None:
            fmt = "exponent"
            exact = exact.scaleb(int(exponent))
        else:
            fmt = "decimal"
            exact = exact.scaleb(_DECIMAL_EXPONENTS[suffix or ""])
        # Up, not to nearest: asking for a little must not become nothing.
        amount = exact.quantize(Decimal("0.001"), rounding=decimal.ROUND_UP)
        if amount == exact and _kept_as_written(number, suffix, exponent):
            return text
        if amount == 0:
            return "0"
        if fmt == "binary":
            # The parser caps an amount with a binary suffix at the largest
            # int64 (ParseQuantity's maxAllowed): "8Ei" is stored as that number.
            amount = min(amount, Decimal(2**63 - 1))
        minus = "-" if sign == "-" else ""
        integral = amount == amount.to_integral_value()
        if fmt == "binary" and integral and amount >= 1024:
            whole, power = int(amount), 0
            while power < len(_BINARY_SUFFIXES) - 1 and whole % 1024 == 0:
                whole, power = whole // 1024, power + 1
            return f"{minus}{whole}{_BINARY_SUFFIXES[power]}"
        # Decimal: the largest power of 1000 that leaves a whole mantissa.
        mantissa, exp = int(amount.scaleb(3)), -3
        while exp < 18 and mantissa % 1000 == 0:
            mantissa, exp = mantissa // 1000, exp + 3
        if fmt == "exponent":
            return f"{minus}{mantissa}" + (f"e{exp}" if exp else "")
        return f"{minus}{mantissa}{_DECIMAL_SUFFIXES[exp]}"


def _kept_as_written(number: str, suffix: str | None, exponent: str | None) -> bool:
    """Whether the API server's quantity parser keeps this text verbatim: its
    fast path (digits fit an int64) reuses the input when it looks canonical."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0") or "0"
    digits = whole + fraction
    if len(digits) > 18 or int(digits) >= 2**63:
        return False
    if suffix in _BINARY_SUFFIXES[1:]:
        power = 10 * _BINARY_SUFFIXES.index(suffix)
        if fraction or 15 - len(whole) - int(power * 3 / 10) - 1 < 0:
            return False
        return int(digits) * 2**power < 2**63 and int(digits) & 0x07 != 0
    scale = (int(exponent) if exponent is not None else _DECIMAL_EXPONENTS[suffix or ""]) - len(
        fraction
    )
    return (
        scale >= -9 and scale % 3 == 0 and not digits.endswith("000") and not digits.startswith("0")
    )


def _resources(sm: ServedModel) -> dict[str, Any]:
    resources: dict[str, Any] = {
        k: {rk: canonical_quantity(rv) for rk, rv in v.items()}
        for k, v in sm.resources.items()
        if v
    }
    if sm.gpus:
        resources.setdefault("limits", {})[sm.gpu_resource] = str(sm.gpus)
    return resources


def _env(sm: ServedModel) -> list[dict[str, Any]]:
    # s3:// credentials go to the puller only (puller.py): the server reads
    # the pulled folders from a volume and never talks to the store.
    env: list[dict[str, Any]] = []
    secret = sm.storage.credentials_secret
    if secret and sm.storage.uri.startswith("gs://"):
        env.append(
            {
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": "/var/run/secrets/tfserving/gcs/service-account.json",
            }
        )
    return env + [dict(e) for e in sm.env]


def _volumes_and_mounts(
    sm: ServedModel, config_hash: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(sm, config_hash)}},
        # The root filesystem is read-only; TensorFlow still wants a scratch dir.
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": api.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    st = sm.storage
    storage_volume: dict[str, Any] | None = None
    if st.kind == "pvc":
        storage_volume = {"persistentVolumeClaim": {"claimName": st.claim_name, "readOnly": True}}
    elif st.kind == "hostPath":
        storage_volume = {"hostPath": {"path": st.host_path, "type": "Directory"}}
    elif st.kind == "nfs":
        storage_volume = {"nfs": {"server": st.nfs_server, "path": st.nfs_path, "readOnly": True}}
    if storage_volume is not None:
        volumes.append({"name": "model-storage", **storage_volume})
        mount: dict[str, Any] = {
            "name": "model-storage",
            "mountPath": st.mount_path,
            "readOnly": True,
        }
        if st.sub_path:
            mount["subPath"] = st.sub_path
        mounts.append(mount)
    if puller.pulls(sm):
        volumes.append(puller.volume())
        mounts.append(puller.server_mount())
    if st.credentials_secret and st.uri.startswith("gs://"):
        volumes.append({"name": "gcs-credentials", "secret": {"secretName": st.credentials_secret}})
        mounts.append(
            {
                "name": "gcs-credentials",
                "mountPath": "/var/run/secrets/tfserving/gcs",
                "readOnly": True,
            }
        )
    return volumes, mounts


def _probes(sm: ServedModel) -> dict[str, Any]:
    # The real server opens its ports only once the initial versions have
    # loaded, so "the gRPC port accepts connections" means "the process is up
    # and done loading", never more: a REST 200 on /v1/models/NAME would not
    # even mean that. Which versions are AVAILABLE is the readiness gate's job,
    # so there is no readinessProbe: the kubelet runs one on its own ticker
    # once the startup probe passed, and a TCP check could only hold a pod out
    # of traffic for up to its period after the gate opened. The startup probe
    # asks every second (a TCP connect costs nothing), so a pod is "started"
    # within a second of its ports opening; it gives up when the availability
    # timeout would refuse the version anyway.
    def tcp(period: int, failures: int) -> dict[str, Any]:
        # A fresh dict per probe: manifests share no sub-objects.
        return {
            "tcpSocket": {"port": "grpc"},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    startup_period = 1
    return {
        "startupProbe": tcp(
            startup_period, max(1, -(-sm.availability_timeout_seconds // startup_period))
        ),
        # A server whose port stays closed for a minute is dead: restart it.
        "livenessProbe": tcp(20, 3),
    }


def _container(sm: ServedModel, serve: VersionSet, config_hash: str) -> dict[str, Any]:
    _, mounts = _volumes_and_mounts(sm, config_hash)
    ports = [{"name": "grpc", "containerPort": sm.grpc_port, "protocol": "TCP"}]
    if sm.rest_port:
        ports.append({"name": "http", "containerPort": sm.rest_port, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": api.CONTAINER_NAME,
        "image": sm.image,
        "imagePullPolicy": sm.image_pull_policy,
        "command": ["/usr/bin/tensorflow_model_server"],
        "args": server_args(sm, serve),
        "ports": ports,
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "lifecycle": {
            "preStop": {
                "sleep": {
                    "seconds": max(1, sm.termination_grace_period_seconds - PRESTOP_MARGIN_SECONDS)
                }
            }
        },
        # A server that exits on a failed load leaves its last log lines (the
        # load error) in the container's termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **_probes(sm),
    }
    env = _env(sm)
    if env:
        container["env"] = env
    resources = _resources(sm)
    if resources:
        container["resources"] = resources
    return container


def _tolerations(sm: ServedModel) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in sm.tolerations]
    if sm.gpus:
        tolerations += [
            {"key": key, "operator": "Exists", "effect": "NoSchedule"}
            for key in gpu_taint_keys(sm.gpu_resource)
        ]
    return tolerations


def gpu_taint_keys(resource: str) -> list[str]:
    """The taints GPU node pools carry for `resource`: its own name, and for an
    NVIDIA resource (a MIG slice) also nvidia.com/gpu, which NVIDIA's GPU
    operator and the managed pools put on every GPU node, MIG or not."""
    keys = [resource]
    if resource.startswith(api.NVIDIA_RESOURCE_PREFIX) and resource != api.GPU_RESOURCE:
        keys.append(api.GPU_RESOURCE)
    return keys


def arch_requirement() -> dict[str, Any]:
    """The node selector requirement for the architectures the default images exist for."""
    return {
        "key": ARCH_LABEL,
        "operator": "In",
        "values": list(release.DEFAULT_IMAGE_ARCHITECTURES),
    }


def render_affinity(sm: ServedModel) -> dict[str, Any]:
    """The user's affinity, plus, with the default image, a required node
    architecture: tensorflow/serving images are linux/amd64 only, and a pod on
    an arm64 node fails to start. nodeSelectorTerms are ORed, so the
    requirement goes into every term (ANDed with the term's own expressions);
    preferred terms only weigh nodes and are left alone. A user-set image may
    be multi-arch: then nothing is added."""
    affinity: dict[str, Any] = copy.deepcopy(dict(sm.affinity or {}))
    if not sm.image_is_default:
        return affinity
    node = affinity.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    # No term at all means "any node": one term holding only the requirement.
    terms = required.get("nodeSelectorTerms") or [{}]
    required["nodeSelectorTerms"] = [_with_arch(term) for term in terms]
    return affinity


def _with_arch(term: dict[str, Any]) -> dict[str, Any]:
    expressions = list(term.get("matchExpressions") or [])
    if arch_requirement() not in expressions:
        expressions.append(arch_requirement())
    return {**term, "matchExpressions": expressions}


def pod_annotations(sm: ServedModel, serve: VersionSet, config_hash: str) -> dict[str, str]:
    """What the gate reads back from each pod: which versions, which config."""
    annotations = {
        api.ANNOTATION_CONFIG_HASH: config_hash,
        api.ANNOTATION_VERSIONS: serve.describe(),
        api.ANNOTATION_MODEL_NAME: sm.model_name,
        api.ANNOTATION_GRPC_PORT: str(sm.grpc_port),
    }
    if sm.monitoring_path:
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(sm.rest_port),
            "prometheus.io/path": sm.monitoring_path,
        }
    return {**sm.pod_annotations, **annotations}


def render_pod_spec(sm: ServedModel, serve: VersionSet, config_hash: str) -> dict[str, Any]:
    """The model server pod: restricted-compliant, gated, drained on stop."""
    volumes, _ = _volumes_and_mounts(sm, config_hash)
    pod: dict[str, Any] = {
        "containers": [_container(sm, serve, config_hash)],
        "volumes": volumes,
        "readinessGates": [{"conditionType": api.GATE_CONDITION}],
        "securityContext": {
            "runAsNonRoot": True,
            # The stock image's user is root; a numeric non-root UID lets the
            # kubelet verify runAsNonRoot.
            "runAsUser": UNPRIVILEGED_UID,
            "runAsGroup": UNPRIVILEGED_UID,
            "fsGroup": UNPRIVILEGED_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": sm.termination_grace_period_seconds,
        # Model servers never call the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(sm)},
            }
        ],
    }
    init_containers = puller.init_containers(sm, serve)
    if init_containers:
        pod["initContainers"] = init_containers
    if sm.service_account_name:
        pod["serviceAccountName"] = sm.service_account_name
    if sm.node_selector:
        pod["nodeSelector"] = dict(sm.node_selector)
    tolerations = _tolerations(sm)
    if tolerations:
        pod["tolerations"] = tolerations
    affinity = render_affinity(sm)
    if affinity:
        pod["affinity"] = affinity
    if sm.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in sm.image_pull_secrets]
    return pod


def render_deployment(sm: ServedModel, serve: VersionSet, config_hash: str) -> Manifest:
    """The Deployment: maxUnavailable 0, so capacity never drops during a rollout.

    With spec.autoscaling the replica count is the autoscaler's: the field is
    left out, so this apply neither owns nor resets it (the Applier hands it
    over first, see autoscaling.handover_replicas).
    """
    replicas = {} if sm.autoscaling else {"replicas": sm.replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(sm, sm.name),
        "spec": {
            **replicas,
            "selector": {"matchLabels": selector_labels(sm)},
            "revisionHistoryLimit": 5,
            # The operator refuses a slow version itself, with a reason;
            # Deployment's own deadline only backs it up.
            "progressDeadlineSeconds": sm.availability_timeout_seconds + 60,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": sm.max_surge},
            },
            "template": {
                "metadata": {
                    "labels": {**sm.pod_labels, **common_labels(sm)},
                    "annotations": pod_annotations(sm, serve, config_hash),
                },
                "spec": render_pod_spec(sm, serve, config_hash),
            },
        },
    }


def canary_name(sm: ServedModel) -> str:
    """The canary Deployment's name."""
    return f"{sm.name}-canary"


def render_canary(sm: ServedModel, serve: VersionSet, replicas: int) -> tuple[Manifest, ...]:
    """The canary's ConfigMap and Deployment: the stable Deployment's template
    for `serve`, `replicas` pods, and the track label in its selector and pods.

    Its pods keep every stable selector label, so the Services (and the PDB)
    select them too: traffic reaches the canary in proportion to its ready
    endpoints. The stable Deployment's selector matches them as well, but a
    Deployment only adopts ReplicaSets without a controller, and the canary's
    ReplicaSet has its own, so neither Deployment counts the other's pods.
    """
    data = config_data(sm, serve)
    config_hash = short_hash(data)
    deployment = render_deployment(sm, serve, config_hash)
    deployment["metadata"]["name"] = canary_name(sm)
    deployment["spec"]["replicas"] = replicas
    deployment["spec"]["selector"]["matchLabels"][api.LABEL_TRACK] = api.TRACK_CANARY
    deployment["spec"]["template"]["metadata"]["labels"][api.LABEL_TRACK] = api.TRACK_CANARY
    return render_config_map(sm, data, config_hash), deployment


def service_names(sm: ServedModel) -> dict[str, str]:
    """Names of the Services, by role."""
    return {
        "grpc": f"{sm.name}-grpc",
        "rest": f"{sm.name}-rest",
        "headless": f"{sm.name}-headless",
    }


def _grpc_port(sm: ServedModel) -> dict[str, Any]:
    # appProtocol kubernetes.io/h2c: gRPC is cleartext HTTP/2; meshes and
    # Gateway implementations route it as such (the name says grpc for the
    # ones that go by port names).
    return {
        "name": "grpc",
        "port": sm.grpc_port,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    }


def _rest_port(sm: ServedModel) -> dict[str, Any]:
    return {
        "name": "http",
        "port": sm.rest_port,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }


def render_services(sm: ServedModel) -> tuple[Manifest, ...]:
    """gRPC and REST Services, plus a headless one for client-side gRPC balancing."""
    names = service_names(sm)

    def service(name: str, ports: list[dict[str, Any]], headless: bool = False) -> Manifest:
        meta = _metadata(sm, name)
        spec: dict[str, Any] = {"selector": selector_labels(sm), "ports": ports}
        if headless:
            spec["clusterIP"] = "None"
        else:
            spec["type"] = sm.service_type
            if sm.service_annotations:
                meta["annotations"] = dict(sm.service_annotations)
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}

    services = [service(names["grpc"], [_grpc_port(sm)])]
    if sm.rest_port:
        services.append(service(names["rest"], [_rest_port(sm)]))
    headless_ports = [_grpc_port(sm)] + ([_rest_port(sm)] if sm.rest_port else [])
    services.append(service(names["headless"], headless_ports, headless=True))
    return tuple(services)


def render_pdb(sm: ServedModel) -> Manifest | None:
    """With more than one replica, voluntary evictions take one at a time.

    Autoscaled: rendered whenever the autoscaler may go above one replica, so
    the budget is there before the scale-up, not created in its wake.
    """
    most = sm.autoscaling.max_replicas if sm.autoscaling else sm.replicas
    if most <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(sm, sm.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(sm)},
            # A pod that never passed the gate serves nothing: let it go.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# Set by the API server on every namespace (immutable, = its name), so a peer
# pinned by it cannot be claimed from another namespace by copying labels.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_OPERATOR_NAMESPACE = "tfserving-operator-system"


@dataclass(frozen=True)
class OperatorPeer:
    """Where the operator's own pods run: a ServedModel's NetworkPolicy admits
    them to the gRPC port, for the probes behind the readiness gate.

    The defaults are the chart's with its default values; the chart passes its
    own (TFSO_OPERATOR_NAMESPACE from the downward API, TFSO_OPERATOR_POD_LABELS
    from its selector labels, which follow nameOverride and the release).
    """

    namespace: str = DEFAULT_OPERATOR_NAMESPACE
    pod_labels: Mapping[str, str] = field(default_factory=lambda: {api.LABEL_NAME: api.MANAGED_BY})

    def peer(self) -> dict[str, Any]:
        """The NetworkPolicy peer: those pods, in that namespace only."""
        return {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: self.namespace}},
            "podSelector": {"matchLabels": dict(self.pod_labels)},
        }


def render_network_policy(sm: ServedModel, operator: OperatorPeer) -> Manifest | None:
    """Only selected clients, and the operator (for its probes, and a canary's
    metrics), reach the model servers."""
    if sm.network_policy is None:
        return None
    client_peer: dict[str, Any] = {
        "podSelector": dict(sm.network_policy.get("clientSelector") or {})
    }
    if sm.network_policy.get("namespaceSelector") is not None:
        client_peer["namespaceSelector"] = dict(sm.network_policy["namespaceSelector"])
    ports = [{"protocol": "TCP", "port": sm.grpc_port}]
    if sm.rest_port:
        ports.append({"protocol": "TCP", "port": sm.rest_port})
    operator_ports = [{"protocol": "TCP", "port": sm.grpc_port}]
    if sm.canary is not None and sm.rest_port:
        # A canary's analysis reads the servers' Prometheus pages on the REST port.
        operator_ports.append({"protocol": "TCP", "port": sm.rest_port})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(sm, sm.name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(sm)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [client_peer], "ports": ports},
                {"from": [operator.peer()], "ports": operator_ports},
            ],
        },
    }


# The Pods metric a requests-per-second target reads: TF Serving's
# :tensorflow:serving:request_count as a per-pod rate, served by a custom
# metrics adapter (docs/autoscaling.md has the prometheus-adapter rule).
REQUEST_RATE_METRIC = "tfserving_requests_per_second"
# TF Serving's own counter of requests, as Prometheus scrapes it.
REQUEST_COUNT_SERIES = ":tensorflow:serving:request_count"


def _scale_target(sm: ServedModel) -> dict[str, str]:
    # The Deployment, not the ServedModel's scale subresource: scaling the
    # ServedModel would write spec.replicas, the field GitOps owns.
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": sm.name}


def render_hpa(sm: ServedModel) -> Manifest | None:
    """The autoscaling/v2 HorizontalPodAutoscaler of spec.autoscaling (provider hpa)."""
    auto = sm.autoscaling
    if auto is None or auto.provider != "hpa":
        return None
    metrics: list[dict[str, Any]] = []
    if auto.target_cpu_utilization is not None:
        target = {"type": "Utilization", "averageUtilization": auto.target_cpu_utilization}
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": target}})
    if auto.requests_per_second is not None:
        metric = {
            "metric": {"name": REQUEST_RATE_METRIC},
            "target": {"type": "AverageValue", "averageValue": auto.requests_per_second},
        }
        metrics.append({"type": "Pods", "pods": metric})
    metrics.extend(copy.deepcopy(dict(m)) for m in auto.metrics)
    spec: dict[str, Any] = {
        "scaleTargetRef": _scale_target(sm),
        "minReplicas": auto.min_replicas,
        "maxReplicas": auto.max_replicas,
        "metrics": metrics,
    }
    if auto.behavior is not None:
        spec["behavior"] = copy.deepcopy(dict(auto.behavior))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(sm, sm.name),
        "spec": spec,
    }


def request_rate_query(sm: ServedModel) -> str:
    """PromQL: the requests per second all of this ServedModel's servers answer."""
    return (
        f'sum(rate({REQUEST_COUNT_SERIES}{{namespace="{sm.namespace}",'
        f'model_name="{sm.model_name}"}}[1m]))'
    )


def render_scaled_object(sm: ServedModel) -> Manifest | None:
    """The KEDA ScaledObject of spec.autoscaling (provider keda): scales to zero too."""
    auto = sm.autoscaling
    if auto is None or auto.provider != "keda":
        return None
    triggers: list[dict[str, Any]] = []
    if auto.requests_per_second is not None:
        triggers.append(
            {
                "type": "prometheus",
                "metadata": {
                    "serverAddress": auto.prometheus_address,
                    "query": request_rate_query(sm),
                    # KEDA divides the query by the replica count (AverageValue).
                    "threshold": auto.requests_per_second,
                },
            }
        )
    if auto.target_cpu_utilization is not None:
        triggers.append(
            {
                "type": "cpu",
                "metricType": "Utilization",
                "metadata": {"value": str(auto.target_cpu_utilization)},
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": _scale_target(sm),
        "minReplicaCount": auto.min_replicas,
        "maxReplicaCount": auto.max_replicas,
        "pollingInterval": auto.polling_interval_seconds,
        "cooldownPeriod": auto.cooldown_period_seconds,
        "triggers": triggers,
    }
    if auto.behavior is not None:
        behavior = copy.deepcopy(dict(auto.behavior))
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(sm, sm.name),
        "spec": spec,
    }


def render(sm: ServedModel, serve: VersionSet, operator: OperatorPeer | None = None) -> Children:
    """Every child of `sm`, serving the version set `serve` (`operator`: where the
    operator's pods run, default the chart's default install)."""
    data = config_data(sm, serve)
    config_hash = short_hash(data)
    return Children(
        config_map=render_config_map(sm, data, config_hash),
        deployment=render_deployment(sm, serve, config_hash),
        services=render_services(sm),
        pod_disruption_budget=render_pdb(sm),
        network_policy=render_network_policy(sm, operator or OperatorPeer()),
        config_hash=config_hash,
        autoscaler=render_hpa(sm) or render_scaled_object(sm),
    )
