"""The child watches' streams (watch.py) against the local API server: paged
lists, the watch after them, a re-list that drops what went meanwhile, and a
stop that cuts an open watch. (410 Gone cannot be had on demand from a fresh
API server, whose etcd history is not compacted yet: tests/unit/test_watch.py
feeds the stream the API's ERROR event instead.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from localdev.support.waiting import wait_until
from tests.unit.test_watch import Recorder
from tfserving_operator import api, kinds, watch
from tfserving_operator.observe import Cache
from tfserving_operator.watch import CacheSink, Stream

CONFIGMAP = kinds.BY_KIND["ConfigMap"]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, as the operator's runs."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def configmap(name: str, owner: str = "mnist") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {api.LABEL_SERVEDMODEL: owner}},
        "data": {"k": "v"},
    }


def stream(api_client: Any, namespace: str, loop: asyncio.AbstractEventLoop, sink: Any) -> Stream:
    return Stream(api_client, CONFIGMAP, namespace, api.LABEL_SERVEDMODEL, loop, sink)


def names(calls: list[tuple[Any, ...]], what: str) -> list[str]:
    return [c[3] for c in calls if c[0] == "changed" and c[2] == what]


def test_a_paged_list_then_every_change_in_order(
    api_client: Any, namespace: str, loop: asyncio.AbstractEventLoop, monkeypatch: Any
) -> None:
    core = client.CoreV1Api(api_client)
    for i in range(5):
        core.create_namespaced_config_map(namespace, configmap(f"cm-{i}"))
    unlabelled = configmap("not-ours")
    unlabelled["metadata"]["labels"] = {}
    core.create_namespaced_config_map(namespace, unlabelled)
    monkeypatch.setattr(watch, "PAGE_SIZE", 2)  # 5 objects: three pages
    sink = Recorder()
    s = stream(api_client, namespace, loop, sink)
    s.start()
    try:
        wait_until(
            lambda: ("synced", "ConfigMap", namespace) in sink.calls,
            timeout=30,
            what="the stream's first list",
        )
        assert sorted(names(sink.calls, "ADDED")) == [f"cm-{i}" for i in range(5)]
        relisted = [c for c in sink.calls if c[0] == "relisted"]
        assert relisted == [
            (
                "relisted",
                "ConfigMap",
                namespace,
                frozenset((namespace, f"cm-{i}") for i in range(5)),
            )
        ]
        core.patch_namespaced_config_map("cm-0", namespace, {"data": {"k": "w"}})
        core.delete_namespaced_config_map("cm-1", namespace)
        core.create_namespaced_config_map(namespace, configmap("cm-5"))
        wait_until(
            lambda: names(sink.calls, "ADDED")[-1:] == ["cm-5"],
            timeout=30,
            what="the watch events after the list",
        )
        assert names(sink.calls, "MODIFIED") == ["cm-0"]
        assert names(sink.calls, "DELETED") == ["cm-1"]
        assert s.lists == 1
    finally:
        s.stop()
        s.join(10)


def test_a_relist_drops_what_the_cache_held_but_the_cluster_lost(
    api_client: Any, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    """A deletion while no stream ran (an operator restart with a warm cache, a
    watch down past the API server's history) leaves no stale child behind."""
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, configmap("kept"))
    cache = Cache()
    cache.observe(
        "ConfigMap",
        {
            **configmap("gone"),
            "metadata": {**configmap("gone")["metadata"], "namespace": namespace},
        },
        deleted=False,
    )
    poked: list[Any] = []
    synced = threading.Event()
    sink = CacheSink(cache, poked.append, synced.set)
    sink.expected = 1
    s = stream(api_client, namespace, loop, sink)
    s.start()
    try:
        assert synced.wait(30), "the stream's first list never arrived"
        wait_until(
            lambda: {name for _, _, name in cache.entries()} == {"kept"},
            timeout=10,
            what="the stale ConfigMap dropped after the list",
        )
        assert (namespace, "mnist") in poked
    finally:
        s.stop()
        s.join(10)


def test_stop_cuts_an_open_watch(
    api_client: Any, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    sink = Recorder()
    s = stream(api_client, namespace, loop, sink)
    s.start()
    wait_until(
        lambda: s._response is not None,
        timeout=30,
        what="the stream's watch to open after its first list",
    )
    s.stop()  # the watch is open, idle, for up to WATCH_SECONDS
    s.join(5)
    assert not s._thread.is_alive(), "the stream's thread still runs 5 s after stop()"


class StoppedAsTheWatchOpens(Stream):
    """stop() lands after the watch request returned, before the stream holds it:
    the window a stop once fell into and was lost (CI, 2026-12-02)."""

    def _request(self, query: list[tuple[str, str]], watch: bool) -> Any:
        response = super()._request(query, watch)
        if watch:
            self.stop()
        return response


def test_a_stop_while_the_watch_opens_is_not_lost(
    api_client: Any, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    sink = Recorder()
    s = StoppedAsTheWatchOpens(api_client, CONFIGMAP, namespace, api.LABEL_SERVEDMODEL, loop, sink)
    s.start()
    s.join(10)
    assert not s._thread.is_alive(), "the stream read on after a stop as its watch opened"
    assert ("synced", "ConfigMap", namespace) in sink.calls
