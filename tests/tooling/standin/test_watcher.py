"""The resilient list-then-watch loop, against a scripted fake API function."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from localdev.standin.pods import Watcher

from .helpers import wait_until

pytestmark = pytest.mark.tensorflow


class FakeResponse:
    """Enough of urllib3's response for the kubernetes client's list and watch."""

    status = 200

    def __init__(
        self, data: Any = None, lines: list[Any] | None = None, hold: threading.Event | None = None
    ) -> None:
        self.data = json.dumps(data).encode() if data is not None else b""
        self._lines = lines or []
        self._hold = hold

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self._lines:
            yield (json.dumps(line) + "\n").encode()
        if self._hold is not None:
            self._hold.wait(10)

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": name, "resourceVersion": version}}


class FakeApi:
    """Scripted answers: the API is down, then lists, watches, expiry, relist."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[str, str | None]] = []
        self.lists: list[Any] = [
            RuntimeError("connection refused"),
            {"metadata": {"resourceVersion": "5"}, "items": [pod("a", "4")]},
            {"metadata": {"resourceVersion": "10"}, "items": [pod("b", "6")]},
        ]
        self.watches: list[FakeResponse] = [
            FakeResponse(
                lines=[
                    {"type": "ADDED", "object": pod("b", "6")},
                    {
                        "type": "ERROR",
                        "object": {"code": 410, "reason": "Gone", "message": "too old"},
                    },
                ]
            ),
            FakeResponse(
                lines=[
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "11"}}},
                    {"type": "DELETED", "object": pod("b", "12")},
                ]
            ),
            FakeResponse(hold=self.release),
        ]

    def list_pods(self, **kwargs: Any) -> FakeResponse:
        """A fake list function.

        :return: V1PodList
        """
        if kwargs.get("watch"):
            self.calls.append(("watch", kwargs.get("resource_version")))
            return self.watches.pop(0) if self.watches else FakeResponse(hold=self.release)
        self.calls.append(("list", None))
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return FakeResponse(data=answer)


def test_watcher_recovers_from_errors_and_expiry() -> None:
    api = FakeApi()
    resyncs: list[list[str]] = []
    events: list[tuple[str, str]] = []
    watcher = Watcher(
        "pods",
        api.list_pods,
        on_resync=lambda items: resyncs.append([i["metadata"]["name"] for i in items]),
        on_event=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
        label_selector="serving.tfoperator.dev/servedmodel",
    )
    watcher.start()
    try:
        wait_until(lambda: len(api.calls) >= 6, timeout=10, what="the scripted calls")
        assert resyncs == [["a"], ["b"]]
        assert events == [("ADDED", "b"), ("DELETED", "b")]
        assert api.calls[:6] == [
            ("list", None),  # fails: the API server is down
            ("list", None),
            ("watch", "5"),  # ends with 410 Gone
            ("list", None),
            ("watch", "10"),  # ends normally (server-side timeout)
            ("watch", "12"),  # resumes from the last version seen
        ]
    finally:
        watcher.stop()
        api.release.set()
