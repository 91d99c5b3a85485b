"""What operators of the operator see: /metrics of a running operator, and
Events that count their repeats (issue 17)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kubernetes import client

from localdev.support.k8s import (
    create_sm,
    custom,
    delete_sm,
    get_sm,
    patch_sm,
    servedmodel,
    wait_condition,
    wait_sm,
)
from localdev.support.models import make_model_dir
from localdev.support.waiting import wait_until
from tests.unit.test_metrics import EXPECTED_FAMILIES
from tfserving_operator import api

Body = dict[str, Any]


def families(text: str) -> set[str]:
    """The metric families an exposition text declares (its # TYPE lines)."""
    found = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        name, kind = match.groups()
        # Older clients write a counter's TYPE line without its _total suffix.
        found.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
    return found


def series_value(text: str, name: str, labels: str) -> float | None:
    """The value of `name{labels}` in an exposition text (labels as written there)."""
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_metrics_endpoint_shows_every_family_after_a_reconcile(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    base = make_model_dir(model_store, "metrics", good=(1,))
    spec = {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(base)}},
        "version": 1,
    }
    create_sm(api_client, namespace, servedmodel("metrics", spec))
    wait_condition(api_client, namespace, "metrics", "Ready")
    labels = f'name="metrics",namespace="{namespace}"'
    ready = "tfserving_operator_servedmodel_ready_replicas"
    wait_until(
        lambda: series_value(operator.metrics_text(), ready, labels) == 1.0,
        timeout=30,
        what=f"{ready}{{{labels}}} == 1",
    )
    # The gate latency is observed by the pass that sees the pod Ready.
    wait_until(
        lambda: "tfserving_operator_gate_latency_seconds_count 0.0" not in operator.metrics_text(),
        timeout=30,
        what="a gate latency observation",
    )
    text = operator.metrics_text()
    assert families(text) >= EXPECTED_FAMILIES, EXPECTED_FAMILIES - families(text)
    assert series_value(text, "tfserving_operator_servedmodel_latest_serving_version", labels) == 1
    assert series_value(text, "tfserving_operator_servedmodel_serving_versions", labels) == 1
    passes = series_value(text, "tfserving_operator_reconcile_passes_total", 'outcome="success"')
    assert passes and passes >= 1
    applies = series_value(text, "tfserving_operator_api_requests_total", 'code="200",verb="PATCH"')
    assert applies and applies >= 1
    assert series_value(text, "tfserving_operator_probes_total", 'result="ok"')
    opened = 'decision="open",reason="ModelAvailable"'
    assert series_value(text, "tfserving_operator_gate_decisions_total", opened)

    # The ServedModel goes: its series go with it.
    delete_sm(api_client, namespace, "metrics")
    wait_until(
        lambda: f'name="metrics",namespace="{namespace}"' not in operator.metrics_text(),
        timeout=30,
        what="the deleted ServedModel's series to go",
    )


def refusal_events(api_client: Any, namespace: str, name: str) -> list[Body]:
    """events.k8s.io/v1 Events of the refusal, as JSON (the typed client rejects
    Events without an eventTime: core/v1 Events that other components post)."""
    events = custom(api_client).list_namespaced_custom_object(
        "events.k8s.io", "v1", namespace, "events", field_selector=f"regarding.name={name}"
    )
    items: list[Body] = events["items"]
    return [e for e in items if e.get("reason") == "VersionLoadFailed"]


def test_a_repeated_refusal_counts_in_one_event_series(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    base = make_model_dir(model_store, "flaky", good=(2,), broken=(3,))
    spec = {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(base)}},
        "version": 2,
        "rollout": {"loadRetries": 0, "loadRetryIntervalSeconds": 1},
    }
    create_sm(api_client, namespace, servedmodel("flaky", spec))
    wait_condition(api_client, namespace, "flaky", "Ready")
    patch_sm(api_client, namespace, "flaky", {"spec": {"version": 3}})

    def refused(token: str) -> Any:
        def check(body: Body) -> bool:
            status = body.get("status") or {}
            refusal = status.get("refused") or {}
            return refusal.get("retryToken", "") == token and not status.get("rollout")

        return check

    wait_sm(api_client, namespace, "flaky", "v3 refused", refused(""), timeout=120)
    (first,) = wait_until(
        lambda: refusal_events(api_client, namespace, "flaky"),
        timeout=30,
        what="the refusal's Event",
    )
    assert "series" not in first  # a first occurrence is no series yet
    metrics_before = operator.metrics_text()

    # The same refusal again (the retry annotation tries v3 once more).
    retry = {"metadata": {"annotations": {api.ANNOTATION_RETRY: "1"}}}
    patch_sm(api_client, namespace, "flaky", retry)
    wait_sm(api_client, namespace, "flaky", "v3 refused again", refused("1"), timeout=120)

    def counted() -> Any:
        events = refusal_events(api_client, namespace, "flaky")
        return events if len(events) == 1 and "series" in events[0] else None

    (again,) = wait_until(counted, timeout=30, what="the refusal Event's series")
    name = first["metadata"]["name"]
    assert again["metadata"]["name"] == name
    assert again["series"]["count"] == 2
    assert again["series"]["lastObservedTime"] >= first["eventTime"]
    assert again["note"] == first["note"]  # the first occurrence's words stay
    # Seen through core/v1 too (kubectl get events prints the series count).
    response = client.CoreV1Api(api_client).read_namespaced_event(
        name, namespace, _preload_content=False
    )
    assert json.loads(response.data)["series"]["count"] == 2

    refusals = 'reason="VersionLoadFailed"'
    before = series_value(metrics_before, "tfserving_operator_refusals_total", refusals) or 0
    after = series_value(operator.metrics_text(), "tfserving_operator_refusals_total", refusals)
    assert after is not None and after >= before + 1
    assert get_sm(api_client, namespace, "flaky")["spec"]["version"] == 3
