"""`make soak SOAK_MINUTES=n`: a long random mix of changes and faults, checked after every step.

On a cluster instance of its own (5, with the stand-in), one operator
process watches one namespace. Until the time is up, each step is one of:
create a ServedModel, roll one to its next good version, roll one to a broken
version (refused: the last good set keeps serving), delete one, SIGKILL the
operator (and start it again), restart kube-apiserver while a rollout is in
flight. After every step every ServedModel must converge to what it should
serve (tests/reliability/invariants.py: status, Deployment, ReplicaSets,
pods Ready with the gate open, Services, ConfigMaps, no orphans), and every
deleted one must be gone. A failed check is recorded with its problems and
the soak goes on from a clean slate for that ServedModel (deleted).

The figures (steps by kind, failures, convergence seconds, operator
restarts, memory of the operator at the end) go to docs/soak.md, which
docs/reliability.md links to. Random choices come from a seed (printed and
written), so a failing sequence can be replayed: `--seed`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from localdev.sim.cluster import SimCluster, SimError, wait_for
from localdev.support.k8s import create_sm, delete_sm, get_sm, patch_sm, servedmodel
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess, free_port
from localdev.support.waiting import WaitTimeout
from tests.reliability import results
from tests.reliability.conftest import (
    breakable_cluster,
    delete_namespace,
    heal_nodes,
    make_namespace,
)
from tests.reliability.invariants import problems, wait_gone
from tests.reliability.test_control_plane_restart import nudge_stuck_pods

REPO_ROOT = Path(__file__).resolve().parents[2]
SOAK_INSTANCE = 5
GOOD_VERSIONS = tuple(range(1, 41))
BROKEN_VERSION = 99
MAX_SERVEDMODELS = 4
CONVERGE_SECONDS = 180.0
# Seconds past its deletionTimestamp (the end of its grace period) a pod may
# stay Terminating before the soak plays the kubelet's retry.
STUCK_TERMINATING = 30.0
APISERVER_STARTS = 3
# Relative weights of the steps.
STEPS = {
    "create": 3,
    "rollout": 5,
    "refusal": 2,
    "delete": 2,
    "operator-kill": 2,
    "apiserver-restart": 1,
}
# After a refusal the ServedModel serves its last good set and says so: Ready
# False (Degraded/Refused) and Progressing RolledBack are what it should show.
REFUSED_OK = ("Ready is not True", "Progressing is not False/RolloutComplete")


@dataclass
class Model:
    """What one ServedModel should be serving."""

    versions: int
    replicas: int
    refused: bool = False


@dataclass
class Soak:
    cluster: SimCluster
    api: Any
    namespace: str
    operator: OperatorProcess
    base: Path
    rng: random.Random
    models: dict[str, Model] = field(default_factory=dict)
    created: int = 0
    next_version: int = 2
    steps: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    converge_seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    checks: int = 0
    finished_terminations: int = 0
    apiserver_retries: int = 0

    # ----- steps ---------------------------------------------------------------

    def create(self) -> str:
        self.created += 1
        name = f"soak-{self.created}"
        replicas = self.rng.choice((1, 2))
        version = self.rng.choice(GOOD_VERSIONS[: self.next_version - 1] or (1,))
        spec = {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": str(self.base)}},
            "version": version,
            "replicas": replicas,
            "terminationGracePeriodSeconds": 5,
        }
        create_sm(self.api, self.namespace, servedmodel(name, spec))
        self.models[name] = Model(version, replicas)
        return name

    def rollout(self, name: str) -> None:
        version = self._fresh_version()
        patch_sm(self.api, self.namespace, name, {"spec": {"version": version}})
        self.models[name] = Model(version, self.models[name].replicas)

    def refusal(self, name: str) -> None:
        patch_sm(self.api, self.namespace, name, {"spec": {"version": BROKEN_VERSION}})
        self.models[name].refused = True

    def delete(self, name: str) -> None:
        delete_sm(self.api, self.namespace, name)
        del self.models[name]
        self._check_gone(name)

    def operator_kill(self, name: str | None) -> None:
        """SIGKILL mid-rollout when there is something to roll, then start it again."""
        if name is not None:
            self.rollout(name)
        self.operator.kill()
        start_operator(self.operator)

    def apiserver_restart(self, name: str | None) -> None:
        if name is not None:
            self.rollout(name)
        pid = int((self.cluster.pids / "kube-apiserver.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        wait_for("kube-apiserver to die", lambda: not SimCluster._alive(pid), timeout=10)
        comp = next(c for c in self.cluster.components() if c.name == "kube-apiserver")
        for attempt in range(1, APISERVER_STARTS + 1):
            # On a loaded machine the new process can find its port not yet
            # free ("address already in use") and exit: start it again.
            self.cluster._start(comp)
            try:
                wait_for("kube-apiserver back (API /readyz)", self.cluster.healthy, timeout=60)
                break
            except SimError:
                if attempt == APISERVER_STARTS:
                    raise
                self.apiserver_retries += 1
        heal_nodes(self.cluster)

    def _fresh_version(self) -> int:
        version = GOOD_VERSIONS[min(self.next_version, len(GOOD_VERSIONS)) - 1]
        self.next_version = self.next_version % len(GOOD_VERSIONS) + 1
        return version

    # ----- checks --------------------------------------------------------------

    def _problems(self, name: str, model: Model) -> list[str]:
        found = problems(self.api, self.namespace, name, str(model.versions), model.replicas)
        if not model.refused:
            return found
        status = get_sm(self.api, self.namespace, name).get("status") or {}
        refused = (status.get("refused") or {}).get("versions")
        if refused != [BROKEN_VERSION]:
            found.append(f"status.refused.versions {refused} != [{BROKEN_VERSION}]")
        return [p for p in found if not p.startswith(REFUSED_OK)]

    def check_all(self, step: str) -> None:
        """Every ServedModel converges to what it should serve; a failure is recorded."""
        for name, model in list(self.models.items()):
            self.checks += 1
            started = time.monotonic()
            last: list[str] = []
            while time.monotonic() - started < CONVERGE_SECONDS:
                try:
                    last = self._problems(name, model)
                except ApiException as err:  # the API server may still be warming up
                    last = [f"API: {err.status} {err.reason}"]
                if not last:
                    self.converge_seconds[step].append(time.monotonic() - started)
                    break
                # A pod gone meanwhile, or the API server warming up: next round.
                with contextlib.suppress(ApiException):
                    nudge_stuck_pods(self.api, self.namespace, older_than=10.0)
                    self._finish_terminations()
                time.sleep(0.5)
            else:
                self.failures.append(
                    f"{_now()} after {step}: {name} did not converge to "
                    f"{model.versions} x{model.replicas}: " + "; ".join(last)
                )
                # Start over for this one, so one failure does not fail every later check.
                self.delete(name)

    def _finish_terminations(self) -> None:
        """Delete pods still Terminating long after their grace period.

        The stand-in's kubelet gives up on a pod whose final delete failed
        while the API server was down (a real kubelet retries at its next
        sync), and kwok does not play model-server pods: without this such a
        pod would stay Terminating for good. The operator is not involved.
        """
        now = datetime.now(UTC)
        core = client.CoreV1Api(self.api)
        for pod in core.list_namespaced_pod(self.namespace).items:
            deleting = pod.metadata.deletion_timestamp
            if deleting is not None and (now - deleting).total_seconds() > STUCK_TERMINATING:
                core.delete_namespaced_pod(
                    pod.metadata.name, self.namespace, grace_period_seconds=0
                )
                self.finished_terminations += 1

    def _check_gone(self, name: str) -> None:
        self.checks += 1
        try:
            self.converge_seconds["gone"].append(
                wait_gone(self.api, self.namespace, name, timeout=CONVERGE_SECONDS)
            )
        except AssertionError as err:
            self.failures.append(f"{_now()} delete: {err}")

    # ----- the loop ------------------------------------------------------------

    def step(self) -> str:
        kinds, weights = zip(*STEPS.items(), strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "create" and len(self.models) >= MAX_SERVEDMODELS:
            kind = "rollout"
        if kind in ("rollout", "refusal", "delete") and not self.models:
            kind = "create"
        name = self.rng.choice(sorted(self.models)) if self.models else None
        if kind == "create":
            self.create()
        elif kind == "rollout":
            assert name is not None
            self.rollout(name)
        elif kind == "refusal":
            assert name is not None
            self.refusal(name)
        elif kind == "delete":
            assert name is not None
            self.delete(name)
        elif kind == "operator-kill":
            self.operator_kill(name)
        else:
            self.apiserver_restart(name)
        self.steps[kind] += 1
        self.check_all(kind)
        return kind


def start_operator(operator: OperatorProcess) -> None:
    """Start it; if the ports it was given were taken meanwhile (other clusters
    share the machine), on new ones."""
    for attempt in range(1, 4):
        try:
            operator.start()
            return
        except WaitTimeout:
            if attempt == 3:
                raise
            operator.kill()
            operator.liveness_port, operator.metrics_port = free_port(), free_port()


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def report(soak: Soak, minutes: float, seed: int, elapsed: float, rss: float) -> str:
    """The Markdown of docs/soak.md."""
    lines = [
        "# Soak",
        "",
        "Generated by `make soak SOAK_MINUTES=n` (`tests/reliability/soak.py`): a random mix of",
        "creates, rollouts, refused rollouts (a broken version: the last good set keeps",
        "serving), deletes, operator SIGKILLs and kube-apiserver restarts (with a rollout in",
        "flight), on a local cluster of its own, one operator process. After every step every",
        "ServedModel must converge to what it should serve (status, Deployment, ReplicaSets,",
        "pods Ready with the gate open, Services, ConfigMaps, no orphans) and every deleted",
        "one must be gone.",
        "",
        f"- run: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {minutes:g} minutes asked, "
        f"{elapsed / 60:.1f} minutes run, seed {seed}",
        f"- steps: {sum(soak.steps.values())}; invariant checks: {soak.checks}; "
        f"**failures: {len(soak.failures)}**",
        f"- operator memory at the end (RSS): {rss} MiB",
        f"- pods left Terminating by the stand-in kubelet after an API outage and deleted by the "
        f"soak (a real kubelet retries): {soak.finished_terminations}; kube-apiserver starts "
        f"repeated (its port not yet free): {soak.apiserver_retries}",
        "",
        "| step | times | converged after it, median s | max s |",
        "|---|---|---|---|",
    ]
    for kind in STEPS:
        seconds = soak.converge_seconds.get(kind, [])
        median = f"{statistics.median(seconds):.1f}" if seconds else "-"
        longest = f"{max(seconds):.1f}" if seconds else "-"
        lines.append(f"| {kind} | {soak.steps.get(kind, 0)} | {median} | {longest} |")
    gone = soak.converge_seconds.get("gone", [])
    if gone:
        lines += [
            "",
            f"Deleted ServedModels were gone (children included) after a median "
            f"{statistics.median(gone):.1f} s (max {max(gone):.1f} s).",
        ]
    lines += ["", "Failures:" if soak.failures else "No failures.", ""]
    lines += [f"- {failure}" for failure in soak.failures]
    return "\n".join(lines).rstrip() + "\n"


def record(soak: Soak, elapsed: float) -> None:
    """The soak's row of docs/reliability.md (results.py)."""
    steps = sum(soak.steps.values())
    converged = [s for kind in STEPS for s in soak.converge_seconds.get(kind, [])]
    results.record(
        "soak",
        "Faults",
        f"Soak: {elapsed / 60:.0f} minutes of random creates, rollouts, refusals, deletes, "
        "operator SIGKILLs and kube-apiserver restarts, invariants after every step "
        "([soak.md](soak.md))",
        soak.checks,
        soak.checks - len(soak.failures),
        "checks converged",
        suite="make soak",
        figures={
            "steps": steps,
            **{kind: soak.steps.get(kind, 0) for kind in STEPS},
            "median converge s": round(statistics.median(converged), 1) if converged else "-",
            "max converge s": round(max(converged), 1) if converged else "-",
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "docs" / "soak.md")
    args = parser.parse_args(argv)
    print(f"soak: {args.minutes:g} minutes, seed {args.seed}", flush=True)

    from tests.conftest import MODELS_ROOT, export_version

    for version in (1, 2):
        export_version("half_plus_three", MODELS_ROOT / "half_plus_three", version)
    cluster, was_running = breakable_cluster(SOAK_INSTANCE)
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    namespace = make_namespace(api)
    base = make_model_dir(MODELS_ROOT, "soak", good=GOOD_VERSIONS, broken=(BROKEN_VERSION,))
    log = cluster.state_dir / "logs" / f"operator-soak-{namespace}.log"
    operator = OperatorProcess(cluster.kubeconfig, namespace, log)
    start_operator(operator)
    soak = Soak(cluster, api, namespace, operator, base, random.Random(args.seed))
    started = time.monotonic()
    deadline = started + args.minutes * 60
    rss = 0.0
    try:
        while time.monotonic() < deadline:
            kind = soak.step()
            print(
                f"{_now()} step {sum(soak.steps.values())} {kind}: "
                f"{len(soak.models)} ServedModels, {len(soak.failures)} failures",
                flush=True,
            )
        if operator.proc is not None:
            rss = _rss_mib(operator.proc.pid)
    finally:
        elapsed = time.monotonic() - started
        text = report(soak, args.minutes, args.seed, elapsed, rss)
        args.report.write_text(text)
        print(text, flush=True)
        record(soak, elapsed)
        operator.stop()
        with contextlib.suppress(Exception):  # the cluster may be broken: it goes down next
            delete_namespace(api, namespace)
        api.close()
        if not was_running and not os.environ.get("TFSO_KEEP_SIM"):
            cluster.down()
    return 1 if soak.failures else 0


if __name__ == "__main__":
    sys.exit(main())
