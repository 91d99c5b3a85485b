"""Memory and CPU of one process, from /proc (no psutil needed)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """One reading: resident memory now and at its peak (MiB), CPU seconds so far."""

    rss_mib: float
    hwm_mib: float
    cpu_seconds: float


def read(pid: int) -> Usage:
    """VmRSS and VmHWM from /proc/<pid>/status, utime+stime from /proc/<pid>/stat."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces: fields count from after its ")".
        after = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(after[11]), int(after[12])
    return Usage(fields["VmRSS"], fields["VmHWM"], (utime + stime) / _TICKS)


class Sampler:
    """Samples a process in a thread: peak RSS, and when its CPU use went quiet."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, Usage]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), read(self.pid)))
            except (OSError, KeyError, IndexError):
                return  # the process is gone
            self._stop.wait(self.interval)

    @property
    def peak_rss_mib(self) -> float:
        return max((u.rss_mib for _, u in self.samples), default=0.0)

    def quiet_since(
        self, after: float, window: float = 2.0, max_share: float = 0.05
    ) -> float | None:
        """First moment after `after` from which the process used less than `max_share`
        of one core over the next `window` seconds (None if it never went quiet)."""
        samples = [(t, u.cpu_seconds) for t, u in self.samples if t >= after]
        for i, (t, cpu) in enumerate(samples):
            end = next((j for j in range(i, len(samples)) if samples[j][0] - t >= window), None)
            if end is None:
                return None
            t_end, cpu_end = samples[end]
            if (cpu_end - cpu) / (t_end - t) < max_share:
                return t
        return None
