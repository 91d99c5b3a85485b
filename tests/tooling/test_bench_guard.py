"""benchmarks/guard.py: a benchmark refuses an instance that is not its own alone,
and stops what it started when it is interrupted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import guard
from localdev.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER = "https://127.0.0.1:16543"


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(f"clusters:\n- cluster:\n    server: {server}\n  name: sim\n")
    return path


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def sleeper(started: list[subprocess.Popen[bytes]], env_config: str) -> int:
    proc = subprocess.Popen(["sleep", "60"], env={**os.environ, "KUBECONFIG": env_config}, cwd="/")
    started.append(proc)
    return proc.pid


def test_a_process_pointing_a_kubeconfig_at_the_instance_is_found(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    ours = kubeconfig(tmp_path / "ours", SERVER)
    same_server = kubeconfig(tmp_path / "copy", SERVER)
    other = kubeconfig(tmp_path / "other", "https://127.0.0.1:16643")
    by_path = sleeper(sleepers, str(ours))
    by_server = sleeper(sleepers, f"{other}:{same_server}")  # a list, as kubectl reads it
    elsewhere = sleeper(sleepers, str(other))
    found = {h.pid for h in guard.holders(SERVER, ours)}
    assert {by_path, by_server} <= found
    assert elsewhere not in found


def test_a_taken_port_is_seen() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert guard.port_taken(port)
    assert not guard.port_taken(port)


def test_cleanup_stops_newest_first_and_skips_what_was_stopped_normally() -> None:
    order: list[str] = []
    cleanup = guard.Cleanup()
    cleanup.add("cluster", lambda: order.append("cluster"))
    done = cleanup.add("operator 1", lambda: order.append("operator 1"))
    cleanup.add("operator 2", lambda: order.append("operator 2"))
    done()
    assert cleanup.run() == ["operator 2", "cluster"]
    assert order == ["operator 2", "cluster"]
    assert cleanup.run() == []


CHILD = """
import subprocess, sys, time
from pathlib import Path
from benchmarks import guard

out = Path(sys.argv[1])
with guard.interruptible() as cleanup:
    # Like an operator: a process group of its own, out of reach of the signal.
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    cleanup.add("sleeper", lambda: (proc.terminate(), proc.wait()))
    out.write_text(str(proc.pid))
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_stops_what_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    pid_file = tmp_path / "pid"
    run = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(pid_file)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, what="the child")
        child = int(pid_file.read_text())
        run.send_signal(sig)
        assert run.wait(timeout=30) != 0
    finally:
        run.kill()
        run.wait()
    assert not Path(f"/proc/{child}").exists() or _zombie(child), "the sleeper outlived the run"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True
