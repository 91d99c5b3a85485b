"""spec.serverArgs in the CRD is what release.py generates from the pinned
release's flag table (refresh with
`python -m tfserving_operator.release --write-crd crds/servedmodels.serving.tfoperator.dev.yaml`,
then `make manifests`). The cluster suite (tests/cluster/test_admission.py) proves
the rules refuse and accept what they should against the real API server.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tfserving_operator import api, release

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / f"{api.PLURAL}.{api.GROUP}.yaml"
REFRESH = "run `python -m tfserving_operator.release --write-crd <crd>` and `make manifests`"


def crd_server_args() -> dict[str, object]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node: dict[str, object] = schema["properties"]["spec"]["properties"]["serverArgs"]
    return node


def test_crd_server_args_is_the_generated_schema() -> None:
    assert crd_server_args() == release.server_args_schema(), f"serverArgs is stale: {REFRESH}"


def test_crd_file_is_byte_for_byte_the_generated_text() -> None:
    text = CRD_PATH.read_text()
    assert release.rewrite_crd(text) == text, f"serverArgs is stale: {REFRESH}"


def test_generated_yaml_parses_to_the_schema() -> None:
    parsed = yaml.safe_load(release.server_args_yaml(0))
    assert parsed == {"serverArgs": release.server_args_schema()}


def test_cel_cost_bounds_are_set() -> None:
    """Without maxItems and maxLength the API server's cost estimate of the
    regex rules exceeds its budget and it refuses the CRD."""
    node = crd_server_args()
    assert node["maxItems"] == release.MAX_ITEMS
    assert node["items"]["maxLength"] == release.MAX_ITEM_LENGTH  # type: ignore[index]


def test_rules_name_the_field_and_the_release() -> None:
    rules = release.item_rules()
    assert all(r["message"].startswith("spec.serverArgs") for r in rules)
    assert any(
        f"not a flag of tensorflow_model_server {release.TF_SERVING_VERSION}" in r["message"]
        for r in rules
    )


def test_every_server_flag_is_in_the_known_names_rule() -> None:
    (rule,) = [r["rule"] for r in release.item_rules() if "not a flag" in r["message"]]
    names = re.search(r"\^--\(([a-z0-9_|]+)\)", rule)
    assert names is not None, rule
    assert set(names[1].split("|")) == set(release.SERVER_FLAGS)


def test_operator_flags_are_flags_of_the_server() -> None:
    assert set(release.OPERATOR_FLAGS) <= set(release.SERVER_FLAGS)
    assert set(release.NON_SERVING_FLAGS) <= set(release.SERVER_FLAGS)
    assert set(release.SERVER_FLAGS.values()) <= {"int32", "int64", "bool", "string", "float"}
