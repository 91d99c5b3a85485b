"""The simulated nodes: two amd64 CPU nodes, one arm64 CPU node, two GPU nodes
and one GPU node partitioned into MIG slices.

The arm64 node is where a pod of an amd64-only image (tensorflow/serving)
must never land: it proves the architecture affinity the operator renders
for the default image.

The GPU nodes are labelled and tainted the way managed GPU node pools
usually are (the NVIDIA device plugin's `nvidia.com/gpu` extended resource,
GPU feature-discovery labels, a `nvidia.com/gpu=present:NoSchedule` taint),
so a pod lands there only when it tolerates the taint and asks for GPUs.

The MIG node is an A100 the NVIDIA device plugin exposes with the "mixed" MIG
strategy: no whole `nvidia.com/gpu`, seven `nvidia.com/mig-1g.5gb` slices, the
same taint; a pod lands there only when it asks for a slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
MIG_RESOURCE = "nvidia.com/mig-1g.5gb"


@dataclass(frozen=True)
class SimNode:
    """One kwok node and what it advertises."""

    name: str
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str = ""
    max_pods: int = 110
    arch: str = "amd64"
    mig_slices: int = 0  # MIG_RESOURCE (mixed strategy: no whole GPU advertised)

    @property
    def accelerated(self) -> bool:
        """A GPU node (whole GPUs or MIG slices): labelled and tainted as one."""
        return bool(self.gpus or self.mig_slices)


SIM_NODES: tuple[SimNode, ...] = (
    SimNode("sim-cpu-1", cpu="8", memory="32Gi"),
    SimNode("sim-cpu-2", cpu="8", memory="32Gi"),
    SimNode("sim-arm-1", cpu="8", memory="32Gi", arch="arm64"),
    SimNode("sim-gpu-1", cpu="16", memory="64Gi", gpus=4, gpu_product="NVIDIA-A100-SXM4-40GB"),
    SimNode("sim-gpu-2", cpu="16", memory="64Gi", gpus=2, gpu_product="NVIDIA-L4"),
    SimNode(
        "sim-mig-1", cpu="16", memory="64Gi", mig_slices=7, gpu_product="NVIDIA-A100-SXM4-40GB"
    ),
)

MAX_GPUS_PER_NODE = max(n.gpus for n in SIM_NODES)


def resource_metrics_path(node_name: str) -> str:
    """kwok's path for one node's kubelet-style /metrics/resource (kwok-metrics.yaml)."""
    return f"/metrics/nodes/{node_name}/metrics/resource"


def node_manifest(node: SimNode) -> dict[str, Any]:
    """The Node object (metadata and spec; capacity goes in via the status subresource)."""
    labels = {
        "type": "kwok",  # kwok manages nodes with this label (see cluster.py)
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": node.arch,
        "node.kubernetes.io/instance-type": "sim-gpu" if node.accelerated else "sim-cpu",
        "topology.kubernetes.io/zone": "sim-a",
    }
    spec: dict[str, Any] = {}
    if node.accelerated:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": node.gpu_product,
            "nvidia.com/gpu.count": str(node.gpus or 1),
        }
        spec["taints"] = [GPU_TAINT]
    if node.mig_slices:
        labels["nvidia.com/mig.strategy"] = "mixed"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                "kwok.x-k8s.io/node": "fake",
                # Where metrics-server finds this node's kubelet /metrics/resource:
                # kwok serves every node on one port (localdev/sim/kwok-metrics.yaml).
                "metrics.k8s.io/resource-metrics-path": resource_metrics_path(node.name),
            },
        },
        "spec": spec,
    }


def node_status_patch(node: SimNode) -> dict[str, Any]:
    """Capacity and allocatable, as the kubelet and the device plugin would report."""
    resources = {
        "cpu": node.cpu,
        "memory": node.memory,
        "pods": str(node.max_pods),
        "ephemeral-storage": "100Gi",
    }
    if node.gpus:
        resources[GPU_RESOURCE] = str(node.gpus)
    if node.mig_slices:
        resources[MIG_RESOURCE] = str(node.mig_slices)
    return {"status": {"capacity": resources, "allocatable": resources}}
