"""Security: Pod Security "restricted", read-only model storage, no Secret in
logs/Events/status, and the NetworkPolicy's peers.

Pod Security is checked by the API server itself: the pod each spec renders
is created (dry run) in a namespace enforcing "restricted". NetworkPolicy
enforcement needs a CNI plugin, which this cluster has none of (kwok pods
never send a packet): the applied object is checked, not the traffic.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localdev.support.k8s import condition, create_sm, get_sm, patch_sm, servedmodel
from localdev.support.models import make_model_dir
from localdev.support.waiting import wait_until
from tests.reliability import results
from tests.reliability.conftest import delete_namespace, make_namespace
from tests.reliability.kubeapi import dry_create_pod, dry_create_servedmodel
from tfserving_operator import api, render, spec
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE

pytestmark = pytest.mark.cluster

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
PVC = {"persistentVolumeClaim": {"claimName": "models"}}

# A spread of specs; every one must render a pod that "restricted" admits.
RESTRICTED_SPECS: dict[str, dict[str, Any]] = {
    "pvc": {"storage": PVC, "version": 1},
    "pvc-subpath-mountpath": {
        "storage": {
            "persistentVolumeClaim": {"claimName": "models", "subPath": "mnist"},
            "mountPath": "/srv/mnist",
        },
        "versionPolicy": {"latest": {"numVersions": 2}},
    },
    "gpu": {"storage": PVC, "version": 1, "gpus": 2, "gpuMemoryFraction": 0.4},
    "s3-credentials": {
        "storage": {"uri": "s3://models/mnist", "credentials": {"secretName": "s3-creds"}},
        "version": 3,
    },
    "gcs-credentials": {
        "storage": {"uri": "gs://models/mnist", "credentials": {"secretName": "gcs-creds"}},
        "versionPolicy": {"all": {}},
    },
    "everything-else": {
        "storage": PVC,
        "versionPolicy": {"specific": {"versions": [1, 2]}},
        "versionLabels": {"stable": 1, "canary": 2},
        "replicas": 3,
        "batching": {"maxBatchSize": 32, "batchTimeoutMicros": 1000},
        "monitoring": {},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"}],
        "nodeSelector": {"example.com/pool": "serving"},
        "tolerations": [{"key": "example.com/dedicated", "operator": "Exists"}],
        "podLabels": {"team": "ml"},
        "podAnnotations": {"example.com/owner": "ml"},
        "serverArgs": ["--rest_api_timeout_in_ms=5000"],
        "networkPolicy": {"clientSelector": {"matchLabels": {"role": "client"}}},
        "service": {"type": "LoadBalancer"},
        "imagePullSecrets": [{"name": "registry"}],
    },
}
# Volume types "restricted" refuses by definition.
NOT_RESTRICTED = {
    "host-path": {"storage": {"hostPath": {"path": "/srv/models"}}, "version": 1},
    "nfs": {"storage": {"nfs": {"server": "nfs.example.com", "path": "/models"}}, "version": 1},
}


def _pod_of(
    api_client: Any, namespace: str, name: str, candidate: dict[str, Any]
) -> dict[str, Any]:
    """The pod the operator's Deployment would create for `candidate` (admitted first)."""
    body = {"modelName": "mnist", **candidate}
    status, admitted = dry_create_servedmodel(api_client, namespace, name, body)
    assert status < 400, admitted
    sm = spec.parse(admitted, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)
    deployment = render.render(sm, sm.target).deployment
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-pod", "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
    }


@pytest.fixture(scope="module")
def restricted_namespace(api_client: Any, crds: None) -> Iterator[str]:
    name = make_namespace(api_client, labels=RESTRICTED)
    yield name
    delete_namespace(api_client, name)


def test_rendered_pods_pass_pod_security_restricted(
    api_client: Any, restricted_namespace: str
) -> None:
    refused = {}
    for name, candidate in RESTRICTED_SPECS.items():
        status, answer = dry_create_pod(
            api_client,
            restricted_namespace,
            _pod_of(api_client, restricted_namespace, name, candidate),
        )
        if status >= 400:
            refused[name] = str(answer.get("message"))
    results.record(
        "pod-security-restricted",
        "Security",
        "Pods rendered for a spread of specs (PVC, subPath, GPU, s3 and gs credentials, labels, "
        "batching, monitoring, resources...) created in a namespace enforcing restricted",
        len(RESTRICTED_SPECS),
        len(RESTRICTED_SPECS) - len(refused),
        "admitted by Pod Security restricted",
        suite="make test",
        figures={"specs": ", ".join(RESTRICTED_SPECS)},
    )
    assert not refused, refused


def test_host_path_and_nfs_storage_are_refused_by_restricted(
    api_client: Any, restricted_namespace: str
) -> None:
    """hostPath and nfs volumes are outside "restricted"'s volume list: such
    ServedModels need a namespace at baseline (nfs) or privileged (hostPath)."""
    outcome = {}
    for name, candidate in NOT_RESTRICTED.items():
        status, answer = dry_create_pod(
            api_client,
            restricted_namespace,
            _pod_of(api_client, restricted_namespace, name, candidate),
        )
        outcome[name] = (status, str(answer.get("message", "")))
    refused_by_psa = [
        n for n, (code, msg) in outcome.items() if code == 403 and "PodSecurity" in msg
    ]
    results.record(
        "pod-security-hostpath-nfs",
        "Security",
        "hostPath and nfs storage in a restricted namespace",
        len(NOT_RESTRICTED),
        len(refused_by_psa),
        "refused by Pod Security, as documented (use persistentVolumeClaim or uri)",
        suite="make test",
    )
    assert sorted(refused_by_psa) == sorted(NOT_RESTRICTED), outcome


def test_status_names_a_pod_security_refusal(
    api_client: Any, restricted_namespace: str, start_operator: Any, model_store: Path
) -> None:
    start_operator(restricted_namespace, "restricted")
    base = make_model_dir(model_store, "restricted", good=(1,))
    body = {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(base)}},
        "version": 1,
        "rollout": {"availabilityTimeoutSeconds": 10},
    }
    create_sm(api_client, restricted_namespace, servedmodel("refused-pods", body))

    def explained() -> bool:
        sm = get_sm(api_client, restricted_namespace, "refused-pods")
        degraded = condition(sm, "Degraded")
        text = json.dumps([condition(sm, "Ready"), degraded])
        named = "PodSecurity" in text or "forbidden" in text
        return named and degraded.get("reason") == "PodsNotCreated"

    try:
        wait_until(explained, timeout=20, what="a condition naming the PodSecurity refusal")
        ok = True
    except AssertionError:
        ok = False
    results.record(
        "pod-security-refusal-in-status",
        "Security",
        "ServedModel whose pods Pod Security refuses (hostPath in a restricted namespace)",
        1,
        1 if ok else 0,
        "status names the refusal" if ok else "status says only 'no new pod running'",
        suite="make test",
        bug="" if ok else "ReplicaSet FailedCreate not surfaced in the status",
    )
    assert ok


# ----- Secrets ---------------------------------------------------------------------


@dataclass
class Leak:
    value: str
    encoded: str

    def found_in(self, text: str) -> bool:
        return self.value in text or self.encoded in text


def test_no_secret_value_reaches_logs_events_or_status(
    api_client: Any, start_operator: Any, crds: None
) -> None:
    """s3 credentials with a recognisable random value, through create, a
    rollout, a failing load (nothing at s3://) and delete, with DEBUG logs."""
    namespace = make_namespace(api_client)
    try:
        operator = start_operator(namespace, "secrets", env={"TFSO_LOG_LEVEL": "DEBUG"})
        token = f"LEAKCHECK{secrets.token_hex(16)}"
        leak = Leak(token, base64.b64encode(token.encode()).decode())
        core = client.CoreV1Api(api_client)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "s3-creds"},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": f"AKIA{token}",
                    "AWS_SECRET_ACCESS_KEY": token,
                    "S3_ENDPOINT": f"https://{token.lower()}.example.com",
                },
            },
        )
        body = {
            "modelName": "mnist",
            "storage": {"uri": "s3://models/mnist", "credentials": {"secretName": "s3-creds"}},
            "version": 1,
            "rollout": {"availabilityTimeoutSeconds": 10},
        }
        create_sm(api_client, namespace, servedmodel("creds", body))
        wait_until(
            lambda: (
                condition(get_sm(api_client, namespace, "creds"), "Degraded").get("status")
                == "True"
            ),
            timeout=45,
            what="the load from s3:// to fail (nothing there)",
        )
        generation = patch_sm(api_client, namespace, "creds", {"spec": {"version": 2}})["metadata"][
            "generation"
        ]
        # "Not leaked" means something only once the operator has acted on
        # the change: its status for the new generation, and the rollout to
        # version 2 applied to the Deployment.
        apps = client.AppsV1Api(api_client)

        def rolled_to_2() -> bool:
            status = get_sm(api_client, namespace, "creds").get("status") or {}
            template = apps.read_namespaced_deployment("creds", namespace).spec.template
            versions = (template.metadata.annotations or {}).get(api.ANNOTATION_VERSIONS)
            return status.get("observedGeneration") == generation and versions == "2"

        wait_until(rolled_to_2, timeout=45, what="the operator to roll creds to version 2")
        status_text = json.dumps(get_sm(api_client, namespace, "creds"))
        deployment = apps.read_namespaced_deployment("creds", namespace)
        deployment_text = json.dumps(api_client.sanitize_for_serialization(deployment))
        deleted_at = time.time()
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            "serving.tfoperator.dev", "v1alpha1", namespace, "servedmodels", "creds"
        )
        # ... and the delete: the operator has stopped the ServedModel's worker.
        wait_until(
            lambda: operator.health_since(deleted_at)["servedmodels"] == 0,
            timeout=45,
            what="the operator to forget creds after its deletion",
        )
        events = core.list_namespaced_event(namespace)
        events_text = json.dumps(api_client.sanitize_for_serialization(events))
        log_text = operator.log_path.read_text(errors="replace")
        places = {
            "operator log": leak.found_in(log_text),
            "Events": leak.found_in(events_text),
            "ServedModel (status included)": leak.found_in(status_text),
            "Deployment": leak.found_in(deployment_text),
        }
        leaked = [place for place, found in places.items() if found]
        results.record(
            "secret-values",
            "Security",
            "s3 credentials Secret (random marker value) through create, failed load, rollout "
            "and delete; operator at DEBUG",
            len(places),
            len(places) - len(leaked),
            "value absent from operator log, Events, ServedModel status and Deployment",
            suite="make test",
            figures={"events checked": len(events.items), "log lines": log_text.count("\n")},
        )
        assert not leaked, f"the Secret value reached: {leaked}"
        assert "secretKeyRef" in deployment_text
    finally:
        delete_namespace(api_client, namespace)


# ----- storage read-only, as applied ------------------------------------------------


def test_applied_storage_mounts_are_read_only(
    api_client: Any, start_operator: Any, crds: None
) -> None:
    namespace = make_namespace(api_client)
    try:
        start_operator(namespace, "readonly")
        kinds = {
            "pvc": {"storage": {"persistentVolumeClaim": {"claimName": "models", "subPath": "m"}}},
            "nfs": {"storage": {"nfs": {"server": "nfs.example.com", "path": "/models"}}},
            "hostpath": {"storage": {"hostPath": {"path": "/srv/models"}}},
        }
        for name, fields in kinds.items():
            create_sm(
                api_client,
                namespace,
                servedmodel(name, {"modelName": "m", "version": 1, "replicas": 0, **fields}),
            )
        apps = client.AppsV1Api(api_client)
        checked = 0
        for name in kinds:
            deployment = wait_until(
                functools.partial(apps.read_namespaced_deployment, name, namespace),
                timeout=30,
                what=f"Deployment {name}",
            )
            pod = deployment.spec.template.spec
            volume = next(v for v in pod.volumes if v.name == "model-storage")
            mount = next(
                m for c in pod.containers for m in c.volume_mounts if m.name == "model-storage"
            )
            assert mount.read_only is True, (name, mount)
            if volume.persistent_volume_claim is not None:
                assert volume.persistent_volume_claim.read_only is True
            if volume.nfs is not None:
                assert volume.nfs.read_only is True
            checked += 1
        results.record(
            "storage-read-only",
            "Security",
            "Model storage of applied Deployments (PVC with subPath, nfs, hostPath); "
            "rendered storage of every hypothesis spec is checked too",
            checked,
            checked,
            "mounted read-only (claim and export opened read-only)",
            suite="make test",
        )
    finally:
        delete_namespace(api_client, namespace)


# ----- NetworkPolicy ---------------------------------------------------------------


def test_network_policy_admits_only_clients_and_the_operator(
    api_client: Any, start_operator: Any, crds: None
) -> None:
    namespace = make_namespace(api_client)
    try:
        start_operator(namespace, "netpol")
        clients = {"matchLabels": {"role": "client"}}
        teams = {"matchLabels": {"team": "ml"}}
        cases = {
            "same-namespace": {"clientSelector": clients},
            "other-namespaces": {"clientSelector": clients, "namespaceSelector": teams},
        }
        for name, policy in cases.items():
            body = {
                "modelName": "m",
                "storage": PVC,
                "version": 1,
                "replicas": 0,
                "networkPolicy": policy,
            }
            create_sm(api_client, namespace, servedmodel(name, body))
        net = client.NetworkingV1Api(api_client)
        problems: list[str] = []
        for name, policy in cases.items():
            obj = wait_until(
                functools.partial(net.read_namespaced_network_policy, name, namespace),
                timeout=30,
                what=f"NetworkPolicy {name}",
            )
            np = api_client.sanitize_for_serialization(obj)["spec"]
            problems += _policy_problems(name, np, policy)
        # Dropping spec.networkPolicy drops the object (else clients stay locked out).
        patch_sm(api_client, namespace, "same-namespace", {"spec": {"networkPolicy": None}})

        def pruned() -> bool:
            return not [
                p
                for p in net.list_namespaced_network_policy(namespace).items
                if p.metadata.name == "same-namespace"
            ]

        try:
            wait_until(pruned, timeout=30, what="the NetworkPolicy to go with spec.networkPolicy")
        except AssertionError as err:
            problems.append(str(err))
        results.record(
            "network-policy",
            "Security",
            "spec.networkPolicy (clients in this namespace; clients in selected namespaces; "
            "then removed): the applied NetworkPolicy's peers and ports. Enforcement not "
            "tested: the local cluster has no CNI plugin",
            len(cases) + 1,
            len(cases) + 1 - len(problems),
            "only the selected clients (gRPC+REST) and the operator (gRPC) admitted; "
            "removed with the field",
            suite="make test",
        )
        assert not problems, "\n".join(problems)
    finally:
        delete_namespace(api_client, namespace)


def _policy_problems(name: str, np: dict[str, Any], policy: dict[str, Any]) -> list[str]:
    out = []
    if np.get("podSelector") != {"matchLabels": {"serving.tfoperator.dev/servedmodel": name}}:
        out.append(f"{name}: selects {np.get('podSelector')}, not this ServedModel's pods")
    if np.get("policyTypes") != ["Ingress"]:
        out.append(f"{name}: policyTypes {np.get('policyTypes')}")
    rules = np.get("ingress") or []
    client_peer = {"podSelector": policy["clientSelector"]}
    if "namespaceSelector" in policy:
        client_peer["namespaceSelector"] = policy["namespaceSelector"]
    for rule in rules:
        peers = rule.get("from")
        if not peers:
            out.append(f"{name}: a rule with no 'from' admits everyone: {rule}")
            continue
        for peer in peers:
            if "ipBlock" in peer:
                out.append(f"{name}: ipBlock peer {peer}")
            elif peer == client_peer:
                ports = sorted(p["port"] for p in rule.get("ports") or [])
                if ports != [8500, 8501]:
                    out.append(f"{name}: clients reach ports {ports}, want [8500, 8501]")
            elif peer == render.OperatorPeer().peer():
                ports = sorted(p["port"] for p in rule.get("ports") or [])
                if ports != [8500]:
                    out.append(f"{name}: the operator reaches ports {ports}, want [8500]")
            else:
                out.append(f"{name}: unexpected peer {peer}")
    if len(rules) != 2:
        out.append(f"{name}: {len(rules)} ingress rules, want 2 (clients, operator)")
    return out


def test_network_policy_operator_peer_is_pinned_to_a_namespace() -> None:
    sm = spec.parse(
        {
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"storage": PVC, "version": 1, "networkPolicy": {"clientSelector": {}}},
        },
        DEFAULT_IMAGE,
        DEFAULT_GPU_IMAGE,
    )
    policy = render.render(sm, sm.target).network_policy
    assert policy is not None
    operator_peers = [
        peer
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
        == "tfserving-operator"
    ]
    pinned = bool(operator_peers) and all(
        peer.get("namespaceSelector", {}).get("matchLabels") for peer in operator_peers
    )
    results.record(
        "network-policy-operator-peer",
        "Security",
        "NetworkPolicy's operator peer: which namespaces may claim to be the operator",
        1,
        1 if pinned else 0,
        "pinned to the operator's namespace" if pinned else "any namespace (label only)",
        suite="make test",
        bug="" if pinned else "operator peer uses namespaceSelector {}",
    )
    assert pinned, operator_peers
