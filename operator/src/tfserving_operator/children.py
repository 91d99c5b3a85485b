"""Child sync: make the rendered children true in the cluster, and nothing more.

Applies a child only when it is missing or differs from the render (an idle
cluster sees no writes), deletes optional children the render dropped, and
collects config generations no pod uses any more. Writes go through the
applier (apply.py); what is observed comes from the watch-fed Cache.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tfserving_operator import autoscaling, kinds, render
from tfserving_operator.apply import ApiWriter
from tfserving_operator.kube import ApiError
from tfserving_operator.observe import Cache, Key
from tfserving_operator.spec import ServedModel
from tfserving_operator.views import PodView

log = logging.getLogger(__name__)


class ChildSync:
    """The children of one ServedModel."""

    def __init__(self, key: Key, applier: ApiWriter, cache: Cache) -> None:
        self.key = key
        self.applier = applier
        self.cache = cache

    def pending(self, children: render.Children) -> list[dict[str, Any]]:
        """The children `ensure` would apply: missing, differing from the render,
        or with spec.replicas to release."""
        observed = self.cache.children_of(self.key)
        deployment = self.cache.deployments.get(self.key)
        out = []
        for manifest in children.all():
            current = observed.get((manifest["kind"], manifest["metadata"]["name"]))
            release = autoscaling.must_release(manifest, deployment)
            if current is None or not contains(current, manifest) or release:
                out.append(manifest)
        return out

    async def dry_run(self, manifests: Sequence[dict[str, Any]]) -> str:
        """Server-side dry run of `manifests`: refuse the spec before anything is written.

        Returns the API server's complaint about the first child it refuses, or "".
        """
        for manifest in manifests:
            try:
                await self.applier.apply(manifest, dry_run=True)
            except ApiError as err:
                if refused(err):
                    return _complaint(manifest, err)
                raise
        return ""

    async def ensure(
        self, children: render.Children, owner_uid: str, undo_on_refusal: bool = False
    ) -> str:
        """Apply each child that is missing or differs from what we render, and
        delete the ones the spec no longer asks for. Returns "" when done.

        With `undo_on_refusal` (a ServedModel never accepted yet, applied without
        a dry run first), a child the API server refuses stops the pass and
        every child of this ServedModel is deleted again: the API server's
        complaint is returned and nothing stays half-applied. The Deployment is
        applied last (Children.all), so a refused spec never starts a pod.
        """
        for manifest in self.pending(children):
            try:
                result = await self.applier.apply(manifest)
            except ApiError as err:
                if not (undo_on_refusal and refused(err)):
                    raise
                await self.delete_all(owner_uid)
                return _complaint(manifest, err)
            self.cache.observe(manifest["kind"], result, deleted=False)
        await self.prune(children, owner_uid)
        return ""

    async def delete_all(self, owner_uid: str) -> None:
        """Delete every child this ServedModel controls (the undo of a refused first apply)."""
        observed = self.cache.children_of(self.key)
        for ident, obj in list(observed.items()):
            if _controlled_by(obj, owner_uid):
                log.info("%s/%s: deleting %s %s: spec refused", *self.key, *ident)
                await self.applier.delete(ident[0], self.key[0], ident[1])
                self.cache.drop(ident[0], self.key, ident[1])

    async def hand_over_replicas(self, sm: ServedModel) -> None:
        """Pass the Deployment's replica count to the handover manager when
        autoscaling needs it (autoscaling.handover_replicas): run before the
        apply that drops spec.replicas, and after one that created the Deployment."""
        count = autoscaling.handover_replicas(sm, self.cache.deployments.get(self.key))
        if count is None:
            return
        log.info("%s/%s: handing spec.replicas (%d) over to the autoscaler", *self.key, count)
        manifest = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": sm.name, "namespace": sm.namespace},
            "spec": {"replicas": count},
        }
        result = await self.applier.hand_over(manifest)
        self.cache.observe("Deployment", result, deleted=False)

    async def prune(self, children: render.Children, owner_uid: str) -> None:
        """Delete the optional children (kinds.PRUNED) the render no longer holds."""
        # A PDB at one replica, the REST Service with REST off, a NetworkPolicy
        # the spec dropped: rendered no more, so deleted. Only objects this
        # ServedModel controls (owner uid), never one that merely carries our
        # label; ConfigMaps go by collect_config_maps once nothing uses them.
        wanted = {(m["kind"], m["metadata"]["name"]) for m in children.all()}
        observed = self.cache.children_of(self.key)
        for ident, obj in list(observed.items()):
            kind, name = ident
            if kind not in kinds.PRUNED or ident in wanted or not _controlled_by(obj, owner_uid):
                continue
            log.info("%s/%s: deleting %s %s: no longer rendered", *self.key, kind, name)
            await self.applier.delete(kind, self.key[0], name)
            observed.pop(ident, None)

    async def collect_config_maps(
        self, current_hash: str, pods: Sequence[PodView], keep: Sequence[str] = ()
    ) -> None:
        """Delete config generations no pod or ReplicaSet uses any more (nor `keep`:
        a canary's, applied before its ReplicaSet shows up)."""
        in_use = {current_hash, *keep, *(p.config_hash for p in pods)}
        in_use |= set(self.cache.replicaset_hashes.get(self.key, {}).values())
        observed = self.cache.children_of(self.key)
        for kind, name in list(observed):
            if kind != "ConfigMap" or not name.startswith(f"{self.key[1]}-config-"):
                continue
            if name.rsplit("-", 1)[-1] in in_use:
                continue
            await self.applier.delete("ConfigMap", self.key[0], name)
            observed.pop((kind, name), None)


def refused(err: ApiError) -> bool:
    """The API server refuses the body as such (or a 404: its kind is not served,
    KEDA not installed): the spec's fault, which no retry mends."""
    return err.refuses_input or err.status == 404


def _complaint(manifest: Mapping[str, Any], err: ApiError) -> str:
    return f"{manifest['kind']} {manifest['metadata']['name']}: {err.message}"


def contains(observed: Any, desired: Any) -> bool:
    """True when every field we render has the same value in the observed object.

    Fields the API server or other controllers add (defaults, status,
    annotations) are ignored; a field we render that differs is drift.
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        return all(k in observed and contains(observed[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(observed) != len(desired):
            return False
        return all(contains(o, d) for o, d in zip(observed, desired, strict=True))
    return bool(observed == desired)


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return bool(uid) and any(r.get("controller") and r.get("uid") == uid for r in refs)
