"""CPU seconds of every process of the local cluster over an interval: who was busy."""

from __future__ import annotations

import os

from benchmarks import procstat
from localdev.sim.cluster import COMPONENT_NAMES, SimCluster

_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores, from /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


def _pids(cluster: SimCluster) -> dict[str, int]:
    found = {}
    for name in COMPONENT_NAMES:
        try:
            found[name] = int((cluster.pids / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            continue
    return found


class CpuSplit:
    """`start()`, then `stop()`: CPU seconds per component, the operator, this benchmark
    process, and everything else on the machine (other users' work skews the figures)."""

    def __init__(self, cluster: SimCluster, operator_pid: int | None = None) -> None:
        self.pids = _pids(cluster)
        if operator_pid is not None:
            self.pids["operator"] = operator_pid
        self._before: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        values = {
            "machine": machine_busy_seconds(),
            "benchmark": procstat.read(os.getpid()).cpu_seconds,
        }
        for name, pid in self.pids.items():
            try:
                values[name] = procstat.read(pid).cpu_seconds
            except (OSError, KeyError, IndexError):
                continue
        return values

    def start(self) -> CpuSplit:
        self._before = self._read()
        return self

    def stop(self) -> dict[str, float]:
        """CPU seconds per process; `others` is what the rest of the machine used meanwhile."""
        after = self._read()
        split = {
            name: round(after[name] - self._before[name], 2)
            for name in after
            if name in self._before
        }
        machine = split.pop("machine")
        split["others"] = round(machine - sum(split.values()), 2)
        return split
