"""spec.autoscaling: who owns the replica count, decided from values (pure).

While autoscaling is on, the Deployment's spec.replicas belongs to the
HorizontalPodAutoscaler (or KEDA's): the operator's server-side apply leaves
the field out. Server-side apply removes a field its last manager stops
sending, which would reset the count to the default of 1; so before the
operator lets go, a second field manager (api.HANDOVER_FIELD_MANAGER) applies
the current count and keeps owning it until the autoscaler's first change
takes it over (an update moves ownership). This is the procedure of the
Kubernetes docs' "Transferring ownership" section for a Deployment and an HPA.
Turning autoscaling off renders spec.replicas again; the operator's forced
apply takes the field back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tfserving_operator import api
from tfserving_operator.spec import ServedModel
from tfserving_operator.views import DeploymentView


def handover_replicas(sm: ServedModel, deployment: DeploymentView | None) -> int | None:
    """The count to hand over to api.HANDOVER_FIELD_MANAGER now, or None.

    Needed when autoscaling is on and the operator still owns the count (it
    set it before autoscaling was turned on), or nobody does (a Deployment
    just created without it: the API server's default of 1, which the
    handover replaces with the autoscaler's minimum before the first pod
    is even scheduled).
    """
    auto = sm.autoscaling
    if auto is None or deployment is None:
        return None
    owners = deployment.replicas_managers
    if not owners:
        return auto.clamp(1)
    if owners == (api.FIELD_MANAGER,):
        return auto.clamp(deployment.replicas)
    return None  # the handover manager, the HPA or KEDA holds it already


def must_release(manifest: Mapping[str, Any], deployment: DeploymentView | None) -> bool:
    """Apply `manifest` even if nothing else differs: it is a Deployment render
    without spec.replicas while the operator still owns the field (autoscaling
    just turned on), and only an apply makes server-side apply let go of it."""
    return (
        manifest["kind"] == "Deployment"
        and "replicas" not in manifest["spec"]
        and deployment is not None
        and api.FIELD_MANAGER in deployment.replicas_managers
    )


def effective(sm: ServedModel, deployment: DeploymentView | None) -> ServedModel:
    """`sm` with the replica count the checks must expect: the autoscaler's while it owns it."""
    auto = sm.autoscaling
    if auto is None:
        return sm
    if deployment is None:
        return dataclasses.replace(sm, replicas=auto.clamp(1))
    return dataclasses.replace(sm, replicas=deployment.replicas)


def scaler_name(sm: ServedModel) -> str:
    """Kind/name of the object that sets the count (KEDA's HPA is keda-hpa-<name>)."""
    auto = sm.autoscaling
    assert auto is not None
    if auto.provider == "keda":
        return f"ScaledObject/{sm.name}"
    return f"HorizontalPodAutoscaler/{sm.name}"


def status_of(sm: ServedModel) -> dict[str, Any] | None:
    """status.autoscaling: the scaler, its bounds, and that spec.replicas is ignored."""
    auto = sm.autoscaling
    if auto is None:
        return None
    return {
        "provider": auto.provider,
        "scaler": scaler_name(sm),
        "minReplicas": auto.min_replicas,
        "maxReplicas": auto.max_replicas,
        "desiredReplicas": sm.replicas,
        "message": (
            f"spec.replicas ({auto.spec_replicas}) is ignored while spec.autoscaling is set: "
            f"{scaler_name(sm)} sets the replica count ({sm.replicas} now)"
        ),
    }
