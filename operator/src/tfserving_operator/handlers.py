"""kopf wiring: watches in, worker wake-ups out. No logic lives here.

kopf watches the ServedModels; their children come through our own streams
(watch.py says why), started and stopped with kopf's start-up and cleanup.
Every handler is an event handler (no kopf progress annotations, no
finalizers): kopf writes nothing to the objects, so an idle cluster sees no
API writes at all and a ServedModel deletes even when the operator is gone
(its children go by garbage collection).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import kopf
from kubernetes import config as kube_config

from tfserving_operator import api, metrics
from tfserving_operator.apply import Applier
from tfserving_operator.kube import Kube
from tfserving_operator.observe import Cache, Prober
from tfserving_operator.pause import PauseFollower
from tfserving_operator.reconcile import WARM_UP_SECONDS, Context
from tfserving_operator.resync import resync_forever
from tfserving_operator.settings import Settings
from tfserving_operator.watch import CacheSink, child_watches

log = logging.getLogger(__name__)

SETTINGS = Settings.from_env()


def _load_api_client() -> Any:
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    from kubernetes import client

    return client.ApiClient()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the shared context once; tune kopf for a write-free idle state."""
    settings.posting.enabled = False  # our Events come from decide.events_for
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 60
    for key, selector in servedmodel_watch_selectors(SETTINGS).items():
        settings.watching.label_selectors[key] = selector
    # Peering (name, priority, mandatory) is set by kopf.operator() in
    # __main__; overriding the priority here would give every replica the
    # same one, and kopf pauses all replicas that share a priority.
    metrics.serve(SETTINGS.metrics_port)
    kube = Kube(_load_api_client(), workers=SETTINGS.api_workers)
    prober = Prober(SETTINGS.probe_timeout_seconds)
    ctx = memo.ctx = Context(
        settings=SETTINGS,
        applier=Applier(kube),
        cache=Cache(),
        prober=prober,
        warm_until=time.monotonic() + WARM_UP_SECONDS,
    )
    memo.watches = child_watches(
        _load_api_client(),  # a client of their own: a connection pool sized for the streams
        asyncio.get_running_loop(),
        CacheSink(ctx.cache, ctx.poke, ctx.caches_synced),
        SETTINGS.namespaces,
        SETTINGS.label_selector_query,
    )
    memo.watches.start()
    if SETTINGS.resync_seconds:
        memo.resync = asyncio.create_task(
            resync_forever(kube, memo.ctx, SETTINGS.resync_seconds, SETTINGS.label_selector_query),
            name="tfso resync",
        )
    follower: PauseFollower | None = memo.get("pause")  # set by __main__ (not in unit tests)
    if follower is not None:
        follower.attach(memo.ctx)
    memo.kube = kube
    memo.prober = prober
    log.info("tfserving-operator started: %s", SETTINGS)


def servedmodel_watch_selectors(settings: Settings) -> dict[tuple[str, str], str]:
    """labelSelector of kopf's ServedModel watch, by kopf resource selector
    (group, plural): the API server sends a shard only its own ServedModels.
    The children's streams carry theirs (watch.child_watches)."""
    shard = settings.label_selector_query
    return {(api.GROUP, api.PLURAL): shard} if shard else {}


# Each cleanup step's bound: the chart's grace period (30 s) covers the three
# with room left for kopf's own stop.
CLEANUP_STEP_SECONDS = 8.0


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop workers and close connections."""
    await stop_everything(memo)


async def stop_everything(memo: kopf.Memo) -> None:
    """What startup() started, stopped in order, each step bounded.

    kopf waits for this handler without a deadline (its last-resort exit
    timer is armed by its own signal handlers, which __main__ replaces), so a
    step that hung kept the process alive until the kubelet's SIGKILL, with
    nothing in the log. A step that runs out of time is logged by name and
    the stop goes on.
    """
    ctx: Context = memo.ctx
    resync: asyncio.Task[None] | None = memo.get("resync")
    if resync is not None:
        resync.cancel()
    await bounded("the child watches", memo.watches.stop())
    await bounded("the ServedModel workers", ctx.stop())
    await bounded("the model server channels", memo.prober.close())
    memo.kube.close()


async def bounded(what: str, step: Awaitable[None]) -> None:
    """Await one cleanup step for CLEANUP_STEP_SECONDS at most."""
    seconds = CLEANUP_STEP_SECONDS
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.error(
            "stopping: %s did not stop within %g s; the operator exits without them", what, seconds
        )


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, labels=SETTINGS.label_selector or None)
async def servedmodel_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A ServedModel appeared, changed or went away."""
    ctx: Context = memo.ctx
    body = event["object"]
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if event["type"] == "DELETED":
        await ctx.forget(key)
    else:
        ctx.poke(key, body)


@kopf.on.probe(id="servedmodels")
def workers_probe(memo: kopf.Memo, **_: Any) -> int:
    """Liveness detail: how many ServedModels this process reconciles."""
    ctx: Context | None = getattr(memo, "ctx", None)
    return len(ctx.workers) if ctx else 0


@kopf.on.probe(id="cached_objects")
def cached_objects(memo: kopf.Memo, **_: Any) -> int:
    """Children and pods held in the cache (what this process's watches deliver)."""
    ctx: Context | None = getattr(memo, "ctx", None)
    return len(ctx.cache.entries()) if ctx else 0


@kopf.on.probe(id="computed_at")
def computed_at(**_: Any) -> float:
    """When these liveness details were computed (Unix time): kopf serves them
    from a cache for up to 10 s, so a reader can tell a fresh answer from an old one."""
    return time.time()


@kopf.on.probe(id="probe_calls")
def probe_calls(memo: kopf.Memo, **_: Any) -> int:
    """gRPC GetModelStatus calls made since start (probe load)."""
    prober: Prober | None = getattr(memo, "prober", None)
    return prober.calls if prober else 0


@kopf.on.probe(id="api_writes")
def api_writes(memo: kopf.Memo, **_: Any) -> int:
    """API requests other than GET sent since start (who acts, for peering)."""
    kube: Kube | None = getattr(memo, "kube", None)
    return kube.writes if kube else 0


@kopf.on.probe(id="probe_latency_ms")
def probe_latency(memo: kopf.Memo, **_: Any) -> dict[str, float]:
    """GetModelStatus round trips (recent window) and timeouts since start: what a
    loaded model server's shared gRPC pool does to the gate's probes."""
    prober: Prober | None = getattr(memo, "prober", None)
    if prober is None:
        return {"count": 0}
    return {**prober.latency_summary(), "timeouts": prober.timeouts}
