"""Operator settings: loaded once from TFSO_* environment variables, validated at start.

A bad value stops the operator at start-up with a message naming the
variable, rather than surfacing later as odd behaviour.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from tfserving_operator.puller import PULLER_IMAGE

# The tensorflow/serving release rendered when a ServedModel sets no image
# (pinned in release.py, with everything else that follows the release).
# Re-exported: callers and tests read the defaults from settings.
from tfserving_operator.release import DEFAULT_GPU_IMAGE as DEFAULT_GPU_IMAGE
from tfserving_operator.release import DEFAULT_IMAGE as DEFAULT_IMAGE
from tfserving_operator.render import DEFAULT_OPERATOR_NAMESPACE, OperatorPeer

# Random peering priorities are drawn from 1..2**31-1: two replicas collide
# (and both pause until one restarts) with odds of about 1 in 2 billion.
RANDOM_PRIORITY_RANGE = 2**31 - 1


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the operator process (not of a ServedModel)."""

    default_image: str = DEFAULT_IMAGE
    default_gpu_image: str = DEFAULT_GPU_IMAGE
    # The model puller's image for s3:// storage (rclone; puller.py says why).
    puller_image: str = PULLER_IMAGE
    # gRPC deadline of one GetModelStatus call.
    probe_timeout_seconds: float = 2.0
    # Retry delays for a pod whose gate is closed: from the initial delay,
    # doubling. A pod answering LOADING is asked again at least every second
    # (probing.QUICK_RETRY_MAX_SECONDS); other failures back off up to the
    # max. A pod refusing connections (the real server listens only once
    # loaded) is also watched by a port wait that cuts its backoff short.
    probe_backoff_initial_seconds: float = 0.25
    probe_backoff_max_seconds: float = 5.0
    # How often a pod whose gate is open is asked again (steady-state probe load).
    probe_interval_seconds: float = 30.0
    # Consecutive probe timeouts / transport errors that close an open gate
    # (a readiness probe's failureThreshold): one slow answer from a busy
    # server does not pull its pod out of the Service. A definite answer (a
    # version not AVAILABLE, NOT_FOUND) closes it at once.
    probe_failure_threshold: int = 3
    # Concurrent probes of one ServedModel (a hung server holds one slot of
    # its own ServedModel for at most probe_timeout_seconds; other
    # ServedModels' probes never wait for it).
    max_concurrent_probes: int = 16
    # Seconds between re-lists of our objects (resync.py): objects deleted
    # while a watch was down leave the cache within this long. 0: never.
    resync_seconds: float = 300.0
    # Threads for blocking Kubernetes API calls.
    api_workers: int = 16
    # Namespaces to watch; empty means the whole cluster.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    # Only ServedModels with these labels (k=v,k2=v2): shards several operators.
    label_selector: Mapping[str, str] = field(default_factory=dict)
    # kopf peering object name; empty turns peering off (one replica, or a shard of its own).
    peering: str = ""
    # This replica's peering priority: the live replica with the highest one
    # works, the others pause. kopf also pauses *every* replica that sees a
    # live peer of its own priority, so replicas of one Deployment must differ:
    # 0 means "pick a random one at start" (see peering_priority_or_random).
    peering_priority: int = 0
    # Seconds a replica's peering keep-alive counts as alive (kopf's
    # settings.peering.lifetime; kopf renews it every lifetime - 5..10 s, at
    # least every second). After a SIGKILL the standby takes over within
    # this many seconds; kopf's default, 60, meant 45-50 s takeovers.
    peering_lifetime_seconds: int = 10
    liveness_port: int = 8080
    # Prometheus /metrics (tfserving_operator.metrics); 0 turns the endpoint off.
    metrics_port: int = 8081
    log_format: str = "plain"
    # Where this operator's pods run and how they are labelled: the NetworkPolicy
    # of a ServedModel admits exactly those pods to the gRPC port (the chart sets
    # both: the namespace from the downward API, the labels from its own
    # selector labels, which follow nameOverride).
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    operator_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: dict(OperatorPeer().pod_labels)
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read TFSO_<FIELD> variables (e.g. TFSO_PROBE_TIMEOUT_SECONDS=1.5)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"TFSO_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse values that cannot work."""
        positive = (
            "probe_timeout_seconds",
            "probe_backoff_initial_seconds",
            "probe_backoff_max_seconds",
            "probe_interval_seconds",
            "max_concurrent_probes",
            "api_workers",
            "peering_lifetime_seconds",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"TFSO_{name.upper()} must be > 0, got {getattr(self, name)}")
        if self.probe_backoff_max_seconds < self.probe_backoff_initial_seconds:
            raise SettingsError(
                "TFSO_PROBE_BACKOFF_MAX_SECONDS must be >= TFSO_PROBE_BACKOFF_INITIAL_SECONDS"
            )
        if self.resync_seconds < 0:
            raise SettingsError(
                f"TFSO_RESYNC_SECONDS must be >= 0 (0: off), got {self.resync_seconds}"
            )
        if self.probe_failure_threshold < 1:
            raise SettingsError(
                f"TFSO_PROBE_FAILURE_THRESHOLD must be >= 1, got {self.probe_failure_threshold}"
            )
        if self.peering_priority < 0:
            raise SettingsError(
                f"TFSO_PEERING_PRIORITY must be >= 0 (0: random), got {self.peering_priority}"
            )
        for name in ("liveness_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"TFSO_{name.upper()} must be a port (0-65535), got {port}")
        if not self.operator_namespace:
            raise SettingsError("TFSO_OPERATOR_NAMESPACE must name a namespace")
        if not self.operator_pod_labels:
            # An empty podSelector would admit every pod of that namespace.
            raise SettingsError("TFSO_OPERATOR_POD_LABELS must hold at least one key=value")
        if self.log_format not in ("plain", "json"):
            raise SettingsError(f"TFSO_LOG_FORMAT must be plain or json, got {self.log_format!r}")

    def operator_peer(self) -> OperatorPeer:
        """The operator's pods, as the NetworkPolicies render them."""
        return OperatorPeer(self.operator_namespace, dict(self.operator_pod_labels))

    @property
    def label_selector_query(self) -> str:
        """TFSO_LABEL_SELECTOR as a Kubernetes labelSelector (k=v,k2=v2)."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.label_selector.items()))

    def peering_priority_or_random(self) -> int:
        """The priority to peer with: the configured one, else a random positive one."""
        return self.peering_priority or secrets.randbelow(RANDOM_PRIORITY_RANGE) + 1


def _parse(name: str, type_name: str, raw: str) -> object:
    var = f"TFSO_{name.upper()}"
    try:
        if type_name == "float":
            return float(raw)
        if type_name == "int":
            return int(raw)
        if type_name.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if type_name.startswith("Mapping"):
            pairs = [p.strip() for p in raw.split(",") if p.strip()]
            parsed = {}
            for pair in pairs:
                key, sep, value = pair.partition("=")
                if not sep or not key:
                    raise ValueError(f"{pair!r} is not key=value")
                parsed[key.strip()] = value.strip()
            return parsed
    except ValueError as err:
        raise SettingsError(f"{var}={raw!r}: {err}") from err
    return raw
