"""Status writing: one merge patch when the status changed, its Events, and the
memory of what was written until the watch catches up with it.

A pass right after a write may run on a watch event that predates the write
(the event of our own patch is still on its way). Its status would lack what
we just recorded (a refusal, lastGood), and a pass deciding from it could
undo the decision. So the status this writer wrote stays the one passes read
until a watch event shows it: the event carries the resourceVersion our patch
returned, or the very status we wrote. resourceVersions are opaque (API
conventions): they are compared for equality only, never ordered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfserving_operator import decide
from tfserving_operator.apply import ApiWriter, now_iso
from tfserving_operator.kube import ApiError
from tfserving_operator.observe import Key


@dataclass(frozen=True)
class Written:
    """The status our last patch produced, and the resourceVersion it returned."""

    status: dict[str, Any]
    resource_version: str


def caught_up(body: Mapping[str, Any], written: Written) -> bool:
    """The object (from a watch event) already reflects our last status write."""
    rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return rv == written.resource_version or dict(body.get("status") or {}) == written.status


class StatusWriter:
    """Writes the status of one ServedModel."""

    def __init__(self, key: Key, applier: ApiWriter) -> None:
        self.key = key
        self.applier = applier
        self.written: Written | None = None

    def current(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The status to decide from: the object's, unless our last write is newer."""
        if self.written is not None:
            if not caught_up(body, self.written):
                return dict(self.written.status)
            self.written = None  # the watch has it: from now on the object is current
        return dict(body.get("status") or {})

    async def write(
        self, body: Mapping[str, Any], old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        """Patch what changed between `old` and `new`; record Events for the transitions."""
        patch = decide.status_patch(old, new)
        if patch is None:
            return
        ns, name = self.key
        try:
            result = await self.applier.patch_status(ns, name, patch)
        except ApiError as err:
            if err.not_found:
                return  # deleted meanwhile
            raise
        meta = result.get("metadata") or {}
        self.written = Written(
            status=dict(result.get("status") or {}),
            resource_version=str(meta.get("resourceVersion") or ""),
        )
        for event in decide.events_for(old, new):
            await self.applier.event(dict(body), event.type, event.reason, event.message)

    async def invalid(
        self,
        body: Mapping[str, Any],
        message: str,
        old: dict[str, Any] | None = None,
    ) -> None:
        """Report a spec that cannot be used (nothing else is written)."""
        old = old if old is not None else self.current(body)
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        new = decide.invalid_status(old, generation, message, now_iso())
        await self.write(body, old, new)
