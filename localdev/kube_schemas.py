"""The CRD's embedded Kubernetes types, generated from Kubernetes' own OpenAPI.

`spec.env`, `spec.imagePullSecrets`, `spec.tolerations`, `spec.affinity` and
the NetworkPolicy selectors are copied into the pod template and the
NetworkPolicy as they are. Left free-form (`x-kubernetes-preserve-unknown-fields`),
the CRD admitted what the Deployment's server-side apply then could not even
type-check (a repeated env name, `nodeAffinity: [...]`), long after `kubectl
apply` had said "created". Their schemas here are Kubernetes' own, from the
OpenAPI v3 document of the pinned release (the `api/openapi-spec` folder of the
k8s.io/kubernetes module the local control plane is built from), turned into
structural CRD schemas: references inlined, list types and list-map keys kept
(so a repeated env or imagePullSecrets name is refused at admission, as for a
pod), defaults and patch strategies dropped, nested descriptions cut to their
first sentence. The field's own description and limits stay ours.

`make manifests` runs `python -m localdev.kube_schemas --write-crd crds/...`;
tests/contract/test_spec_crd.py checks the committed CRD matches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from localdev.sim.toolchain import KUBERNETES_VERSION, TOOLCHAIN_DIR
from tfserving_operator.release import replace_node

Schema = dict[str, Any]

CORE = "api__v1_openapi.json"
AUTOSCALING = "apis__autoscaling__v2_openapi.json"
REF_PREFIX = "#/components/schemas/"
# Kubernetes' schema keywords a structural CRD schema keeps as they are.
KEPT = (
    "type",
    "format",
    "required",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
)


@dataclass(frozen=True)
class Embedded:
    """One CRD field that holds a Kubernetes type."""

    path: tuple[str, ...]  # keys down to the property (see release.replace_node)
    document: str  # the OpenAPI v3 file under api/openapi-spec/v3
    owner: str  # the Kubernetes schema holding the field ...
    prop: str  # ... and the field's name in it ("" : the owner itself)
    ours: Schema = field(default_factory=dict)  # description, limits: merged on top


EMBEDDED: tuple[Embedded, ...] = (
    Embedded(
        ("env",),
        CORE,
        "io.k8s.api.core.v1.Container",
        "env",
        {
            "description": "Extra environment variables of the model server container "
            "(core/v1 EnvVar; names are unique).",
            "maxItems": 128,
            "items": {"properties": {"name": {"minLength": 1}}},
        },
    ),
    Embedded(
        ("tolerations",),
        CORE,
        "io.k8s.api.core.v1.PodSpec",
        "tolerations",
        {
            "description": "Extra tolerations (core/v1 Toleration); the GPU toleration "
            "is added for you.",
            "maxItems": 64,
        },
    ),
    Embedded(
        ("affinity",),
        CORE,
        "io.k8s.api.core.v1.PodSpec",
        "affinity",
        {"description": "Pod affinity rules (core/v1 Affinity)."},
    ),
    Embedded(
        ("imagePullSecrets",),
        CORE,
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        {
            "description": "Secrets to pull the image with (core/v1 LocalObjectReference; "
            "names are unique).",
            "maxItems": 16,
            "items": {
                "required": ["name"],
                "properties": {
                    "name": {
                        "minLength": 1,
                        "description": "Name of a Secret of type "
                        "kubernetes.io/dockerconfigjson in this namespace.",
                    }
                },
            },
        },
    ),
    Embedded(
        ("networkPolicy", "clientSelector"),
        CORE,
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "",
        {
            "description": "Pods (in this namespace) allowed to call the model servers "
            "(meta/v1 LabelSelector)."
        },
    ),
    Embedded(
        ("networkPolicy", "namespaceSelector"),
        CORE,
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "",
        {
            "description": "Namespaces whose pods matching clientSelector may call "
            "(meta/v1 LabelSelector; default this namespace only)."
        },
    ),
    Embedded(
        ("properties", "spec", "autoscaling", "metrics"),
        AUTOSCALING,
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        "metrics",
        {
            "description": "Further autoscaling/v2 MetricSpecs (Pods, Object, External, ...), "
            "used as written (provider hpa).",
            "maxItems": 10,
        },
    ),
    Embedded(
        ("properties", "spec", "autoscaling", "behavior"),
        AUTOSCALING,
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        "behavior",
        {
            "description": "autoscaling/v2 HorizontalPodAutoscalerBehavior (scaleUp, scaleDown: "
            "stabilization windows and policies), used as written (for keda, in "
            "advanced.horizontalPodAutoscalerConfig)."
        },
    ),
)

EMBEDDED_KEYS = frozenset(e.path[-1] for e in EMBEDDED)


def openapi_dir(offline: bool = False) -> Path:
    """api/openapi-spec/v3 of the pinned k8s.io/kubernetes module (downloaded if
    needed, unless `offline`: then only from the Go module cache)."""
    override = os.environ.get("TFSO_KUBE_OPENAPI_DIR")
    if override:
        return Path(override)
    answer = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        cwd=TOOLCHAIN_DIR / "kubernetes",
        env={**os.environ, "GOPROXY": "off"} if offline else None,
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(json.loads(answer.stdout)["Dir"]) / "api" / "openapi-spec" / "v3"


@cache
def _schemas(document: str) -> dict[str, Schema]:
    data = json.loads((openapi_dir() / document).read_text())
    schemas: dict[str, Schema] = data["components"]["schemas"]
    return schemas


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def structural(schema: Schema, schemas: dict[str, Schema]) -> Schema:
    """A Kubernetes OpenAPI v3 schema as a structural CRD schema."""
    description = schema.get("description")
    refs = [s["$ref"] for s in schema.get("allOf", ()) if "$ref" in s]
    if "$ref" in schema:
        refs.append(schema["$ref"])
    if refs:
        (ref,) = refs
        target = structural(schemas[ref.removeprefix(REF_PREFIX)], schemas)
        if description:
            target["description"] = _first_sentence(description)
        return target
    if "oneOf" in schema or schema.get("format") == "int-or-string":
        # resource.Quantity and intstr.IntOrString
        out: Schema = {"x-kubernetes-int-or-string": True}
    else:
        out = {k: schema[k] for k in KEPT if k in schema}
    if description:
        out["description"] = _first_sentence(description)
    if "properties" in schema:
        out["properties"] = {
            name: structural(sub, schemas) for name, sub in sorted(schema["properties"].items())
        }
    if "items" in schema:
        out["items"] = structural(schema["items"], schemas)
    if "additionalProperties" in schema:
        out["additionalProperties"] = structural(schema["additionalProperties"], schemas)
    return out


def _merge(base: Schema, ours: Schema) -> Schema:
    out = dict(base)
    for key, value in ours.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def schema_of(embedded: Embedded) -> Schema:
    """The CRD schema of one embedded field."""
    schemas = _schemas(embedded.document)
    owner = schemas[embedded.owner]
    source = owner["properties"][embedded.prop] if embedded.prop else owner
    return _merge(structural(source, schemas), embedded.ours)


def _node_yaml(key: str, schema: Schema, indent: int) -> str:
    # Key order as a reader expects it: type and description first.
    first = {k: schema[k] for k in ("type", "description") if k in schema}
    ordered = {**first, **{k: v for k, v in schema.items() if k not in first}}
    # A JSON round trip unshares what one $ref inlined twice (scaleUp and
    # scaleDown of HPA behavior): YAML anchors would repeat across nodes.
    ordered = json.loads(json.dumps(ordered))
    text = yaml.safe_dump({key: ordered}, sort_keys=False, width=100, allow_unicode=True)
    pad = " " * indent
    return "".join(pad + line + "\n" for line in text.splitlines())


def rewrite_crd(text: str) -> str:
    """The CRD file's text with every embedded field's node generated."""
    for embedded in EMBEDDED:
        text = replace_node(
            text,
            embedded.path,
            lambda indent, e=embedded: _node_yaml(e.path[-1], schema_of(e), indent),
        )
    return text


def main(argv: list[str] | None = None) -> int:
    """`--write-crd PATH`: regenerate the embedded fields in a CRD file."""
    parser = argparse.ArgumentParser(prog="python -m localdev.kube_schemas")
    parser.add_argument("--write-crd", metavar="PATH", required=True)
    args = parser.parse_args(argv)
    path = Path(args.write_crd)
    path.write_text(rewrite_crd(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
