"""Every write the operator makes to the Kubernetes API, and nothing else.

Children go out with server-side apply under one field manager, so applying
is idempotent and drift (an edited or deleted child) is corrected by the next
apply. Status goes through the status subresource as a JSON merge patch;
the readiness gate is a condition on the pod's status; Events record
transitions. Callers decide *whether* to write (decide.py); this module only
knows *how*.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from tfserving_operator import api
from tfserving_operator.kube import ApiError, path_for

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
STRATEGIC_CONTENT_TYPE = "application/strategic-merge-patch+json"


def now_iso() -> str:
    """RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Transport(Protocol):
    """What the Applier sends requests through: kube.Kube, or a test's recorder."""

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: Iterable[tuple[str, str]] = (),
        timeout: float = 30.0,
        ok_statuses: Iterable[int] = (),
    ) -> dict[str, Any]: ...


class ApiWriter(Protocol):
    """The writes a reconcile makes: what `Applier` does, and what a test's fake records."""

    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def patch_status(
        self, namespace: str, name: str, status_patch: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def set_gate(
        self, namespace: str, pod: str, is_open: bool, reason: str, message: str
    ) -> None: ...

    async def event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None: ...


class Applier:
    """All API writes, through one Kube transport and one field manager."""

    def __init__(self, kube: Transport, field_manager: str = api.FIELD_MANAGER) -> None:
        self.kube = kube
        self.field_manager = field_manager

    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply one object (force: the operator owns these fields)."""
        meta = manifest["metadata"]
        query = [("fieldManager", self.field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        path = path_for(manifest["kind"], meta.get("namespace"), meta["name"])
        return await self.kube.request(
            "PATCH", path, body=manifest, content_type=APPLY_CONTENT_TYPE, query=query
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete an object; already gone is fine."""
        await self.kube.request(
            "DELETE",
            path_for(kind, namespace, name),
            body={"propagationPolicy": "Background"},
            content_type="application/json",
            ok_statuses=(404,),
        )

    async def patch_status(
        self, namespace: str, name: str, status_patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch a ServedModel's status subresource (None values remove fields)."""
        return await self.kube.request(
            "PATCH",
            path_for("ServedModel", namespace, name, sub="status"),
            body={"status": status_patch},
            content_type=MERGE_CONTENT_TYPE,
            query=[("fieldManager", self.field_manager)],
        )

    async def set_gate(
        self, namespace: str, pod: str, is_open: bool, reason: str, message: str
    ) -> None:
        """Set the pod's availability-gate condition (what makes it Ready or not)."""
        condition = {
            "type": api.GATE_CONDITION,
            "status": "True" if is_open else "False",
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": now_iso(),
        }
        try:
            await self.kube.request(
                "PATCH",
                path_for("Pod", namespace, pod, sub="status"),
                body={"status": {"conditions": [condition]}},
                content_type=STRATEGIC_CONTENT_TYPE,
                query=[("fieldManager", self.field_manager)],
            )
        except ApiError as err:
            if not err.not_found:  # a pod deleted meanwhile needs no gate
                raise

    async def event(
        self,
        involved: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        """Record a core/v1 Event on a ServedModel. Never raises: events are best effort."""
        meta = involved["metadata"]
        stamp = now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": api.MANAGED_BY},
            "reportingComponent": api.MANAGED_BY,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.kube.request(
                "POST",
                path_for("Event", meta["namespace"]),
                body=body,
                content_type="application/json",
                query=[("fieldManager", self.field_manager)],
            )
        except Exception as err:
            log.warning("could not record event %s on %s: %s", reason, meta["name"], err)
