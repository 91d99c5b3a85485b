"""The CRD's embedded Kubernetes types are Kubernetes' own schemas
(localdev/kube_schemas.py, from the pinned release's OpenAPI; refresh with
`make manifests`). tests/reliability/test_bad_input.py shows the API server
refusing at admission what the Deployment's apply could not type-check, and
tests/cluster/test_admission.py that objects stored under the old free-form
schema still read and update.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from localdev import kube_schemas
from tfserving_operator import api

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / f"{api.PLURAL}.{api.GROUP}.yaml"


def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]


@pytest.fixture(scope="module")
def openapi() -> Path:
    """The pinned release's OpenAPI documents, if this machine has the module."""
    try:
        return kube_schemas.openapi_dir(offline=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("k8s.io/kubernetes module not in the Go module cache (make sim-build)")


def test_crd_file_is_byte_for_byte_the_generated_text(openapi: Path) -> None:
    text = CRD_PATH.read_text()
    assert kube_schemas.rewrite_crd(text) == text, "embedded types are stale: make manifests"


@pytest.mark.parametrize("field", ["env", "imagePullSecrets"])
def test_names_are_list_map_keys_as_in_the_pod_api(field: str) -> None:
    node = spec_schema()["properties"][field]
    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in node["items"]["required"]


def test_no_embedded_field_is_free_form() -> None:
    """Nothing under spec keeps unknown fields: a typo is pruned or refused at
    admission, never carried into the pod template."""
    assert "x-kubernetes-preserve-unknown-fields" not in yaml.safe_dump(spec_schema())


def test_our_limits_and_descriptions_win() -> None:
    props = spec_schema()["properties"]
    assert props["env"]["maxItems"] == 128
    assert props["env"]["items"]["properties"]["name"]["minLength"] == 1
    assert props["affinity"]["description"] == "Pod affinity rules (core/v1 Affinity)."
    selector = props["networkPolicy"]["properties"]["clientSelector"]
    assert set(selector["properties"]) == {"matchLabels", "matchExpressions"}
