"""Run the operator as a real process against the local cluster.

Tests start it through the same entry point as the image and `make run`
(`tfserving-operator`), watching only their own namespaces so several test
sessions (and a developer's `make run`) never act on the same objects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from localdev.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINT = Path(sys.executable).with_name("tfserving-operator")


class OperatorProcess:
    """One operator process; `start`, `kill` (SIGKILL), `stop` (SIGTERM), `restart`."""

    def __init__(
        self,
        kubeconfig: Path,
        namespaces: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        liveness_port: int = 0,
        metrics_port: int = 0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.log_path = log_path
        self.extra_env = env or {}
        self.liveness_port = liveness_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start the process and wait until its liveness endpoint answers."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "TFSO_NAMESPACES": self.namespaces,
            "TFSO_LIVENESS_PORT": str(self.liveness_port),
            "TFSO_METRICS_PORT": str(self.metrics_port),
            # Tests want rollouts decided in seconds.
            "TFSO_PROBE_BACKOFF_MAX_SECONDS": "1",
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(ENTRY_POINT)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
                # Its own process group: `make sim-down` can stop one the demo left running.
                start_new_session=True,
            )
        wait_until(
            self.alive_and_healthy,
            timeout=60,
            what="the operator's liveness endpoint",
            describe=self.log_tail,
        )
        return self

    def alive_and_healthy(self) -> bool:
        """The process runs and /healthz answers 200."""
        import urllib.request

        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.log_tail()}")
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """The /healthz answer: kopf's probes (`servedmodels`, `probe_calls`,
        `probe_latency_ms`), which kopf caches for up to 10 s."""
        import json
        import urllib.request

        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body

    def health_since(self, since: float, timeout: float = 30.0) -> dict[str, Any]:
        """The first /healthz answer computed at or after `since` (Unix time):
        kopf's cache may hand out details up to 10 s old, and a reader that
        compares counters before and after an event needs ones from after it."""
        answer: dict[str, Any] = {}

        def fresh() -> bool:
            answer.update(self.health())
            return float(answer.get("computed_at", 0.0)) >= since

        wait_until(fresh, timeout=timeout, what=f"a /healthz answer computed after {since:.1f}")
        return answer

    def metrics_text(self, timeout: float = 5.0) -> str:
        """The Prometheus exposition text of /metrics."""
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a node failure or OOM kill."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def restart(self) -> OperatorProcess:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
