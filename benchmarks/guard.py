"""Benchmarks that cannot fool themselves: a cluster instance of their own, and nothing left behind.

Two ways a run measured something else than what it claims, both seen here:
an instance already up (an earlier run, a developer's session) whose
objects and controllers add to the figures, and an operator orphaned by an
interrupted run that keeps acting on the instance (its applies were counted
as a quick run's "idle" writes). So `make bench` refuses an instance that is
up, whose API server port is taken, or that some process of ours still points
a kubeconfig at; and everything it starts is registered here and stopped on
the way out, including on SIGINT and SIGTERM (the operators run in process
groups of their own, so a terminal's Ctrl-C never reaches them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from localdev.sim.cluster import SimCluster


class Refused(RuntimeError):
    """The instance is not ours alone: the run would measure someone else's work."""


@dataclass(frozen=True)
class Holder:
    """A process that points a kubeconfig at the instance."""

    pid: int
    command: str


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts connections on the port (our API server or anyone's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, or another user's process
        return b""


def holders(server: str, kubeconfig: Path, proc: Path = Path("/proc")) -> list[Holder]:
    """Processes (other than this one) whose KUBECONFIG is `kubeconfig` or names `server`.

    An orphaned operator keeps retrying its watches while the instance is
    down, and acts again as soon as a new run brings the instance back.
    """
    found = []
    wanted = str(kubeconfig.resolve())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = dict(
            item.split(b"=", 1) for item in _read(entry / "environ").split(b"\0") if b"=" in item
        )
        configs = env.get(b"KUBECONFIG", b"").decode(errors="replace")
        points_here = False
        for config in filter(None, configs.split(os.pathsep)):
            path = Path(config)
            if not path.is_absolute():
                with contextlib.suppress(OSError):
                    path = (entry / "cwd").resolve() / path
            text = _read(path)
            points_here = points_here or str(path.resolve()) == wanted
            points_here = points_here or f"server: {server}".encode() in text
        if points_here:
            command = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace")
            found.append(Holder(int(entry.name), command.strip()[:200]))
    return found


def check_free(cluster: SimCluster) -> None:
    """Raise Refused unless the instance is down, its port free and nobody points at it."""
    slot, port = cluster.ports.slot, cluster.ports.apiserver
    where = f"cluster instance {cluster.ports.instance} (slot {slot}, API server port {port})"
    if cluster.healthy():
        raise Refused(
            f"{where} is already up: a benchmark needs an instance of its own, started "
            f"and stopped by itself. Stop it (python -m localdev.sim down, or "
            f"SimCluster(instance={cluster.ports.instance}).down()) or pass --instance."
        )
    if port_taken(port):
        raise Refused(f"{where}: port {port} is taken (another clone with the same slot?)")
    found = holders(cluster.server, cluster.kubeconfig)
    if found:
        listed = "; ".join(f"pid {h.pid}: {h.command}" for h in found)
        raise Refused(
            f"{where}: processes still point a kubeconfig at it (an orphaned operator "
            f"would act on the run's objects): {listed}"
        )


@dataclass
class Cleanup:
    """What a run started, stopped in reverse order on the way out (once)."""

    steps: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def add(self, what: str, stop: Callable[[], None]) -> Callable[[], None]:
        """Register `stop`; returns a function that unregisters it (stopped normally)."""
        step = (what, stop)
        self.steps.append(step)

        def done() -> None:
            with contextlib.suppress(ValueError):
                self.steps.remove(step)

        return done

    def run(self) -> list[str]:
        """Stop everything still registered, newest first; the names of what was stopped."""
        stopped = []
        while self.steps:
            what, stop = self.steps.pop()
            try:
                stop()
            except Exception as err:  # keep stopping the rest
                print(f"[bench] could not stop {what}: {err}", file=sys.stderr, flush=True)
            stopped.append(what)
        return stopped


CLEANUP = Cleanup()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def interruptible(cleanup: Cleanup = CLEANUP) -> Iterator[Cleanup]:
    """SIGTERM behaves like Ctrl-C; on any exit, everything registered is stopped,
    with both signals held off meanwhile (a second Ctrl-C must not orphan half of it)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield cleanup
    finally:
        held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            cleanup.run()
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGTERM, previous)
