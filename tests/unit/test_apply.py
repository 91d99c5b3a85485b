"""The Applier (every API write) against a recording fake of the transport,
and `kube.path_for`, the REST paths it writes to.

The fake answers like `kube.Kube.request`: a status of 400 or more that the
caller did not list in `ok_statuses` raises ApiError, anything else returns
the body. So "a 404 on delete is fine" is tested as behaviour, whichever way
the Applier achieves it.

There is no pytest-asyncio: each test drives its coroutine with asyncio.run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import yaml

from tfserving_operator import api
from tfserving_operator.apply import (
    APPLY_CONTENT_TYPE,
    MERGE_CONTENT_TYPE,
    STRATEGIC_CONTENT_TYPE,
    Applier,
    Transport,
)
from tfserving_operator.kube import ApiError, path_for, wire_body

T = TypeVar("T")
NS = "team-a"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@dataclass(frozen=True)
class Call:
    """One request as the transport received it."""

    method: str
    path: str
    body: Any
    content_type: str | None
    query: tuple[tuple[str, str], ...]
    ok_statuses: tuple[int, ...]


@dataclass
class FakeTransport:
    """Records every request; answers `status` (and `answer`) or raises `error`."""

    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None
    calls: list[Call] = field(default_factory=list)

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
        ok = tuple(ok_statuses)
        self.calls.append(Call(method, path, body, content_type, tuple(query), ok))
        if self.error is not None:
            raise self.error
        if self.status >= 400 and self.status not in ok:
            raise ApiError(self.status, {"reason": "Fake", "message": f"HTTP {self.status}"})
        return self.answer

    @property
    def only_call(self) -> Call:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def applier(transport: Transport, field_manager: str = api.FIELD_MANAGER) -> Applier:
    return Applier(transport, field_manager=field_manager)


def deployment_manifest(name: str = "mnist") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": 2},
    }


# ----- apply -------------------------------------------------------------------


def test_apply_is_a_forced_server_side_apply_under_our_field_manager() -> None:
    fake = FakeTransport(answer={"metadata": {"resourceVersion": "9"}})
    manifest = deployment_manifest()
    result = run(applier(fake).apply(manifest))
    call = fake.only_call
    assert (call.method, call.path) == ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/mnist")
    assert call.content_type == APPLY_CONTENT_TYPE == "application/apply-patch+yaml"
    assert call.body == manifest
    assert dict(call.query) == {"fieldManager": api.FIELD_MANAGER, "force": "true"}
    assert result == {"metadata": {"resourceVersion": "9"}}


def test_apply_dry_run_asks_the_server_not_to_persist() -> None:
    fake = FakeTransport()
    run(applier(fake).apply(deployment_manifest(), dry_run=True))
    query = dict(fake.only_call.query)
    assert query == {"fieldManager": api.FIELD_MANAGER, "force": "true", "dryRun": "All"}


def test_apply_uses_the_field_manager_it_was_given() -> None:
    fake = FakeTransport()
    run(applier(fake, field_manager="shard-b").apply(deployment_manifest()))
    assert ("fieldManager", "shard-b") in fake.only_call.query


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("ConfigMap", f"/api/v1/namespaces/{NS}/configmaps/obj"),
        ("Service", f"/api/v1/namespaces/{NS}/services/obj"),
        ("PodDisruptionBudget", f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/obj"),
        ("NetworkPolicy", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/obj"),
    ],
)
def test_apply_goes_to_the_object_of_its_kind_in_its_namespace(kind: str, path: str) -> None:
    fake = FakeTransport()
    run(applier(fake).apply({"kind": kind, "metadata": {"name": "obj", "namespace": NS}}))
    assert fake.only_call.path == path


def test_apply_refused_by_the_server_raises() -> None:
    fake = FakeTransport(status=422)
    with pytest.raises(ApiError) as refused:
        run(applier(fake).apply(deployment_manifest()))
    assert refused.value.status == 422


# ----- delete ------------------------------------------------------------------


def test_delete_sends_background_propagation_to_the_object() -> None:
    fake = FakeTransport()
    run(applier(fake).delete("ConfigMap", NS, "mnist-config-abc"))
    call = fake.only_call
    assert (call.method, call.path) == (
        "DELETE",
        f"/api/v1/namespaces/{NS}/configmaps/mnist-config-abc",
    )
    assert call.body == {"propagationPolicy": "Background"}
    assert call.content_type == "application/json"


def test_delete_of_an_object_already_gone_is_fine() -> None:
    fake = FakeTransport(status=404)
    run(applier(fake).delete("Service", NS, "gone"))  # no ApiError
    assert fake.only_call.method == "DELETE"


@pytest.mark.parametrize("status", [403, 409, 500])
def test_delete_raises_on_other_errors(status: int) -> None:
    with pytest.raises(ApiError):
        run(applier(FakeTransport(status=status)).delete("Service", NS, "svc"))


# ----- patch_status ------------------------------------------------------------


def test_patch_status_merge_patches_the_status_subresource() -> None:
    fake = FakeTransport(answer={"status": {"servingVersions": "2"}})
    patch = {"servingVersions": "2", "refused": None}  # None removes a field
    result = run(applier(fake).patch_status(NS, "mnist", patch))
    call = fake.only_call
    assert call.method == "PATCH"
    assert (
        call.path
        == f"/apis/serving.tfoperator.dev/v1alpha1/namespaces/{NS}/servedmodels/mnist/status"
    )
    assert call.content_type == MERGE_CONTENT_TYPE == "application/merge-patch+json"
    assert call.body == {"status": {"servingVersions": "2", "refused": None}}
    assert dict(call.query) == {"fieldManager": api.FIELD_MANAGER}
    assert result == {"status": {"servingVersions": "2"}}


def test_patch_status_of_a_deleted_servedmodel_raises() -> None:
    with pytest.raises(ApiError) as gone:
        run(applier(FakeTransport(status=404)).patch_status(NS, "mnist", {}))
    assert gone.value.not_found


# ----- set_gate ----------------------------------------------------------------


@pytest.mark.parametrize(("is_open", "status"), [(True, "True"), (False, "False")])
def test_set_gate_patches_the_pod_status_condition(is_open: bool, status: str) -> None:
    fake = FakeTransport()
    run(applier(fake).set_gate(NS, "mnist-abc", is_open, "VersionLoading", "3 LOADING"))
    call = fake.only_call
    assert (call.method, call.path) == ("PATCH", f"/api/v1/namespaces/{NS}/pods/mnist-abc/status")
    assert call.content_type == STRATEGIC_CONTENT_TYPE == "application/strategic-merge-patch+json"
    assert dict(call.query) == {"fieldManager": api.FIELD_MANAGER}
    [condition] = call.body["status"]["conditions"]
    assert RFC3339.match(condition.pop("lastTransitionTime"))
    assert condition == {
        "type": api.GATE_CONDITION,
        "status": status,
        "reason": "VersionLoading",
        "message": "3 LOADING",
    }
    assert set(call.body) == {"status"}


def test_set_gate_keeps_messages_within_1024_characters() -> None:
    fake = FakeTransport()
    run(applier(fake).set_gate(NS, "p", False, "VersionLoadFailed", "x" * 5000))
    [condition] = fake.only_call.body["status"]["conditions"]
    assert condition["message"] == "x" * 1024


def test_set_gate_on_a_pod_deleted_meanwhile_is_fine() -> None:
    fake = FakeTransport(status=404)
    run(applier(fake).set_gate(NS, "gone", True, "VersionsAvailable", ""))  # no ApiError
    assert len(fake.calls) == 1


@pytest.mark.parametrize("status", [403, 409, 422, 500])
def test_set_gate_raises_on_other_errors(status: int) -> None:
    with pytest.raises(ApiError) as failed:
        run(applier(FakeTransport(status=status)).set_gate(NS, "p", True, "R", ""))
    assert failed.value.status == status


# ----- event -------------------------------------------------------------------


def servedmodel(uid: str = "uid-1") -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "mnist", "namespace": NS, "uid": uid, "resourceVersion": "41"},
    }


EVENTS_PATH = f"/apis/events.k8s.io/v1/namespaces/{NS}/events"
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_event_creates_an_events_k8s_io_event_about_the_servedmodel() -> None:
    fake = FakeTransport()
    run(applier(fake).event(servedmodel(), "Warning", "VersionLoadFailed", "3 END: " + "e" * 2000))
    call = fake.only_call
    assert (call.method, call.path) == ("POST", EVENTS_PATH)
    assert call.content_type == "application/json"
    body = call.body
    assert (body["apiVersion"], body["kind"]) == ("events.k8s.io/v1", "Event")
    assert body["metadata"]["namespace"] == NS
    assert re.fullmatch(r"mnist\.[0-9a-f]{16}", body["metadata"]["name"])
    assert body["regarding"] == {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": "mnist",
        "namespace": NS,
        "uid": "uid-1",
        "resourceVersion": "41",
    }
    assert (body["type"], body["reason"], body["action"]) == (
        "Warning",
        "VersionLoadFailed",
        "Reconcile",
    )
    assert len(body["note"]) == 1024 and body["note"].startswith("3 END: ")
    assert MICROTIME.match(body["eventTime"])
    assert body["reportingController"] == api.MANAGED_BY
    assert body["reportingInstance"].startswith(f"{api.MANAGED_BY}-")
    assert "series" not in body


def test_a_repeated_event_grows_one_series_instead_of_new_events() -> None:
    fake = FakeTransport()
    writer = applier(fake)
    for _ in range(3):
        run(writer.event(servedmodel(), "Warning", "VersionLoadFailed", "3 END"))
    first, second, third = fake.calls
    name = first.body["metadata"]["name"]
    assert first.method == "POST"
    for call, count in ((second, 2), (third, 3)):
        assert (call.method, call.path) == ("PATCH", f"{EVENTS_PATH}/{name}")
        assert call.content_type == MERGE_CONTENT_TYPE
        assert call.body["series"]["count"] == count
        assert MICROTIME.match(call.body["series"]["lastObservedTime"])


def test_another_reason_type_or_object_is_another_event() -> None:
    fake = FakeTransport()
    writer = applier(fake)
    run(writer.event(servedmodel(), "Warning", "VersionLoadFailed", "3 END"))
    run(writer.event(servedmodel(), "Normal", "VersionLoadFailed", "odd but distinct"))
    run(writer.event(servedmodel(), "Warning", "RolloutTimedOut", "too slow"))
    run(writer.event(servedmodel(uid="uid-2"), "Warning", "VersionLoadFailed", "new object"))
    assert [c.method for c in fake.calls] == ["POST"] * 4
    assert len({c.body["metadata"]["name"] for c in fake.calls}) == 4


@dataclass
class ExpiredEventTransport(FakeTransport):
    """Answers 404 to every PATCH: the Event expired (the API server's event TTL)."""

    async def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.status = 404 if method == "PATCH" else 200
        return await super().request(method, path, *args, **kwargs)


def test_a_repeat_of_an_expired_event_creates_a_new_one() -> None:
    fake = ExpiredEventTransport()
    writer = applier(fake)
    for _ in range(2):
        run(writer.event(servedmodel(), "Warning", "VersionLoadFailed", "3 END"))
    assert [c.method for c in fake.calls] == ["POST", "PATCH", "POST"]
    assert fake.calls[0].body["metadata"]["name"] != fake.calls[2].body["metadata"]["name"]


@pytest.mark.parametrize(
    "error",
    [ApiError(403, {"reason": "Forbidden"}), ConnectionError("API server gone"), TimeoutError()],
    ids=["forbidden", "connection", "timeout"],
)
def test_event_never_raises(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTransport(error=error)
    with caplog.at_level(logging.WARNING, logger="tfserving_operator.apply"):
        run(applier(fake).event(servedmodel(), "Normal", "ServingVersions", "now serving 2"))
    assert len(fake.calls) == 1
    assert "could not record event ServingVersions on mnist" in caplog.text


def test_event_refused_with_a_status_does_not_raise() -> None:
    fake = FakeTransport(status=500)
    run(applier(fake).event(servedmodel(), "Normal", "ServingVersions", "now serving 2"))
    assert len(fake.calls) == 1


# ----- kube.path_for -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("Pod", NS), f"/api/v1/namespaces/{NS}/pods"),
        (("Pod", NS, "p"), f"/api/v1/namespaces/{NS}/pods/p"),
        (("Pod", NS, "p", "status"), f"/api/v1/namespaces/{NS}/pods/p/status"),
        (("Deployment", NS, "d"), f"/apis/apps/v1/namespaces/{NS}/deployments/d"),
        (("ReplicaSet", NS), f"/apis/apps/v1/namespaces/{NS}/replicasets"),
        (("Event", NS), f"/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        (
            ("ServedModel", NS, "m", "status"),
            f"/apis/serving.tfoperator.dev/v1alpha1/namespaces/{NS}/servedmodels/m/status",
        ),
        (
            ("ServedModel", NS, "m", "scale"),
            f"/apis/serving.tfoperator.dev/v1alpha1/namespaces/{NS}/servedmodels/m/scale",
        ),
        # No namespace: the collection across every namespace.
        (("ServedModel", None), "/apis/serving.tfoperator.dev/v1alpha1/servedmodels"),
        (("Pod", None), "/api/v1/pods"),
        (("ConfigMap", ""), "/api/v1/configmaps"),
    ],
)
def test_path_for(args: tuple[Any, ...], path: str) -> None:
    assert path_for(*args) == path


def test_path_for_an_unknown_kind_fails_loudly() -> None:
    with pytest.raises(KeyError):
        path_for("CronJob", NS, "c")


def test_wire_body_is_utf8_json_without_surrogate_escapes() -> None:
    """The YAML decoder of server-side apply refuses a surrogate pair escape."""
    wire = wire_body({"note": "launch \U0001f680", "plain": "é"})
    assert wire == '{"note":"launch \U0001f680","plain":"é"}'.encode()
    assert b"\\ud83d" not in wire


@pytest.mark.parametrize(
    "text",
    [
        "launch \U0001f680",
        "tab\tnew\nline",
        "del\x7f c1\x80\x9f nel\x85",
        "separators\u2028\u2029",
        "bom\ufeff nonchars\ufffe\uffff",
        "Grüße, 東京",
    ],
)
def test_wire_body_reads_back_as_sent_through_a_yaml_1_1_decoder(text: str) -> None:
    """PyYAML, like the API server's go-yaml, is YAML 1.1: it refuses unprintable
    characters raw and folds NEL and the separators as line breaks."""
    body = {"metadata": {"annotations": {"example.com/note": text}}}
    assert yaml.safe_load(wire_body(body).decode()) == body
    assert json.loads(wire_body(body)) == body


def test_wire_body_never_fails_on_a_lone_surrogate() -> None:
    assert wire_body({"x": "\ud800"}) == b'{"x":"\\ud800"}'


# ----- the survivors of the apply mutation run (docs/mutation.md) ------------------


def test_hand_over_applies_the_fields_under_the_handover_manager() -> None:
    fake = FakeTransport(answer={"metadata": {"resourceVersion": "12"}})
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mnist", "namespace": NS},
        "spec": {"replicas": 3},
    }
    result = run(applier(fake, field_manager="shard-b").hand_over(manifest))
    call = fake.only_call
    assert (call.method, call.path) == ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/mnist")
    assert call.content_type == APPLY_CONTENT_TYPE
    assert call.body == manifest
    assert dict(call.query) == {"fieldManager": api.HANDOVER_FIELD_MANAGER, "force": "true"}
    assert result == {"metadata": {"resourceVersion": "12"}}


def test_set_gate_says_whether_the_pod_was_there() -> None:
    assert run(applier(FakeTransport()).set_gate(NS, "p", True, "VersionsAvailable", "")) is True
    gone = FakeTransport(status=404)
    assert run(applier(gone).set_gate(NS, "p", True, "VersionsAvailable", "")) is False


def test_events_are_written_under_our_field_manager() -> None:
    fake = FakeTransport()
    writer = applier(fake, field_manager="shard-b")
    for _ in range(2):
        run(writer.event(servedmodel(), "Warning", "VersionLoadFailed", "3 END"))
    assert [(c.method, dict(c.query)) for c in fake.calls] == [
        ("POST", {"fieldManager": "shard-b"}),
        ("PATCH", {"fieldManager": "shard-b"}),
    ]


class Clock:
    """time.monotonic as apply.py reads it, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_repeat_after_the_series_finished_is_a_new_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tfserving_operator import apply

    clock = Clock()
    monkeypatch.setattr(apply, "time", clock)
    fake = FakeTransport()
    writer = applier(fake)
    run(writer.event(servedmodel(), "Warning", "VersionLoadFailed", "3 END"))
    clock.now += apply.SERIES_FINISH_SECONDS  # idle exactly as long: still the series
    run(writer.event(servedmodel(), "Warning", "VersionLoadFailed", "3 END"))
    clock.now += apply.SERIES_FINISH_SECONDS + 1  # idle longer: the series is over
    run(writer.event(servedmodel(), "Warning", "VersionLoadFailed", "3 END"))
    assert [c.method for c in fake.calls] == ["POST", "PATCH", "POST"]
    first, _, third = fake.calls
    assert first.body["metadata"]["name"] != third.body["metadata"]["name"]
    assert "series" not in third.body


def test_a_failed_event_is_logged_with_the_error(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTransport(error=ConnectionError("API server gone"))
    with caplog.at_level(logging.WARNING, logger="tfserving_operator.apply"):
        run(applier(fake).event(servedmodel(), "Normal", "ServingVersions", "now serving 2"))
    assert [r.getMessage() for r in caplog.records] == [
        "could not record event ServingVersions on mnist: API server gone"
    ]


def test_the_reporting_instance_fits_the_api_servers_128_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 300)
    instance = applier(FakeTransport()).reporting_instance
    assert instance == f"{api.MANAGED_BY}-" + "h" * (127 - len(api.MANAGED_BY))
    assert len(instance) == 128


@pytest.fixture
def far_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time 5:45 ahead of UTC (a POSIX TZ rule: no tzdata needed)."""
    monkeypatch.setenv("TZ", "XYZ-5:45")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_timestamps_are_utc_whatever_the_local_time_zone(far_local_time: None) -> None:
    from tfserving_operator.apply import now_iso, now_micro

    before = datetime.now(UTC)
    stamps = (
        datetime.strptime(now_iso(), "%Y-%m-%dT%H:%M:%SZ"),
        datetime.strptime(now_micro(), "%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    for stamp in stamps:
        assert abs(stamp.replace(tzinfo=UTC) - before) < timedelta(minutes=5)
