"""The kubelet's process factory over today's ``PodServer`` (start/stop).

``PodServer`` does not exit by itself yet; ``StartStopServer`` gives it the
``ServerProcess`` members the kubelet emulation (``kubelet.py``) drives:
``run()`` serves until ``kill()``. Once ``PodServer.run()`` exists, the
factory can return the server itself and this adapter goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .kubelet import SIGKILL_EXIT_CODE, ExitStatus, ProcessFactory, ServerProcess
from .paths import ClusterLookup
from .server import BindError, PodServer, Runtime, serving_spec_from_pod

log = logging.getLogger(__name__)

BIND_RETRY_SECONDS = 0.5


class StartStopServer:
    """One run of today's ``PodServer``; the stand-in's ``vanish`` fault
    closes its listeners, which makes tcpSocket probes fail."""

    def __init__(self, server: PodServer) -> None:
        self.server = server
        self._lines: list[str] = []
        self._killed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False

    @property
    def listening(self) -> bool:
        """The gRPC port is open."""
        return self.server.listening

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port (0 before start)."""
        return self.server.grpc_port

    @property
    def log_lines(self) -> Sequence[str]:
        """What this run logged."""
        return tuple(self._lines)

    def update_annotations(self, annotations: Mapping[str, str]) -> None:
        """Pass the pod's annotations on (faults, load delays)."""
        self.server.update_annotations(annotations)

    def _log(self, line: str) -> None:
        self._lines.append(line)
        log.info("%s: %s", self.server.spec.key, line)

    async def run(self) -> ExitStatus:
        """Bind (retrying while a previous run or pod holds the address), then
        serve until killed: today's server never exits by itself."""
        self._running = True
        started = False
        last_error = ""
        try:
            while not self._killed.is_set():
                try:
                    await self.server.start()
                    started = True
                    break
                except BindError as e:
                    # Once per distinct error: a port held elsewhere keeps failing.
                    if str(e) != last_error:
                        self._log(f"{e}; retrying")
                        last_error = str(e)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._killed.wait(), BIND_RETRY_SECONDS)
            if started:
                self._log(f"Running gRPC ModelServer at {self.server.host}:{self.grpc_port} ...")
            await self._killed.wait()
        finally:
            if started:
                await self.server.stop()
            self._stopped.set()
        return ExitStatus(SIGKILL_EXIT_CODE, "Error", tuple(self._lines))

    async def kill(self) -> None:
        """Stop at once; returns once the listeners are closed."""
        self._killed.set()
        if self._running:
            await self._stopped.wait()


def standin_factory(runtime: Runtime, lookup: ClusterLookup) -> ProcessFactory:
    """Builds one ``StartStopServer`` per container start, from the pod as it is
    then (a restarted container sees the pod's current volumes and flags)."""

    def make(pod: Mapping[str, Any]) -> ServerProcess:
        return StartStopServer(PodServer(serving_spec_from_pod(pod, lookup), runtime))

    return make
