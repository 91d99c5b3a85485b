"""Names of the ServedModel API and of everything the operator stamps on objects.

One place for every group, label, annotation, condition type and reason, so
renderers, decisions and tests agree on spelling.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "serving.tfoperator.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ServedModel"
PLURAL: Final = "servedmodels"

FIELD_MANAGER: Final = "tfserving-operator"
# Holds a Deployment's spec.replicas between the operator letting go of it
# and the autoscaler's first change (server-side apply would otherwise remove
# a field its only manager stops sending, resetting the count to 1).
HANDOVER_FIELD_MANAGER: Final = "tfserving-operator-handover"

# Labels on every child object and pod.
LABEL_SERVEDMODEL: Final = f"{GROUP}/servedmodel"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
APP_NAME: Final = "tensorflow-serving"
MANAGED_BY: Final = "tfserving-operator"

# Pod-template annotations the gate reads back from each pod.
ANNOTATION_CONFIG_HASH: Final = f"{GROUP}/config-hash"
ANNOTATION_VERSIONS: Final = f"{GROUP}/versions"
ANNOTATION_MODEL_NAME: Final = f"{GROUP}/model-name"
ANNOTATION_GRPC_PORT: Final = f"{GROUP}/grpc-port"
# On the ServedModel: change its value to retry a refused version set.
ANNOTATION_RETRY: Final = f"{GROUP}/retry"
# On the ServedModel: change its value to end a running canary at once, by
# promoting it (skipping the analysis left) or aborting it (a refusal).
ANNOTATION_CANARY_PROMOTE: Final = f"{GROUP}/canary-promote"
ANNOTATION_CANARY_ABORT: Final = f"{GROUP}/canary-abort"
# On the canary Deployment's pods (and in its selector): which track a pod is
# on. Stable pods carry no such label, so enabling canaries changes nothing
# in the stable Deployment's template.
LABEL_TRACK: Final = f"{GROUP}/track"
TRACK_CANARY: Final = "canary"

# The readiness gate: a pod takes traffic only once the operator has asked
# its model server and every version it must serve is AVAILABLE.
GATE_CONDITION: Final = f"{GROUP}/model-available"

CONTAINER_NAME: Final = "tensorflow-serving"
CONFIG_DIR: Final = "/etc/tfserving"
MODEL_CONFIG_FILE: Final = "models.config"
MONITORING_CONFIG_FILE: Final = "monitoring.config"
BATCHING_CONFIG_FILE: Final = "batching.config"
# spec.gpuResource's default: the NVIDIA device plugin's whole GPUs. MIG
# slices are other names in the same domain (nvidia.com/mig-1g.5gb, ...); the
# -gpu tensorflow/serving images are CUDA builds, for this domain only.
GPU_RESOURCE: Final = "nvidia.com/gpu"
NVIDIA_RESOURCE_PREFIX: Final = "nvidia.com/"
# Where the model puller puts s3:// version folders (an emptyDir; puller.py).
PULLED_MODELS_DIR: Final = "/models"


class Condition:
    """Condition types on a ServedModel.

    Ready, Progressing and Degraded are for people and Argo CD; Reconciling
    and Stalled are kstatus's "abnormal-true" pair, so Flux and kpt tell an
    unfinished rollout (InProgress) and a refused one (Failed) from a done one.
    """

    READY: Final = "Ready"
    PROGRESSING: Final = "Progressing"
    DEGRADED: Final = "Degraded"
    RECONCILING: Final = "Reconciling"
    STALLED: Final = "Stalled"


class Reason:
    """CamelCase reasons, each documented in docs/troubleshooting.md."""

    # Ready / Progressing
    AVAILABLE: Final = "VersionsAvailable"
    ROLLING_OUT: Final = "RollingOut"
    WAITING_FOR_REPLICAS: Final = "WaitingForReplicas"
    ROLLOUT_COMPLETE: Final = "RolloutComplete"
    SCALED_TO_ZERO: Final = "ScaledToZero"
    ROLLED_BACK: Final = "RolledBack"
    # Degraded
    AS_EXPECTED: Final = "AsExpected"
    VERSION_LOAD_FAILED: Final = "VersionLoadFailed"
    VERSION_LOAD_TIMEOUT: Final = "VersionLoadTimeout"
    MODEL_PULL_FAILED: Final = "ModelPullFailed"
    UNSCHEDULABLE: Final = "Unschedulable"
    PODS_NOT_CREATED: Final = "PodsNotCreated"
    INVALID_SPEC: Final = "InvalidSpec"
    CANARY_ANALYSIS_FAILED: Final = "CanaryAnalysisFailed"
    CANARY_ABORTED: Final = "CanaryAborted"
    # Progressing / Ready while a canary runs beside the stable version
    CANARY_ANALYSIS: Final = "CanaryAnalysis"
    CANARY_PROMOTED: Final = "CanaryPromoted"
    # Events only (Warning Events reuse the Degraded reasons above)
    ROLLOUT_STARTED: Final = "RolloutStarted"
    ROLLING_BACK: Final = "RollingBack"
    SERVING_VERSIONS: Final = "ServingVersions"
    CANARY_STARTED: Final = "CanaryStarted"
    CANARY_ANALYSED: Final = "CanaryAnalysed"
    READY: Final = "Ready"


# Gate reasons, written on the pod's readiness-gate condition.
class GateReason:
    """Why a pod's availability gate is open or closed."""

    AVAILABLE: Final = "ModelAvailable"
    LOADING: Final = "VersionLoading"
    FAILED: Final = "VersionLoadFailed"
    NOT_FOUND: Final = "VersionNotFound"
    UNREACHABLE: Final = "ServerUnreachable"
    TIMEOUT: Final = "ProbeTimeout"
    PROBE_FAILED: Final = "ProbeFailed"
