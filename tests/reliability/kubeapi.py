"""Raw API calls for the bad-input tests: status code and body, never an exception.

Dry runs go out exactly as the operator sends its own (server-side apply
with its field manager, dryRun=All), so "the API server accepts what we
render" is checked on the operator's wire format.
"""

from __future__ import annotations

import json
from typing import Any

from tfserving_operator import api
from tfserving_operator.kube import path_for

Body = dict[str, Any]


def send(
    api_client: Any,
    method: str,
    path: str,
    body: Any = None,
    content_type: str | None = None,
    query: list[tuple[str, str]] | None = None,
) -> tuple[int, Body]:
    """One request; (HTTP status, decoded body)."""
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    serialized = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*serialized, _request_timeout=30)
    response.read()
    data = json.loads(response.data) if response.data else {}
    return int(response.status), data


def dry_create_servedmodel(
    api_client: Any, namespace: str, name: str, spec: Body
) -> tuple[int, Body]:
    """Admission of a ServedModel, without storing it."""
    body = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return send(
        api_client,
        "POST",
        path_for("ServedModel", namespace),
        body,
        "application/json",
        [("dryRun", "All")],
    )


def dry_apply(api_client: Any, manifest: Body) -> tuple[int, Body]:
    """Server-side apply of one rendered child, dry run, as the operator applies it."""
    meta = manifest["metadata"]
    return send(
        api_client,
        "PATCH",
        path_for(manifest["kind"], meta.get("namespace"), meta["name"]),
        manifest,
        "application/apply-patch+yaml",
        [("fieldManager", api.FIELD_MANAGER), ("force", "true"), ("dryRun", "All")],
    )


def dry_create_pod(api_client: Any, namespace: str, pod: Body) -> tuple[int, Body]:
    """Admission of a Pod (Pod Security admission included), without storing it."""
    return send(
        api_client,
        "POST",
        path_for("Pod", namespace),
        pod,
        "application/json",
        [("dryRun", "All")],
    )
