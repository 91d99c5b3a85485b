"""The values the pure modules decide on: pods, Deployments, model servers' answers.

This module does no I/O and imports nothing that does (no grpc, kopf or
kubernetes): observe.py builds these values from watch events and gRPC
answers, decide.py reads them. import-linter (pyproject.toml) keeps it so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# The canonical gRPC status codes (grpc/status.h, google.rpc.Code): TF Serving's
# StatusProto.error_code is a tensorflow.error.Code, which uses the same numbers.
CODE_NAMES: dict[int, str] = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


class ModelState(enum.IntEnum):
    """A model version's state, as TF Serving's ModelVersionStatus.State."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50  # unloaded, or failed to load: see VersionStatus.error_code

    @classmethod
    def from_wire(cls, value: int) -> ModelState:
        """Map a state number to a member; numbers added by newer servers map to UNKNOWN.

        UNKNOWN is the safe reading for a state we cannot interpret: it is not
        AVAILABLE, so nothing gets routed to that version on its account.
        """
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One model version's status as reported by the server."""

    version: int
    state: ModelState
    # A tensorflow.error.Code (the gRPC canonical codes); 0 is OK.
    error_code: int
    error_message: str

    @property
    def available(self) -> bool:
        """True when the server can answer requests with this version."""
        return self.state is ModelState.AVAILABLE

    @property
    def failed(self) -> bool:
        """True when the version ended with an error (typically a failed load)."""
        return self.state is ModelState.END and self.error_code != 0

    @property
    def error_code_name(self) -> str:
        """The error code's canonical name, e.g. ``"NOT_FOUND"``; ``"OK"`` for none."""
        return CODE_NAMES.get(self.error_code, f"CODE_{self.error_code}")


@dataclass(frozen=True)
class PodView:
    """What the gate and the status need to know about one model server pod."""

    name: str
    namespace: str
    ip: str
    phase: str
    ready: bool
    gate: bool | None  # None: the operator never set it
    gate_reason: str
    terminating: bool
    config_hash: str
    versions: str  # the pod template's version annotation, e.g. "2,3" or "latest"
    model_name: str
    grpc_port: int
    running: bool
    restart_count: int
    termination_message: str
    # lastState.terminated of the server container: the process's exit code
    # (255 for the real server's exit(-1), 137 when the kubelet killed it) and
    # the kubelet's reason ("Error", "OOMKilled", "Completed").
    exit_code: int
    exit_reason: str
    unschedulable: str  # the scheduler's message when it cannot place the pod
    # When the model puller (puller.py) failed on this pod: which of its init
    # containers, and its termination message (the store's error); else "".
    pull_container: str = ""
    pull_failure: str = ""
    pull_exit_code: int = 0
    # A pod of the canary Deployment (api.LABEL_TRACK), and where its server
    # exports Prometheus metrics (the pod's prometheus.io annotations; 0/"" off).
    canary: bool = False
    metrics_port: int = 0
    metrics_path: str = ""

    @property
    def metrics_url(self) -> str:
        """The server's Prometheus page ("" when monitoring is off)."""
        if not (self.ip and self.metrics_port and self.metrics_path):
            return ""
        return f"http://{self.ip}:{self.metrics_port}{self.metrics_path}"

    @property
    def target(self) -> str:
        """host:port of its gRPC server."""
        return f"{self.ip}:{self.grpc_port}"

    @property
    def probeable(self) -> bool:
        """Running with an IP: its server can be asked."""
        return bool(self.ip) and self.running and self.phase == "Running"


@dataclass(frozen=True)
class DeploymentView:
    """The Deployment's rollout progress."""

    generation: int
    observed_generation: int
    replicas: int  # desired (spec)
    updated_replicas: int  # pods of the newest ReplicaSet
    config_hash: str
    current_replicas: int = 0  # pods of every ReplicaSet it owns, old ones included
    # Why its ReplicaSet cannot create pods (the ReplicaFailure condition the
    # Deployment controller copies from the ReplicaSet: FailedCreate, with the
    # API server's refusal, e.g. Pod Security or a quota), "" when it can.
    replica_failure: str = ""
    # Field managers owning spec.replicas (managedFields): who the count belongs to.
    replicas_managers: tuple[str, ...] = ()

    @property
    def settled(self) -> bool:
        """The Deployment controller has seen the latest spec."""
        return self.observed_generation >= self.generation


@dataclass(frozen=True)
class ProbeResult:
    """One GetModelStatus answer, or why there is none."""

    pod: str
    statuses: tuple[VersionStatus, ...] = ()
    error_reason: str = ""
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_reason

    def state_of(self, version: int) -> VersionStatus | None:
        return next((s for s in self.statuses if s.version == version), None)

    @property
    def available_versions(self) -> tuple[int, ...]:
        return tuple(sorted(s.version for s in self.statuses if s.state == ModelState.AVAILABLE))


@dataclass(frozen=True)
class ServingCounts:
    """One model server's serving metrics for one model, read from its Prometheus page.

    The real server's counters (tensorflow_serving/servables/tensorflow/util.cc):
    ``:tensorflow:serving:request_count`` by status, and the
    ``:tensorflow:serving:request_latency`` histogram (microseconds, successful
    requests only), summed over its API and entrypoint labels. Counters grow
    from the server's start: the analysis subtracts two readings.
    """

    pod: str
    requests: int = 0  # every status
    errors: int = 0  # status other than OK
    # Cumulative histogram buckets: (upper bound as the page writes it, count).
    latency_buckets: tuple[tuple[str, int], ...] = ()
    error: str = ""  # why the page could not be read ("" when it was)

    @property
    def ok(self) -> bool:
        return not self.error
