"""resync.py: ServedModels deleted while kopf's watch was down lose their workers."""

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


def test_only_the_servedmodels_are_listed_and_a_live_one_keeps_its_worker() -> None:
    """The children's streams drop what they miss themselves (watch.py): a
    resync lists only ServedModels, in the namespaces that have workers."""
    h = Harness()

    async def scenario() -> None:
        h.ctx.poke(KEY, body())
        h.ctx.cache.observe("Pod", labelled("Pod", "p1"), deleted=False)
        lister = Lister({"servedmodels": ["mnist"]})
        assert await resync_once(lister, h.ctx) == 0
        assert [path for path, _ in lister.requests] == [
            f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{KEY[0]}/servedmodels"
        ]
        assert list(h.ctx.workers) == [KEY] and set(h.ctx.cache.pods[KEY]) == {"p1"}
        await h.ctx.stop()

    asyncio.run(scenario())


def test_a_servedmodel_created_while_the_list_ran_keeps_its_worker() -> None:
    h = Harness()

    async def scenario() -> None:
        h.ctx.poke(KEY, body())
        late = (KEY[0], "late")

        def new_servedmodel_event() -> None:
            h.ctx.poke(late, {**body(), "metadata": {**body()["metadata"], "name": "late"}})

        lister = Lister({"servedmodels": ["mnist"]}, during=new_servedmodel_event)
        assert await resync_once(lister, h.ctx) == 0
        assert set(h.ctx.workers) == {KEY, late}
        await h.ctx.stop()

    asyncio.run(scenario())


def test_a_servedmodel_deleted_without_an_event_loses_its_worker() -> None:
    h = Harness()

    async def scenario() -> None:
        h.ctx.poke(KEY, body())
        h.ctx.cache.observe("Pod", labelled("Pod", "p1"), deleted=False)
        lister = Lister({})
        assert await resync_once(lister, h.ctx, shard_selector="shard=a") == 1
        assert h.ctx.workers == {} and h.ctx.cache.entries() == set()
        assert lister.requests[0][1] == [("labelSelector", "shard=a")]

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
