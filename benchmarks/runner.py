"""The operator under test: a real process (the image's entry point), cluster-wide."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.guard import CLEANUP
from localdev.sim.cluster import SimCluster
from localdev.support.operator import OperatorProcess

# The operator's defaults, not the test suite's faster backoff (OperatorProcess sets 1 s).
BENCH_ENV = {"TFSO_PROBE_BACKOFF_MAX_SECONDS": "5", "TFSO_LOG_LEVEL": "INFO"}


@dataclass
class RunningOperator:
    """A started operator, when it was started, and how long /healthz took to answer."""

    process: OperatorProcess
    started_at: float  # time.monotonic() just before the process was spawned
    healthy_after: float
    unregister: Callable[[], None] = lambda: None  # from guard.CLEANUP

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def health(self) -> dict[str, Any]:
        """kopf's /healthz answer (OperatorProcess.health), cached 10 s."""
        return self.process.health()

    def fresh_health(self) -> dict[str, Any]:
        """/healthz computed no earlier than this call (kopf caches it up to 10 s)."""
        return self.process.health_since(time.time())

    def stop(self) -> None:
        self.process.stop()
        self.unregister()

    def kill(self) -> None:
        self.process.kill()
        self.unregister()


def start_operator(
    cluster: SimCluster, label: str, env: dict[str, str] | None = None, namespaces: str = ""
) -> RunningOperator:
    """Start the operator (cluster-wide unless `namespaces`) and wait for /healthz."""
    log = Path(cluster.logs) / f"operator-{label}.log"
    process = OperatorProcess(cluster.kubeconfig, namespaces, log, env={**BENCH_ENV, **(env or {})})
    # Registered before the spawn: an interrupt while it starts must stop it too
    # (it runs in a process group of its own, out of reach of a terminal's Ctrl-C).
    unregister = CLEANUP.add(f"operator {label}", process.stop)
    started = time.monotonic()
    process.start()
    return RunningOperator(process, started, time.monotonic() - started, unregister)
