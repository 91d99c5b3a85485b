"""The CRD as a document: it teaches the API (kubectl explain) and its rules name their fields.

The cluster suite (tests/cluster/test_admission.py) proves each rule refuses
what it should; these checks need no cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tfserving_operator import api

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / f"{api.PLURAL}.{api.GROUP}.yaml"
CRD = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (".spec.storage.uri", ".spec.env[]", ...)."""
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from nodes(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from nodes(node["additionalProperties"], f"{path}{{}}")


def named_properties() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node in nodes(SCHEMA, ""):
        for key, child in (node.get("properties") or {}).items():
            yield f"{path}.{key}", child


def test_identity_and_subresources() -> None:
    assert CRD["spec"]["group"] == api.GROUP
    assert CRD["spec"]["names"]["kind"] == api.KIND
    assert CRD["spec"]["names"]["plural"] == api.PLURAL
    assert "sm" in CRD["spec"]["names"]["shortNames"]
    assert VERSION["name"] == api.VERSION and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_every_property_has_a_description() -> None:
    """kubectl explain prints these; a field without one teaches nothing."""
    # The API server forbids anything but name/generateName under metadata.
    missing = [
        path
        for path, node in named_properties()
        if path != ".metadata" and not str(node.get("description", "")).strip()
    ]
    assert not missing, f"properties without a description: {missing}"
    assert SCHEMA["description"].strip()


def test_the_description_check_can_fail() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert [p for p, n in nodes(schema, "") if "description" not in n] == ["", ".a"]


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node in nodes(SCHEMA, ""):
        for rule in node.get("x-kubernetes-validations") or ():
            yield path, rule


@pytest.mark.parametrize(("path", "rule"), list(rules()), ids=lambda v: str(v)[:60])
def test_every_rule_message_names_its_field(path: str, rule: dict[str, Any]) -> None:
    """The message (what kubectl prints) names the field the rule is about."""
    assert rule.get("message"), rule
    target = (path + rule.get("fieldPath", "")).lstrip(".").replace("[]", "")
    if not target:  # rules at the root are about the object's name
        target = "metadata.name"
    assert target in rule["message"], (target, rule["message"])
    assert rule.get("reason", "FieldValueInvalid") in {"FieldValueInvalid", "FieldValueForbidden"}


def test_there_are_rules_for_the_cross_field_constraints() -> None:
    paths = sorted({path for path, _ in rules()})
    assert paths == [
        "",
        ".spec",
        ".spec.autoscaling",
        ".spec.batching",
        ".spec.rollout.canary.steps[]",
        ".spec.serverArgs[]",
        ".spec.storage",
        ".spec.storage.persistentVolumeClaim.subPath",
        ".spec.versionLabels",
        ".spec.versionPolicy",
    ]


def test_defaults_sit_on_described_fields_and_match_their_types() -> None:
    types = {
        "integer": int,
        "boolean": bool,
        "string": str,
        "object": dict,
        "number": float,
        "array": list,
    }
    for path, node in named_properties():
        if "default" in node:
            assert isinstance(node["default"], types[node["type"]]), path
