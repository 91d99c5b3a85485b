"""The operator SIGKILLed at random points of create, update, delete and rollout.

Each iteration starts a change, kills the operator after a random delay (a
seeded RNG: TFSO_CHAOS_SEED, printed), sometimes changes the spec again
while it is dead, restarts it, and then requires convergence as
invariants.problems() defines it: status current and Ready, exactly one
Deployment, the Services, only ConfigMaps some ReplicaSet uses, every pod on
the current config with its gate open, nothing owned by an older incarnation.
Deletes must leave nothing behind, and nothing may come back.

The operator here is a process of our own watching an r-<hex>-* namespace,
so killing it disturbs no other test.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localdev.sim.cluster import SimCluster
from localdev.support.k8s import condition, create_sm, delete_sm, get_sm, patch_sm, servedmodel
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tests.reliability import results
from tests.reliability.conftest import REL_PREFIX, delete_namespace, make_namespace
from tests.reliability.invariants import leftovers, wait_converged, wait_gone

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

SEED = int(os.environ.get("TFSO_CHAOS_SEED", "20250509"))
ITERATIONS = int(os.environ.get("TFSO_CHAOS_ITERATIONS", "5"))
CONVERGE_TIMEOUT = float(os.environ.get("TFSO_CHAOS_CONVERGE_TIMEOUT", "90"))
LOAD_DELAY = "standin.tests.tfoperator.dev/load-delay-seconds"


@dataclass
class Chaos:
    """One namespace, one operator process, one model folder, one RNG."""

    api: Any
    namespace: str
    operator: OperatorProcess
    base: Path
    rng: random.Random
    log: list[str] = field(default_factory=list)

    def spec(self, version: int, replicas: int = 1, **extra: Any) -> dict[str, Any]:
        return {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": str(self.base)}},
            "version": version,
            "replicas": replicas,
            **extra,
        }

    def kill_after(self, low: float, high: float) -> float:
        # Half the kills come within 0.25 s, while the operator is most
        # likely in the middle of its first pass over the change.
        delay = (
            self.rng.uniform(0.0, 0.25) if self.rng.random() < 0.5 else self.rng.uniform(low, high)
        )
        time.sleep(delay)
        self.operator.kill()
        return delay

    def restart_after(self, low: float, high: float) -> None:
        time.sleep(self.rng.uniform(low, high))
        self.operator.start()


@pytest.fixture(scope="module")
def chaos(sim: SimCluster, crds: None, api_client: Any, model_store: Path) -> Iterator[Chaos]:
    namespace = make_namespace(api_client)
    log = sim.state_dir / "logs" / f"operator-{REL_PREFIX}-sigkill.log"
    operator = OperatorProcess(sim.kubeconfig, namespace, log).start()
    base = make_model_dir(model_store, "sigkill", good=(1, 2, 3))
    print(f"chaos seed {SEED} (TFSO_CHAOS_SEED), {ITERATIONS} iterations", file=sys.stderr)
    yield Chaos(api_client, namespace, operator, base, random.Random(SEED))
    operator.stop()
    delete_namespace(api_client, namespace)


Iteration = Callable[[Chaos, int], str]


def run_iterations(
    chaos: Chaos,
    key: str,
    title: str,
    iteration: Iteration,
    extra: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Run ITERATIONS iterations, record how many converged, fail if any did not."""
    failures: list[str] = []
    notes: list[str] = []
    seconds: list[float] = []
    for i in range(ITERATIONS):
        started = time.monotonic()
        try:
            notes.append(iteration(chaos, i))
            seconds.append(time.monotonic() - started)
        except AssertionError as err:
            failures.append(f"iteration {i}: {err}")
        finally:
            if chaos.operator.proc is None or chaos.operator.proc.poll() is not None:
                chaos.operator.start()
            _delete_all(chaos)
    passed = ITERATIONS - len(failures)
    results.record(
        key,
        "Faults",
        title,
        ITERATIONS,
        passed,
        "converged",
        suite="make chaos",
        figures={
            "seed": SEED,
            "slowest iteration s": round(max(seconds), 1) if seconds else 0.0,
            **(extra() if extra else {}),
            "notes": "; ".join(n for n in notes if n),
        },
    )
    assert not failures, "\n".join(failures)


def test_sigkill_during_create(chaos: Chaos) -> None:
    def iteration(c: Chaos, i: int) -> str:
        name = f"create-{i}"
        create_sm(c.api, c.namespace, servedmodel(name, c.spec(1, replicas=2)))
        delay = c.kill_after(0.0, 1.5)
        c.restart_after(0.0, 1.0)
        wait_converged(c.api, c.namespace, name, "1", 2, CONVERGE_TIMEOUT)
        return f"{delay:.2f}"

    run_iterations(
        chaos,
        "operator-sigkill-during-create",
        "Operator SIGKILLed 0-1.5 s into a create, restarted",
        lambda c, i: "kill at " + iteration(c, i) + " s",
    )


def test_sigkill_during_update(chaos: Chaos) -> None:
    def iteration(c: Chaos, i: int) -> str:
        name = f"update-{i}"
        create_sm(c.api, c.namespace, servedmodel(name, c.spec(1)))
        wait_converged(c.api, c.namespace, name, "1", 1, CONVERGE_TIMEOUT)
        # Not a version change: more replicas, another flag, another pod annotation.
        patch = {
            "spec": {
                "replicas": 3,
                "serverArgs": [f"--rest_api_timeout_in_ms={5000 + i}"],
                "podAnnotations": {"example.com/revision": str(i)},
            }
        }
        patch_sm(c.api, c.namespace, name, patch)
        delay = c.kill_after(0.0, 1.5)
        c.restart_after(0.0, 1.0)
        wait_converged(c.api, c.namespace, name, "1", 3, CONVERGE_TIMEOUT)
        deployment_args = _container_args(c, name)
        assert f"--rest_api_timeout_in_ms={5000 + i}" in deployment_args, deployment_args
        return f"{delay:.2f}"

    run_iterations(
        chaos,
        "operator-sigkill-during-update",
        "Operator SIGKILLed 0-1.5 s into a spec update (replicas, flags, annotations)",
        lambda c, i: "kill at " + iteration(c, i) + " s",
    )


def test_sigkill_during_rollout(chaos: Chaos) -> None:
    mid_rollout = 0

    def iteration(c: Chaos, i: int) -> str:
        nonlocal mid_rollout
        name = f"rollout-{i}"
        # Version 2 takes 1.5 s to load on each pod: the rollout lasts seconds.
        annotations = {LOAD_DELAY: "2=1.5,3=1"}
        create_sm(c.api, c.namespace, servedmodel(name, c.spec(1, 2, podAnnotations=annotations)))
        wait_converged(c.api, c.namespace, name, "1", 2, CONVERGE_TIMEOUT)
        patch_sm(c.api, c.namespace, name, {"spec": {"version": 2}})
        delay = c.kill_after(0.2, 4.0)
        progressing = condition(get_sm(c.api, c.namespace, name), "Progressing")
        if progressing.get("status") == "True":
            mid_rollout += 1
        target = "2"
        if i % 2 == 1:
            # A new target while nobody watches: the restart must pick it, not finish v2.
            patch_sm(c.api, c.namespace, name, {"spec": {"version": 3}})
            target = "3"
        c.restart_after(0.0, 1.5)
        wait_converged(c.api, c.namespace, name, target, 2, CONVERGE_TIMEOUT)
        return f"kill at {delay:.2f} s -> v{target}"

    run_iterations(
        chaos,
        "operator-sigkill-during-rollout",
        "Operator SIGKILLed 0.2-4 s into a gated v1->v2 rollout (2 replicas; "
        "every other time v3 asked for while it was dead), restarted",
        iteration,
        extra=lambda: {"kills while Progressing": f"{mid_rollout}/{ITERATIONS}"},
    )


def test_sigkill_during_delete(chaos: Chaos) -> None:
    def iteration(c: Chaos, i: int) -> str:
        name = f"delete-{i}"
        create_sm(c.api, c.namespace, servedmodel(name, c.spec(1, 2)))
        wait_converged(c.api, c.namespace, name, "1", 2, CONVERGE_TIMEOUT)
        old_uid = get_sm(c.api, c.namespace, name)["metadata"]["uid"]
        delete_sm(c.api, c.namespace, name)
        delay = c.kill_after(0.0, 1.0)
        recreated = i % 2 == 1
        if recreated:
            # Same name, new object, while the operator is dead.
            _wait_deleted(c, name, old_uid)
            create_sm(c.api, c.namespace, servedmodel(name, c.spec(2)))
        c.restart_after(0.0, 1.0)
        if recreated:
            wait_converged(c.api, c.namespace, name, "2", 1, CONVERGE_TIMEOUT)
            return f"kill at {delay:.2f} s, re-created"
        wait_gone(c.api, c.namespace, name, CONVERGE_TIMEOUT)
        # Nothing comes back once the restarted operator has seen everything.
        # Its own signal that it has: a ServedModel created after the restart
        # got its status (a fixed sleep would pass while it was still starting).
        _wait_operator_acts(c, f"{name}-after")
        assert not leftovers(c.api, c.namespace, name), leftovers(c.api, c.namespace, name)
        return f"kill at {delay:.2f} s"

    run_iterations(
        chaos,
        "operator-sigkill-during-delete",
        "Operator SIGKILLed 0-1 s into a delete (every other time the same name "
        "re-created while it was dead), restarted",
        iteration,
    )


def _delete_all(c: Chaos) -> None:
    """Drop this iteration's ServedModels: the shared stand-in serves every pod."""
    from localdev.support.k8s import custom
    from tfserving_operator import api

    custom(c.api).delete_collection_namespaced_custom_object(
        api.GROUP, api.VERSION, c.namespace, api.PLURAL
    )


def _wait_operator_acts(c: Chaos, sentinel: str) -> None:
    """Create `sentinel` (no replicas) and wait for the operator's status on it."""
    created = create_sm(c.api, c.namespace, servedmodel(sentinel, c.spec(1, replicas=0)))
    generation = created["metadata"]["generation"]

    def has_status() -> bool:
        status = get_sm(c.api, c.namespace, sentinel).get("status") or {}
        return bool(status.get("observedGeneration") == generation)

    wait_until(has_status, timeout=CONVERGE_TIMEOUT, what=f"the operator's status on {sentinel}")


def _wait_deleted(c: Chaos, name: str, uid: str) -> None:
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if get_sm(c.api, c.namespace, name)["metadata"]["uid"] != uid:
                return
        except ApiException as err:
            if err.status == 404:
                return
            raise
        time.sleep(0.1)
    raise AssertionError(f"{name} was not deleted")


def _container_args(c: Chaos, name: str) -> list[str]:
    from kubernetes import client

    deployment = client.AppsV1Api(c.api).read_namespaced_deployment(name, c.namespace)
    return list(deployment.spec.template.spec.containers[0].args or [])
