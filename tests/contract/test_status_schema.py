"""Every status the operator writes fits the CRD's status schema.

The API server prunes fields a structural schema does not declare, silently:
the operator would then read back a status without them, find it differs
from what it computes, and write it again on every pass (this happened with
status.refused.labels). So every status decide.compute_status can build is
walked against the openAPIV3Schema: each key declared, each value of the
declared type.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit import builders
from tests.unit.builders import answered, probe_error, version_status
from tests.unit.golden.cases import CASES, servedmodel
from tfserving_operator import api, decide, render, spec
from tfserving_operator.settings import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE
from tfserving_operator.spec import VersionSet
from tfserving_operator.views import ModelState, PodView

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "servedmodels.serving.tfoperator.dev.yaml"
SCHEMA = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
STATUS_SCHEMA = SCHEMA["properties"]["status"]
NOW = "2026-01-02T03:04:05Z"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")

# ----- the walk -----------------------------------------------------------------


def violations(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """Everything in `value` the API server would prune or refuse under `schema`."""
    if value is None:
        # Only a merge patch's "delete this key"; the walk of the parent allows it.
        yield f"{path}: null where the schema wants {schema.get('type')}"
        return
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            yield f"{path}: {value!r} is neither int nor string"
        return
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    if kind not in checks:
        yield f"{path}: the schema declares no type"
        return
    if not checks[kind](value):
        yield f"{path}: {value!r} is not a {kind}"
        return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: {value!r} not in {schema['enum']}"
    if schema.get("format") == "date-time" and not RFC3339.match(value):
        yield f"{path}: {value!r} is not an RFC 3339 date-time"
    if kind == "array":
        for i, item in enumerate(value):
            yield from violations(item, schema.get("items") or {}, f"{path}[{i}]")
    if kind == "object":
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for req in schema.get("required") or ():
            if req not in value:
                yield f"{path}: required {req!r} missing"
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key in props:
                if item is None and path == "status":
                    continue  # removes the key (merge patch); never stored
                yield from violations(item, props[key], sub)
            elif isinstance(extra, dict):
                yield from violations(item, extra, sub)
            else:
                yield f"{sub}: not in the schema (the API server prunes it)"


def assert_fits(status: dict[str, Any]) -> None:
    problems = list(violations(status, STATUS_SCHEMA, "status"))
    assert not problems, "\n".join(problems)


# ----- representative inputs ----------------------------------------------------


def parse(body: dict[str, Any]) -> spec.ServedModel:
    return spec.parse(body, DEFAULT_IMAGE, DEFAULT_GPU_IMAGE)


SM = parse(
    servedmodel(
        "classifier",
        {
            "storage": {"hostPath": {"path": "/m"}},
            "versionPolicy": {"specific": {"versions": [1, 2]}},
            "versionLabels": {"stable": 1, "canary": 2},
            "replicas": 2,
        },
    )
)
HASH = render.render(SM, SM.target).config_hash


def pod(name: str, **options: Any) -> PodView:
    """A serving replica of SM unless told otherwise."""
    options = {"config_hash": HASH, "versions": "1,2", **options}
    return builders.pod(name, serving=True, namespace="models", model_name="classifier", **options)


AVAILABLE = answered(
    "p1", version_status(1, ModelState.AVAILABLE), version_status(2, ModelState.AVAILABLE)
)
DEPLOYMENT = builders.deployment(
    HASH, replicas=2, generation=3, observed_generation=3, current_replicas=0
)
REFUSAL = decide.Refusal(
    versions=(1, 2),
    labels=(("canary", 2), ("stable", 1)),
    reason=api.Reason.VERSION_LOAD_FAILED,
    message="model server on pod p3: version 2: garbage",
    time=NOW,
    retry_token="1",
)
PREVIOUS = [
    {
        "type": "Ready",
        "status": "False",
        "reason": "RollingOut",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
]


def outcome(**fields: Any) -> decide.Outcome:
    base: dict[str, Any] = {
        "serve": SM.target,
        "config_hash": HASH,
        "refused": None,
        "failure": None,
        "complete": True,
        "last_good": SM.target,
        "rollout_start": NOW,
    }
    return decide.Outcome(**{**base, **fields})


SCENARIOS: dict[str, tuple[spec.ServedModel, decide.Outcome, list[PodView], dict[str, Any]]] = {
    "ready": (
        SM,
        outcome(),
        [pod("p1"), pod("p2")],
        {"p1": AVAILABLE, "p2": AVAILABLE},
    ),
    "rolling-out": (
        SM,
        outcome(complete=False, last_good=VersionSet.specific([1], {"stable": 1})),
        [
            pod("p1", config_hash="old", versions="1"),
            pod("p2", gate=False, ready=False, gate_reason=api.GateReason.LOADING),
            pod("p3", ip="", phase="Pending", running=False, gate=None, gate_reason=""),
        ],
        {
            "p1": answered("p1", version_status(1, ModelState.AVAILABLE)),
            "p2": answered(
                "p2", version_status(1, ModelState.AVAILABLE), version_status(2, ModelState.LOADING)
            ),
        },
    ),
    "refused-rolled-back": (
        SM,
        outcome(
            serve=VersionSet.specific([1], {"stable": 1}),
            refused=REFUSAL,
            last_good=VersionSet.specific([1], {"stable": 1}),
        ),
        [
            pod("p1", versions="1"),
            pod("p3", gate=False, ready=False, gate_reason=api.GateReason.FAILED),
            pod("p4", terminating=True),
        ],
        {
            "p1": answered("p1", version_status(1, ModelState.AVAILABLE)),
            "p3": answered(
                "p3",
                version_status(1, ModelState.AVAILABLE),
                version_status(2, ModelState.END, 3, "Could not parse saved_model.pb: garbage"),
            ),
        },
    ),
    "refused-nothing-good": (
        SM,
        outcome(refused=REFUSAL, complete=False, last_good=None),
        [
            pod(
                "p1",
                ready=False,
                gate=False,
                gate_reason=api.GateReason.FAILED,
                restart_count=3,
                termination_message="Failed to load servable version 2",
            )
        ],
        {"p1": probe_error("p1", "ServerUnreachable", "refused")},
    ),
    "failed-no-fallback": (
        SM,
        outcome(
            complete=False,
            last_good=None,
            failure=decide.Failure(api.Reason.VERSION_LOAD_TIMEOUT, "not AVAILABLE in 600 s"),
        ),
        [pod("p1", gate=False, ready=False, gate_reason=api.GateReason.LOADING)],
        {"p1": answered("p1", version_status(2, ModelState.LOADING))},
    ),
    "unschedulable": (
        parse(servedmodel("big", {"storage": {"hostPath": {"path": "/m"}}, "gpus": 16})),
        outcome(serve=VersionSet(policy="latest"), complete=False, last_good=None),
        [
            pod(
                "p1",
                ip="",
                phase="Pending",
                running=False,
                ready=False,
                gate=None,
                gate_reason="",
                versions="latest",
                unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            )
        ],
        {},
    ),
    "latest-policy-rest-off": (
        parse(
            servedmodel(
                "embedder",
                {
                    "storage": {"uri": "s3://bucket/m"},
                    "versionPolicy": {"latest": {"numVersions": 2}},
                    "ports": {"rest": 0},
                },
            )
        ),
        outcome(serve=VersionSet(policy="latest", num_versions=2), last_good=SM.target),
        [pod("p1", versions="latest:2")],
        {
            "p1": answered(
                "p1",
                version_status(3, ModelState.AVAILABLE),
                version_status(4, ModelState.UNLOADING),
            )
        },
    ),
    "scaled-to-zero": (
        parse(servedmodel("zero", {"storage": {"hostPath": {"path": "/m"}}, "replicas": 0})),
        outcome(serve=VersionSet(policy="latest")),
        [],
        {},
    ),
}


def compute(scenario: str) -> dict[str, Any]:
    sm, out, pods, probes = SCENARIOS[scenario]
    return decide.compute_status(sm, out, DEPLOYMENT, pods, probes, PREVIOUS, NOW)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_status_fits_the_schema(scenario: str) -> None:
    assert_fits(compute(scenario))


def test_scenarios_cover_every_optional_part() -> None:
    """The walk only proves what the scenarios produce: make sure they produce it all."""
    statuses = [compute(s) for s in SCENARIOS]
    assert any(s["refused"] and s["refused"]["labels"] for s in statuses)
    assert any(s["lastGood"] and s["lastGood"]["labels"] for s in statuses)
    assert any(s["rollout"] for s in statuses)
    assert any("rest" not in s["endpoints"] for s in statuses)
    assert any("rest" in s["endpoints"] for s in statuses)
    versions = [v for s in statuses for p in s["pods"] for v in p.get("versions", [])]
    assert any("errorMessage" in v for v in versions)
    assert {c["status"] for s in statuses for c in s["conditions"]} == {"True", "False"}
    reasons = {c["reason"] for s in statuses for c in s["conditions"]}
    assert {api.Reason.UNSCHEDULABLE, api.Reason.ROLLED_BACK, api.Reason.SCALED_TO_ZERO} <= reasons


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_status_survives_pruning_unchanged(scenario: str) -> None:
    """Stored and read back, the status is what was written: no rewrite loop."""
    status = compute(scenario)
    stored = {k: v for k, v in status.items() if v is not None}
    assert decide.status_patch(stored, status) is None
    memory = decide.memory_from_status(stored)
    out = SCENARIOS[scenario][1]
    assert memory.refused == out.refused
    assert memory.last_good == out.last_good


def test_conditions_have_the_standard_shape() -> None:
    for scenario in SCENARIOS:
        conditions = compute(scenario)["conditions"]
        assert [c["type"] for c in conditions] == [
            "Ready",
            "Progressing",
            "Degraded",
            "Reconciling",
            "Stalled",
        ]
        for cond in conditions:
            assert set(cond) == {
                "type",
                "status",
                "reason",
                "message",
                "lastTransitionTime",
                "observedGeneration",
            }
            assert re.match(r"^[A-Z][A-Za-z0-9]*$", cond["reason"]), cond
            datetime.strptime(cond["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ")


def test_the_walk_catches_an_undeclared_field() -> None:
    """It can fail: the field that once went missing, and a wrong type."""
    status = compute("refused-rolled-back")
    status["refused"]["labelz"] = {"stable": 1}
    status["readyReplicas"] = "1"
    problems = list(violations(status, STATUS_SCHEMA, "status"))
    assert "status.refused.labelz: not in the schema (the API server prunes it)" in problems
    assert "status.readyReplicas: '1' is not a integer" in problems


def test_invalid_spec_status_fits_the_schema() -> None:
    """What reconcile writes for a spec it cannot use: conditions built by decide.condition."""
    conditions = [
        decide.condition(ctype, ctype == "Degraded", api.Reason.INVALID_SPEC, "bad", 4, [], NOW)
        for ctype in ("Ready", "Progressing", "Degraded")
    ]
    assert_fits({"observedGeneration": 4, "conditions": conditions})


def test_printer_columns_and_scale_paths_point_at_declared_fields() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    version_ = crd["spec"]["versions"][0]
    paths = [c["jsonPath"] for c in version_["additionalPrinterColumns"]]
    scale = version_["subresources"]["scale"]
    paths += [scale["specReplicasPath"], scale["statusReplicasPath"], scale["labelSelectorPath"]]
    for path in paths:
        if path.startswith(".metadata."):
            continue
        node = SCHEMA
        for part in re.sub(r"\[\?.*\]", "", path).strip(".").split("."):
            node = node["properties"][part] if node.get("type") == "object" else node["items"]
            if node.get("type") == "array":
                node = node["items"]
        assert node, path
    for scenario, (sm, *_) in SCENARIOS.items():
        assert compute(scenario)["selector"] == f"{api.LABEL_SERVEDMODEL}={sm.name}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_ready_status_of_every_golden_case_fits(case: str) -> None:
    sm = parse(CASES[case])
    children = render.render(sm, sm.target)
    versions = ",".join(map(str, sm.target.versions)) or sm.target.describe()
    pods = [pod("p1", versions=versions, config_hash=children.config_hash)]
    probes = {"p1": answered("p1", version_status(1, ModelState.AVAILABLE))}
    out = outcome(serve=sm.target, config_hash=children.config_hash, last_good=None)
    assert_fits(decide.compute_status(sm, out, DEPLOYMENT, pods, probes, [], NOW))
