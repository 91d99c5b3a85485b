"""The cluster harness itself: `up` on a running cluster changes nothing."""

from __future__ import annotations

import time

from localdev.sim.cluster import COMPONENT_NAMES, SimCluster

# The operator is recorded only while `make demo` leaves one running.
CLUSTER_COMPONENTS = tuple(n for n in COMPONENT_NAMES if n != "operator")


def recorded_pids(sim: SimCluster) -> dict[str, int]:
    return {name: int((sim.pids / f"{name}.pid").read_text()) for name in CLUSTER_COMPONENTS}


def test_up_on_a_running_cluster_is_idempotent(sim):
    before = recorded_pids(sim)
    started = time.monotonic()
    assert sim.up() is sim
    elapsed = time.monotonic() - started
    # Nothing was started again: no build, no process, no wait for a fresh apiserver.
    assert elapsed < 15, f"up() took {elapsed:.1f} s on a running cluster"
    assert recorded_pids(sim) == before


def test_status_reports_every_component_running(sim):
    assert sim.status() == dict.fromkeys(CLUSTER_COMPONENTS, "running")
    assert sim.dead_components() == []
    assert sim.healthy()


def test_a_second_handle_on_the_same_state_sees_the_same_cluster(sim):
    other = SimCluster(state_dir=sim.state_dir)
    assert other.dead_components() == []
    assert other.api_get("/readyz") == b"ok"
    assert recorded_pids(other) == recorded_pids(sim)
