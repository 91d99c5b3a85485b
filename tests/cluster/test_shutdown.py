"""Stopping the operator: SIGTERM (repeated, or followed by Ctrl+C) ends it with
exit code 0 and no traceback in its log.

kopf's own signal handlers called `set_result` on one future per signal, so
a signal after the first (a supervisor repeating SIGTERM while the operator
stops, Ctrl+C after SIGTERM) raised InvalidStateError inside the event
loop's callback ("Exception in callback Future.set_result(<Signals.SIGTERM:
15>)") with a traceback. The operator's entry point (__main__.run) sets its
stop flag once and ignores repeats.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localdev.sim.cluster import SimCluster
from localdev.support.k8s import create_sm, servedmodel, wait_sm
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until

SIGNALS = {
    "one SIGTERM": (signal.SIGTERM,),
    "SIGTERM twice": (signal.SIGTERM, signal.SIGTERM),
    "SIGTERM then SIGINT": (signal.SIGTERM, signal.SIGINT),
}


@pytest.mark.parametrize("signals", list(SIGNALS), ids=list(SIGNALS))
def test_a_stop_prints_no_traceback(
    sim: SimCluster, crds: None, api_client: Any, namespace: str, model_store: Path, signals: str
) -> None:
    log = sim.state_dir / "logs" / f"operator-{namespace}-shutdown.log"
    proc = OperatorProcess(sim.kubeconfig, namespace, log).start()
    # Busy, as in production: a worker, a probe channel, open watches.
    spec = {
        "modelName": "half_plus_three",
        "storage": {"hostPath": {"path": str(model_store / "half_plus_three")}},
        "version": 1,
    }
    create_sm(api_client, namespace, servedmodel("stopping", spec))
    wait_sm(
        api_client,
        namespace,
        "stopping",
        "reconciled",
        lambda body: bool((body.get("status") or {}).get("observedGeneration")),
        timeout=60,
    )
    assert proc.proc is not None
    first, *repeats = SIGNALS[signals]
    proc.proc.send_signal(first)
    # The repeats follow once the operator has taken the first: sent back to
    # back, both are pending at once and Linux delivers the lower-numbered
    # one first (SIGINT before SIGTERM), so the order would be the kernel's.
    wait_until(
        lambda: "Operator is stopping." in log.read_text(errors="replace"),
        timeout=30,
        what=f"the operator to log that it took {first.name}",
        describe=lambda: proc.log_tail(10),
    )
    for signum in repeats:
        proc.proc.send_signal(signum)
    try:
        code = proc.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the operator did not stop:\n{proc.log_tail()}") from None
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "InvalidStateError" not in text, proc.log_tail(60)
    assert code == 0, f"exit code {code}:\n{proc.log_tail()}"
    assert f"Signal {first.name} is received. Operator is stopping." in text
