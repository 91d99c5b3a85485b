"""The one table of Kubernetes kinds the operator touches.

The transport builds REST paths from it (kube.py), the kopf wiring watches
the children it marks as watched (handlers.py), and the child sync deletes
only the kinds it marks as pruned (children.py). A new child kind is one row
here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfserving_operator import api


@dataclass(frozen=True)
class KindInfo:
    """Where a kind lives in the API, and what the operator does with it."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    # Watched with our label: its events wake the owning ServedModel's worker.
    watched: bool = False
    # Optional child: rendered or not depending on the spec, so deleted when
    # the render drops it (ConfigMaps go by config generation instead).
    pruned: bool = False

    @property
    def api_version(self) -> str:
        """apiVersion as objects carry it: v1 for the core group, <group>/<version> otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path_prefix(self) -> str:
        """REST path prefix: /api/v1 for the core group, /apis/<group>/<version> otherwise."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


KINDS: tuple[KindInfo, ...] = (
    KindInfo("Pod", "", "v1", "pods", watched=True),
    # Pruned: the canary Deployment (<name>-canary) goes once no canary runs;
    # the stable one is always rendered.
    KindInfo("Deployment", "apps", "v1", "deployments", watched=True, pruned=True),
    KindInfo("ReplicaSet", "apps", "v1", "replicasets", watched=True),
    KindInfo("Service", "", "v1", "services", watched=True, pruned=True),
    KindInfo("ConfigMap", "", "v1", "configmaps", watched=True),
    KindInfo(
        "PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", watched=True, pruned=True
    ),
    KindInfo(
        "NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", watched=True, pruned=True
    ),
    KindInfo(
        "HorizontalPodAutoscaler",
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        watched=True,
        pruned=True,
    ),
    # Not watched: KEDA's CRD is optional, and a watch on a kind the API server
    # does not serve fails. The cache learns it from our own applies.
    KindInfo("ScaledObject", "keda.sh", "v1alpha1", "scaledobjects", pruned=True),
    KindInfo("Event", "events.k8s.io", "v1", "events"),
    KindInfo(api.KIND, api.GROUP, api.VERSION, api.PLURAL),
)

BY_KIND: dict[str, KindInfo] = {k.kind: k for k in KINDS}
WATCHED: tuple[KindInfo, ...] = tuple(k for k in KINDS if k.watched)
PRUNED: frozenset[str] = frozenset(k.kind for k in KINDS if k.pruned)
