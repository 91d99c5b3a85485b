"""benchmarks/floor.py: the floor client writes what the operator must write for a
new ServedModel, and nothing else: its children by server-side apply, one status."""

from __future__ import annotations

import copy
from typing import Any

from benchmarks.floor import FloorClient
from tfserving_operator import api as names


class RecordingApi:
    """Answers each request with its body (a server-side apply returns the object)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any], str]] = []

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "", ok: Any = ()
    ) -> dict[str, Any]:
        self.sent.append((method, path, body, content_type))
        answer = copy.deepcopy(body)
        if body.get("kind") == "Deployment":
            answer["metadata"]["generation"] = 1
        return dict(answer)


def servedmodel() -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "m0000", "namespace": "floor", "uid": "uid-1", "generation": 1},
        "spec": {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": "/models/half_plus_three"}},
            "version": 1,
            "replicas": 0,
        },
    }


def test_the_floor_applies_the_children_and_patches_the_status_once() -> None:
    api = RecordingApi()
    FloorClient(api, "floor").reconcile(servedmodel())  # type: ignore[arg-type]
    kinds = [body.get("kind", "status") for _, _, body, _ in api.sent]
    assert kinds == ["ConfigMap", "Service", "Service", "Service", "Deployment", "status"]
    applies, (status_call,) = api.sent[:-1], api.sent[-1:]
    for method, path, body, content_type in applies:
        assert (method, content_type) == ("PATCH", "application/apply-patch+yaml")
        assert f"fieldManager={names.FIELD_MANAGER}&force=true" in path
        assert "dryRun" not in path
        owner = body["metadata"]["ownerReferences"][0]
        assert (owner["uid"], owner["controller"]) == ("uid-1", True)
    method, path, body, content_type = status_call
    assert path.startswith("/apis/") and "/servedmodels/m0000/status?" in path
    assert content_type == "application/merge-patch+json"
    # The status the operator would write: this generation, Ready at zero replicas.
    assert body["status"]["observedGeneration"] == 1
    ready = {c["type"]: c for c in body["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"
