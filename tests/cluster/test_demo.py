"""`make demo` works: the narrated run succeeds end to end and tells the story."""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.conftest import REPO_ROOT


def test_demo_runs_the_whole_mission(sim, crds, tmp_path) -> None:
    # A namespace outside this session's prefix: the demo runs its own operator.
    namespace = f"demo-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "localdev.demo",
            f"--namespace={namespace}",
            f"--models={tmp_path / 'mnist'}",
            "--stop-operator",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = result.stdout + result.stderr
    try:
        assert result.returncode == 0, out[-4000:]
        assert out.count("Inference error rate:") == 3, out[-4000:]
        assert "VersionLoadFailed" in out
        # Refused through the crash path, in the server's own words.
        assert "Back-off restarting failed container" in out, out[-4000:]
        assert "exited while loading" in out and "Failed to start server" in out, out[-4000:]
        assert "Demo finished" in out
    finally:
        subprocess.run(
            [
                str(sim.state_dir / "bin" / "kubectl"),
                f"--kubeconfig={sim.kubeconfig}",
                "delete",
                "namespace",
                namespace,
                "--wait=false",
                "--ignore-not-found",
            ],
            capture_output=True,
        )
        subprocess.run(
            [
                str(sim.state_dir / "bin" / "kubectl"),
                f"--kubeconfig={sim.kubeconfig}",
                "delete",
                "pv",
                f"{namespace}-mnist-models",
                "--ignore-not-found",
            ],
            capture_output=True,
        )
