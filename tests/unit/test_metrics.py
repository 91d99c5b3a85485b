"""The operator's metrics: the families, what each recorder adds, and the
per-ServedModel series going away with their ServedModel.

Each test records into a Metrics of its own (a fresh registry), so counts are
exact whatever else ran in this process.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from prometheus_client import generate_latest

from tests.unit.builders import pod
from tfserving_operator.metrics import CODE_NO_ANSWER, Metrics, parse_versions, serve
from tfserving_operator.observe import Prober

EXPECTED_FAMILIES = {
    "tfserving_operator_reconcile_passes_total",
    "tfserving_operator_reconcile_duration_seconds",
    "tfserving_operator_api_requests_total",
    "tfserving_operator_probes_total",
    "tfserving_operator_probe_duration_seconds",
    "tfserving_operator_gate_decisions_total",
    "tfserving_operator_gate_latency_seconds",
    "tfserving_operator_refusals_total",
    "tfserving_operator_servedmodel_ready_replicas",
    "tfserving_operator_servedmodel_serving_versions",
    "tfserving_operator_servedmodel_latest_serving_version",
}


def sample(metrics: Metrics, family: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(family, labels)


def test_every_family_is_registered_with_a_conventional_name() -> None:
    assert set(Metrics().family_names()) == EXPECTED_FAMILIES


def test_a_pass_counts_by_outcome_and_observes_its_duration() -> None:
    m = Metrics()
    m.observe_pass("success", 0.02)
    m.observe_pass("success", 0.3)
    m.observe_pass("error", 1.0)
    name = "tfserving_operator_reconcile_passes_total"
    assert sample(m, name, outcome="success") == 2
    assert sample(m, name, outcome="error") == 1
    hist = "tfserving_operator_reconcile_duration_seconds"
    assert sample(m, f"{hist}_count", outcome="success") == 2
    assert sample(m, f"{hist}_bucket", outcome="success", le="0.025") == 1


def test_api_requests_by_upper_case_verb_and_code() -> None:
    m = Metrics()
    m.observe_request("patch", 200)
    m.observe_request("PATCH", 200)
    m.observe_request("DELETE", 404)
    m.observe_request("GET", CODE_NO_ANSWER)
    name = "tfserving_operator_api_requests_total"
    assert sample(m, name, verb="PATCH", code="200") == 2
    assert sample(m, name, verb="DELETE", code="404") == 1
    assert sample(m, name, verb="GET", code="<error>") == 1


def test_gate_decisions_by_direction_and_reason() -> None:
    m = Metrics()
    m.observe_gate(True, "ModelAvailable")
    m.observe_gate(False, "VersionLoadFailed")
    name = "tfserving_operator_gate_decisions_total"
    assert sample(m, name, decision="open", reason="ModelAvailable") == 1
    assert sample(m, name, decision="closed", reason="VersionLoadFailed") == 1


def test_servedmodel_gauges_are_set_and_removed_with_the_servedmodel() -> None:
    m = Metrics()
    m.set_servedmodel("ml", "mnist", ready=2, versions=[3, 2, 3])
    m.set_servedmodel("ml", "other", ready=1, versions=[])
    assert (
        sample(m, "tfserving_operator_servedmodel_ready_replicas", namespace="ml", name="mnist")
        == 2
    )
    labels = {"namespace": "ml", "name": "mnist"}
    assert sample(m, "tfserving_operator_servedmodel_serving_versions", **labels) == 2
    assert sample(m, "tfserving_operator_servedmodel_latest_serving_version", **labels) == 3
    m.forget_servedmodel("ml", "mnist")
    m.forget_servedmodel("ml", "never-seen")  # no series: nothing to remove, no error
    text = generate_latest(m.registry).decode()
    assert 'name="mnist"' not in text
    assert 'name="other"' in text


def test_parse_versions_reads_the_status_string() -> None:
    assert parse_versions("1,2") == [1, 2]
    assert parse_versions("") == []


def test_a_probe_of_a_closed_port_counts_as_server_unreachable() -> None:
    """A real gRPC call to a port nobody listens on (no fake server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        m = Metrics()
        prober = Prober(timeout=2.0, metrics=m)

        async def probe_once() -> str:
            try:
                result = await prober.probe(pod("p", ip="127.0.0.1", grpc_port=port))
            finally:
                await prober.close()
            return result.error_reason

        assert asyncio.run(probe_once()) == "ServerUnreachable"
    assert sample(m, "tfserving_operator_probes_total", result="ServerUnreachable") == 1
    assert sample(m, "tfserving_operator_probe_duration_seconds_count") == 1


def test_the_endpoint_serves_the_registry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    m = Metrics()
    m.refusals.labels("VersionLoadFailed").inc()
    serve(port, m)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'tfserving_operator_refusals_total{reason="VersionLoadFailed"} 1.0' in text
