"""resync.py: objects deleted while a watch was down leave the cache; nothing else does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import pytest

from tests.unit.test_reconcile import KEY, Harness, body
from tfserving_operator import api
from tfserving_operator.resync import resync_once


def labelled(kind: str, name: str, owner: str = KEY[1]) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": KEY[0],
            "labels": {api.LABEL_SERVEDMODEL: owner},
        },
    }


class Lister:
    """The API server's lists: name sets per (plural); records each request."""

    def __init__(self, objects: dict[str, list[str]], during: Any = None) -> None:
        self.objects = objects
        self.requests: list[tuple[str, list[tuple[str, str]]]] = []
        self.during = during  # runs at the first request: a watch event arriving meanwhile

    async def request(
        self, method: str, path: str, *, query: Iterable[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        assert method == "GET"
        self.requests.append((path, list(query)))
        if self.during is not None:
            self.during()
            self.during = None
        plural = path.rsplit("/", 1)[1]
        return {"items": [{"metadata": {"name": n}} for n in self.objects.get(plural, [])]}


def test_objects_gone_without_an_event_are_dropped_and_their_worker_woken() -> None:
    h = Harness()

    async def scenario() -> None:
        h.ctx.poke(KEY, body())
        worker = h.ctx.workers[KEY]
        for kind, name in (("Pod", "p1"), ("Pod", "p2"), ("Deployment", "mnist")):
            h.ctx.cache.observe(kind, labelled(kind, name), deleted=False)
        worker._wake.clear()
        lister = Lister({"servedmodels": ["mnist"], "pods": ["p1"], "deployments": ["mnist"]})
        assert await resync_once(lister, h.ctx) == 1
        assert set(h.ctx.cache.pods[KEY]) == {"p1"}
        assert KEY in h.ctx.cache.deployments
        assert worker._wake.is_set()
        # Only our objects are listed.
        assert all(
            ("labelSelector", api.LABEL_SERVEDMODEL) in query
            for path, query in lister.requests
            if not path.endswith("/servedmodels")
        )
        await h.ctx.stop()

    asyncio.run(scenario())


def test_an_object_seen_after_the_list_began_stays() -> None:
    h = Harness()

    async def scenario() -> None:
        h.ctx.poke(KEY, body())
        h.ctx.cache.observe("Pod", labelled("Pod", "p1"), deleted=False)

        def new_pod_event() -> None:
            h.ctx.cache.observe("Pod", labelled("Pod", "p-new"), deleted=False)

        lister = Lister({"servedmodels": ["mnist"], "pods": ["p1"]}, during=new_pod_event)
        assert await resync_once(lister, h.ctx) == 0
        assert set(h.ctx.cache.pods[KEY]) == {"p1", "p-new"}
        await h.ctx.stop()

    asyncio.run(scenario())


def test_a_servedmodel_deleted_without_an_event_loses_its_worker() -> None:
    h = Harness()

    async def scenario() -> None:
        h.ctx.poke(KEY, body())
        h.ctx.cache.observe("Pod", labelled("Pod", "p1"), deleted=False)
        assert await resync_once(Lister({}), h.ctx, shard_selector="shard=a") == 2
        assert h.ctx.workers == {} and h.ctx.cache.entries() == set()

    asyncio.run(scenario())


def test_a_gate_write_answered_404_drops_the_pod(caplog: pytest.LogCaptureFixture) -> None:
    """The pod was deleted while the watch was down: the gate write is the first
    to know. The other pod's gate is still written and shown in the status."""
    from tests.unit.builders import answer
    from tests.unit.test_reconcile import pod
    from tfserving_operator.api import GateReason
    from tfserving_operator.views import ModelState

    h = Harness()

    async def scenario() -> None:
        worker = await h.start(body(version=3))
        h.pods(pod("gone", 3), pod("here", 3))
        h.prober.answers["gone"] = answer("gone", 3, ModelState.AVAILABLE)
        h.prober.answers["here"] = answer("here", 3, ModelState.AVAILABLE)
        h.applier.gone.add("gone")
        await worker.reconcile()
        assert set(h.ctx.cache.pods[KEY]) == {"here"}
        assert h.applier.gates == [("here", True, GateReason.AVAILABLE)]
        (entry,) = h.applier.status["pods"]
        assert (entry["name"], entry["gate"]) == ("here", GateReason.AVAILABLE)

    with caplog.at_level(logging.INFO, logger="tfserving_operator.reconcile"):
        asyncio.run(scenario())
    assert "ml/mnist: pod gone is gone (404 on its gate)" in caplog.messages
