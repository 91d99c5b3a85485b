"""Fixtures shared by every suite: the local cluster, API clients, namespaces.

Tests marked ``cluster`` get a running local control plane: the session
fixture starts it (or reuses one a developer started with ``make sim-up``,
and then leaves it running).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.sim.cluster import SimCluster
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/cluster/, and every test that uses the `sim` fixture
    (directly or through another fixture), needs the cluster: mark it so
    `-m 'not cluster'` works."""
    for item in items:
        in_cluster_suite = "tests/cluster/" in str(item.fspath).replace(os.sep, "/")
        if in_cluster_suite or "sim" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
        _check_xfail(item)


def _check_xfail(item: pytest.Item) -> None:
    """An xfail names the exception its known bug raises: without raises=, a
    broken fixture or a TypeError in the test reads as "the known bug, still
    there", and a strict xfail stays green whatever goes wrong."""
    for mark in item.iter_markers("xfail"):
        if "raises" not in mark.kwargs:
            raise pytest.UsageError(
                f"{item.nodeid}: xfail without raises= (give the exception the known bug "
                "raises, e.g. raises=AssertionError)"
            )


# Every pytest session owns the namespaces with this prefix; its operator
# watches only those, so concurrent sessions never act on each other's objects.
SESSION_PREFIX = f"t{uuid.uuid4().hex[:4]}"
MODELS_ROOT = Path(os.environ.get("TFSO_TEST_MODELS", "/tmp/tfso-test-models"))


@pytest.fixture(scope="session")
def sim() -> Iterator[SimCluster]:
    """The local cluster, with the stand-in model server."""
    cluster = SimCluster(with_standin=True)
    was_running = cluster.healthy()
    cluster.up()
    yield cluster
    if not was_running and not os.environ.get("TFSO_KEEP_SIM"):
        cluster.down()


@pytest.fixture(scope="session")
def api_client(sim: SimCluster):
    """An admin kubernetes.client.ApiClient for the local cluster."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def namespace(api_client) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"{SESSION_PREFIX}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"tfso-test": "true"}}})

    def has_default_sa() -> bool:
        return bool(core.list_namespaced_service_account(name).items)

    wait_until(has_default_sa, timeout=30, what=f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def crds(sim: SimCluster) -> None:
    """The ServedModel CRD, installed from crds/ (the one source)."""
    sim.install_crds()


@pytest.fixture(scope="session")
def operator(sim: SimCluster, crds: None, tmp_path_factory: pytest.TempPathFactory):
    """The operator, a real process watching this session's namespaces."""
    log = sim.state_dir / "logs" / f"operator-{SESSION_PREFIX}.log"
    proc = OperatorProcess(sim.kubeconfig, f"{SESSION_PREFIX}-*", log).start()
    yield proc
    proc.stop()


def export_version(kind: str, base: Path, version: int) -> None:
    """Export a real SavedModel version with the training job (once per machine)."""
    if (base / str(version) / "saved_model.pb").exists():
        return
    module = {
        "half_plus_three": "training_jobs.half_plus_three.export_half_plus_three",
        "mnist": "training_jobs.mnist.mnist_saved_model",
    }[kind]
    args = [sys.executable, "-m", module, f"--model_dir={base}", f"--model_version={version}"]
    if kind == "mnist":
        args.append("--training_iteration=100")
    subprocess.run(args, check=True, cwd=REPO_ROOT, capture_output=True)


@pytest.fixture(scope="session")
def model_store() -> Path:
    """Real model folders on this machine, mounted into pods with hostPath.

    half_plus_three/1 and /2 are real SavedModels; broken/ holds a version 1
    that is good and a version 3 whose saved_model.pb is garbage.
    """
    hpt = MODELS_ROOT / "half_plus_three"
    for version in (1, 2):
        export_version("half_plus_three", hpt, version)
    return MODELS_ROOT
