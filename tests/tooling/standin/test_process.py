"""The stand-in process: starts without a reachable API server, keeps retrying,
and shuts down cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import wait_until

pytestmark = pytest.mark.tensorflow

REPO = Path(__file__).resolve().parents[3]

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: "https://127.0.0.1:9"}
users:
- name: nobody
  user: {token: "none"}
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody}
current-context: nowhere
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_retries_unreachable_api_and_stops_on_signal(tmp_path: Path, signum: int) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    log_path = tmp_path / "standin.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "localdev.standin", "--kubeconfig", str(kubeconfig)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until(
            lambda: "watch failed" in log_path.read_text(),
            timeout=60,
            what="the watch to report the unreachable API server",
        )
        sent = time.monotonic()
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - sent < 3.0
        assert "stopped" in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
