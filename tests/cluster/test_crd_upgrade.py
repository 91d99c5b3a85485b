"""Objects stored under the previous CRD keep working under the current one.

The current CRD types env, imagePullSecrets (list-map keys, as the Pod API),
tolerations, affinity and the NetworkPolicy selectors with Kubernetes' own
schemas, and adds spec.gpuResource. ServedModels stored under the previous
CRD (tests/cluster/fixtures/, free-form fields) are read and updated after
the current CRD is installed over it: nothing valid before is lost or refused.
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localdev.support.k8s import create_sm, get_sm, patch_sm, servedmodel
from tests.cluster.test_admission import BASE, VALID_EMBEDDED, changed
from tfserving_operator import release

pytestmark = pytest.mark.cluster

PREVIOUS_CRD = Path(__file__).parent / "fixtures" / "servedmodels-before-typed-embedded.yaml"

STORED: dict[str, dict[str, Any]] = {
    "embedded": changed(BASE, **VALID_EMBEDDED["everything-kubernetes-takes"]),
    "gpu": changed(BASE, gpus=1, image=release.DEFAULT_GPU_IMAGE, gpuMemoryFraction=0.5),
    "plain": changed(BASE, env=[{"name": "MODE", "value": "fast"}]),
}


def install(sim: Any, crd: Path) -> None:
    kubectl = [str(sim.kubectl_path()), "--kubeconfig", str(sim.kubeconfig)]
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=sim", "-f", str(crd)]
    subprocess.run([*kubectl, *args], check=True, capture_output=True, timeout=90)
    sim.wait_established(crd)


@pytest.fixture(scope="module")
def stored_before(sim: Any, api_client: Any, crds: None) -> Iterator[str]:
    """A namespace whose ServedModels were created under the previous CRD, which
    the current one (crds/) has since replaced."""
    namespace = f"tfso-upgrade-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        install(sim, PREVIOUS_CRD)
        for name, spec_ in STORED.items():
            create_sm(api_client, namespace, servedmodel(name, copy.deepcopy(spec_)))
    finally:
        sim.install_crds()
    yield namespace
    core.delete_namespace(namespace, propagation_policy="Background")


@pytest.mark.parametrize("name", sorted(STORED))
def test_a_stored_object_reads_as_it_was_written(api_client, stored_before, name) -> None:
    spec_ = get_sm(api_client, stored_before, name)["spec"]
    for key, value in STORED[name].items():
        assert spec_[key] == value, key
    assert spec_["gpuResource"] == "nvidia.com/gpu"  # the new field's default


@pytest.mark.parametrize("name", sorted(STORED))
def test_a_stored_object_takes_an_update(api_client, stored_before, name) -> None:
    updated = patch_sm(api_client, stored_before, name, {"spec": {"replicas": 3}})
    assert updated["spec"]["replicas"] == 3
    for key, value in STORED[name].items():
        assert updated["spec"][key] == value, key
