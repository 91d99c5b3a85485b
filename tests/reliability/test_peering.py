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
# kopf's default peering lifetime: a SIGKILLed peer counts as alive this long.
LEASE_SECONDS = 60


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


def health(proc: OperatorProcess) -> dict[str, int]:
    """The replica's activity counters from its liveness answer: {"servedmodels":
    workers, "probe_calls": probes sent} (its other details are not activity)."""
    data = proc.health()
    return {key: int(data[key]) for key in ("servedmodels", "probe_calls")}


def _log_count(proc: OperatorProcess, text: str) -> int:
    if not proc.log_path.exists():
        return 0
    return proc.log_path.read_text(errors="replace").count(text)


def pauses(proc: OperatorProcess) -> int:
    """How often the replica logged that it paused for a higher-priority peer.

    (A replica starts paused until it has seen the peering object, and that
    first pause is not logged.)"""
    return _log_count(proc, "Pausing operations in favour of")


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
    own_cluster._kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd))
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
    PAIR_FIGURES["idle"] = a["servedmodels"] == 1 and b == {"servedmodels": 0, "probe_calls": 0}
    assert a["servedmodels"] == 1, a
    assert b == {"servedmodels": 0, "probe_calls": 0}, f"the paused replica acted: {b}"


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


@pytest.mark.xfail(
    strict=True,
    # The known bug shows as a failed assertion (or a wait that timed out);
    # anything else (a broken fixture, a TypeError) is not the known bug.
    raises=AssertionError,
    reason=(
        "kopf's pause stops only the watch streams: the paused replica's "
        "per-ServedModel workers (reconcile.Worker tasks) keep probing, "
        "writing gates and status next to the active replica"
    ),
)
def test_returning_replica_pauses_the_other(pair: Pair) -> None:
    """A comes back with the higher priority: B pauses, and must stop acting."""
    before = pauses(pair.b)
    pair.a.start()
    wait_until(lambda: pauses(pair.b) > before, timeout=30, what="replica B to pause again")
    # A acts: a rollout that replaces the pod while B is paused.
    generation = pair.change()
    wait_until(lambda: pair.acted_on(generation), timeout=60, what="replica A to act")
    wait_converged(pair.api, pair.namespace, "peered", str(pair.version), 1, timeout=60)
    time.sleep(11)  # kopf caches probe answers for 10 s
    first = health(pair.b)
    time.sleep(11)
    second = health(pair.b)
    still_acting = second["probe_calls"] > first["probe_calls"] or second["servedmodels"] > 0
    PAIR_FIGURES["return"] = not still_acting
    if still_acting:
        PAIR_FIGURES["bug"] = "a paused replica keeps reconciling"
        PAIR_FIGURES["paused replica's probes in 11 s"] = (
            second["probe_calls"] - first["probe_calls"]
        )
    assert not still_acting, f"paused replica B still acts: {first} -> {second}"


@pytest.mark.xfail(
    strict=True,
    # The known bug shows as a failed assertion (or a wait that timed out);
    # anything else (a broken fixture, a TypeError) is not the known bug.
    raises=AssertionError,
    reason=(
        "objects deleted while a replica's watches were paused never leave its "
        "observe.Cache (kopf's re-list emits no DELETED for them): the old pod "
        "stays in status.pods as ServerUnreachable and the rollout never completes"
    ),
)
def test_graceful_stop_hands_over_at_once(pair: Pair) -> None:
    """A stops (SIGTERM, it leaves the peering): B resumes at once and converges,
    although pods were replaced while it was paused."""
    pair.a.stop()
    stopped = time.monotonic()
    generation = pair.change()
    wait_until(lambda: pair.acted_on(generation), timeout=60, what="replica B to take over")
    PAIR_FIGURES["takeover after SIGTERM s"] = round(time.monotonic() - stopped, 1)
    try:
        wait_converged(pair.api, pair.namespace, "peered", str(pair.version), 1, timeout=30)
    except AssertionError:
        PAIR_FIGURES["bug"] = "; ".join(
            filter(
                None,
                [PAIR_FIGURES.get("bug", ""), "stale pods after a pause: rollout never completes"],
            )
        )
        raise
    PAIR_FIGURES["graceful"] = True
