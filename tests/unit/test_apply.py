"""apply.py: every write's method, path, content type and field manager, against a
recording transport (the requests the API server would receive)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from tfserving_operator import api
from tfserving_operator.apply import (
    APPLY_CONTENT_TYPE,
    MERGE_CONTENT_TYPE,
    STRATEGIC_CONTENT_TYPE,
    Applier,
)
from tfserving_operator.kube import ApiError


@dataclass
class Sent:
    method: str
    path: str
    body: Any
    content_type: str | None
    query: list[tuple[str, str]]
    ok_statuses: tuple[int, ...]


class RecordingTransport:
    """Records each request; answers with the body sent, or raises a queued error."""

    def __init__(self, error: ApiError | None = None) -> None:
        self.sent: list[Sent] = []
        self.error = error

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: Iterable[tuple[str, str]] = (),
        timeout: float = 30.0,
        ok_statuses: Iterable[int] = (),
    ) -> dict[str, Any]:
        self.sent.append(Sent(method, path, body, content_type, list(query), tuple(ok_statuses)))
        if self.error is not None:
            raise self.error
        return dict(body or {})


MANIFEST = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "mnist", "namespace": "ml"},
}


def test_apply_is_server_side_apply_with_our_field_manager() -> None:
    kube = RecordingTransport()
    asyncio.run(Applier(kube).apply(MANIFEST))
    (sent,) = kube.sent
    assert (sent.method, sent.path) == ("PATCH", "/apis/apps/v1/namespaces/ml/deployments/mnist")
    assert sent.content_type == APPLY_CONTENT_TYPE
    assert sent.query == [("fieldManager", api.FIELD_MANAGER), ("force", "true")]


def test_dry_run_asks_for_all_stages() -> None:
    kube = RecordingTransport()
    asyncio.run(Applier(kube).apply(MANIFEST, dry_run=True))
    assert ("dryRun", "All") in kube.sent[0].query


def test_status_is_a_merge_patch_of_the_subresource() -> None:
    kube = RecordingTransport()
    asyncio.run(Applier(kube).patch_status("ml", "mnist", {"servingVersions": "2"}))
    (sent,) = kube.sent
    assert sent.path == f"/apis/{api.GROUP}/{api.VERSION}/namespaces/ml/servedmodels/mnist/status"
    assert (sent.content_type, sent.body) == (
        MERGE_CONTENT_TYPE,
        {"status": {"servingVersions": "2"}},
    )


def test_gate_is_a_pod_status_condition() -> None:
    kube = RecordingTransport()
    asyncio.run(Applier(kube).set_gate("ml", "p", False, "ProbeTimeout", "x" * 2000))
    (sent,) = kube.sent
    assert (sent.path, sent.content_type) == (
        "/api/v1/namespaces/ml/pods/p/status",
        STRATEGIC_CONTENT_TYPE,
    )
    (condition,) = sent.body["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        api.GATE_CONDITION,
        "False",
        "ProbeTimeout",
    )
    assert len(condition["message"]) == 1024


def test_a_gate_on_a_deleted_pod_is_no_error() -> None:
    kube = RecordingTransport(ApiError(404, {"reason": "NotFound"}))
    asyncio.run(Applier(kube).set_gate("ml", "gone", True, "ModelAvailable", ""))
    with pytest.raises(ApiError):
        asyncio.run(
            Applier(RecordingTransport(ApiError(500, {}))).set_gate("ml", "p", True, "", "")
        )


def test_delete_tolerates_already_gone() -> None:
    kube = RecordingTransport()
    asyncio.run(Applier(kube).delete("PodDisruptionBudget", "ml", "mnist"))
    (sent,) = kube.sent
    assert (sent.method, sent.path) == (
        "DELETE",
        "/apis/policy/v1/namespaces/ml/poddisruptionbudgets/mnist",
    )
    assert sent.ok_statuses == (404,)


def test_events_are_best_effort_and_name_the_servedmodel() -> None:
    involved = {"metadata": {"name": "mnist", "namespace": "ml", "uid": "u1"}}
    kube = RecordingTransport()
    asyncio.run(
        Applier(kube).event(involved, "Normal", api.Reason.ROLLOUT_STARTED, "rolling out 3")
    )
    (sent,) = kube.sent
    assert (sent.method, sent.path) == ("POST", "/api/v1/namespaces/ml/events")
    assert sent.body["involvedObject"]["uid"] == "u1"
    assert sent.body["reason"] == "RolloutStarted"
    failing = RecordingTransport(ApiError(403, {"reason": "Forbidden"}))
    asyncio.run(Applier(failing).event(involved, "Warning", "X", "y"))  # no exception
