"""`make demo`: the whole job on the local cluster, narrated.

Starts the local cluster and the operator, trains MNIST version 1, serves it
with manifests/mnist-servedmodel.yaml, measures its error rate with the
MNIST client, trains version 2 and rolls to it through the availability
gate, publishes a broken version 3 and shows it refused through the
crash path production takes (the new pod's server exits, the kubelet keeps
its last log lines as the termination message) while version 2 keeps
serving, and ends with `kubectl get servedmodels`.

Every step prints the command a user would type. The cluster and the
operator keep running afterwards so you can look around; `make sim-down`
stops both.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localdev.sim.cluster import SimCluster, terminate_group
from localdev.support.operator import OperatorProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = REPO_ROOT / "manifests" / "mnist-servedmodel.yaml"
TRAINER = REPO_ROOT / "training_jobs" / "mnist" / "mnist_saved_model.py"
CLIENT = REPO_ROOT / "training_jobs" / "mnist" / "mnist_client.py"

TF_NOISE = ("I0000 ", "W0000 ", "E0000 ", "WARNING: All log messages before absl")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


class DemoError(RuntimeError):
    """A step did not reach its expected state."""


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def run(
    cmd: list[str], show: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> str:
    """Run a command the user could type, echoing it and its output."""
    print(f"{DIM}$ {show or shlex.join(cmd)}{RESET}", flush=True)
    result = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).rstrip().splitlines()
        # TensorFlow's C++ start-up chatter says nothing about the demo.
        if not line.startswith(TF_NOISE)
    )
    if output:
        print(output, flush=True)
    if check and result.returncode != 0:
        raise DemoError(f"command failed ({result.returncode}): {' '.join(cmd)}")
    return result.stdout


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """Poll until `probe()` is truthy; say what we waited for and how long it took."""
    started = time.monotonic()
    while True:
        value = probe()
        if value:
            print(f"   ... {what} ({time.monotonic() - started:.1f} s)", flush=True)
            return value
        if time.monotonic() - started > timeout:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


class Demo:
    """The narrated run, against one namespace of the local cluster."""

    def __init__(self, namespace: str, models: Path, keep_operator: bool) -> None:
        self.namespace = namespace
        self.models = models
        self.keep_operator = keep_operator
        self.cluster = SimCluster()
        self.kubectl = str(self.cluster.state_dir / "bin" / "kubectl")
        self.kubeconfig = str(self.cluster.kubeconfig)
        self.operator: OperatorProcess | None = None

    # ----- helpers ---------------------------------------------------------------

    def k(self, *args: str, check: bool = True) -> str:
        shown = "kubectl " + shlex.join(args)
        return run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args], show=shown, check=check
        )

    def get_json(self, *args: str) -> dict[str, Any]:
        """`kubectl -n <ns> get ... -o json`, quietly (for polling, not for show)."""
        out = subprocess.run(
            [
                self.kubectl,
                f"--kubeconfig={self.kubeconfig}",
                "-n",
                self.namespace,
                "get",
                *args,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        body: dict[str, Any] = json.loads(out)
        return body

    def sm(self) -> dict[str, Any]:
        return self.get_json("servedmodel", "mnist")

    def condition(self, ctype: str) -> dict[str, Any]:
        for cond in (self.sm().get("status") or {}).get("conditions") or []:
            if cond["type"] == ctype:
                return dict(cond)
        return {}

    def ready_pod_ips(self) -> list[str]:
        pods = self.get_json("pods", "-l", "serving.tfoperator.dev/servedmodel=mnist")
        ips = []
        for pod in pods["items"]:
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod["status"].get("conditions", [])
            )
            if ready and not pod["metadata"].get("deletionTimestamp"):
                ips.append(pod["status"]["podIP"])
        return ips

    def train(self, version: int, iterations: int) -> None:
        run(
            [
                sys.executable,
                str(TRAINER),
                f"--training_iteration={iterations}",
                f"--model_version={version}",
                f"--model_dir={self.models}",
            ],
            show="python training_jobs/mnist/mnist_saved_model.py "
            f"--training_iteration={iterations} --model_version={version} "
            f"--model_dir={self.models}",
            env={"TF_CPP_MIN_LOG_LEVEL": "3"},
        )

    def client(self, num_tests: int = 500) -> str:
        ips = self.ready_pod_ips()
        if not ips:
            raise DemoError("no Ready model server pod to send requests to")
        # Services have no endpoints in the local cluster (pod IPs are
        # loopback addresses); a client dials a Ready pod directly.
        server = f"{ips[0]}:8500"
        return run(
            [
                sys.executable,
                str(CLIENT),
                f"--server={server}",
                f"--num_tests={num_tests}",
                "--concurrency=4",
            ],
            show=f"python training_jobs/mnist/mnist_client.py --server={server} "
            f"--num_tests={num_tests} --concurrency=4",
            env={"TF_CPP_MIN_LOG_LEVEL": "3"},
        )

    def set_version(self, version: int) -> None:
        patch = json.dumps({"spec": {"version": version}})
        self.k("-n", self.namespace, "patch", "servedmodel", "mnist", "--type=merge", "-p", patch)

    def serving(self) -> str:
        return str((self.sm().get("status") or {}).get("servingVersions", ""))

    def wait_degraded(self, what: str) -> dict[str, Any]:
        """Wait for Degraded True; return the condition."""
        degraded: dict[str, Any] = wait_for(
            what,
            lambda: (
                self.condition("Degraded")
                if self.condition("Degraded").get("status") == "True"
                else None
            ),
            timeout=120,
        )
        return degraded

    # ----- the story -------------------------------------------------------------

    def start(self) -> None:
        step(
            "Start the local Kubernetes cluster (etcd, kube-apiserver, controller manager, "
            "scheduler, kwok nodes, stand-in model server)"
        )
        self.cluster.up()
        self.cluster.install_crds()
        self.k("get", "nodes", "-L", "nvidia.com/gpu.product")
        step(f"Start the operator (watching namespace {self.namespace})")
        # A previous `make demo` left its operator running: replace it.
        previous = self.cluster._pid("operator")
        if self.cluster._alive(previous) and previous is not None:
            terminate_group(previous)
        log = self.cluster.state_dir / "logs" / "operator-demo.log"
        self.operator = OperatorProcess(self.cluster.kubeconfig, self.namespace, log).start()
        if self.keep_operator and self.operator.proc is not None:
            (self.cluster.pids / "operator.pid").write_text(str(self.operator.proc.pid))
        print(f"   operator log: {log}")

    def storage(self) -> None:
        step("Create the namespace and the model storage (a PersistentVolumeClaim)")
        if self.models.exists():
            shutil.rmtree(self.models)
        self.models.mkdir(parents=True)
        self.k("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=true")
        self.k("create", "namespace", self.namespace)
        pv_name = f"{self.namespace}-mnist-models"
        self.k("delete", "pv", pv_name, "--ignore-not-found")
        volume = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": pv_name},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": str(self.models)},
                        "claimRef": {"namespace": self.namespace, "name": "mnist-models"},
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "mnist-models", "namespace": self.namespace},
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "storageClassName": "",
                        "volumeName": pv_name,
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                },
            ],
        }
        path = self.cluster.state_dir / "demo-volume.yaml"
        path.write_text(json.dumps(volume, indent=1))
        self.k("apply", "-f", str(path))

    def version_1(self) -> None:
        step("Train MNIST version 1 (100 iterations) into the claim's folder")
        self.train(1, 100)
        step("Serve it: kubectl apply -f manifests/mnist-servedmodel.yaml")
        self.k("-n", self.namespace, "apply", "-f", str(MANIFEST))
        wait_for(
            "ServedModel mnist Ready, serving version 1",
            lambda: self.condition("Ready").get("status") == "True" and self.serving() == "1",
            timeout=120,
        )
        self.k(
            "-n",
            self.namespace,
            "wait",
            "--for=condition=Ready",
            "servedmodel/mnist",
            "--timeout=60s",
        )
        self.k("-n", self.namespace, "get", "servedmodels", "-o", "wide")
        step("Ask it: the MNIST client over gRPC (PredictionService.Predict)")
        self.client()

    def version_2(self) -> None:
        step("Train version 2 (2000 iterations) and roll to it through the availability gate")
        self.train(2, 2000)
        print("   (the GitOps step: bump spec.version once the training Job succeeded)")
        self.set_version(2)
        wait_for(
            "every replica's server reports version 2 AVAILABLE and takes traffic",
            lambda: self.serving() == "2" and self.condition("Ready").get("status") == "True",
            timeout=120,
        )
        self.k("-n", self.namespace, "get", "servedmodels")
        self.client()

    def version_3(self) -> None:
        step("Publish a broken version 3 (its saved_model.pb is garbage) and ask for it")
        broken = self.models / "3"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        print(f"$ echo 'not a SavedModel' > {broken}/saved_model.pb")
        published = time.monotonic()
        self.set_version(3)
        print(
            "   A new pod starts for version 3. TF Serving opens its ports only after the "
            "initial load,\n   and exits when that load fails: the pod crash-loops, and its "
            "last log lines\n   become the container's termination message."
        )
        degraded = self.wait_degraded("version 3 refused with the model server's own last words")
        print(f"   refused {time.monotonic() - published:.1f} s after version 3 was published")
        print(f"   Degraded: {degraded['reason']}: {degraded['message']}")
        print("   The kubelet's word for it, and the operator's:")
        self.k("-n", self.namespace, "get", "events", "--field-selector", "reason=BackOff")
        self.k(
            "-n",
            self.namespace,
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=ServedModel,type=Warning",
        )
        step("Version 2 keeps serving")
        wait_for(
            "version 2 still serving on every ready replica",
            lambda: self.serving() == "2",
            timeout=60,
        )
        self.client()

    def finish(self) -> None:
        step("Where things stand")
        self.k("-n", self.namespace, "get", "servedmodels", "-o", "wide")
        self.k("-n", self.namespace, "get", "deployments,pods,services,configmaps")
        print(
            f"\n{BOLD}Look around:{RESET}\n"
            f"  export KUBECONFIG={self.kubeconfig}\n"
            f"  export PATH={self.cluster.state_dir / 'bin'}:$PATH\n"
            f"  kubectl -n {self.namespace} describe servedmodel mnist\n"
            f"  kubectl explain servedmodel.spec\n"
            f"Stop everything: make sim-down"
        )

    def story(self) -> list[Callable[[], None]]:
        """The steps, in order."""
        return [
            self.start,
            self.storage,
            self.version_1,
            self.version_2,
            self.version_3,
            self.finish,
        ]

    def run(self) -> None:
        try:
            for chapter in self.story():
                chapter()
        finally:
            if self.operator is not None and not self.keep_operator:
                self.operator.stop()


def main(
    demo: type[Demo] = Demo,
    prog: str = "python -m localdev.demo",
    namespace: str = "demo",
    models: Path = REPO_ROOT / ".sim" / "demo-models" / "mnist",
    description: str | None = __doc__,
) -> int:
    """Parse the command line and run `demo`; returns the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--namespace", default=namespace)
    parser.add_argument("--models", type=Path, default=models)
    parser.add_argument(
        "--stop-operator",
        action="store_true",
        help="stop the operator at the end (tests); by default it keeps running",
    )
    args = parser.parse_args()
    started = time.monotonic()
    try:
        demo(args.namespace, args.models.resolve(), keep_operator=not args.stop_operator).run()
    except DemoError as err:
        print(f"\ndemo failed: {err}", file=sys.stderr)
        return 1
    print(f"\nDemo finished in {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
