"""What "converged" means for one ServedModel, checked against the cluster.

`problems(...)` lists every way the cluster differs from a finished rollout
of the spec: status, children, duplicates, orphans, half-done rollouts. An
empty list is convergence. The fault tests wait for it after each fault and
print the list when it never comes, so a failure says what was left behind.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.support.k8s import condition, get_sm
from tfserving_operator import api

Body = dict[str, Any]


def _items(api_client: Any, namespace: str, plural: str, name: str) -> list[Body]:
    """Objects of one kind labelled as children of ServedModel `name` (as plain dicts)."""
    lists = {
        "deployments": client.AppsV1Api(api_client).list_namespaced_deployment,
        "replicasets": client.AppsV1Api(api_client).list_namespaced_replica_set,
        "pods": client.CoreV1Api(api_client).list_namespaced_pod,
        "services": client.CoreV1Api(api_client).list_namespaced_service,
        "configmaps": client.CoreV1Api(api_client).list_namespaced_config_map,
        "poddisruptionbudgets": client.PolicyV1Api(
            api_client
        ).list_namespaced_pod_disruption_budget,
        "networkpolicies": client.NetworkingV1Api(api_client).list_namespaced_network_policy,
    }
    response = lists[plural](
        namespace,
        label_selector=f"{api.LABEL_SERVEDMODEL}={name}",
        _preload_content=False,
        _request_timeout=30,
    )
    items: list[Body] = json.loads(response.data).get("items") or []
    return items


def children(api_client: Any, namespace: str, name: str) -> dict[str, list[Body]]:
    """Every child kind of ServedModel `name`, by plural."""
    kinds = (
        "deployments",
        "replicasets",
        "pods",
        "services",
        "configmaps",
        "poddisruptionbudgets",
        "networkpolicies",
    )
    return {k: _items(api_client, namespace, k, name) for k in kinds}


def _controller_uid(obj: Body) -> str:
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


def _hash(template_owner: Body) -> str:
    meta = ((template_owner.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return str((meta.get("annotations") or {}).get(api.ANNOTATION_CONFIG_HASH, ""))


def _cond(obj: Body, ctype: str) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == ctype:
            return str(cond.get("status"))
    return ""


def problems(
    api_client: Any,
    namespace: str,
    name: str,
    versions: str,
    replicas: int,
    rest: bool = True,
) -> list[str]:
    """Why ServedModel `name` is not a finished rollout of `versions` on `replicas` replicas."""
    out: list[str] = []
    try:
        sm = get_sm(api_client, namespace, name)
    except ApiException as err:
        return [f"ServedModel not readable: {err.status}"]
    uid = sm["metadata"]["uid"]
    status = sm.get("status") or {}
    gen = sm["metadata"].get("generation")
    if status.get("observedGeneration") != gen:
        out.append(f"status.observedGeneration {status.get('observedGeneration')} != {gen}")
    if condition(sm, "Ready").get("status") != "True":
        out.append(f"Ready is not True: {condition(sm, 'Ready')}")
    progressing = condition(sm, "Progressing")
    if progressing.get("status") != "False" or progressing.get("reason") != "RolloutComplete":
        out.append(f"Progressing is not False/RolloutComplete: {progressing}")
    if status.get("rollout"):
        out.append(f"status.rollout still set: {status['rollout']}")
    if status.get("servingVersions") != versions:
        out.append(f"servingVersions {status.get('servingVersions')!r} != {versions!r}")

    kids = children(api_client, namespace, name)
    for plural, objs in kids.items():
        for obj in objs:
            if plural in ("pods", "replicasets"):
                continue  # the Deployment's, checked below
            owner = _controller_uid(obj)
            if owner != uid:
                out.append(
                    f"{plural} {obj['metadata']['name']} is controlled by {owner or 'nobody'}, "
                    f"not the ServedModel {uid}"
                )

    deployments = kids["deployments"]
    if [d["metadata"]["name"] for d in deployments] != [name]:
        out.append(f"Deployments: {[d['metadata']['name'] for d in deployments]} (want [{name}])")
        return out
    deployment = deployments[0]
    current = _hash(deployment)
    dstatus = deployment.get("status") or {}
    if deployment["spec"].get("replicas") != replicas:
        out.append(f"Deployment spec.replicas {deployment['spec'].get('replicas')} != {replicas}")
    if dstatus.get("observedGeneration") != deployment["metadata"].get("generation"):
        out.append("Deployment controller has not seen the latest spec")
    for field in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
        if int(dstatus.get(field) or 0) != replicas:
            out.append(f"Deployment status.{field} {dstatus.get(field)} != {replicas}")

    for rs in kids["replicasets"]:
        if _controller_uid(rs) != deployment["metadata"]["uid"]:
            out.append(f"ReplicaSet {rs['metadata']['name']} is not the Deployment's")
    rs_hashes = {_hash(rs) for rs in kids["replicasets"]}
    active = [rs for rs in kids["replicasets"] if int(rs["spec"].get("replicas") or 0) > 0]
    if replicas and [_hash(rs) for rs in active] != [current]:
        out.append(
            f"ReplicaSets with replicas: {[(rs['metadata']['name'], _hash(rs)) for rs in active]}"
            f" (want one, config {current})"
        )

    live = [p for p in kids["pods"] if not p["metadata"].get("deletionTimestamp")]
    if len(live) != replicas:
        out.append(f"{len(live)} live pods, want {replicas}")
    for pod in live:
        pod_hash = (pod["metadata"].get("annotations") or {}).get(api.ANNOTATION_CONFIG_HASH)
        if pod_hash != current:
            out.append(f"pod {pod['metadata']['name']} runs config {pod_hash}, not {current}")
        if _cond(pod, "Ready") != "True" or _cond(pod, api.GATE_CONDITION) != "True":
            out.append(f"pod {pod['metadata']['name']} is not Ready with its gate open")

    want_services = {f"{name}-grpc", f"{name}-headless"} | ({f"{name}-rest"} if rest else set())
    have_services = sorted(s["metadata"]["name"] for s in kids["services"])
    if have_services != sorted(want_services):
        out.append(f"Services: {have_services} (want {sorted(want_services)})")

    config_maps = {c["metadata"]["name"] for c in kids["configmaps"]}
    if f"{name}-config-{current}" not in config_maps:
        out.append(f"ConfigMap {name}-config-{current} of the current config is missing")
    for cm in sorted(config_maps):
        cm_hash = cm.rsplit("-", 1)[-1]
        if cm_hash not in rs_hashes | {current}:
            out.append(f"ConfigMap {cm} is used by no ReplicaSet (an orphan)")

    pdbs = [p["metadata"]["name"] for p in kids["poddisruptionbudgets"]]
    if pdbs != ([name] if replicas > 1 else []):
        out.append(f"PodDisruptionBudgets: {pdbs} (replicas {replicas})")
    return out


def leftovers(api_client: Any, namespace: str, name: str) -> list[str]:
    """What is left of a deleted ServedModel (pods already terminating do not count)."""
    out: list[str] = []
    try:
        get_sm(api_client, namespace, name)
        out.append("the ServedModel itself")
    except ApiException as err:
        if err.status != 404:
            raise
    for plural, objs in children(api_client, namespace, name).items():
        for obj in objs:
            if plural == "pods" and obj["metadata"].get("deletionTimestamp"):
                continue
            out.append(f"{plural}/{obj['metadata']['name']}")
    return out


def wait_converged(
    api_client: Any,
    namespace: str,
    name: str,
    versions: str,
    replicas: int,
    timeout: float,
    rest: bool = True,
) -> float:
    """Seconds until `problems` is empty; AssertionError with the last problems after `timeout`."""
    started = time.monotonic()
    last: list[str] = []
    while time.monotonic() - started < timeout:
        last = problems(api_client, namespace, name, versions, replicas, rest)
        if not last:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(
        f"{namespace}/{name} did not converge to versions {versions} x{replicas} in "
        f"{timeout:.0f} s:\n  " + "\n  ".join(last)
    )


def wait_gone(api_client: Any, namespace: str, name: str, timeout: float) -> float:
    """Seconds until nothing of ServedModel `name` is left."""
    started = time.monotonic()
    last: list[str] = []
    while time.monotonic() - started < timeout:
        last = leftovers(api_client, namespace, name)
        if not last:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{namespace}/{name} left behind after {timeout:.0f} s: {last}")


def core(api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)
