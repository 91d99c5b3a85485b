"""Fixtures of the reliability suite: its own namespaces, operators and cluster.

Tests here never touch the session's namespaces or operator: each runs its
own operator process watching namespaces named ``r-<hex>-*`` (not the
session prefix), so killing it disturbs nobody. Tests that restart the API
server or etcd, or that need the stand-in's fault modes, run on a cluster of
their own (``own_cluster``, instance 2: other ports, other pod range).

Long tests carry ``@pytest.mark.chaos``: `make chaos` runs them
(``-m chaos``); any other run deselects them unless TFSO_CHAOS=1.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localdev.sim.cluster import SimCluster, SimError
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tests.reliability import results

OWN_INSTANCE = 2
# kopf's peering kinds, as the install paths ship them; the first that exists
# wins, tests/reliability/fixtures/ holds a stand-in of our own.
PEERING_CRDS = (
    Path(__file__).resolve().parents[2] / "crds" / "kopf-peering.yaml",
    Path(__file__).resolve().parents[2]
    / "charts"
    / "tfserving-operator"
    / "crds"
    / "kopf.dev-peerings.yaml",
    Path(__file__).with_name("fixtures") / "kopf-peering.yaml",
)
# Namespaces of this pytest session's reliability tests: r-<hex>-<hex>.
REL_PREFIX = f"r-{uuid.uuid4().hex[:4]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect chaos tests unless asked for (`-m chaos`, or TFSO_CHAOS=1), and
    the soak unless asked for by name (`-m soak`: `make soak`)."""
    asked = config.option.markexpr or ""
    wanted = {
        "chaos": "chaos" in asked or os.environ.get("TFSO_CHAOS") == "1",
        "soak": "soak" in asked,
    }
    for kind in (k for k, yes in wanted.items() if not yes):
        marked = [i for i in items if i.get_closest_marker(kind) is not None]
        if marked:
            config.hook.pytest_deselected(items=marked)
            items[:] = [i for i in items if i.get_closest_marker(kind) is None]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """`make chaos` sets TFSO_RELIABILITY_REPORT: write docs/reliability.md from the results."""
    target = os.environ.get("TFSO_RELIABILITY_REPORT")
    if target:
        from tests.reliability.report import write_report

        write_report(Path(target))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Repeat every FAULT/BAD-INPUT/SECURITY line recorded in this run."""
    if not results.SESSION:
        return
    terminalreporter.section("reliability results")
    for result in results.SESSION:
        terminalreporter.write_line(result.line())
    terminalreporter.write_line(f"(merged into {results.RESULTS_FILE})")


# ----- namespaces and operators ----------------------------------------------


def make_namespace(api_client: Any, labels: dict[str, str] | None = None) -> str:
    """A fresh namespace r-<hex>-<hex> with its default ServiceAccount."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"{REL_PREFIX}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"tfso-reliability": "true", **(labels or {})}}}
    )
    wait_until(
        lambda: bool(core.list_namespaced_service_account(name).items),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    return name


def delete_namespace(api_client: Any, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        client.CoreV1Api(api_client).delete_namespace(name, propagation_policy="Background")
    except ApiException as err:
        if err.status != 404:
            raise


OperatorFactory = Callable[..., OperatorProcess]


def _operator_factory(kubeconfig: Path, log_dir: Path) -> Iterator[OperatorFactory]:
    started: list[OperatorProcess] = []

    def start(namespaces: str, name: str, env: dict[str, str] | None = None) -> OperatorProcess:
        log = log_dir / f"operator-{REL_PREFIX}-{name}.log"
        proc = OperatorProcess(kubeconfig, namespaces, log, env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_operator(sim: SimCluster, crds: None) -> Iterator[OperatorFactory]:
    """Start operator processes on the session cluster; all stopped afterwards.

    ``start(namespaces, name, env)``: `namespaces` as TFSO_NAMESPACES, `name`
    names its log file (.sim/logs/operator-r-<hex>-<name>.log).
    """
    yield from _operator_factory(sim.kubeconfig, sim.state_dir / "logs")


# ----- a cluster of our own ----------------------------------------------------


def install_crds(cluster: SimCluster) -> None:
    """install_crds, retried: `kubectl wait` right after `apply` can see a CRD
    whose status has no conditions yet and fail instead of waiting."""
    for attempt in range(5):
        try:
            cluster.install_crds()
            return
        except SimError:
            if attempt == 4:
                raise


def heal_nodes(cluster: SimCluster) -> list[str]:
    """Post Ready for simulated nodes the node controller marked Unknown; returns their names.

    kwok's heartbeat stage (localdev/sim/kwok-stages.yaml) only renews nodes
    whose Ready is True, so a node marked Unknown during a long API server
    outage stayed NotReady (and tainted, NoExecute included) for minutes
    here. A real kubelet posts Ready at its next heartbeat; this does it for
    the simulated ones.
    """
    from datetime import UTC, datetime

    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = client.CoreV1Api(api)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    healed = []
    try:
        for node in core.list_node(label_selector="type=kwok").items:
            ready = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
            if ready is not None and ready.status == "True":
                continue
            fine = {
                "Ready": ("True", "KubeletReady"),
                "MemoryPressure": ("False", "KubeletHasSufficientMemory"),
                "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
                "PIDPressure": ("False", "KubeletHasSufficientPID"),
            }
            conditions = [
                {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "message": "posted by the reliability tests (heal_nodes)",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
                for ctype, (status, reason) in fine.items()
            ]
            core.patch_node_status(node.metadata.name, {"status": {"conditions": conditions}})
            healed.append(node.metadata.name)
        if healed:
            wait_until(
                lambda: (
                    not any(
                        t.key.startswith("node.kubernetes.io/")
                        for n in core.list_node(label_selector="type=kwok").items
                        for t in n.spec.taints or []
                    )
                ),
                timeout=60,
                what="the node controller to lift the unreachable taints",
            )
    finally:
        api.close()
    return healed


def breakable_cluster(instance: int) -> tuple[SimCluster, bool]:
    """Cluster `instance` with the stand-in, up, healed and with our CRDs; and
    whether it was running already (then it is left running afterwards)."""
    cluster = SimCluster(with_standin=True, instance=instance)
    was_running = cluster.healthy() and not cluster.dead_components()
    if not was_running:
        cluster.up()
    heal_nodes(cluster)
    install_crds(cluster)
    return cluster, was_running


@pytest.fixture(scope="package")
def own_cluster() -> Iterator[SimCluster]:
    """Instance 2: a whole cluster (with the stand-in) that tests may break.

    Started here and stopped at the end, unless it was already running (a
    developer's, kept for the next run) or TFSO_KEEP_SIM is set.
    """
    cluster, was_running = breakable_cluster(OWN_INSTANCE)
    yield cluster
    if not was_running and not os.environ.get("TFSO_KEEP_SIM"):
        cluster.down()


@pytest.fixture(scope="package")
def own_api_client(own_cluster: SimCluster) -> Iterator[Any]:
    """An admin ApiClient for the own cluster."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(own_cluster.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def start_own_operator(own_cluster: SimCluster) -> Iterator[OperatorFactory]:
    """Start operator processes on the own cluster; all stopped afterwards."""
    yield from _operator_factory(own_cluster.kubeconfig, own_cluster.state_dir / "logs")
