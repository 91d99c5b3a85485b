"""The child watches' loop-side half and their layout; the streams themselves run
against the local API server in tests/cluster/test_watch.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tfserving_operator import api, kinds
from tfserving_operator.observe import Cache, Key
from tfserving_operator.watch import (
    CacheSink,
    Event,
    Gone,
    Sink,
    Stream,
    StreamError,
    child_watches,
    in_scope,
    stream_namespaces,
)


class FakeApiClient:
    """What child_watches touches of a kubernetes ApiClient before a stream starts."""

    def __init__(self) -> None:
        self.rest_client = SimpleNamespace(pool_manager=SimpleNamespace(connection_pool_kw={}))


class Recorder(Sink):
    """Records what streams hand over."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def changed(self, kind: str, events: list[Event]) -> None:
        self.calls += [("changed", kind, e.type, e.obj["metadata"]["name"]) for e in events]

    def relisted(self, kind: str, namespace: str | None, seen: set[tuple[str, str]]) -> None:
        self.calls.append(("relisted", kind, namespace, frozenset(seen)))

    def synced(self, kind: str, namespace: str | None) -> None:
        self.calls.append(("synced", kind, namespace))


def child(kind: str, name: str, owner: str = "mnist", namespace: str = "ml") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {api.LABEL_SERVEDMODEL: owner},
            "resourceVersion": "1",
        },
        "spec": {},
    }


class Sunk:
    """A CacheSink with its pokes and sync calls recorded."""

    def __init__(self) -> None:
        self.cache = Cache()
        self.poked: list[Key] = []
        self.synced = 0
        self.sink = CacheSink(self.cache, self.poked.append, self._on_synced)

    def _on_synced(self) -> None:
        self.synced += 1


def test_changes_go_into_the_cache_and_wake_each_servedmodel_once() -> None:
    s = Sunk()
    s.sink.changed(
        "Service",
        [Event("ADDED", child("Service", "mnist-grpc")), Event("ADDED", child("Service", "mnist"))],
    )
    assert s.cache.entries() == {
        ("Service", ("ml", "mnist"), "mnist-grpc"),
        ("Service", ("ml", "mnist"), "mnist"),
    }
    assert s.poked == [("ml", "mnist")]
    s.sink.changed("Service", [Event("DELETED", child("Service", "mnist"))])
    assert s.cache.entries() == {("Service", ("ml", "mnist"), "mnist-grpc")}


def test_an_object_without_our_label_wakes_nobody() -> None:
    s = Sunk()
    stray = child("ConfigMap", "x")
    stray["metadata"]["labels"] = {}
    s.sink.changed("ConfigMap", [Event("ADDED", stray)])
    assert s.poked == [] and s.cache.entries() == set()


def test_a_relist_drops_what_went_while_the_stream_was_down() -> None:
    """Only its own kind and namespace: another stream's objects stay."""
    s = Sunk()
    s.sink.changed("Service", [Event("ADDED", child("Service", n)) for n in ("a", "b")])
    s.sink.changed("Service", [Event("ADDED", child("Service", "c", namespace="other"))])
    s.sink.changed("ConfigMap", [Event("ADDED", child("ConfigMap", "d"))])
    s.poked.clear()
    s.sink.relisted("Service", "ml", {("ml", "a")})
    assert s.cache.entries() == {
        ("Service", ("ml", "mnist"), "a"),
        ("Service", ("other", "mnist"), "c"),
        ("ConfigMap", ("ml", "mnist"), "d"),
    }
    assert s.poked == [("ml", "mnist")]


def test_a_cluster_wide_relist_covers_every_namespace() -> None:
    s = Sunk()
    s.sink.changed("Pod", [Event("ADDED", child("Pod", "p", namespace=ns)) for ns in ("a", "b")])
    s.sink.relisted("Pod", None, {("b", "p")})
    assert s.cache.entries() == {("Pod", ("b", "mnist"), "p")}


def test_a_relist_that_finds_everything_wakes_nobody() -> None:
    s = Sunk()
    s.sink.changed("Service", [Event("ADDED", child("Service", "a"))])
    s.poked.clear()
    s.sink.relisted("Service", None, {("ml", "a")})
    assert s.poked == []


def test_synced_once_every_stream_has_listed() -> None:
    s = Sunk()
    s.sink.expected = 2
    s.sink.synced("Pod", None)
    assert s.synced == 0
    s.sink.synced("Pod", None)  # the same stream again changes nothing
    assert s.synced == 0
    s.sink.synced("Service", None)
    assert s.synced == 1


def test_named_namespaces_get_a_stream_each_and_globs_one_filtered_stream() -> None:
    assert stream_namespaces(()) == (None,)
    assert stream_namespaces(("a", "b")) == ("a", "b")
    assert stream_namespaces(("a", "team-*")) == (None,)
    keep = in_scope(("a", "team-*"))
    assert keep("a") and keep("team-x") and not keep("b")
    assert in_scope(())("anything")


def test_namespaces_are_matched_as_kopf_matches_the_servedmodels() -> None:
    """An exclusion (`!`) is kopf's syntax too: with TFSO_NAMESPACES=a,!kube-*
    kopf watches ServedModels everywhere but kube-*, and so must the children."""
    assert stream_namespaces(("a", "!kube-*")) == (None,)
    keep = in_scope(("a", "!kube-*"))
    assert keep("a") and keep("team-x") and not keep("kube-system")


def test_every_watched_kind_gets_its_streams_and_a_connection_each() -> None:
    client = FakeApiClient()
    sink = Recorder()
    watches = child_watches(client, asyncio.new_event_loop(), sink, ("a", "b"))
    got = {(s.info.kind, s.namespace) for s in watches.streams}
    assert got == {(k.kind, ns) for k in kinds.WATCHED for ns in ("a", "b")}
    assert client.rest_client.pool_manager.connection_pool_kw["maxsize"] == len(got)
    assert sink.expected == len(got)


class FakeResponse:
    """A watch response: the lines the API server would stream."""

    def __init__(self, *events: dict[str, Any]) -> None:
        self.body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        self.released = False

    def stream(self, amt: Any = None, decode_content: Any = None) -> Iterator[bytes]:
        # Split mid-line, as a network would.
        yield self.body[:7]
        yield self.body[7:]

    def read(self) -> bytes:
        return self.body

    def release_conn(self) -> None:
        self.released = True


def watched(*events: dict[str, Any]) -> tuple[Stream, Recorder, FakeResponse]:
    """A stream whose watch request answers `events`; the loop runs its hand-overs."""
    sink = Recorder()
    loop = asyncio.new_event_loop()
    stream = Stream(FakeApiClient(), kinds.BY_KIND["Service"], "ml", "sel", loop, sink)
    response = FakeResponse(*events)
    setattr(stream, "_request", lambda query, watch: response)  # noqa: B010 (a fake transport)
    return stream, sink, response


def drain(stream: Stream) -> None:
    loop = stream._loop
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def test_a_watch_hands_over_each_event_and_returns_the_last_version() -> None:
    obj = child("Service", "a")
    stream, sink, response = watched(
        {
            "type": "ADDED",
            "object": {**obj, "metadata": {**obj["metadata"], "resourceVersion": "7"}},
        },
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
    )
    assert stream._watch("5") == "9"
    drain(stream)
    assert sink.calls == [("changed", "Service", "ADDED", "a")]
    assert response.released


def test_a_410_error_event_means_list_again() -> None:
    """The API server ends a watch whose resourceVersion it no longer keeps with
    an ERROR event carrying a Status of code 410 ("too old resource version")."""
    stream, _, response = watched(
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    )
    with pytest.raises(Gone):
        stream._watch("5")
    assert response.released


def test_another_error_event_is_retried_as_a_failure() -> None:
    stream, _, _ = watched({"type": "ERROR", "object": {"code": 500, "message": "boom"}})
    with pytest.raises(StreamError, match="boom"):
        stream._watch("5")


def test_objects_of_namespaces_out_of_scope_are_dropped_on_arrival() -> None:
    stream, sink, _ = watched(
        {"type": "ADDED", "object": child("Service", "mine", namespace="team-a")},
        {"type": "ADDED", "object": child("Service", "theirs", namespace="other")},
    )
    stream._keep = in_scope(("team-*",))
    stream._watch("5")
    drain(stream)
    assert sink.calls == [("changed", "Service", "ADDED", "mine")]


def test_a_listed_item_gets_the_kind_and_apiversion_its_list_carries() -> None:
    """A list's items come without them; the cache must hold what a watch event
    holds, or every child listed at a restart compares as changed and is
    re-applied (the bug this caught: 5000 writes restarting over 1000)."""
    item = child("Deployment", "mnist")
    del item["kind"]
    page = {"kind": "DeploymentList", "metadata": {"resourceVersion": "12"}, "items": [item]}
    sink = Recorder()
    got: list[dict[str, Any]] = []
    sink.changed = lambda kind, events: got.extend(e.obj for e in events)  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    stream = Stream(FakeApiClient(), kinds.BY_KIND["Deployment"], None, "sel", loop, sink)
    setattr(stream, "_request", lambda query, watch: FakeResponse(page))  # noqa: B010
    assert stream._list() == "12"
    drain(stream)
    assert [(o["kind"], o["apiVersion"]) for o in got] == [("Deployment", "apps/v1")]
    assert ("relisted", "Deployment", None, frozenset({("ml", "mnist")})) in sink.calls
