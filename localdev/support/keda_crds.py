"""KEDA's ScaledObject CRD, from the Go module proxy (localdev/support/go_modules.py).

The local cluster runs no KEDA; with its real CRD installed, the API server
checks the operator's ScaledObject render against KEDA's own schema.
"""

from __future__ import annotations

from pathlib import Path

from localdev.support.go_modules import module_dir

KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"


def scaledobject_crd() -> Path:
    """keda.sh_scaledobjects.yaml of the pinned KEDA release."""
    return (
        module_dir(KEDA_MODULE, KEDA_VERSION)
        / "config"
        / "crd"
        / "bases"
        / "keda.sh_scaledobjects.yaml"
    )
