"""Kubernetes shortcuts for tests: ServedModels, pods, conditions (plain dicts)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from localdev.support.waiting import wait_until
from tfserving_operator import api

Body = dict[str, Any]


def custom(api_client: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def servedmodel(name: str, spec: Body, annotations: dict[str, str] | None = None) -> Body:
    """A ServedModel manifest."""
    meta: Body = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": meta, "spec": spec}


def create_sm(api_client: Any, namespace: str, body: Body) -> Body:
    result: Body = custom(api_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, body
    )
    return result


def get_sm(api_client: Any, namespace: str, name: str) -> Body:
    result: Body = custom(api_client).get_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, name
    )
    return result


def patch_sm(api_client: Any, namespace: str, name: str, patch: Body) -> Body:
    """JSON merge patch of a ServedModel (spec or metadata)."""
    result: Body = custom(api_client).patch_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, name, patch,
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    return result


def delete_sm(api_client: Any, namespace: str, name: str) -> None:
    custom(api_client).delete_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, name
    )


def condition(body: Body, ctype: str) -> Body:
    """The condition of type `ctype` in an object's status ({} if absent)."""
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return {}


def wait_sm(
    api_client: Any,
    namespace: str,
    name: str,
    what: str,
    predicate: Any,
    timeout: float = 60,
) -> Body:
    """Wait until `predicate(servedmodel)` holds; the timeout message shows its status."""

    def probe() -> Body | None:
        body = get_sm(api_client, namespace, name)
        return body if predicate(body) else None

    def describe() -> str:
        try:
            return json.dumps(get_sm(api_client, namespace, name).get("status"), indent=1)[:3000]
        except Exception as err:
            return repr(err)

    return wait_until(probe, timeout=timeout, what=f"{namespace}/{name}: {what}", describe=describe)


def wait_condition(
    api_client: Any,
    namespace: str,
    name: str,
    ctype: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60,
) -> Body:
    """Wait for a condition (observedGeneration current) with that status and reason."""

    def holds(body: Body) -> bool:
        cond = condition(body, ctype)
        gen = body["metadata"].get("generation")
        return (
            cond.get("status") == status
            and (reason is None or cond.get("reason") == reason)
            and (body.get("status") or {}).get("observedGeneration") == gen
        )

    what = f"{ctype}={status}" + (f" ({reason})" if reason else "")
    return wait_sm(api_client, namespace, name, what, holds, timeout)


def pods_of(api_client: Any, namespace: str, name: str) -> list[Any]:
    """Pods of a ServedModel (kubernetes client models)."""
    core = client.CoreV1Api(api_client)
    selector = f"{api.LABEL_SERVEDMODEL}={name}"
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def pod_condition(pod: Any, ctype: str) -> str | None:
    for cond in pod.status.conditions or []:
        if cond.type == ctype:
            return str(cond.status)
    return None
