"""Builders for the values decide and reconcile work on: pods, Deployments, probe answers.

One place for test objects (cert-manager's test/unit/gen is the model):
each builder returns a valid, typical value, and keyword options change
only what a test is about, e.g. `pod("b", serving=True, restart_count=2)`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tfserving_operator.api import GateReason
from tfserving_operator.views import DeploymentView, ModelState, PodView, ProbeResult, VersionStatus

DEFAULT_HASH = "hash-v3"
LOAD_ERROR = "Failed to load SavedModel: saved_model.pb does not parse"


def pod(
    name: str,
    *,
    config_hash: str = DEFAULT_HASH,
    versions: str = "3",
    serving: bool = False,
    **options: Any,
) -> PodView:
    """A Running model-server pod with an IP.

    By default its gate was never set (a new pod); `serving=True` makes it a
    pod that passed its gate and takes traffic. Any other PodView field can
    be given by name.
    """
    base = PodView(
        name=name,
        namespace="ml",
        ip="10.0.0.1",
        phase="Running",
        ready=serving,
        gate=True if serving else None,
        gate_reason=GateReason.AVAILABLE if serving else "",
        terminating=False,
        config_hash=config_hash,
        versions=versions,
        model_name="mnist",
        grpc_port=8500,
        running=True,
        restart_count=0,
        termination_message="",
        exit_code=0,
        exit_reason="",
        unschedulable="",
    )
    return replace(base, **options)


def deployment(
    config_hash: str = DEFAULT_HASH, *, replicas: int = 1, **options: Any
) -> DeploymentView:
    """A Deployment the controller has caught up with: every replica updated and ready."""
    base = DeploymentView(
        generation=7,
        observed_generation=7,
        replicas=replicas,
        updated_replicas=replicas,
        config_hash=config_hash,
        current_replicas=replicas,
    )
    return replace(base, **options)


def version_status(
    version: int, state: ModelState, code: int = 0, message: str = ""
) -> VersionStatus:
    """One version's entry in a GetModelStatus answer."""
    return VersionStatus(version=version, state=state, error_code=code, error_message=message)


def answered(pod_name: str, *statuses: VersionStatus) -> ProbeResult:
    """The server of `pod_name` answered with these versions."""
    return ProbeResult(pod_name, tuple(statuses))


def answer(pod_name: str, version: int, state: ModelState, message: str = "") -> ProbeResult:
    """An answer about one version; a message makes it a failure (INVALID_ARGUMENT)."""
    return answered(pod_name, version_status(version, state, 3 if message else 0, message))


def probe_error(pod_name: str, reason: str, message: str = "") -> ProbeResult:
    """No answer: `reason` is a wire.client ProbeError reason (e.g. "ProbeTimeout")."""
    return ProbeResult(pod_name, error_reason=reason, error_message=message)
