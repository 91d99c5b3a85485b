"""Files of a Go module at a pinned version, from the Go module proxy.

`go mod download` checks the module's checksum against sum.golang.org and
unpacks it into a cache of ours, once per machine. Tests use it for the real
CRDs of projects the operator's output must satisfy (Prometheus Operator,
KEDA), so a schema is checked against its source, never a copy of ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

MODULE_CACHE = Path.home() / ".cache" / "tfserving-operator" / "gomod"


def module_dir(module: str, version: str) -> Path:
    """The unpacked module (downloaded on first use)."""
    if shutil.which("go") is None:
        raise FileNotFoundError("go is not installed: it fetches modules from the module proxy")
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        check=True, capture_output=True, text=True,
        env={**os.environ, "GOMODCACHE": str(MODULE_CACHE), "GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    return Path(json.loads(result.stdout)["Dir"])
