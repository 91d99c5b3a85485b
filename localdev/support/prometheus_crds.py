"""The Prometheus Operator's CRDs, from the Go module proxy, for the monitors test.

The chart's ServiceMonitor and PodMonitor are checked against the real CRDs
(their OpenAPI schemas) in the local cluster. The CRDs are the YAMLs under
example/prometheus-operator-crd/ of the prometheus-operator module at a pinned
version, fetched with `go mod download` (the module proxy checks its
checksum against sum.golang.org) into a cache of ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
MODULE_CACHE = Path.home() / ".cache" / "tfserving-operator" / "gomod"
CRD_FILES = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml")


def crd_paths() -> list[Path]:
    """The ServiceMonitor and PodMonitor CRD files (downloaded once per machine)."""
    if shutil.which("go") is None:
        raise FileNotFoundError("go is not installed: it fetches the CRDs from the module proxy")
    result = subprocess.run(
        ["go", "mod", "download", "-json",
         f"{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}"],
        check=True, capture_output=True, text=True,
        env={**os.environ, "GOMODCACHE": str(MODULE_CACHE), "GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    module_dir = Path(json.loads(result.stdout)["Dir"])
    return [module_dir / "example" / "prometheus-operator-crd" / name for name in CRD_FILES]
