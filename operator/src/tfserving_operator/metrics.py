"""The operator's Prometheus metrics: one registry, the families, and the endpoint.

The I/O modules record into `METRICS` (the transport counts API requests,
the prober its probes, the worker its passes, gates and refusals); the pure
modules never import this one (an import-linter contract says so). Names
follow Prometheus conventions (https://prometheus.io/docs/practices/naming/):
a `tfserving_operator_` prefix, `_total` counters, `_seconds` histograms.
Labels carry bounded values only: verbs, status codes, reasons from fixed
vocabularies, and a ServedModel's namespace/name on the per-object gauges,
whose series are removed when the ServedModel goes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

PREFIX = "tfserving_operator"

# No `<name>_created` series beside every counter and histogram: they double
# the series a scrape stores and no query of ours (or the dashboard's) reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Reconcile outcomes (the `outcome` label of the pass counter and histogram).
OUTCOME_SUCCESS = "success"
OUTCOME_ERROR = "error"
# An API request that got no HTTP answer (connection refused, timeout).
CODE_NO_ANSWER = "<error>"
# Probe results: "ok" for an answer, otherwise the probe error's reason.
PROBE_OK = "ok"

# Seconds: a pass is milliseconds to seconds; a probe milliseconds up to its
# timeout; the gate latency spans the kubelet's status sync (about 1 s to tens).
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GATE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class Metrics:
    """Every metric family of the operator, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.reconcile_passes = Counter(
            f"{PREFIX}_reconcile_passes",
            "Reconcile passes of a ServedModel, by outcome.",
            ["outcome"],
            registry=reg,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Duration of one reconcile pass, by outcome.",
            ["outcome"],
            buckets=PASS_BUCKETS,
            registry=reg,
        )
        self.api_requests = Counter(
            f"{PREFIX}_api_requests",
            "Requests to the Kubernetes API server, by HTTP verb and status code.",
            ["verb", "code"],
            registry=reg,
        )
        self.probes = Counter(
            f"{PREFIX}_probes",
            "GetModelStatus probes of model servers, by result (ok or the error's reason).",
            ["result"],
            registry=reg,
        )
        self.probe_duration = Histogram(
            f"{PREFIX}_probe_duration_seconds",
            "GetModelStatus round trips (the wait for a probe slot excluded).",
            buckets=PROBE_BUCKETS,
            registry=reg,
        )
        self.gate_decisions = Counter(
            f"{PREFIX}_gate_decisions",
            "Readiness-gate writes on model-server pods, by decision (open/closed) and reason.",
            ["decision", "reason"],
            registry=reg,
        )
        self.gate_latency = Histogram(
            f"{PREFIX}_gate_latency_seconds",
            "From the probe that found a pod's versions AVAILABLE to the pod seen Ready.",
            buckets=GATE_BUCKETS,
            registry=reg,
        )
        self.refusals = Counter(
            f"{PREFIX}_refusals",
            "Target version sets refused (and rolled back from), by reason.",
            ["reason"],
            registry=reg,
        )
        self.ready_replicas = Gauge(
            f"{PREFIX}_servedmodel_ready_replicas",
            "Ready model-server pods of a ServedModel (its status.readyReplicas).",
            ["namespace", "name"],
            registry=reg,
        )
        self.serving_versions = Gauge(
            f"{PREFIX}_servedmodel_serving_versions",
            "How many model versions a ServedModel's ready pods serve.",
            ["namespace", "name"],
            registry=reg,
        )
        self.latest_serving_version = Gauge(
            f"{PREFIX}_servedmodel_latest_serving_version",
            "The highest model version a ServedModel's ready pods serve (0: none).",
            ["namespace", "name"],
            registry=reg,
        )

    def family_names(self) -> list[str]:
        """The name of every family as /metrics exposes it (counters with `_total`)."""
        names = []
        for collector in self.registry.collect():
            suffix = "_total" if collector.type == "counter" else ""
            names.append(collector.name + suffix)
        return sorted(names)

    def observe_pass(self, outcome: str, seconds: float) -> None:
        """One reconcile pass ended."""
        self.reconcile_passes.labels(outcome).inc()
        self.reconcile_duration.labels(outcome).observe(seconds)

    def observe_request(self, verb: str, code: int | str) -> None:
        """One API request answered (or not: CODE_NO_ANSWER)."""
        self.api_requests.labels(verb.upper(), str(code)).inc()

    def observe_probe(self, result: str, seconds: float) -> None:
        """One GetModelStatus probe ended."""
        self.probes.labels(result).inc()
        self.probe_duration.observe(seconds)

    def observe_gate(self, is_open: bool, reason: str) -> None:
        """A gate decision was written."""
        self.gate_decisions.labels("open" if is_open else "closed", reason).inc()

    def set_servedmodel(
        self, namespace: str, name: str, ready: int, versions: Iterable[int]
    ) -> None:
        """The per-ServedModel gauges after a status computation."""
        served = sorted(set(versions))
        self.ready_replicas.labels(namespace, name).set(ready)
        self.serving_versions.labels(namespace, name).set(len(served))
        self.latest_serving_version.labels(namespace, name).set(served[-1] if served else 0)

    def forget_servedmodel(self, namespace: str, name: str) -> None:
        """The ServedModel is gone: drop its series (no stale gauges)."""
        for gauge in (self.ready_replicas, self.serving_versions, self.latest_serving_version):
            # Never set when the ServedModel never got a status.
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)


def parse_versions(serving: str) -> list[int]:
    """The version numbers of a status.servingVersions string ("1,2"; "" for none)."""
    return [int(part) for part in serving.split(",") if part.strip().isdigit()]


# The operator process's metrics: the modules that do I/O record here.
METRICS = Metrics()


def serve(port: int, metrics: Metrics = METRICS) -> None:
    """Expose /metrics on every interface at `port` (a daemon thread; 0: off)."""
    if port:
        start_http_server(port, registry=metrics.registry)
