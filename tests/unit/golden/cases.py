"""The ServedModels the golden files pin, one per shape a user is likely to write.

Each case is the object as a user writes it (no admission defaults): the
typed view in spec.py applies the defaults, so the golden output also pins
them. Unit tests render these; a cluster test sends the rendered children to
the real API server as a dry run, so a golden file cannot pin something the
API server would refuse.
"""

from __future__ import annotations

from typing import Any

from tfserving_operator import api

NAMESPACE = "models"
UID = "5f0c3a52-8d1e-4b7a-9c43-2e1f6d8b7a10"

Body = dict[str, Any]


def servedmodel(name: str, spec: Body, generation: int = 1) -> Body:
    """A ServedModel as the API returns it, with the identity render needs."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": UID, "generation": generation},
        "spec": spec,
    }


CASES: dict[str, Body] = {
    # The seed's half_plus_three on a node folder: every default.
    "minimal-hostpath": servedmodel(
        "half-plus-three",
        {"storage": {"hostPath": {"path": "/srv/models/half_plus_three"}}, "version": 1},
    ),
    # A shared volume with several models: subPath picks one; 3 replicas get a PDB.
    "pvc-subpath-replicas": servedmodel(
        "mnist",
        {
            "storage": {"persistentVolumeClaim": {"claimName": "models", "subPath": "mnist"}},
            "version": 2,
            "replicas": 3,
            "resources": {
                "requests": {"cpu": "1", "memory": "2Gi"},
                "limits": {"memory": "4Gi"},
            },
        },
    ),
    # Two GPUs, half their memory: the -gpu image, a limit and the toleration.
    "gpu": servedmodel(
        "resnet",
        {
            "modelName": "resnet50",
            "storage": {"nfs": {"server": "nfs.storage.svc", "path": "/exports/resnet"}},
            "version": 7,
            "gpus": 2,
            "gpuMemoryFraction": 0.45,
            "resources": {"requests": {"cpu": "4", "memory": "16Gi"}},
        },
    ),
    # s3://: rclone init containers copy version 12 into an emptyDir the
    # server reads; the Secret's keys reach the puller only.
    "s3-credentials": servedmodel(
        "ranker",
        {
            "storage": {
                "uri": "s3://ml-models/ranker/",
                "credentials": {"secretName": "s3-reader"},
            },
            "version": 12,
        },
    ),
    # gs:// with a service-account key mounted from a Secret.
    "gs-uri": servedmodel(
        "translate",
        {
            "storage": {
                "uri": "gs://ml-models-eu/translate",
                "credentials": {"secretName": "gcs-reader"},
            },
            "versionPolicy": {"latest": {}},
        },
    ),
    # Server-side batching and Prometheus metrics: two more config files and flags.
    "batching-monitoring": servedmodel(
        "batched",
        {
            "storage": {"persistentVolumeClaim": {"claimName": "models"}},
            "version": 3,
            "batching": {
                "maxBatchSize": 32,
                "batchTimeoutMicros": 2000,
                "maxEnqueuedBatches": 100,
                "numBatchThreads": 4,
                "allowedBatchSizes": [8, 16, 32],
                "padVariableLengthInputs": True,
            },
            "monitoring": {},
        },
    ),
    # Explicit versions with labels: both loaded, labels allowed before AVAILABLE.
    "labels-specific": servedmodel(
        "classifier",
        {
            "storage": {"persistentVolumeClaim": {"claimName": "models", "subPath": "classifier"}},
            "versionPolicy": {"specific": {"versions": [4, 3]}},
            "versionLabels": {"stable": 3, "canary": 4},
            "replicas": 2,
        },
    ),
    # The servers follow new version folders themselves (two newest).
    "latest-policy": servedmodel(
        "embedder",
        {
            "storage": {"hostPath": {"path": "/srv/models/embedder"}},
            "versionPolicy": {"latest": {"numVersions": 2}},
            "fileSystemPollWaitSeconds": 10,
        },
    ),
    # Every version folder, REST off: no REST Service, no http port anywhere.
    "rest-off-all": servedmodel(
        "grpc-only",
        {
            "storage": {"hostPath": {"path": "/srv/models/grpc-only"}},
            "versionPolicy": {"all": {}},
            "ports": {"grpc": 9000, "rest": 0},
        },
    ),
    # Only selected clients (and the operator) reach the servers.
    "network-policy": servedmodel(
        "private",
        {
            "storage": {"persistentVolumeClaim": {"claimName": "models"}},
            "version": 1,
            "networkPolicy": {
                "clientSelector": {"matchLabels": {"app": "frontend"}},
                "namespaceSelector": {"matchLabels": {"team": "search"}},
            },
        },
    ),
    # Every pod and Service option the spec passes through.
    "pod-options": servedmodel(
        "tuned",
        {
            "modelName": "tuned_model",
            "storage": {
                "persistentVolumeClaim": {"claimName": "models"},
                "mountPath": "/data/tuned",
            },
            "version": 5,
            "image": "registry.example.com/serving:2.19.1-custom",
            "imagePullPolicy": "Always",
            # Written as users do; rendered as the API server stores them.
            "resources": {
                "requests": {"cpu": "0.5", "memory": "1536Mi"},
                "limits": {"cpu": 2, "memory": "2048Mi"},
            },
            "warmup": False,
            "serverArgs": ["--rest_api_timeout_in_ms=5000", "--grpc_max_threads=64"],
            "rollout": {
                "availabilityTimeoutSeconds": 120,
                "maxSurge": 2,
                "loadRetries": 0,
                "loadRetryIntervalSeconds": 1,
            },
            "terminationGracePeriodSeconds": 90,
            "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"}],
            "nodeSelector": {"pool": "serving"},
            "tolerations": [{"key": "dedicated", "value": "serving", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a", "b"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "serviceAccountName": "model-reader",
            "imagePullSecrets": [{"name": "registry-credentials"}],
            "podLabels": {"team": "search"},
            "podAnnotations": {"example.com/owner": "search"},
            "service": {
                "type": "LoadBalancer",
                "annotations": {"example.com/lb-scheme": "internal"},
            },
        },
    ),
    # The default image (linux/amd64 only) with the user's own affinity: the
    # architecture is ANDed into each required term (terms are ORed), the
    # preferred terms and pod anti-affinity stay as written.
    "default-image-affinity": servedmodel(
        "ranker",
        {
            "storage": {"persistentVolumeClaim": {"claimName": "models"}},
            "version": 4,
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "pool", "operator": "In", "values": ["serving"]}
                                ]
                            },
                            {
                                "matchFields": [
                                    {
                                        "key": "metadata.name",
                                        "operator": "In",
                                        "values": ["big-node-1"],
                                    }
                                ]
                            },
                        ]
                    },
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 10,
                            "preference": {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            },
                        }
                    ],
                },
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"app": "ranker"}},
                            },
                        }
                    ]
                },
            },
        },
    ),
    # Autoscaled on CPU and requests per second: an HPA, no replicas in the
    # Deployment (the HPA's), a PDB since it may grow past one.
    "autoscaling-hpa": servedmodel(
        "recommender",
        {
            "storage": {"hostPath": {"path": "/srv/models/recommender"}},
            "version": 4,
            "replicas": 3,
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
            "monitoring": {},
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 10,
                "targetCPUUtilization": 70,
                "requestsPerSecond": "50",
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
            },
        },
    ),
    # KEDA from Prometheus, down to zero.
    "autoscaling-keda": servedmodel(
        "summarizer",
        {
            "modelName": "t5",
            "storage": {"hostPath": {"path": "/srv/models/t5"}},
            "version": 1,
            "monitoring": {},
            "autoscaling": {
                "provider": "keda",
                "minReplicas": 0,
                "maxReplicas": 4,
                "requestsPerSecond": "5",
                "keda": {"cooldownPeriodSeconds": 600},
            },
        },
    ),
}
