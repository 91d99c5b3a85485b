"""Raw API calls for the bad-input tests: status code and body, never an exception.

Dry runs go out exactly as the operator sends its own (server-side apply
with its field manager, dryRun=All), so "the API server accepts what we
render" is checked on the operator's wire format.
"""

from __future__ import annotations

from typing import Any

from tfserving_operator import api, kube
from tfserving_operator.kube import path_for

Body = dict[str, Any]


def dry_create_servedmodel(
    api_client: Any, namespace: str, name: str, spec: Body
) -> tuple[int, Body]:
    """Admission of a ServedModel, without storing it."""
    return _create_servedmodel(api_client, namespace, name, spec, [("dryRun", "All")])


def create_servedmodel_strictly(
    api_client: Any, namespace: str, name: str, spec: Body
) -> tuple[int, Body]:
    """Create a ServedModel as `kubectl create` does: an unknown field is an error
    (fieldValidation=Strict), not a warning and a silently pruned field."""
    return _create_servedmodel(api_client, namespace, name, spec, [("fieldValidation", "Strict")])


def _create_servedmodel(
    api_client: Any, namespace: str, name: str, spec: Body, query: list[tuple[str, str]]
) -> tuple[int, Body]:
    body = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return kube.send(
        api_client, "POST", path_for("ServedModel", namespace), body, "application/json", query
    )


def dry_apply(api_client: Any, manifest: Body) -> tuple[int, Body]:
    """Server-side apply of one rendered child, dry run, as the operator applies it."""
    meta = manifest["metadata"]
    return kube.send(
        api_client,
        "PATCH",
        path_for(manifest["kind"], meta.get("namespace"), meta["name"]),
        manifest,
        "application/apply-patch+yaml",
        [("fieldManager", api.FIELD_MANAGER), ("force", "true"), ("dryRun", "All")],
    )


def dry_create_pod(api_client: Any, namespace: str, pod: Body) -> tuple[int, Body]:
    """Admission of a Pod (Pod Security admission included), without storing it."""
    return kube.send(
        api_client,
        "POST",
        path_for("Pod", namespace),
        pod,
        "application/json",
        [("dryRun", "All")],
    )
