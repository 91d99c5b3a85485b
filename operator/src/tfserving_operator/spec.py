"""A typed view of a ServedModel object, with the CRD's defaults applied.

The API server applies the CRD defaults at admission; applying them again
here keeps the pure functions total (unit tests and old objects need no
admission) and gives every consumer one spelling of each field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tfserving_operator import api


@dataclass(frozen=True)
class VersionSet:
    """What a model server is told to load: explicit versions, or a policy."""

    policy: str  # "specific", "latest" or "all"
    versions: tuple[int, ...] = ()
    labels: tuple[tuple[str, int], ...] = ()
    num_versions: int = 1

    @property
    def explicit(self) -> bool:
        """True when the versions are known up front (the gate checks each of them)."""
        return self.policy == "specific"

    def describe(self) -> str:
        """Short form for status and kubectl columns: "2", "2,3", "latest", "latest:2", "all"."""
        if self.explicit:
            return ",".join(str(v) for v in self.versions)
        if self.policy == "latest" and self.num_versions != 1:
            return f"latest:{self.num_versions}"
        return self.policy

    def to_status(self) -> dict[str, Any]:
        """The form stored in status.lastGood / status.refused."""
        return {"versions": list(self.versions), "labels": dict(self.labels)}

    @classmethod
    def specific(cls, versions: Any, labels: Mapping[str, int] | None = None) -> VersionSet:
        """Explicit versions plus labels; every labelled version is loaded too."""
        label_items = tuple(sorted((str(k), int(v)) for k, v in (labels or {}).items()))
        wanted = {int(v) for v in versions} | {v for _, v in label_items}
        return cls(policy="specific", versions=tuple(sorted(wanted)), labels=label_items)


@dataclass(frozen=True)
class Storage:
    """Where the version folders live and how the pod reaches them."""

    kind: str  # "pvc", "hostPath", "nfs" or "uri"
    base_path: str  # what TF Serving's base_path is set to
    mount_path: str  # where the volume is mounted ("" for uri)
    claim_name: str = ""
    sub_path: str = ""
    host_path: str = ""
    nfs_server: str = ""
    nfs_path: str = ""
    uri: str = ""
    credentials_secret: str = ""


@dataclass(frozen=True)
class Autoscaling:
    """spec.autoscaling: who sets the replica count, and from which metrics."""

    provider: str  # "hpa" or "keda"
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int | None
    requests_per_second: str | None  # target per replica, a quantity ("10", "500m")
    metrics: tuple[Mapping[str, Any], ...]  # extra autoscaling/v2 MetricSpecs, as written
    behavior: Mapping[str, Any] | None  # autoscaling/v2 behavior, as written
    prometheus_address: str  # KEDA's prometheus trigger
    polling_interval_seconds: int
    cooldown_period_seconds: int
    # spec.replicas as written: ignored while autoscaling is on, and the status says so.
    spec_replicas: int = 1

    def clamp(self, replicas: int) -> int:
        """What the autoscaler would make of `replicas`: within [min, max]."""
        return max(self.min_replicas, min(self.max_replicas, replicas))


def parse_autoscaling(spec: Mapping[str, Any]) -> Autoscaling | None:
    """spec.autoscaling with the CRD's defaults, or None when off."""
    auto = spec.get("autoscaling")
    if auto is None:
        return None
    keda = auto.get("keda") or {}
    rps = auto.get("requestsPerSecond")
    cpu = auto.get("targetCPUUtilization")
    if cpu is None and rps is None and not auto.get("metrics"):
        cpu = DEFAULT_TARGET_CPU_UTILIZATION
    return Autoscaling(
        provider=auto.get("provider", "hpa"),
        min_replicas=int(auto.get("minReplicas", 1)),
        max_replicas=int(auto["maxReplicas"]),
        target_cpu_utilization=int(cpu) if cpu is not None else None,
        requests_per_second=str(rps) if rps is not None else None,
        metrics=tuple(auto.get("metrics") or ()),
        behavior=auto.get("behavior"),
        prometheus_address=keda.get("prometheusAddress", DEFAULT_PROMETHEUS_ADDRESS),
        polling_interval_seconds=int(keda.get("pollingIntervalSeconds", 30)),
        cooldown_period_seconds=int(keda.get("cooldownPeriodSeconds", 300)),
        spec_replicas=int(spec.get("replicas", 1)),
    )


@dataclass(frozen=True)
class CanaryStep:
    """One canary step: a replica count, or a share of traffic (percent)."""

    replicas: int = 0
    percent: int = 0

    def canary_replicas(self, stable: int) -> int:
        """Canary pods beside `stable` stable ones: traffic follows ready
        endpoints, so `percent` means canary / (canary + stable)."""
        if self.replicas:
            return self.replicas
        return max(1, -(-self.percent * stable // (100 - self.percent)))


@dataclass(frozen=True)
class Canary:
    """spec.rollout.canary: a new target runs beside the stable version first."""

    steps: tuple[CanaryStep, ...]
    analysis_interval_seconds: int
    min_requests: int
    max_error_rate: float  # canary's error rate minus the stable's
    max_latency_ratio: float  # canary p99 / stable p99
    insufficient_traffic_timeout_seconds: int
    on_insufficient_traffic: str  # "Promote" or "Refuse"
    promote_token: str = ""  # annotation values (api.ANNOTATION_CANARY_*)
    abort_token: str = ""


def parse_canary(rollout: Mapping[str, Any], annotations: Mapping[str, str]) -> Canary | None:
    """spec.rollout.canary with the CRD's defaults, or None when off."""
    canary = rollout.get("canary")
    if canary is None:
        return None
    steps = tuple(
        CanaryStep(replicas=int(s.get("replicas") or 0), percent=int(s.get("percent") or 0))
        for s in canary.get("steps") or ({"replicas": 1}, {"percent": 50})
    )
    return Canary(
        steps=steps,
        analysis_interval_seconds=int(canary.get("analysisIntervalSeconds", 60)),
        min_requests=int(canary.get("minRequests", 50)),
        max_error_rate=float(canary.get("maxErrorRate", 0.01)),
        max_latency_ratio=float(canary.get("maxLatencyRatio", 2.0)),
        insufficient_traffic_timeout_seconds=int(
            canary.get("insufficientTrafficTimeoutSeconds", 600)
        ),
        on_insufficient_traffic=str(canary.get("onInsufficientTraffic", "Refuse")),
        promote_token=annotations.get(api.ANNOTATION_CANARY_PROMOTE, ""),
        abort_token=annotations.get(api.ANNOTATION_CANARY_ABORT, ""),
    )


# No metric named at all: CPU, at the utilisation most HPA guides start from.
DEFAULT_TARGET_CPU_UTILIZATION = 80
DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"


@dataclass(frozen=True)
class ServedModel:
    """A ServedModel object as the operator uses it."""

    name: str
    namespace: str
    uid: str
    generation: int
    model_name: str
    storage: Storage
    target: VersionSet
    replicas: int
    image: str
    image_pull_policy: str
    gpus: int
    gpu_memory_fraction: float | None
    resources: Mapping[str, Mapping[str, Any]]
    grpc_port: int
    rest_port: int
    batching: Mapping[str, Any] | None
    monitoring_path: str | None
    warmup: bool
    file_system_poll_wait_seconds: int
    server_args: tuple[str, ...]
    availability_timeout_seconds: int
    max_surge: int
    load_retries: int
    load_retry_interval_seconds: int
    termination_grace_period_seconds: int
    env: tuple[Mapping[str, Any], ...]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    affinity: Mapping[str, Any] | None
    service_account_name: str
    image_pull_secrets: tuple[str, ...]
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    service_type: str
    service_annotations: Mapping[str, str]
    network_policy: Mapping[str, Any] | None
    retry_token: str = ""
    # The extended resource `gpus` counts (a MIG profile, another vendor's plugin).
    gpu_resource: str = api.GPU_RESOURCE
    # spec.image unset: the operator's default image (tensorflow/serving,
    # published for linux/amd64 only), so the pods must land on amd64 nodes.
    image_is_default: bool = False
    # The model puller's image ("": puller.PULLER_IMAGE); operator setting TFSO_PULLER_IMAGE.
    puller_image: str = ""
    autoscaling: Autoscaling | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The ServedModel's own labels the operator's shard selector names
    # (TFSO_LABEL_SELECTOR): copied onto every child and pod, so a label
    # shard can watch only its own children, filtered by the API server.
    carried_labels: Mapping[str, str] = field(default_factory=dict)
    canary: Canary | None = None


def target_versions(spec: Mapping[str, Any]) -> VersionSet:
    """The version set the spec asks for."""
    labels = spec.get("versionLabels") or {}
    if spec.get("version") is not None:
        return VersionSet.specific([spec["version"]], labels)
    policy = spec.get("versionPolicy") or {}
    if "specific" in policy:
        return VersionSet.specific(policy["specific"].get("versions") or [], labels)
    if "all" in policy:
        return VersionSet(policy="all")
    latest = policy.get("latest") or {}
    return VersionSet(policy="latest", num_versions=int(latest.get("numVersions", 1)))


def parse_storage(spec: Mapping[str, Any], model_name: str) -> Storage:
    """Storage with the mount path and base path resolved."""
    storage = spec.get("storage") or {}
    mount_path = storage.get("mountPath") or f"/models/{model_name}"
    if "uri" in storage:
        uri = str(storage["uri"]).rstrip("/")
        secret = (storage.get("credentials") or {}).get("secretName", "")
        if uri.startswith("s3://"):
            # The server cannot read s3:// (puller.py): the puller copies the
            # versions into a volume and the server reads them there.
            return Storage(
                kind="uri",
                base_path=f"{api.PULLED_MODELS_DIR}/{model_name}",
                mount_path=api.PULLED_MODELS_DIR,
                uri=uri,
                credentials_secret=secret,
            )
        return Storage(kind="uri", base_path=uri, mount_path="", uri=uri, credentials_secret=secret)
    if "persistentVolumeClaim" in storage:
        pvc = storage["persistentVolumeClaim"]
        return Storage(
            kind="pvc",
            base_path=mount_path,
            mount_path=mount_path,
            claim_name=pvc["claimName"],
            sub_path=pvc.get("subPath", ""),
        )
    if "nfs" in storage:
        nfs = storage["nfs"]
        return Storage(
            kind="nfs",
            base_path=mount_path,
            mount_path=mount_path,
            nfs_server=nfs["server"],
            nfs_path=nfs["path"],
        )
    if "hostPath" in storage:
        return Storage(
            kind="hostPath",
            base_path=mount_path,
            mount_path=mount_path,
            host_path=storage["hostPath"]["path"],
        )
    raise ValueError("spec.storage must set one of persistentVolumeClaim, hostPath, nfs or uri")


def parse(
    body: Mapping[str, Any],
    default_image: str,
    default_gpu_image: str,
    puller_image: str = "",
    carried_label_keys: Iterable[str] = (),
) -> ServedModel:
    """Build the typed view from a ServedModel object (a dict as the API returns it)."""
    meta = body.get("metadata") or {}
    own_labels = meta.get("labels") or {}
    spec = body.get("spec") or {}
    name = meta["name"]
    model_name = spec.get("modelName") or name
    gpus = int(spec.get("gpus") or 0)
    gpu_resource = str(spec.get("gpuResource") or api.GPU_RESOURCE)
    cuda = gpus > 0 and gpu_resource.startswith(api.NVIDIA_RESOURCE_PREFIX)
    ports = spec.get("ports") or {}
    monitoring = spec.get("monitoring")
    rollout = spec.get("rollout") or {}
    monitoring_path = None
    # A canary is judged by the server's own metrics: it turns them on (the
    # CRD refuses a canary with monitoring.enabled false).
    if (monitoring is not None and monitoring.get("enabled", True)) or (
        monitoring is None and rollout.get("canary") is not None
    ):
        monitoring_path = (monitoring or {}).get("path") or "/monitoring/prometheus/metrics"
    service = spec.get("service") or {}
    fraction = spec.get("gpuMemoryFraction")
    return ServedModel(
        name=name,
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        model_name=model_name,
        storage=parse_storage(spec, model_name),
        target=target_versions(spec),
        replicas=int(spec.get("replicas", 1)),
        image=spec.get("image") or (default_gpu_image if cuda else default_image),
        image_pull_policy=spec.get("imagePullPolicy", "IfNotPresent"),
        gpus=gpus,
        gpu_resource=gpu_resource,
        gpu_memory_fraction=float(fraction) if fraction is not None else None,
        resources=spec.get("resources") or {},
        grpc_port=int(ports.get("grpc", 8500)),
        rest_port=int(ports.get("rest", 8501)),
        batching=spec.get("batching"),
        monitoring_path=monitoring_path,
        warmup=bool(spec.get("warmup", True)),
        file_system_poll_wait_seconds=int(spec.get("fileSystemPollWaitSeconds", 30)),
        server_args=tuple(spec.get("serverArgs") or ()),
        availability_timeout_seconds=int(rollout.get("availabilityTimeoutSeconds", 600)),
        max_surge=int(rollout.get("maxSurge", 1)),
        load_retries=int(rollout.get("loadRetries", 2)),
        load_retry_interval_seconds=int(rollout.get("loadRetryIntervalSeconds", 5)),
        termination_grace_period_seconds=int(spec.get("terminationGracePeriodSeconds", 45)),
        env=tuple(spec.get("env") or ()),
        node_selector=spec.get("nodeSelector") or {},
        tolerations=tuple(spec.get("tolerations") or ()),
        affinity=spec.get("affinity"),
        service_account_name=spec.get("serviceAccountName", ""),
        image_pull_secrets=tuple(s["name"] for s in spec.get("imagePullSecrets") or ()),
        pod_labels=spec.get("podLabels") or {},
        pod_annotations=spec.get("podAnnotations") or {},
        service_type=service.get("type", "ClusterIP"),
        service_annotations=service.get("annotations") or {},
        network_policy=spec.get("networkPolicy"),
        retry_token=(meta.get("annotations") or {}).get(api.ANNOTATION_RETRY, ""),
        image_is_default=not spec.get("image"),
        carried_labels={k: str(own_labels[k]) for k in carried_label_keys if k in own_labels},
        puller_image=puller_image,
        autoscaling=parse_autoscaling(spec),
        canary=parse_canary(rollout, meta.get("annotations") or {}),
    )
