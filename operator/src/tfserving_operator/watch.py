"""Watch: the children's list-and-watch streams, straight into the `Cache`.

ServedModels come through kopf (handlers.py); their children (pods,
Deployments, ReplicaSets, Services, ...) come through here. kopf treats
every object it watches as a resource to handle: it keeps a memory record
and an error throttler per object for the process's lifetime, runs a worker
task per object for 5 s after each of its events, and lists without paging.
At 1000 ServedModels that is 6000 children we only ever cache: measured,
kopf's machinery for them was most of a restart's memory peak and of the
CPU of a cold start. The kubernetes client offers a watch helper, but it
deserializes every object into its typed models (the cost kube.py avoids
too), so each stream here is the API's own list-then-watch protocol on the
client's connection pool: a paged list, then a watch from the list's
resourceVersion with bookmarks, resumed from the last version seen after a
broken connection, re-listed after 410 Gone. A re-list drops what the cache
held but the list no longer has: a deletion missed while the stream was
down never lingers (kopf's re-list emits no DELETED).

Each stream runs in a thread of its own (a watch blocks for minutes) and
hands its events to the event loop in order, in small batches, waiting
while a few are queued: memory stays bounded whatever the list's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import urllib3

# kopf's namespace matching (internal to kopf, no public name): the children
# must be kept in exactly the namespaces kopf watches the ServedModels in.
# tests/unit/test_watch.py pins what it does with globs and exclusions.
from kopf._cogs.structs.references import (
    NamespaceName,
    match_namespace,
    select_specific_namespaces,
)
from kubernetes.watch.watch import iter_resp_lines

from tfserving_operator import api, kinds
from tfserving_operator.kinds import KindInfo
from tfserving_operator.kube import path_for, prepare
from tfserving_operator.metrics import CODE_NO_ANSWER, METRICS, Metrics
from tfserving_operator.observe import Cache, Key

log = logging.getLogger(__name__)

# Objects per list page: a page is parsed and cached before the next is asked for.
PAGE_SIZE = 250
# The API server ends a watch after this long (we ask)...
WATCH_SECONDS = 300
# ...so silence longer than this means a dead connection, re-opened from the
# last version seen (bookmarks do not come often enough on an idle watch to
# tell sooner: measured, none within 90 s).
READ_TIMEOUT_SECONDS = WATCH_SECONDS + 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
# Waits after a failed request: 1 s, doubling, at most 5 s (a stream sends one
# request per wait while the API server is away; once it is back, the cache
# is current again within seconds).
BACKOFF_SECONDS = (1.0, 5.0)
# A page goes to the loop in batches this big, each one callback: the loop
# stays free for the workers between them (a batch takes a few milliseconds).
BATCH = 50
# Batches handed to the loop and not yet taken in, per stream: a stream
# reads ahead no further (memory stays flat whatever the list's size).
MAX_QUEUED = 4


class Gone(Exception):
    """410: the resourceVersion is older than the API server keeps: list again."""


class StreamError(Exception):
    """A failed list or watch request (retried after a back-off)."""


@dataclass(frozen=True)
class Event:
    """One change: ADDED, MODIFIED or DELETED, and the object."""

    type: str
    obj: dict[str, Any]


class Sink:
    """Where a stream's changes go: the loop-side half (Cache and wake-ups)."""

    expected = 0  # streams whose first list is awaited (set by child_watches)

    def changed(self, kind: str, events: list[Event]) -> None:
        """Objects changed (a list page is a batch of ADDED)."""
        raise NotImplementedError

    def relisted(self, kind: str, namespace: str | None, seen: set[tuple[str, str]]) -> None:
        """A full list ended: (namespace, name) of every object it had."""
        raise NotImplementedError

    def synced(self, kind: str, namespace: str | None) -> None:
        """The stream's first list is in the cache."""


def in_scope(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A namespace filter from TFSO_NAMESPACES patterns, matched as kopf matches
    them for the ServedModel watch (globs, `!` exclusions): a child is kept
    exactly where its ServedModel is watched."""
    globs = tuple(patterns)
    return lambda namespace: (
        not globs or any(match_namespace(NamespaceName(namespace), g) for g in globs)
    )


def stream_namespaces(patterns: Iterable[str]) -> tuple[str | None, ...]:
    """One stream per named namespace, or one cluster-wide (filtered) stream when
    a pattern is not a plain name (kopf's own test of that).

    A glob's namespaces come and go; watching cluster-wide with our label and
    dropping the other namespaces' objects here is what a fixed set of
    namespaced streams cannot follow.
    """
    names = tuple(dict.fromkeys(patterns))
    if not names or len(select_specific_namespaces(names)) != len(names):
        return (None,)
    return names


class Stream:
    """List then watch one kind (in one namespace or all) with a label selector."""

    def __init__(
        self,
        api_client: Any,
        info: KindInfo,
        namespace: str | None,
        selector: str,
        loop: asyncio.AbstractEventLoop,
        sink: Sink,
        keep: Callable[[str], bool] = lambda _: True,
        metrics: Metrics = METRICS,
    ) -> None:
        self.info = info
        self.namespace = namespace
        self._client = api_client
        self.selector = selector
        self._loop = loop
        self._sink = sink
        self._keep = keep
        self._metrics = metrics
        self._stopped = threading.Event()
        # Guards the hand-over of the open watch between this thread and stop(): either
        # stop() finds the response and cuts it, or the thread finds the stop and does not
        # start reading (without it a stop between the request and the assignment was lost
        # and the thread read an idle watch for up to WATCH_SECONDS).
        self._lock = threading.Lock()
        self._queued = threading.BoundedSemaphore(MAX_QUEUED)
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"watch {info.plural} {namespace or '*'}", daemon=True
        )
        self.lists = 0  # full lists done (1 + the re-lists after 410 Gone)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the stream (an open watch is cut); returns without waiting."""
        with self._lock:
            self._stopped.set()
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # ----- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        version = ""
        failures = 0
        while not self._stopped.is_set():
            try:
                if not version:
                    version = self._list()
                    if self.lists == 1:
                        self._hand(self._sink.synced, self.info.kind, self.namespace)
                version = self._watch(version)
                failures = 0
            except Gone:
                log.info("watch %s: resourceVersion too old, listing again", self.info.plural)
                version = ""
            except urllib3.exceptions.ReadTimeoutError:
                log.info(
                    "watch %s: silent for %.0f s, re-opened", self.info.plural, READ_TIMEOUT_SECONDS
                )
            except Exception as err:  # the API server restarting, a network gap
                if self._stopped.is_set():
                    break
                failures += 1
                delay = min(BACKOFF_SECONDS[1], BACKOFF_SECONDS[0] * 2 ** (failures - 1))
                log.warning("watch %s: %s; again in %.0f s", self.info.plural, _short(err), delay)
                self._stopped.wait(delay)

    def _list(self) -> str:
        """A paged list into the sink; returns the list's resourceVersion."""
        seen: set[tuple[str, str]] = set()
        token = ""
        while True:
            query = [("labelSelector", self.selector), ("limit", str(PAGE_SIZE))]
            if token:
                query.append(("continue", token))
            page = json.loads(self._read(self._request(query, watch=False)))
            events = []
            for item in page.get("items") or ():
                meta = item.get("metadata") or {}
                seen.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
                if self._keep(str(meta.get("namespace", ""))):
                    # A list's items carry neither (the list does); a watch event's do.
                    item.setdefault("kind", self.info.kind)
                    item.setdefault("apiVersion", self.info.api_version)
                    events.append(Event("ADDED", item))
            for start in range(0, len(events), BATCH):
                self._hand(self._sink.changed, self.info.kind, events[start : start + BATCH])
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                break
        self.lists += 1
        self._hand(self._sink.relisted, self.info.kind, self.namespace, seen)
        return str(page["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        """Watch from `version` until the server ends it; returns the last version seen."""
        query = [
            ("labelSelector", self.selector),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", version),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        response = self._request(query, watch=True)
        with self._lock:
            if self._stopped.is_set():
                response.release_conn()
                return version
            self._response = response
        try:
            # The kubernetes client's splitter: one JSON event per line.
            for line in iter_resp_lines(response):
                if self._stopped.is_set():
                    break
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise StreamError(f"watch error: {obj.get('message', obj)}")
                meta = obj.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                if kind == "BOOKMARK" or not self._keep(str(meta.get("namespace", ""))):
                    continue
                self._hand(self._sink.changed, self.info.kind, [Event(str(kind), obj)])
        finally:
            with self._lock:
                self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()
        return version

    def _request(self, query: list[tuple[str, str]], watch: bool) -> urllib3.BaseHTTPResponse:
        path = path_for(self.info.kind, self.namespace)
        method, url, headers = prepare(self._client, "GET", path, query)
        verb = "WATCH" if watch else "LIST"
        try:
            response: urllib3.BaseHTTPResponse = self._client.rest_client.pool_manager.request(
                method,
                url,
                headers=headers,
                preload_content=False,
                timeout=urllib3.Timeout(
                    connect=CONNECT_TIMEOUT_SECONDS,
                    read=READ_TIMEOUT_SECONDS if watch else 60.0,
                ),
            )
        except Exception:
            self._metrics.observe_request(verb, CODE_NO_ANSWER)
            raise
        self._metrics.observe_request(verb, response.status)
        if response.status == 410:
            response.release_conn()
            raise Gone()
        if response.status >= 400:
            text = self._read(response)[:300]
            raise StreamError(f"HTTP {response.status} on {path}: {text!r}")
        return response

    @staticmethod
    def _read(response: urllib3.BaseHTTPResponse) -> bytes:
        try:
            return response.read()
        finally:
            response.release_conn()

    def _hand(self, call: Callable[..., None], *args: Any) -> None:
        """Run `call(*args)` on the loop, in order; wait while MAX_QUEUED are pending."""
        while not self._queued.acquire(timeout=1.0):
            if self._stopped.is_set():
                return

        def run() -> None:
            try:
                call(*args)
            except Exception:
                log.exception("watch %s: handling a change failed", self.info.plural)
            finally:
                self._queued.release()

        try:
            self._loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed: the process is stopping
            self._queued.release()
            self._stopped.set()


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) < 200 else text[:200] + "..."


class CacheSink(Sink):
    """Changes into the Cache; the ServedModels whose held objects changed are woken.

    Fed while a peering replica is paused too (its pokes wake nobody then):
    the cache stays current, so a replica that takes over starts warm.
    """

    def __init__(
        self, cache: Cache, poke: Callable[[Key], None], on_synced: Callable[[], None]
    ) -> None:
        self.cache = cache
        self._poke = poke
        self._on_synced = on_synced
        self._synced: set[tuple[str, str | None]] = set()
        self._started = time.monotonic()

    def changed(self, kind: str, events: list[Event]) -> None:
        keys = {self.cache.observe(kind, e.obj, deleted=e.type == "DELETED") for e in events}
        for key in keys:
            if key is not None:
                self._poke(key)

    def relisted(self, kind: str, namespace: str | None, seen: set[tuple[str, str]]) -> None:
        stale = [
            (k, key, name)
            for k, key, name in self.cache.entries()
            if k == kind and namespace in (None, key[0]) and (key[0], name) not in seen
        ]
        for k, key, name in stale:
            self.cache.drop(k, key, name)
        for key in {key for _, key, _ in stale}:
            self._poke(key)
        if stale:
            log.info("watch %s: %d objects gone while the stream was down", kind, len(stale))

    def synced(self, kind: str, namespace: str | None) -> None:
        self._synced.add((kind, namespace))
        if len(self._synced) == self.expected:
            log.info(
                "child watches: first lists in the cache after %.1f s (%d objects)",
                time.monotonic() - self._started,
                len(self.cache.entries()),
            )
            self._on_synced()


class ChildWatches:
    """Every watched child kind's streams (threads), started and stopped together."""

    def __init__(self, streams: list[Stream]) -> None:
        self.streams = streams

    def start(self) -> None:
        for stream in self.streams:
            stream.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Cut every stream and wait (off the loop) for the threads to end."""
        for stream in self.streams:
            stream.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._join, timeout)

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for stream in self.streams:
            stream.join(max(0.0, deadline - time.monotonic()))


def child_watches(
    api_client: Any,
    loop: asyncio.AbstractEventLoop,
    sink: Sink,
    namespaces: Iterable[str] = (),
    shard_selector: str = "",
) -> ChildWatches:
    """The streams of every watched kind: our label (and a shard's labels, which
    the render copies onto every child), per named namespace or cluster-wide."""
    patterns = tuple(namespaces)
    selector = ",".join(filter(None, [api.LABEL_SERVEDMODEL, shard_selector]))
    keep = in_scope(patterns)
    streams = [
        Stream(api_client, info, namespace, selector, loop, sink, keep)
        for info in kinds.WATCHED
        for namespace in stream_namespaces(patterns)
    ]
    # One connection per stream, kept open: the pool must not discard them.
    api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = len(streams)
    sink.expected = len(streams)
    return ChildWatches(streams)
