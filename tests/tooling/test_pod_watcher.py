"""localdev.support.clients.PodWatcher: a broken watch fails the observing test.

The API is a fake of CoreV1Api.list_namespaced_pod (the one call the watcher
makes, as list and as watch): no cluster is needed to break a watch on cue.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from localdev.support.waiting import wait_until

pytestmark = pytest.mark.tensorflow  # clients.py imports tensorflow-serving-api's messages
clients = pytest.importorskip("localdev.support.clients")


class QuietStream:
    """A watch response with no event, ended by the server's timeout."""

    status = 200

    def __init__(self, idle: threading.Event) -> None:
        self._idle = idle

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        self._idle.wait(0.05)  # the watch's short timeout, shortened
        return iter(())

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeCore:
    """Lists nothing; the watches named in `broken` fail like a dropped connection."""

    def __init__(self, broken: set[int]) -> None:
        self.broken = broken
        self.lists = 0
        self.watches = 0
        self._idle = threading.Event()

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        """:return: V1PodList"""  # the watch reads the item type from the docstring
        if kwargs.get("watch"):
            self.watches += 1
            if self.watches in self.broken:
                raise ConnectionResetError("connection reset by the API server")
            return QuietStream(self._idle)
        self.lists += 1
        items = {"items": [], "metadata": {"resourceVersion": str(self.lists)}}
        return SimpleNamespace(data=json.dumps(items))


def watcher(core: FakeCore) -> Any:
    pods = clients.PodWatcher(SimpleNamespace(), "ns", "mnist")
    pods._core = core
    return pods


def test_a_watch_that_broke_and_relisted_fails_the_observing_block() -> None:
    core = FakeCore(broken={2})
    with pytest.raises(AssertionError, match="relisted 1 time"), watcher(core):
        wait_until(lambda: core.watches >= 4, timeout=30, what="watches after the break")
    assert core.lists == 2


def test_a_watch_resumed_from_its_resource_version_is_no_gap() -> None:
    core = FakeCore(broken=set())
    with watcher(core) as pods:
        wait_until(lambda: core.watches >= 4, timeout=30, what="several short watches")
    assert (core.lists, pods.relists) == (1, [])
