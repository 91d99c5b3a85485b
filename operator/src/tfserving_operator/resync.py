"""Resync: drop the ServedModels deleted without a watch event.

kopf watches the ServedModels. A watch that breaks (API server restart, a
network gap, a 410 Gone) is re-opened by kopf with a fresh list, which emits
an event for every ServedModel that exists and none for the ones deleted
meanwhile: their workers would run for good (probing, writing the status of
an object that is gone). Every `TFSO_RESYNC_SECONDS` this lists the
ServedModels in the namespaces that have workers and stops the workers whose
ServedModel the list no longer has. Only removals: anything created reaches
the workers by its watch event. The children need no such list: their
streams (watch.py) resume from the last version seen, and a re-list drops
what it no longer finds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from tfserving_operator import api
from tfserving_operator.kube import path_for
from tfserving_operator.observe import Key

log = logging.getLogger(__name__)


class Lister(Protocol):
    """The transport (kube.Kube): one GET."""

    async def request(
        self, method: str, path: str, *, query: Iterable[tuple[str, str]] = ()
    ) -> dict[str, Any]: ...


class Resyncable(Protocol):
    """What a resync updates (reconcile.Context)."""

    @property
    def paused(self) -> bool: ...

    @property
    def servedmodel_keys(self) -> set[Key]: ...

    async def forget(self, key: Key) -> None: ...


async def _names(lister: Lister, namespace: str, selector: str) -> set[str]:
    query = [("labelSelector", selector)] if selector else []
    data = await lister.request("GET", path_for(api.KIND, namespace), query=query)
    return {str((item.get("metadata") or {}).get("name", "")) for item in data.get("items") or ()}


async def resync_once(lister: Lister, ctx: Resyncable, shard_selector: str = "") -> int:
    """One re-list; returns how many workers of deleted ServedModels were stopped."""
    workers = set(ctx.servedmodel_keys)
    stale: set[Key] = set()
    for namespace in sorted({key[0] for key in workers}):
        names = await _names(lister, namespace, shard_selector)
        stale |= {k for k in workers if k[0] == namespace and k[1] not in names}
    if ctx.paused:
        return 0  # paused meanwhile: no worker runs
    for key in stale:
        await ctx.forget(key)
    if stale:
        log.info(
            "resync: stopped %d workers of ServedModels deleted without a watch event", len(stale)
        )
    return len(stale)


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
