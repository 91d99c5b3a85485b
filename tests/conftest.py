"""Fixtures shared by every suite: the local cluster, API clients, namespaces.

Tests marked ``cluster`` get a running local control plane: the session
fixture starts it (or reuses one a developer started with ``make sim-up``,
and then leaves it running).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.cluster import SimCluster
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/cluster/ needs the cluster: mark it so `-m 'not cluster'` works."""
    for item in items:
        if "tests/cluster/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def sim() -> Iterator[SimCluster]:
    """The local cluster, with the stand-in model server."""
    cluster = SimCluster(with_standin=True)
    was_running = cluster.healthy() and not cluster.dead_components()
    cluster.up()
    yield cluster
    if not was_running and not os.environ.get("TFSO_KEEP_SIM"):
        cluster.down()


@pytest.fixture(scope="session")
def api_client(sim: SimCluster):  # type: ignore[no-untyped-def]
    """An admin kubernetes.client.ApiClient for the local cluster."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(sim.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def namespace(api_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh namespace (with its default ServiceAccount), deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"tfso-test": "true"}}})

    def has_default_sa() -> bool:
        return bool(core.list_namespaced_service_account(name).items)

    wait_until(has_default_sa, timeout=30, what=f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name, propagation_policy="Background")
