"""Operator settings as the install paths set them (TFSO_* variables in the chart's Deployment)."""

from __future__ import annotations

import pytest

from tfserving_operator.settings import RANDOM_PRIORITY_RANGE, Settings, SettingsError


def test_defaults_are_clusterwide_and_unpeered() -> None:
    settings = Settings.from_env({})
    assert settings.namespaces == ()
    assert settings.peering == ""
    assert settings.liveness_port == 8080


def test_namespaces_and_peering_from_env() -> None:
    settings = Settings.from_env(
        {
            "TFSO_NAMESPACES": "team-a, team-b,,",
            "TFSO_PEERING": "tfso",
            "TFSO_LIVENESS_PORT": "9090",
            "TFSO_LABEL_SELECTOR": "team=vision,tier=gold",
        }
    )
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.peering == "tfso"
    assert settings.liveness_port == 9090
    assert settings.label_selector == {"team": "vision", "tier": "gold"}


def test_probe_failure_threshold_defaults_to_three_and_reads_the_env() -> None:
    assert Settings.from_env({}).probe_failure_threshold == 3
    assert Settings.from_env({"TFSO_PROBE_FAILURE_THRESHOLD": "1"}).probe_failure_threshold == 1


def test_configured_peering_priority_is_kept() -> None:
    settings = Settings.from_env({"TFSO_PEERING": "tfso", "TFSO_PEERING_PRIORITY": "7"})
    assert settings.peering_priority_or_random() == 7


def test_unset_peering_priority_is_random_and_positive() -> None:
    """Replicas of one Deployment share their env, yet must not share a priority:
    kopf pauses every replica that sees a live peer of its own priority."""
    settings = Settings.from_env({"TFSO_PEERING": "tfso"})
    drawn = {settings.peering_priority_or_random() for _ in range(50)}
    assert len(drawn) > 45
    assert all(1 <= p <= RANDOM_PRIORITY_RANGE for p in drawn)


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"TFSO_PEERING_PRIORITY": "-1"}, "TFSO_PEERING_PRIORITY"),
        ({"TFSO_PEERING_PRIORITY": "high"}, "TFSO_PEERING_PRIORITY"),
        ({"TFSO_LIVENESS_PORT": "http"}, "TFSO_LIVENESS_PORT"),
        ({"TFSO_LABEL_SELECTOR": "team"}, "TFSO_LABEL_SELECTOR"),
        ({"TFSO_PROBE_FAILURE_THRESHOLD": "0"}, "TFSO_PROBE_FAILURE_THRESHOLD"),
        ({"TFSO_PROBE_FAILURE_THRESHOLD": "two"}, "TFSO_PROBE_FAILURE_THRESHOLD"),
        ({"TFSO_OPERATOR_POD_LABELS": ","}, "TFSO_OPERATOR_POD_LABELS"),
        ({"TFSO_OPERATOR_POD_LABELS": "name"}, "TFSO_OPERATOR_POD_LABELS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_metrics_port_defaults_to_8081_and_zero_turns_it_off() -> None:
    assert Settings.from_env({}).metrics_port == 8081
    assert Settings.from_env({"TFSO_METRICS_PORT": "0"}).metrics_port == 0
    with pytest.raises(SettingsError, match="TFSO_METRICS_PORT"):
        Settings.from_env({"TFSO_METRICS_PORT": "70000"})


def test_operator_peer_defaults_to_the_chart_defaults_and_reads_the_env() -> None:
    default = Settings.from_env({}).operator_peer()
    assert (default.namespace, dict(default.pod_labels)) == (
        "tfserving-operator-system",
        {"app.kubernetes.io/name": "tfserving-operator"},
    )
    chart = Settings.from_env(
        {
            "TFSO_OPERATOR_NAMESPACE": "platform",
            "TFSO_OPERATOR_POD_LABELS": "app.kubernetes.io/instance=prod,"
            "app.kubernetes.io/name=serving-ops",
        }
    ).operator_peer()
    assert chart.namespace == "platform"
    assert dict(chart.pod_labels) == {
        "app.kubernetes.io/instance": "prod",
        "app.kubernetes.io/name": "serving-ops",
    }
