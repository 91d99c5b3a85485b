"""When to ask each model server next, and how many answers in a row failed.

The `Prober` (observe.py) asks; this schedule decides who is due. A pod
whose gate is open is asked every `probe_interval_seconds` (up to
PROBE_JITTER later); a closed one sooner, backing off; a pod that answers
"still loading" at least every QUICK_RETRY_MAX_SECONDS. A pod that refuses
connections gets a port wait besides its backoff: the prober watches its
port (TCP connects, no RPC) and the probe is due the moment it opens, which
is when the real server has loaded its versions. It also counts each
pod's consecutive probe failures of the uncertain kind (timeouts, transport
errors), which the gate's hysteresis reads (decide.gate_for).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tfserving_operator import decide
from tfserving_operator.api import GateReason
from tfserving_operator.settings import Settings
from tfserving_operator.views import PodView, ProbeResult

# A server that answers "still LOADING" is asked again at least this often:
# such a probe costs next to nothing, and the time between the version turning
# AVAILABLE and the next probe is the gate's latency. Other failures back off
# up to the probe_backoff_max_seconds setting; a refused connection also
# starts a port wait, which cuts the backoff short when the port opens.
QUICK_RETRY_MAX_SECONDS = 1.0
QUICK_RETRY_REASONS = frozenset({GateReason.LOADING})
# One port wait lasts at most this long; the next refused probe starts another
# (probes back off to at most probe_backoff_max_seconds, well within it).
PORT_WAIT_SECONDS = 30.0
# A steady probe comes up to this fraction of the interval late, at random.
# A fixed period locks onto any periodic work of the server's: with requests
# that take as long as the interval, each probe arrived just as a Predict
# ended and never saw the queue the others waited in (the gRPC pool is
# shared, model_servers/server.cc). It also spreads the probes of pods that
# started together, as the kubelet's random first probe delay does
# (pkg/kubelet/prober/worker.go). Only later, never sooner: the interval
# stays the least time between two asks of one server.
PROBE_JITTER = 0.1


class ProbeClient(Protocol):
    """What the schedule needs of a prober (observe.Prober, or a test's fake)."""

    async def probe_all(
        self, pods: Iterable[PodView], slots: asyncio.Semaphore | None = None
    ) -> dict[str, ProbeResult]: ...

    async def forget(self, targets: Iterable[str]) -> None: ...

    async def wait_for_port(self, target: str, seconds: float) -> bool: ...


@dataclass
class ProbeState:
    """When to ask one pod next, and what it said last."""

    last: ProbeResult | None = None
    next_at: float = 0.0
    backoff: float = 0.0
    config_hash: str = ""
    target: str = ""  # host:port last probed (its channel is closed when the pod goes)
    failures: int = 0  # consecutive timeouts / transport errors, up to the last answer


class ProbeSchedule:
    """The probe state of every pod of one ServedModel."""

    def __init__(
        self,
        prober: ProbeClient,
        settings: Settings,
        on_port_open: Callable[[], None] = lambda: None,
    ) -> None:
        self.prober = prober
        self.settings = settings
        # Called when a refusing server's port opens: the worker runs a pass.
        self.on_port_open = on_port_open
        self.states: dict[str, ProbeState] = {}
        # Pod name -> the task waiting for its server's port (one at a time).
        self._port_waits: dict[str, asyncio.Task[None]] = {}
        # This ServedModel's own probe slots: its hung servers queue only its probes.
        self.slots = asyncio.Semaphore(settings.max_concurrent_probes)
        # Pods the last probe() could ask: only their schedules set the next
        # pass (a terminating pod's overdue probe would make it a hot loop).
        self._askable: set[str] = set()

    async def probe(self, pods: Sequence[PodView]) -> dict[str, ProbeResult]:
        """Ask the servers that are due; return the latest answer of every pod."""
        now = time.monotonic()
        live = {p.name for p in pods}
        gone = [self.states.pop(name) for name in set(self.states) - live]
        # One channel per pod IP: without this the pool grows with every pod
        # that ever ran (pod IPs are rarely reused).
        await self.prober.forget(s.target for s in gone if s.target)
        self._askable = {p.name for p in pods if p.probeable and not p.terminating}
        for name in set(self._port_waits) - self._askable:
            self._port_waits.pop(name).cancel()
        due = []
        for pod in pods:
            state = self.states.setdefault(pod.name, ProbeState())
            if state.config_hash != pod.config_hash:
                state.config_hash, state.next_at, state.backoff = pod.config_hash, 0.0, 0.0
                state.failures = 0
            if pod.name in self._askable and state.next_at <= now:
                due.append(pod)
        if due:
            results = await self.prober.probe_all(due, self.slots)
            for pod in due:
                self.states[pod.name].target = pod.target
                self.record(pod, results[pod.name])
        return {name: s.last for name, s in self.states.items() if s.last is not None}

    def record(self, pod: PodView, result: ProbeResult) -> None:
        """Keep the answer, count failures, and set when to ask again."""
        state = self.states.setdefault(pod.name, ProbeState())
        state.last = result
        state.failures = state.failures + 1 if decide.uncertain(result) else 0
        # The cadence follows the answer itself, not the gate it leads to: a
        # gate held open through a timeout is asked again soon, so a third
        # failure (or a recovery) is seen in seconds, not at the next interval.
        decision = decide.gate_for(pod, result)
        if decision.open:
            state.backoff = 0.0
            spread = 1.0 + PROBE_JITTER * random.random()
            state.next_at = time.monotonic() + self.settings.probe_interval_seconds * spread
            return
        longest = self.settings.probe_backoff_max_seconds
        if decision.reason in QUICK_RETRY_REASONS:
            longest = min(longest, QUICK_RETRY_MAX_SECONDS)
        initial = self.settings.probe_backoff_initial_seconds
        state.backoff = min(longest, max(initial, state.backoff * 2))
        state.next_at = time.monotonic() + state.backoff
        if decision.reason == GateReason.UNREACHABLE and pod.target:
            self._wait_for_port(pod.name, pod.target)

    def _wait_for_port(self, name: str, target: str) -> None:
        """Watch a refusing server's port; when it opens, its probe is due at once."""
        if name in self._port_waits:
            return

        async def wait() -> None:
            try:
                opened = await self.prober.wait_for_port(target, PORT_WAIT_SECONDS)
            finally:
                if self._port_waits.get(name) is task:
                    del self._port_waits[name]
            state = self.states.get(name)
            if opened and state is not None and state.target in ("", target):
                state.next_at = 0.0
                self.on_port_open()

        task = asyncio.create_task(wait(), name=f"port wait {target}")
        self._port_waits[name] = task

    async def close(self) -> None:
        """Cancel the port waits (the worker stops)."""
        waits = list(self._port_waits.values())
        self._port_waits.clear()
        for task in waits:
            task.cancel()
        if waits:  # asyncio.wait: a cancellation of the caller is not swallowed
            await asyncio.wait(waits)

    def port_waits(self) -> frozenset[str]:
        """Pods whose port is being watched."""
        return frozenset(self._port_waits)

    def failures(self) -> dict[str, int]:
        """Consecutive uncertain failures per pod, for the gate's hysteresis."""
        return {name: s.failures for name, s in self.states.items()}

    def seconds_until_due(self) -> list[float]:
        """Seconds until each scheduled probe of an askable pod is due (negative: overdue)."""
        now = time.monotonic()
        return [
            s.next_at - now
            for name, s in self.states.items()
            if s.next_at and name in self._askable
        ]

    def targets(self) -> list[str]:
        """Every server address probed (to close their channels)."""
        return [s.target for s in self.states.values() if s.target]
