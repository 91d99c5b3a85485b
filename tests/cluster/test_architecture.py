"""The default image is linux/amd64 only: its pods never land on the arm64 node.

The local cluster has one arm64 node (`sim-arm-1`, localdev/sim/nodes.py)
beside the amd64 ones. A ServedModel that leaves spec.image unset gets the
required node affinity `kubernetes.io/arch In [amd64]` (render.render_affinity);
one that sets an image does not, and the scheduler's spreading then uses
the arm64 node too, which shows the check can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localdev.sim.nodes import SIM_NODES
from localdev.support.k8s import (
    condition,
    create_sm,
    pods_of,
    servedmodel,
    wait_condition,
)
from localdev.support.models import make_model_dir
from localdev.support.waiting import wait_until
from tfserving_operator import api, release

ARM_NODES = {n.name for n in SIM_NODES if n.arch != "amd64"}
REPLICAS = 4


def model_spec(base: Path, **extra: Any) -> dict[str, Any]:
    return {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(base)}},
        "version": 1,
        **extra,
    }


def scheduled_nodes(api_client: Any, namespace: str, name: str) -> list[str]:
    """The node of every pod of `name`, once all REPLICAS pods are scheduled."""

    def nodes() -> list[str] | None:
        pods = [
            p for p in pods_of(api_client, namespace, name) if not p.metadata.deletion_timestamp
        ]
        placed = [p.spec.node_name for p in pods if p.spec.node_name]
        return placed if len(placed) == REPLICAS else None

    def describe() -> str:
        return str(
            [(p.metadata.name, p.spec.node_name) for p in pods_of(api_client, namespace, name)]
        )

    placed: list[str] = wait_until(
        nodes, timeout=90, what=f"{REPLICAS} pods of {name} scheduled", describe=describe
    )
    return placed


def test_default_image_pods_never_land_on_arm64(
    api_client, namespace, operator, model_store
) -> None:
    assert len(ARM_NODES) == 1, ARM_NODES
    base = make_model_dir(model_store, "arch", good=(1,))
    create_sm(api_client, namespace, servedmodel("amd", model_spec(base, replicas=REPLICAS)))
    # The same model with the image spelt out: no architecture requirement.
    own_image = model_spec(base, replicas=REPLICAS, image=release.DEFAULT_IMAGE)
    create_sm(api_client, namespace, servedmodel("anyarch", own_image))

    placed = scheduled_nodes(api_client, namespace, "amd")
    assert not set(placed) & ARM_NODES, placed
    (pod, *_) = pods_of(api_client, namespace, "amd")
    terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    expressions = [e for t in terms.node_selector_terms for e in t.match_expressions]
    assert [(e.key, e.operator, e.values) for e in expressions] == [
        ("kubernetes.io/arch", "In", ["amd64"])
    ]
    # Spread over every schedulable CPU node, the arm64 one included.
    others = scheduled_nodes(api_client, namespace, "anyarch")
    assert set(others) & ARM_NODES, others


def test_only_arm64_fitting_is_reported_with_the_schedulers_words(
    api_client, namespace, operator, model_store
) -> None:
    base = make_model_dir(model_store, "armonly", good=(1,))
    pinned = model_spec(base, nodeSelector={"kubernetes.io/hostname": "sim-arm-1"})
    create_sm(api_client, namespace, servedmodel("armonly", pinned))
    body = wait_condition(
        api_client, namespace, "armonly", "Degraded", reason=api.Reason.UNSCHEDULABLE, timeout=60
    )
    message = condition(body, "Degraded")["message"]
    # The node that matches the selector fails the architecture affinity: the
    # scheduler counts every node as not matching the pod's affinity/selector.
    assert "didn't match Pod's node affinity/selector" in message, message
    assert condition(body, "Ready")["status"] == "False"
