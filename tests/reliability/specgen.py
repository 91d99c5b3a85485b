"""Hypothesis strategies for ServedModel specs, read from the CRD's own schema.

`schema_values(schema)` walks an OpenAPI v3 schema (the CRD's, from crds/)
and draws values its structural rules accept: types, ranges, patterns,
enums, lengths, required fields. The CRD's CEL rules are not modelled, so
`specs()` mostly repairs the cross-field rules it knows (one storage kind,
version or policy, labels on loaded versions) and sometimes leaves them
broken on purpose. Free-form fields (tolerations, affinity, env, selectors,
label and annotation maps) get realistic values most of the time and odd
ones sometimes: the CRD lets them through, the children may not.

`broken_specs()` takes a spec and breaks one field in one way, returning
the field's path so the test can check the refusal names it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from tfserving_operator import release

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "servedmodels.serving.tfoperator.dev.yaml"
MAX_ITEMS = 3
MAX_TEXT = 24
# Any text the API can carry (UTF-8: no lone surrogates), within the Basic
# Multilingual Plane: characters beyond it break the operator's server-side
# apply (a known bug, test_bad_input.py::test_characters_beyond_the_bmp...).
TEXT = st.characters(codec="utf-8", exclude_categories=["Cs"], max_codepoint=0xFFFF)

Schema = Mapping[str, Any]


def spec_schema() -> Schema:
    """The CRD's schema of `.spec`."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    version = crd["spec"]["versions"][0]
    schema: Schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


# ----- values for free-form fields ---------------------------------------------

LABEL_KEYS = st.sampled_from(
    ["app", "team", "example.com/tier", "tier", "k8s.example.org/owner", "role"]
)
ODD_KEYS = st.sampled_from(["has space", "UPPER/lower/extra", "-leading", "x" * 70, "ünï"])
LABEL_VALUES = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True)
ODD_VALUES = st.sampled_from(["has space", "trailing-", "x" * 70, "a/b"])


def string_maps(label_values: bool) -> st.SearchStrategy[dict[str, str]]:
    """Label or annotation maps: mostly well-formed, sometimes not."""
    values = LABEL_VALUES if label_values else st.text(TEXT, max_size=MAX_TEXT)
    good = st.dictionaries(LABEL_KEYS, values, max_size=MAX_ITEMS)
    odd = st.dictionaries(ODD_KEYS | LABEL_KEYS, ODD_VALUES | LABEL_VALUES, min_size=1, max_size=2)
    return st.one_of(good, good, good, odd)


def json_values() -> st.SearchStrategy[Any]:
    """Any small JSON value."""
    scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(TEXT, max_size=8)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=2)
            | st.dictionaries(st.text(TEXT, max_size=6), inner, max_size=2)
        ),
        max_leaves=6,
    )


# Free-form fields get well-typed values: right or wrong (an unknown operator,
# an empty value list, a bad label), but no unknown fields and no wrong types.
# Those make server-side apply fail with HTTP 500 instead of a 422, a known
# bug with a test of its own (test_bad_input.py::test_server_side_apply_refusals...).
ODD_TEXT = st.text(TEXT, max_size=8)
TOLERATIONS = st.one_of(
    st.fixed_dictionaries(
        {
            "key": LABEL_KEYS,
            "operator": st.just("Exists"),
            "effect": st.sampled_from(["NoSchedule", "NoExecute"]),
        }
    ),
    st.fixed_dictionaries(
        {
            "key": LABEL_KEYS,
            "operator": st.just("Equal"),
            "value": LABEL_VALUES,
            "effect": st.just("NoSchedule"),
        }
    ),
    st.dictionaries(st.sampled_from(["key", "operator", "effect", "value"]), ODD_TEXT, max_size=3),
)


def _expressions(operators: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(
        st.fixed_dictionaries(
            {"key": LABEL_KEYS | ODD_KEYS, "operator": operators},
            optional={"values": st.lists(LABEL_VALUES | ODD_VALUES, max_size=2)},
        ),
        min_size=1,
        max_size=2,
    )


AFFINITY = st.one_of(
    st.builds(
        lambda key, values: {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": key, "operator": "In", "values": values}]}
                    ]
                }
            }
        },
        LABEL_KEYS,
        st.lists(LABEL_VALUES, min_size=1, max_size=2),
    ),
    st.builds(
        lambda expressions: {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        },
        _expressions(st.sampled_from(["In", "NotIn", "Exists", "Gt", "Sometimes"])),
    ),
)
SELECTOR = st.one_of(
    st.builds(
        lambda labels: {"matchLabels": labels},
        st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=2),
    ),
    st.builds(
        lambda key, values: {
            "matchExpressions": [{"key": key, "operator": "In", "values": values}]
        },
        LABEL_KEYS,
        st.lists(LABEL_VALUES, min_size=1, max_size=2),
    ),
    st.builds(
        lambda labels, expressions: {"matchLabels": labels, "matchExpressions": expressions},
        st.dictionaries(ODD_KEYS | LABEL_KEYS, ODD_VALUES | LABEL_VALUES, max_size=2),
        _expressions(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Maybe"])),
    ),
)
# Names the operator sets itself when storage.credentials is given.
OPERATOR_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "S3_ENDPOINT",
    "GOOGLE_APPLICATION_CREDENTIALS",
}
ENV_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True) | st.sampled_from(
    ["1BAD", "has space"]
)
ENV_NAMES = ENV_NAMES.filter(lambda n: n not in OPERATOR_ENV)
ENV = st.one_of(
    st.fixed_dictionaries({"name": ENV_NAMES, "value": st.text(TEXT, max_size=MAX_TEXT)}),
    st.fixed_dictionaries(
        {
            "name": ENV_NAMES,
            "valueFrom": st.just({"fieldRef": {"fieldPath": "metadata.name"}}),
        }
    ),
    # valueFrom with no source: well-typed, refused by validation.
    st.fixed_dictionaries({"name": ENV_NAMES, "valueFrom": st.just({})}),
    st.fixed_dictionaries({"name": ENV_NAMES}),
)
QUANTITIES = st.sampled_from(["1", "500m", "2Gi", "100Mi", "0.5", "1e3", "3", 2, 1])

# Lists the CRD admits with duplicate names but Kubernetes keys by name.
UNIQUE_NAMES: dict[str, Any] = {
    "spec.env": lambda e: e.get("name"),
    "spec.imagePullSecrets": lambda s: s.get("name"),
}

# Schema paths whose values are free-form in the CRD: realistic strategies.
FREE_FORM: dict[str, st.SearchStrategy[Any]] = {
    "spec.tolerations[]": TOLERATIONS,
    "spec.affinity": AFFINITY,
    "spec.networkPolicy.clientSelector": SELECTOR,
    "spec.networkPolicy.namespaceSelector": SELECTOR,
    "spec.env[]": ENV,
    "spec.nodeSelector": string_maps(label_values=True),
    "spec.podLabels": string_maps(label_values=True),
    "spec.podAnnotations": string_maps(label_values=False),
    "spec.service.annotations": string_maps(label_values=False),
}


# ----- the schema walker -----------------------------------------------------------


def schema_values(schema: Schema, path: str = "spec") -> st.SearchStrategy[Any]:
    """Values `schema` accepts structurally (CEL rules aside)."""
    if path in FREE_FORM:
        return FREE_FORM[path]
    if schema.get("x-kubernetes-int-or-string"):
        return QUANTITIES
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    if kind == "object":
        return _object(schema, path)
    if kind == "array":
        items = schema_values(schema.get("items") or {}, f"{path}[]")
        unique_by: Any = None
        if schema.get("x-kubernetes-list-type") == "set":
            unique_by = repr
        elif path in UNIQUE_NAMES:
            # Duplicate names break the operator's apply: a known bug with a
            # test of its own (test_bad_input.py::test_server_side_apply_refusals...).
            unique_by = UNIQUE_NAMES[path]
        return st.lists(
            items,
            min_size=int(schema.get("minItems", 0)),
            max_size=min(int(schema.get("maxItems", MAX_ITEMS)), MAX_ITEMS),
            unique_by=unique_by,
        )
    if kind == "integer":
        low = schema.get("minimum", -(2**31))
        high = schema.get("maximum", 2**31)
        if schema.get("exclusiveMinimum"):
            low += 1
        edges = st.sampled_from(sorted({low, high, min(low + 1, high)}))
        return st.one_of(st.integers(low, high), edges)
    if kind == "number":
        low = float(schema.get("minimum", -1e6))
        high = float(schema.get("maximum", 1e6))
        return st.floats(
            low, high, exclude_min=bool(schema.get("exclusiveMinimum")), allow_nan=False
        ).map(lambda f: round(f, 3) or high)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return _string(schema)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return json_values()
    return st.none()


def _string(schema: Schema) -> st.SearchStrategy[str]:
    low = int(schema.get("minLength", 0))
    high = min(int(schema.get("maxLength", MAX_TEXT)), MAX_TEXT)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True, alphabet=TEXT).filter(
            lambda s: low <= len(s) <= int(schema.get("maxLength", 10**6)) and len(s) <= 80
        )
    return st.text(TEXT, min_size=low, max_size=high)


def _object(schema: Schema, path: str) -> st.SearchStrategy[dict[str, Any]]:
    props: Mapping[str, Schema] = schema.get("properties") or {}
    if not props:
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return st.dictionaries(
                st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
                schema_values(extra, f"{path}.*"),
                max_size=MAX_ITEMS,
            )
        return st.one_of(st.just({}), json_values().filter(lambda v: isinstance(v, dict)))
    required = set(schema.get("required") or ())
    return st.fixed_dictionaries(
        {k: schema_values(v, f"{path}.{k}") for k, v in props.items() if k in required},
        optional={
            k: schema_values(v, f"{path}.{k}") for k, v in props.items() if k not in required
        },
    )


# ----- whole specs ---------------------------------------------------------------------


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec from the CRD's shape, usually repaired to pass its CEL rules too."""
    spec: dict[str, Any] = draw(schema_values(spec_schema()))
    if draw(st.integers(0, 9)) < 8:
        repair(spec, draw)
    return spec


def repair(spec: dict[str, Any], draw: st.DrawFn) -> None:
    """Make the cross-field rules the CRD enforces with CEL hold."""
    storage = spec.setdefault("storage", {})
    kinds = [k for k in ("persistentVolumeClaim", "hostPath", "nfs", "uri") if k in storage]
    keep = draw(st.sampled_from(kinds)) if kinds else None
    if keep is None:
        keep = "hostPath"
        storage["hostPath"] = {"path": "/tmp/tfso-test-models/half_plus_three"}
    for kind in kinds:
        if kind != keep:
            del storage[kind]
    if keep != "uri":
        storage.pop("credentials", None)
    if "version" in spec and "versionPolicy" in spec:
        del spec[draw(st.sampled_from(["version", "versionPolicy"]))]
    policy = spec.get("versionPolicy")
    if policy is not None:
        chosen = [k for k in ("latest", "all", "specific") if k in policy]
        if len(chosen) != 1:
            spec["versionPolicy"] = {"latest": {}}
    uri = str(storage.get("uri", ""))
    explicit = "version" in spec or "specific" in (spec.get("versionPolicy") or {})
    if uri.startswith("s3://") and not explicit:
        # The puller copies a fixed version set: s3:// needs one (puller.py).
        spec.pop("versionPolicy", None)
        spec["version"] = 1
    labels = spec.get("versionLabels")
    if labels is not None:
        specific = (spec.get("versionPolicy") or {}).get("specific")
        if "version" in spec:
            labels = {k: spec["version"] for k in labels}
        elif specific:
            versions = specific["versions"]
            labels = {k: versions[i % len(versions)] for i, k in enumerate(labels)}
        else:
            labels = None
        if labels:
            spec["versionLabels"] = {k: v for k, v in labels.items() if _label_ok(k)}
        else:
            spec.pop("versionLabels", None)
    if "image" in spec and "tensorflow/serving" in spec["image"]:
        gpu_image = "-gpu" in spec["image"]
        if gpu_image != bool(spec.get("gpus", 0)):
            del spec["image"]
    ports = spec.get("ports") or {}
    rest = ports.get("rest", 8501)
    if rest and rest == ports.get("grpc", 8500):
        ports["rest"] = 0 if rest != 8500 else 8501
    monitoring = spec.get("monitoring")
    if monitoring is not None and monitoring.get("enabled", True) and ports.get("rest", 8501) == 0:
        del spec["monitoring"]
    resources = spec.get("resources") or {}
    for part in resources.values():
        if isinstance(part, dict):
            part.pop("nvidia.com/gpu", None)
    pod_labels = spec.get("podLabels")
    if pod_labels:
        for key in list(pod_labels):
            if key.startswith(("serving.tfoperator.dev/", "app.kubernetes.io/")):
                del pod_labels[key]
    sub = ((storage.get("persistentVolumeClaim") or {}).get("subPath")) or ""
    if sub.startswith("/") or ".." in sub.split("/"):
        storage["persistentVolumeClaim"].pop("subPath", None)
    if spec.get("serverArgs"):
        # The CRD's CEL grammar is not modelled: draw flags it admits.
        spec["serverArgs"] = draw(st.lists(st.sampled_from(VALID_SERVER_ARGS), max_size=4))


def _label_ok(key: str) -> bool:
    import re

    return re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) is not None


# serverArgs the CRD admits: the pinned server's flags the operator does not own,
# one well-typed value each (release.py generates the CRD's grammar rules).
_SAMPLE_VALUES = {"int32": "=8", "int64": "=2", "bool": "=false", "string": "=x"}
VALID_SERVER_ARGS = tuple(
    f"--{name}{_SAMPLE_VALUES[kind]}"
    for name, kind in release.SERVER_FLAGS.items()
    if name not in release.OPERATOR_FLAGS + release.NON_SERVING_FLAGS and kind in _SAMPLE_VALUES
)


# ----- broken specs ------------------------------------------------------------------

# (the field a refusal must name, how it is broken, top-level keys to set; None deletes)
BREAKS: list[tuple[str, str, dict[str, Any]]] = [
    ("spec.replicas", "above maximum", {"replicas": 1001}),
    ("spec.replicas", "below minimum", {"replicas": -1}),
    ("spec.replicas", "wrong type", {"replicas": "three"}),
    ("spec.gpus", "above maximum", {"gpus": 17}),
    ("spec.gpuMemoryFraction", "exclusive minimum", {"gpuMemoryFraction": 0}),
    ("spec.gpuMemoryFraction", "above maximum", {"gpuMemoryFraction": 1.5}),
    ("spec.version", "below minimum", {"version": 0}),
    ("spec.version", "wrong type", {"version": "v2"}),
    ("spec.modelName", "pattern", {"modelName": "has space"}),
    ("spec.modelName", "empty", {"modelName": ""}),
    ("spec.image", "pattern", {"image": "two words"}),
    ("spec.image", "GPU image without GPUs", {"image": release.DEFAULT_GPU_IMAGE}),
    ("spec.imagePullPolicy", "enum", {"imagePullPolicy": "Sometimes"}),
    ("spec.ports.grpc", "above maximum", {"ports": {"grpc": 70000, "rest": 8501}}),
    ("spec.ports.rest", "below minimum", {"ports": {"grpc": 8500, "rest": -5}}),
    ("spec.ports.rest", "same as grpc", {"ports": {"grpc": 8500, "rest": 8500}}),
    ("spec.service.type", "enum", {"service": {"type": "ExternalName"}}),
    ("spec.storage", "no kind", {"storage": {}}),
    ("spec.storage", "two kinds", {"storage": {"hostPath": {"path": "/a"}, "uri": "s3://bkt/m"}}),
    ("spec.storage", "missing", {"storage": None}),
    ("spec.storage.uri", "pattern", {"storage": {"uri": "http://example.com/model"}}),
    ("spec.storage.hostPath.path", "pattern", {"storage": {"hostPath": {"path": "relative"}}}),
    (
        "spec.storage.persistentVolumeClaim.claimName",
        "pattern",
        {"storage": {"persistentVolumeClaim": {"claimName": "Bad_Claim"}}},
    ),
    (
        "spec.storage.persistentVolumeClaim.subPath",
        "escapes the volume",
        {"storage": {"persistentVolumeClaim": {"claimName": "models", "subPath": "../other"}}},
    ),
    (
        "spec.storage.mountPath",
        "pattern",
        {"storage": {"hostPath": {"path": "/a"}, "mountPath": "m"}},
    ),
    (
        "spec.storage.credentials",
        "without uri",
        {"storage": {"hostPath": {"path": "/a"}, "credentials": {"secretName": "creds"}}},
    ),
    ("spec.versionPolicy", "with spec.version", {"versionPolicy": {"all": {}}}),
    (
        "spec.versionPolicy",
        "two policies",
        {"version": None, "versionPolicy": {"latest": {}, "all": {}}},
    ),
    (
        "spec.versionPolicy.latest.numVersions",
        "above maximum",
        {"version": None, "versionPolicy": {"latest": {"numVersions": 101}}},
    ),
    (
        "spec.versionPolicy.specific.versions",
        "empty",
        {"version": None, "versionPolicy": {"specific": {"versions": []}}},
    ),
    (
        "spec.versionLabels",
        "label on a version not listed",
        {
            "version": None,
            "versionPolicy": {"specific": {"versions": [1]}},
            "versionLabels": {"stable": 9},
        },
    ),
    (
        "spec.versionLabels",
        "labels with a latest policy",
        {"version": None, "versionPolicy": {"latest": {}}, "versionLabels": {"stable": 1}},
    ),
    ("spec.versionLabels", "bad key", {"versionLabels": {"Stable!": 1}}),
    ("spec.serverArgs", "an operator-owned flag", {"serverArgs": ["--port=9000"]}),
    ("spec.serverArgs", "not a flag", {"serverArgs": ["rm -rf /"]}),
    (
        "spec.rollout.availabilityTimeoutSeconds",
        "below minimum",
        {"rollout": {"availabilityTimeoutSeconds": 1}},
    ),
    ("spec.rollout.maxSurge", "below minimum", {"rollout": {"maxSurge": 0}}),
    ("spec.terminationGracePeriodSeconds", "below minimum", {"terminationGracePeriodSeconds": 1}),
    ("spec.fileSystemPollWaitSeconds", "above maximum", {"fileSystemPollWaitSeconds": 86401}),
    ("spec.resources", "GPU through resources", {"resources": {"limits": {"nvidia.com/gpu": 1}}}),
    ("spec.resources.requests", "not a quantity", {"resources": {"requests": {"cpu": "lots"}}}),
    ("spec.monitoring.path", "pattern", {"monitoring": {"path": "metrics"}}),
    (
        "spec.monitoring",
        "without the REST port",
        {"monitoring": {}, "ports": {"grpc": 8500, "rest": 0}},
    ),
    ("spec.podLabels", "operator-owned label", {"podLabels": {"app.kubernetes.io/name": "x"}}),
    ("spec.batching.maxBatchSize", "below minimum", {"batching": {"maxBatchSize": 0}}),
]


@st.composite
def broken_specs(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """(spec, the broken field's path, how it was broken): one break on a valid base."""
    spec = draw(specs())
    repair(spec, draw)
    # A base every break applies to alone: pinned version 1, CPU, default ports.
    for key in ("versionPolicy", "versionLabels", "gpus", "image", "monitoring", "ports"):
        spec.pop(key, None)
    spec["version"] = 1
    path, how, changes = draw(st.sampled_from(BREAKS))
    broken = copy.deepcopy(spec)
    for key, value in changes.items():
        if value is None:
            broken.pop(key, None)
        else:
            broken[key] = copy.deepcopy(value)
    return broken, path, how
