"""Resync: re-list what the watches may have missed, drop what is gone.

A watch that breaks (API server restart, a network gap, a 410 Gone) is
re-opened by kopf with a fresh list, which emits an event for every object
that exists and none for the ones deleted meanwhile: those would stay in the
`Cache` for good (a deleted pod shown in status.pods as unreachable, a
rollout that never completes, a deleted child never re-applied). Every
`TFSO_RESYNC_SECONDS` this lists our objects (our label) in the namespaces
the cache holds objects of, and the ServedModels there, and drops what the
cache held before the list began but the list no longer has. Only removals:
a list cannot tell a newer watch event wrong, and anything created reaches
the cache by its watch event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from tfserving_operator import api, kinds
from tfserving_operator.kube import path_for
from tfserving_operator.observe import Cache, Key

log = logging.getLogger(__name__)


class Lister(Protocol):
    """The transport (kube.Kube): one GET."""

    async def request(
        self, method: str, path: str, *, query: Iterable[tuple[str, str]] = ()
    ) -> dict[str, Any]: ...


class Resyncable(Protocol):
    """What a resync updates (reconcile.Context)."""

    cache: Cache

    @property
    def paused(self) -> bool: ...

    @property
    def servedmodel_keys(self) -> set[Key]: ...

    def poke(self, key: Key, body: Any = None) -> None: ...

    async def forget(self, key: Key) -> None: ...


async def _names(lister: Lister, kind: str, namespace: str, selector: str) -> set[str]:
    query = [("labelSelector", selector)] if selector else []
    data = await lister.request("GET", path_for(kind, namespace), query=query)
    return {str((item.get("metadata") or {}).get("name", "")) for item in data.get("items") or ()}


async def resync_once(lister: Lister, ctx: Resyncable, shard_selector: str = "") -> int:
    """One re-list; returns how many stale entries were dropped."""
    cached = ctx.cache.entries()
    workers = set(ctx.servedmodel_keys)
    namespaces = sorted({key[0] for _, key, _ in cached} | {key[0] for key in workers})
    stale_objects: set[tuple[str, Key, str]] = set()
    stale_servedmodels: set[Key] = set()
    for namespace in namespaces:
        servedmodels = await _names(lister, api.KIND, namespace, shard_selector)
        stale_servedmodels |= {k for k in workers if k[0] == namespace and k[1] not in servedmodels}
        for info in kinds.WATCHED:
            names = await _names(lister, info.kind, namespace, api.LABEL_SERVEDMODEL)
            stale_objects |= {
                (kind, key, name)
                for kind, key, name in cached
                if kind == info.kind and key[0] == namespace and name not in names
            }
    if ctx.paused:
        return 0  # paused meanwhile: the cache was cleared, nothing to correct
    for kind, key, name in stale_objects:
        ctx.cache.drop(kind, key, name)
    for key in stale_servedmodels:
        await ctx.forget(key)
    for key in {key for _, key, _ in stale_objects} - stale_servedmodels:
        ctx.poke(key)
    if stale_objects or stale_servedmodels:
        log.info(
            "resync: dropped %d objects and %d ServedModels deleted without a watch event",
            len(stale_objects),
            len(stale_servedmodels),
        )
    return len(stale_objects) + len(stale_servedmodels)


async def resync_forever(
    lister: Lister, ctx: Resyncable, interval: float, shard_selector: str = ""
) -> None:
    """Resync every `interval` seconds while not paused; failures wait for the next round."""
    while True:
        await asyncio.sleep(interval)
        if ctx.paused:
            continue
        try:
            await resync_once(lister, ctx, shard_selector)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("resync failed (%s); next one in %.0f s", err, interval)
