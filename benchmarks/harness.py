"""The benchmark's own cluster instance, and what every benchmark module shares."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.guard import CLEANUP, check_free
from benchmarks.kubeapi import Api
from localdev.sim.cluster import SimCluster
from localdev.sim.nodes import SimNode

# Instance 0 is the developers' and the test suite's cluster: never this one.
DEFAULT_INSTANCE = 1
# 10 CPU nodes x 200 pods: a thousand one-replica ServedModels (plus surge) schedule.
BENCH_NODES: tuple[SimNode, ...] = tuple(
    SimNode(f"bench-cpu-{i}", cpu="64", memory="256Gi", max_pods=200) for i in range(1, 11)
)


def say(message: str) -> None:
    """Progress for whoever watches `make bench` (stderr; the figures go to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    """One cluster instance and the model folder every ServedModel points at."""

    cluster: SimCluster
    api: Api
    model_base: Path
    quick: bool
    started_cluster: bool = False

    @classmethod
    def up(cls, instance: int, standin: bool, model_base: Path, quick: bool) -> Bench:
        """Start the instance with the benchmark's nodes and install the CRDs.

        Refuses (guard.Refused) an instance that is up or that a process still
        points at; the instance is stopped by guard.CLEANUP on the way out,
        interrupted or not.
        """
        cluster = SimCluster(instance=instance, nodes=BENCH_NODES, with_standin=standin)
        check_free(cluster)
        holder: list[Bench] = []
        # Registered before the start: an interrupted start is stopped too. Through
        # the Bench once it exists (with_standin replaces its cluster object).
        CLEANUP.add(
            f"cluster instance {instance}",
            lambda: holder[0].down() if holder else cluster.down(),
        )
        cluster.up()
        cluster.install_crds()
        holder.append(cls(cluster, Api(cluster), model_base, quick, started_cluster=True))
        return holder[0]

    def with_standin(self) -> None:
        """Start the stand-in model server too (probe load, gate latency)."""
        if not self.cluster.with_standin:
            self.cluster = SimCluster(
                instance=self.cluster.ports.instance, nodes=BENCH_NODES, with_standin=True
            )
            self.cluster.up()

    def down(self) -> None:
        """Stop the instance if this run started it (and the stand-in with it)."""
        if self.started_cluster:
            self.cluster.down()


def median(values: Iterable[float]) -> float:
    values = list(values)
    return round(statistics.median(values), 2) if values else float("nan")


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(q / 100 * len(ordered)))
    return round(ordered[min(rank, len(ordered)) - 1], 2)
