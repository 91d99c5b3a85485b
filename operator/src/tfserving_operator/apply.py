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
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tfserving_operator import api
from tfserving_operator.kube import ApiError, path_for

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
STRATEGIC_CONTENT_TYPE = "application/strategic-merge-patch+json"
# events.k8s.io/v1 requires an action: what the operator did when it saw this.
EVENT_ACTION = "Reconcile"
# A series not repeated for this long is over (client-go's finishTime, 6 min).
SERIES_FINISH_SECONDS = 360.0


def now_micro() -> str:
    """RFC 3339 UTC timestamp with microseconds (a MicroTime: Event times)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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

    async def hand_over(self, manifest: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def patch_status(
        self, namespace: str, name: str, status_patch: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def set_gate(
        self, namespace: str, pod: str, is_open: bool, reason: str, message: str
    ) -> bool: ...

    async def event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None: ...


@dataclass
class EventSeries:
    """An Event this process created, and how often it happened since."""

    name: str
    count: int
    last_seen: float  # time.monotonic()


class Applier:
    """All API writes, through one Kube transport and one field manager."""

    def __init__(self, kube: Transport, field_manager: str = api.FIELD_MANAGER) -> None:
        self.kube = kube
        self.field_manager = field_manager
        # The pod (or host) this replica runs on, as client-go names the instance.
        self.reporting_instance = f"{api.MANAGED_BY}-{socket.gethostname()}"[:128]
        self._series: dict[tuple[str, ...], EventSeries] = {}

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

    async def hand_over(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Apply `manifest` (a few fields of an existing object) as the handover manager.

        It co-owns those fields at their current values, so the operator's next
        apply can leave them out without server-side apply removing them
        (autoscaling.py: spec.replicas passing to an autoscaler).
        """
        meta = manifest["metadata"]
        query = [("fieldManager", api.HANDOVER_FIELD_MANAGER), ("force", "true")]
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
    ) -> bool:
        """Set the pod's availability-gate condition (what makes it Ready or not).
        False: the pod is gone (deleted meanwhile, or while a watch was down)."""
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
            return False
        return True

    async def event(
        self,
        involved: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        """Record an events.k8s.io/v1 Event on a ServedModel; a repeat is counted.

        Never raises: events are best effort. Repeats aggregate as client-go's
        recorder does (tools/events/event_broadcaster.go, client-go v0.36.3):
        the same type, action, reason, reporting controller and instance, and
        regarding object make one Event whose `series` (count from 2,
        lastObservedTime) grows, instead of a new Event each time; the note
        stays the first one's (the API server refuses to change it). Unlike
        client-go, which writes a series on its first repeat and then every
        30 minutes, each repeat is written at once: our Events are
        transitions, a few a minute at most, and `kubectl get events` should
        show the count now. A series idle for SERIES_FINISH_SECONDS (client-go's
        finishTime) is over: the next repeat starts a new Event.
        """
        meta = involved["metadata"]
        key = (meta["namespace"], meta["name"], meta.get("uid", ""), event_type, reason)
        now = time.monotonic()
        series = self._series.get(key)
        if series is not None and now - series.last_seen > SERIES_FINISH_SECONDS:
            series = None
        try:
            if series is not None and await self._count_repeat(meta["namespace"], series, now):
                return
            name = await self._create_event(meta, event_type, reason, message)
            self._series[key] = EventSeries(name=name, count=1, last_seen=now)
        except Exception as err:
            log.warning("could not record event %s on %s: %s", reason, meta["name"], err)

    async def _count_repeat(self, namespace: str, series: EventSeries, now: float) -> bool:
        """Count one more occurrence on the existing Event; False when it is gone."""
        count = series.count + 1
        try:
            await self.kube.request(
                "PATCH",
                path_for("Event", namespace, series.name),
                body={"series": {"count": count, "lastObservedTime": now_micro()}},
                content_type=MERGE_CONTENT_TYPE,
                query=[("fieldManager", self.field_manager)],
            )
        except ApiError as err:
            if err.not_found:  # expired (the API server's event TTL) or deleted
                return False
            raise
        series.count, series.last_seen = count, now
        return True

    async def _create_event(
        self, meta: dict[str, Any], event_type: str, reason: str, message: str
    ) -> str:
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "regarding": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "eventTime": now_micro(),
            "reportingController": api.MANAGED_BY,
            "reportingInstance": self.reporting_instance,
            "action": EVENT_ACTION,
            "reason": reason,
            "note": message[:1024],
            "type": event_type,
        }
        await self.kube.request(
            "POST",
            path_for("Event", meta["namespace"]),
            body=body,
            content_type="application/json",
            query=[("fieldManager", self.field_manager)],
        )
        return name
