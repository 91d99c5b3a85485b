"""The scale story (docs/scale.md): shards that never touch each other's ServedModels,
peered replicas of which exactly one acts, a takeover when the active one is
SIGKILLed, and `make bench --quick` proving the benchmarks run.

These tests start cluster instance 7 of their own (other ports and state than
the session's instance 0): the benchmark reads cluster-wide API counters, and
peering needs kopf's cluster-scoped CRDs. Two operators that split the work
are told apart by their /healthz `servedmodels` probe (how many ServedModels
each reconciles) and by what happens to a shard's objects while its
operator is stopped: nothing.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import BENCH_NODES
from localdev.sim.cluster import SimCluster
from localdev.support.k8s import create_sm, get_sm, patch_sm, servedmodel, wait_sm
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tfserving_operator.api import LABEL_SERVEDMODEL

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTANCE = 7
# The quick benchmark's own instance: it refuses one that is already up.
BENCH_INSTANCE = 8
PEERING_CRDS = REPO_ROOT / "charts" / "tfserving-operator" / "crds" / "kopf.dev-peerings.yaml"
# TFSO_PEERING_LIFETIME_SECONDS (the operator's default): a SIGKILLed
# replica's keep-alive is trusted this long, so the standby waits up to this.
PEERING_LIFETIME = 10


@pytest.fixture(scope="module")
def scale_sim() -> Iterator[SimCluster]:
    """Cluster instance 7 with the ServedModel and kopf peering CRDs; stopped afterwards."""
    cluster = SimCluster(instance=INSTANCE, nodes=BENCH_NODES, with_standin=False)
    was_running = cluster.healthy()
    cluster.up()
    cluster.install_crds()
    kubectl = [str(cluster.kubectl_path()), f"--kubeconfig={cluster.kubeconfig}"]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--field-manager=sim", "-f", str(PEERING_CRDS)],
        check=True,
        capture_output=True,
    )
    cluster.wait_established(PEERING_CRDS)
    yield cluster
    if not was_running and not os.environ.get("TFSO_KEEP_SIM"):
        cluster.down()


@pytest.fixture(scope="module")
def scale_api(scale_sim: SimCluster) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(scale_sim.kubeconfig))
    yield client
    client.close()


@pytest.fixture
def make_namespace(scale_api: Any) -> Iterator[Any]:
    """Creates namespaces on demand; deletes them all afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(scale_api)
    made: list[str] = []

    def make(prefix: str = "scale") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": name}})
        made.append(name)
        return name

    yield make
    for name in made:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def operators(scale_sim: SimCluster) -> Iterator[Any]:
    """Starts operator processes on demand; stops every one that is still running."""
    started: list[OperatorProcess] = []

    def start(label: str, namespaces: str, **env: str) -> OperatorProcess:
        log = scale_sim.logs / f"operator-scale-{label}-{uuid.uuid4().hex[:4]}.log"
        proc = OperatorProcess(scale_sim.kubeconfig, namespaces, log, env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def _spec(replicas: int = 0) -> dict[str, Any]:
    # replicas 0: nothing to schedule, the operator's own work is all there is.
    return {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": "/tmp/tfso-test-models/half_plus_three"}},
        "version": 1,
        "replicas": replicas,
    }


def _reconciled(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    return bool(status) and status.get("observedGeneration") == body["metadata"]["generation"]


def _fresh_workers(proc: OperatorProcess) -> int:
    """How many ServedModels the process reconciles, from a /healthz answer
    computed from now on (kopf caches the answer up to 10 s)."""
    return int(proc.health_since(time.time())["servedmodels"])


def _after_the_acting_side(api: Any, namespace: str, name: str, **labels: str) -> None:
    """Create `name` after whatever the test did, and wait for its status: the
    operator that owns it has processed everything before it. Only then does
    "the other shard did nothing" mean anything (a fixed wait passes as well
    when no operator has got round to anything yet)."""
    body = servedmodel(name, _spec())
    if labels:
        body["metadata"]["labels"] = labels
    create_sm(api, namespace, body)
    wait_sm(api, namespace, name, "reconciled (the acting side)", _reconciled, timeout=60)


def _assert_untouched(api: Any, namespace: str, name: str) -> None:
    assert not get_sm(api, namespace, name).get("status"), f"{namespace}/{name} touched"


def test_namespace_shards_touch_only_their_own(scale_api, make_namespace, operators):
    """TFSO_NAMESPACES: two operators, two namespaces, no overlap."""
    ns_a, ns_b = make_namespace("shard-a"), make_namespace("shard-b")
    op_a = operators("ns-a", ns_a)
    op_b = operators("ns-b", ns_b)
    for ns in (ns_a, ns_b):
        for i in range(3):
            create_sm(scale_api, ns, servedmodel(f"m{i}", _spec()))
    for ns in (ns_a, ns_b):
        for i in range(3):
            wait_sm(scale_api, ns, f"m{i}", "reconciled", _reconciled, timeout=60)
    assert _fresh_workers(op_a) == 3
    assert _fresh_workers(op_b) == 3

    # With B stopped, a new ServedModel in B's namespace waits for B; A ignores it.
    op_b.stop()
    create_sm(scale_api, ns_b, servedmodel("late", _spec()))
    _after_the_acting_side(scale_api, ns_a, "after-late")
    _assert_untouched(scale_api, ns_b, "late")
    assert _fresh_workers(op_a) == 4
    op_b.start()
    wait_sm(scale_api, ns_b, "late", "reconciled by its own shard", _reconciled, timeout=60)


def _children(api: Any, namespace: str, names: list[str]) -> int:
    """Objects of every watched kind labelled as children of `names`."""
    from kubernetes import client

    selector = f"{LABEL_SERVEDMODEL} in ({','.join(names)})"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    lists = (
        core.list_namespaced_pod,
        core.list_namespaced_service,
        core.list_namespaced_config_map,
        apps.list_namespaced_deployment,
        apps.list_namespaced_replica_set,
        client.PolicyV1Api(api).list_namespaced_pod_disruption_budget,
        client.NetworkingV1Api(api).list_namespaced_network_policy,
    )
    return sum(len(fn(namespace, label_selector=selector).items) for fn in lists)


def _cached(proc: OperatorProcess) -> int:
    return int(proc.health()["cached_objects"])


def _caches_exactly(proc: OperatorProcess, count: int) -> bool:
    return _cached(proc) == count


def _cached_text(proc: OperatorProcess) -> str:
    return f"it caches {_cached(proc)}"


def _passes(proc: OperatorProcess) -> float:
    """Successful reconcile passes so far, from the process's /metrics."""
    for line in proc.metrics_text().splitlines():
        if line.startswith('tfserving_operator_reconcile_passes_total{outcome="success"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_restart_over_converged_servedmodels_writes_nothing(scale_api, make_namespace, operators):
    """A restarted operator lists every child again (its own streams, watch.py)
    and finds all of them as it left them: not one request but GETs. Passes
    are made to run once the cache holds every child (an annotation on each
    ServedModel), so "no write" is not "no pass yet"."""
    namespace = make_namespace("restart")
    names = [f"m{i}" for i in range(3)]
    first = operators("restart-1", namespace)
    for name in names:
        create_sm(scale_api, namespace, servedmodel(name, _spec()))
    for name in names:
        wait_sm(scale_api, namespace, name, "reconciled", _reconciled, timeout=60)
    first.stop()
    children = _children(scale_api, namespace, names)
    second = operators("restart-2", namespace)
    wait_until(
        functools.partial(_caches_exactly, second, children),
        timeout=60,
        what=f"the restarted operator to cache all {children} children",
        describe=functools.partial(_cached_text, second),
    )
    before = _passes(second)
    for name in names:
        patch_sm(scale_api, namespace, name, {"metadata": {"annotations": {"tfso-test/poke": "1"}}})
    wait_until(
        lambda: _passes(second) >= before + len(names),
        timeout=60,
        what=f"{len(names)} passes with every child cached",
    )
    assert second.health_since(time.time())["api_writes"] == 0


def test_label_shards_touch_only_their_own(scale_api, make_namespace, operators, capsys):
    """TFSO_LABEL_SELECTOR: two operators on one namespace, split by a label."""
    ns = make_namespace("shard-label")
    op_a = operators("label-a", ns, TFSO_LABEL_SELECTOR="shard=a")
    op_b = operators("label-b", ns, TFSO_LABEL_SELECTOR="shard=b")
    for shard, count in (("a", 2), ("b", 3)):
        for i in range(count):
            body = servedmodel(f"{shard}{i}", _spec())
            body["metadata"]["labels"] = {"shard": shard}
            create_sm(scale_api, ns, body)
    unlabelled = servedmodel("nobody", _spec())
    create_sm(scale_api, ns, unlabelled)
    for name in ("a0", "a1", "b0", "b1", "b2"):
        wait_sm(scale_api, ns, name, "reconciled", _reconciled, timeout=60)
    assert _fresh_workers(op_a) == 2
    assert _fresh_workers(op_b) == 3
    # Each shard's watches deliver only its own ServedModels' children
    # (server-side labelSelectors), so each caches only those.
    held = {}
    for proc, names in ((op_a, ["a0", "a1"]), (op_b, ["b0", "b1", "b2"])):
        own = _children(scale_api, ns, names)
        wait_until(
            functools.partial(_caches_exactly, proc, own),
            timeout=30,
            what=f"the shard to cache exactly its {own} objects",
            describe=functools.partial(_cached_text, proc),
        )
        held[proc.log_path.stem] = own
    total = _children(scale_api, ns, ["a0", "a1", "b0", "b1", "b2", "nobody"])
    with capsys.disabled():
        print(f"\n[scale] label shards cache {held} of the namespace's {total} children")
    # Outside every shard: no operator acts on it (once both acted on later objects).
    _after_the_acting_side(scale_api, ns, "a-after", shard="a")
    _after_the_acting_side(scale_api, ns, "b-after", shard="b")
    _assert_untouched(scale_api, ns, "nobody")

    op_a.stop()
    patch_sm(scale_api, ns, "a0", {"spec": {"fileSystemPollWaitSeconds": 31}})
    _after_the_acting_side(scale_api, ns, "b-after-patch", shard="b")
    body = get_sm(scale_api, ns, "a0")
    assert body["status"]["observedGeneration"] < body["metadata"]["generation"], (
        "shard b acted on a ServedModel of shard a"
    )


def test_peered_replicas_one_acts_and_the_other_takes_over(
    scale_api, scale_sim, make_namespace, operators, record_property, capsys
):
    """TFSO_PEERING: of two replicas only the higher-priority one acts; SIGKILL it and
    the other takes over once kopf's peering lifetime has passed."""
    from kubernetes import client

    ns = make_namespace("peered")
    peering = "tfso-scale"
    client.CustomObjectsApi(scale_api).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        ns,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": peering}},
    )
    active = operators("peer-active", ns, TFSO_PEERING=peering, TFSO_PEERING_PRIORITY="200")
    standby = operators("peer-standby", ns, TFSO_PEERING=peering, TFSO_PEERING_PRIORITY="100")
    create_sm(scale_api, ns, servedmodel("m0", _spec()))
    wait_sm(scale_api, ns, "m0", "reconciled", _reconciled, timeout=60)
    assert _fresh_workers(active) == 1
    assert _fresh_workers(standby) == 0, "the standby replica reconciles too"

    active.kill()
    killed = time.monotonic()
    patch_sm(scale_api, ns, "m0", {"spec": {"fileSystemPollWaitSeconds": 31}})
    wait_sm(
        scale_api,
        ns,
        "m0",
        "reconciled by the standby",
        _reconciled,
        timeout=PEERING_LIFETIME + 60,
    )
    takeover = time.monotonic() - killed
    record_property("takeover_seconds", round(takeover, 1))
    with capsys.disabled():
        print(f"\n[scale] standby took over {takeover:.1f} s after SIGKILL of the active replica")
    assert _fresh_workers(standby) == 1
    assert takeover <= PEERING_LIFETIME + 30


def test_quick_benchmark_runs(tmp_path):
    """`python -m benchmarks --quick` runs every benchmark and writes its results,
    on an instance it starts and stops itself (it refuses one that is up)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            f"--instance={BENCH_INSTANCE}",
            f"--out={tmp_path}",
            # Not the KServe comparison: its first run builds KServe's manager (minutes).
            "--only=throughput,idle,startup,probe_load,gate_latency,gate_under_load",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert not errors, errors
    assert results["throughput"]["summary"][0]["applied_seconds_median"] > 0
    # Every section ran (a missing one would be a KeyError below, with no clue why).
    missing = {"idle", "startup", "probe_load"} - results.keys()
    assert not missing, f"sections missing: {missing}; stderr: {result.stderr[-3000:]}"
    assert "operator_writes" in results["idle"]
    assert results["startup"]["cold_starts"][0]["all_applied_seconds"] is not None
    probe = results["probe_load"]
    # Steady state: each server is asked once per probe interval, so the
    # window holds at most one call per pod per interval begun in it (a hot
    # loop breaks the upper bound), and at least one per pod once it spans
    # two intervals (a probe loop that stopped breaks the lower one).
    pods = (results.get("probe_load_idle") or {}).get("pods") or probe["servedmodels"]
    intervals = probe["probe_window_seconds"] / probe["probe_interval_seconds"]
    assert probe["probe_calls"] <= pods * (int(intervals) + 1), probe
    if intervals >= 2:
        assert probe["probe_calls"] >= pods, probe
    loaded = results["gate_under_load"]["defaults"]
    assert loaded["predicts"] > 0 and loaded["predict_failures"] == 0, loaded
    assert loaded["probes"] > 0, loaded
    assert (tmp_path / "quick.md").read_text().startswith("# Benchmark results")
