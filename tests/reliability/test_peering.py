"""Two operator replicas with kopf peering (TFSO_PEERING): one acts, the other waits.

On the own cluster (the peering kinds are installed there, not on the shared
one). Replica A has priority 200, B 100. The tests run in order on one
module fixture: B stays idle while A works; A is SIGKILLed and B takes over
once A's peering lease runs out; A comes back and B must stop acting; A
stops (SIGTERM, leaving the peering) and B takes over at once. "Acting" is read from each replica's
liveness endpoint: how many ServedModel workers it runs and how many probes
it has sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localdev.sim.cluster import SimCluster
from localdev.support.k8s import create_sm, get_sm, patch_sm, servedmodel
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tests.reliability import results
from tests.reliability.conftest import (
    PEERING_CRDS,
    REL_PREFIX,
    delete_namespace,
    make_namespace,
)
from tests.reliability.invariants import wait_converged

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

PEERING = "tfso-reliability"
# TFSO_PEERING_LIFETIME_SECONDS of both replicas: a SIGKILLed peer counts as
# alive this long after its last keep-alive (the operator's default).
LEASE_SECONDS = 10


@dataclass
class Pair:
    cluster: SimCluster
    api: Any
    namespace: str
    a: OperatorProcess
    b: OperatorProcess
    base: Path
    version: int = 1
    figures: dict[str, Any] = field(default_factory=dict)

    def change(self) -> int:
        """Roll out the next version; returns the generation to wait for."""
        self.version += 1
        body = patch_sm(self.api, self.namespace, "peered", {"spec": {"version": self.version}})
        return int(body["metadata"]["generation"])

    def acted_on(self, generation: int) -> bool:
        status = get_sm(self.api, self.namespace, "peered").get("status") or {}
        return status.get("observedGeneration") == generation


ACTIVITY = ("servedmodels", "probe_calls", "api_writes")


def health(proc: OperatorProcess, since: float = 0.0) -> dict[str, int]:
    """The replica's activity counters from its liveness answer: {"servedmodels":
    workers, "probe_calls": probes sent, "api_writes": API writes sent}, computed
    at or after `since` (Unix time; kopf caches the answer up to 10 s)."""
    data = proc.health_since(since) if since else proc.health()
    return {key: int(data[key]) for key in ACTIVITY}


def writers(a: dict[str, int], b: dict[str, int], a2: dict[str, int], b2: dict[str, int]) -> int:
    """How many replicas wrote between two readings of both."""
    return int(a2["api_writes"] > a["api_writes"]) + int(b2["api_writes"] > b["api_writes"])


def stopped_workers(proc: OperatorProcess) -> int:
    """How often the replica stopped all its workers for a pause (pause.py)."""
    return _log_count(proc, "peering: paused; every worker stopped")


def _log_count(proc: OperatorProcess, text: str) -> int:
    if not proc.log_path.exists():
        return 0
    return proc.log_path.read_text(errors="replace").count(text)


def peers(pair: Pair) -> dict[str, Any]:
    """The replicas' keep-alives in the KopfPeering object (kopf writes one each)."""
    from kubernetes import client

    peering = client.CustomObjectsApi(pair.api).get_namespaced_custom_object(
        "kopf.dev", "v1", pair.namespace, "kopfpeerings", PEERING
    )
    return dict(peering.get("status") or {})


def resumes(proc: OperatorProcess) -> int:
    """How often the replica logged that it resumed (was the one to act)."""
    return _log_count(proc, "Resuming operations after the pause")


@pytest.fixture(scope="module")
def pair(own_cluster: SimCluster, own_api_client: Any, model_store: Path) -> Iterator[Pair]:
    crd = next(path for path in PEERING_CRDS if path.exists())
    # Same field manager as install_crds: a later `make` install of the
    # shipped file takes these over without conflicts.
    own_cluster._kubectl("apply", "--server-side", "--field-manager=sim", "-f", str(crd))
    own_cluster.wait_established(crd)
    namespace = make_namespace(own_api_client)
    from kubernetes import client

    client.CustomObjectsApi(own_api_client).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    logs = own_cluster.state_dir / "logs"

    def replica(name: str, priority: int) -> OperatorProcess:
        env = {
            "TFSO_PEERING": PEERING,
            "TFSO_PEERING_PRIORITY": str(priority),
            "TFSO_PROBE_INTERVAL_SECONDS": "2",
            "TFSO_PEERING_LIFETIME_SECONDS": str(LEASE_SECONDS),
        }
        log = logs / f"operator-{REL_PREFIX}-peer-{name}.log"
        return OperatorProcess(own_cluster.kubeconfig, namespace, log, env=env)

    a, b = replica("a", 200).start(), replica("b", 100).start()
    base = make_model_dir(model_store, "peering", good=(1, 2, 3, 4, 5))
    yield Pair(own_cluster, own_api_client, namespace, a, b, base)
    a.stop()
    b.stop()
    delete_namespace(own_api_client, namespace)
    record_pair(pair_figures=PAIR_FIGURES)


PAIR_FIGURES: dict[str, Any] = {}


def record_pair(pair_figures: dict[str, Any]) -> None:
    if not pair_figures:
        return
    passed = sum(1 for k in ("idle", "crash", "return", "graceful") if pair_figures.get(k) is True)
    results.record(
        "two-replicas-peering",
        "Faults",
        "Two operator replicas with kopf peering: the lower one idle; takeover on SIGKILL; "
        "the lower one pauses when the higher returns; takeover on SIGTERM",
        4,
        passed,
        "one replica acted at a time, the other took over",
        suite="make chaos",
        figures={k: v for k, v in pair_figures.items() if not isinstance(v, bool) and k != "bug"},
        bug=pair_figures.get("bug", ""),
    )


def test_only_the_higher_priority_replica_acts(pair: Pair) -> None:
    wait_until(lambda: resumes(pair.a) >= 1, timeout=30, what="replica A to start acting")
    # B's own keep-alive in the peering object: B is up and has read the
    # peering (with A's entry in it), so had it been going to act, it would.
    wait_until(lambda: len(peers(pair)) >= 2, timeout=30, what="both replicas in the peering")
    assert resumes(pair.b) == 0, "replica B started acting next to A"
    spec = {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(pair.base)}},
        "version": 1,
        # Replaced pods go in seconds (the local kubelet honours the grace
        # period), while a paused replica is still paused.
        "terminationGracePeriodSeconds": 5,
    }
    create_sm(pair.api, pair.namespace, servedmodel("peered", spec))
    wait_converged(pair.api, pair.namespace, "peered", "1", 1, timeout=60)
    # kopf caches probe answers for 10 s: A's count may lag; B's is 0 either way.
    wait_until(lambda: health(pair.a)["servedmodels"] == 1, timeout=15, what="A's worker count")
    a, b = health(pair.a), health(pair.b)
    idle = dict.fromkeys(ACTIVITY, 0)
    PAIR_FIGURES["idle"] = a["servedmodels"] == 1 and b == idle
    assert a["servedmodels"] == 1, a
    assert a["api_writes"] > 0, a
    assert b == idle, f"the paused replica acted: {b}"


def test_sigkill_hands_over_after_the_lease(pair: Pair) -> None:
    """A dies without a word: B resumes once A's keep-alive is older than the
    peering lifetime, catches up and converges (B never acted before, so it
    starts from a fresh list of everything)."""
    pair.a.kill()
    killed = time.monotonic()
    generation = pair.change()
    wait_until(
        lambda: pair.acted_on(generation),
        timeout=LEASE_SECONDS + 30,
        what="replica B to take over after A's lease expired",
    )
    PAIR_FIGURES["takeover after SIGKILL s"] = round(time.monotonic() - killed, 1)
    wait_converged(pair.api, pair.namespace, "peered", str(pair.version), 1, timeout=60)
    PAIR_FIGURES["crash"] = True


def test_returning_replica_pauses_the_other(pair: Pair) -> None:
    """A comes back with the higher priority: B pauses and stops acting at once;
    from then on only A writes."""
    before = stopped_workers(pair.b)
    pair.a.start()
    wait_until(
        lambda: stopped_workers(pair.b) > before, timeout=30, what="replica B to stop its workers"
    )
    now = time.time()
    a0, b0 = health(pair.a, since=now), health(pair.b, since=now)
    assert b0["servedmodels"] == 0, b0
    # A acts: a rollout that replaces the pod while B is paused.
    generation = pair.change()
    wait_until(lambda: pair.acted_on(generation), timeout=60, what="replica A to act")
    wait_converged(pair.api, pair.namespace, "peered", str(pair.version), 1, timeout=60)
    now = time.time()
    a1, b1 = health(pair.a, since=now), health(pair.b, since=now)
    PAIR_FIGURES["writers during A's rollout"] = writers(a0, b0, a1, b1)
    PAIR_FIGURES["return"] = b1 == b0 and a1["api_writes"] > a0["api_writes"]
    assert a1["api_writes"] > a0["api_writes"], f"A did not write: {a0} -> {a1}"
    assert b1 == b0, f"paused replica B still acts: {b0} -> {b1}"


def test_graceful_stop_hands_over_at_once(pair: Pair) -> None:
    """A stops (SIGTERM, it leaves the peering): B resumes at once and converges,
    although pods were replaced while it was paused."""
    pair.a.stop()
    stopped = time.monotonic()
    generation = pair.change()
    wait_until(lambda: pair.acted_on(generation), timeout=60, what="replica B to take over")
    PAIR_FIGURES["takeover after SIGTERM s"] = round(time.monotonic() - stopped, 1)
    wait_converged(pair.api, pair.namespace, "peered", str(pair.version), 1, timeout=30)
    PAIR_FIGURES["graceful"] = True
