"""The Prometheus Operator's CRDs, from the Go module proxy, for the monitors test.

The chart's ServiceMonitor and PodMonitor are checked against the real CRDs
(their OpenAPI schemas) in the local cluster. The CRDs are the YAMLs under
example/prometheus-operator-crd/ of the prometheus-operator module at a pinned
version, fetched with `go mod download` (the module proxy checks its
checksum against sum.golang.org) into a cache of ours.
"""

from __future__ import annotations

from pathlib import Path

from localdev.support.go_modules import module_dir

PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
CRD_FILES = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml")


def crd_paths() -> list[Path]:
    """The ServiceMonitor and PodMonitor CRD files (downloaded once per machine)."""
    found = module_dir(PROMETHEUS_OPERATOR_MODULE, PROMETHEUS_OPERATOR_VERSION)
    return [found / "example" / "prometheus-operator-crd" / name for name in CRD_FILES]
