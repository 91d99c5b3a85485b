"""`make demo-canary`: canary rollouts judged by the model servers' own metrics, narrated.

Starts the local cluster and the operator, serves half_plus_three version 1
on 2 replicas with ``spec.rollout.canary`` (1 canary pod, then 50 %, 10 s
analysis windows), and keeps a client sending Predict requests round robin
over the ready pods (what a client-side balancer on the headless Service
does). Then:

* version 2 is a SavedModel whose signature calls its input ``inputs`` while
  clients send ``x``: it loads, passes the availability gate, and answers
  every request INVALID_ARGUMENT. The operator reads the servers'
  ``:tensorflow:serving:request_count`` and refuses it
  (``CanaryAnalysisFailed``); the demo prints how long that took and the
  share of the client's requests that failed meanwhile;
* version 3 is a good copy: promoted step by step, with the share of
  requests the canary answered at each step, as the client measured it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes import config

from localdev import demo
from localdev.demo import REPO_ROOT, Demo, DemoError, step, wait_for
from localdev.support.clients import PodWatcher, PredictLoad
from localdev.support.models import add_good_version, add_renamed_input_version

NAME = "hpt"
MODEL = "half_plus_three"


class CanaryDemo(Demo):
    """The narrated run: a bad canary refused, a good one promoted."""

    load: PredictLoad | None = None
    pods: PodWatcher | None = None

    def sm(self) -> dict[str, Any]:
        return self.get_json("servedmodel", NAME)

    def set_version(self, version: int) -> None:
        patch = json.dumps({"spec": {"version": version}})
        self.k("-n", self.namespace, "patch", "servedmodel", NAME, "--type=merge", "-p", patch)

    def canary(self) -> dict[str, Any]:
        return dict((self.sm().get("status") or {}).get("canary") or {})

    def models_root(self) -> Any:
        root = REPO_ROOT / ".sim" / "demo-models" / "templates"
        template = root / MODEL / "1"
        if not (template / "saved_model.pb").exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "training_jobs.half_plus_three.export_half_plus_three",
                    f"--model_dir={root / MODEL}",
                    "--model_version=1",
                ],
                check=True,
                cwd=REPO_ROOT,
                capture_output=True,
            )
        return root

    def version_1(self) -> None:
        step("Export half_plus_three version 1 and serve it on 2 replicas, canary rollouts on")
        root = self.models_root()
        add_good_version(root, self.models, 1)
        manifest = {
            "apiVersion": "serving.tfoperator.dev/v1alpha1",
            "kind": "ServedModel",
            "metadata": {"name": NAME, "namespace": self.namespace},
            "spec": {
                "modelName": MODEL,
                "storage": {"persistentVolumeClaim": {"claimName": "mnist-models"}},
                "version": 1,
                "replicas": 2,
                "rollout": {
                    "canary": {
                        "steps": [{"replicas": 1}, {"percent": 50}],
                        "analysisIntervalSeconds": 10,
                        "minRequests": 20,
                        "maxErrorRate": 0.01,
                        "maxLatencyRatio": 2.0,
                    }
                },
            },
        }
        path = self.cluster.state_dir / "demo-canary-servedmodel.json"
        path.write_text(json.dumps(manifest, indent=1))
        print(json.dumps(manifest["spec"]["rollout"], indent=1))
        self.k("apply", "-f", str(path))
        wait_for(
            "ServedModel hpt Ready, serving version 1",
            lambda: self.condition("Ready").get("status") == "True" and self.serving() == "1",
            timeout=120,
        )
        self.k("-n", self.namespace, "get", "servedmodels", "-o", "wide")
        step("Start a client: Predict without pause, round robin over the ready pods")
        api_client = config.new_client_from_config(config_file=self.kubeconfig)
        self.pods = PodWatcher(api_client, self.namespace, NAME).start()
        self.load = PredictLoad(self.pods, MODEL, workers=2, max_seconds=900).start()

    def bad_version(self) -> None:
        assert self.load is not None
        step("Publish version 2: its signature takes 'inputs', every client sends 'x'")
        add_renamed_input_version(self.models_root(), self.models, 2)
        before = self.load.snapshot()
        asked = time.monotonic()
        self.set_version(2)
        degraded = self.wait_degraded("version 2 refused by its canary analysis")
        took = time.monotonic() - asked
        during = self.load.snapshot()
        sent = during.sent - before.sent
        failed = len(during.failures) - len(before.failures)
        if degraded.get("reason") != "CanaryAnalysisFailed":
            raise DemoError(f"refused for another reason: {degraded}")
        print(f"   Degraded: {degraded['reason']}: {degraded['message']}")
        print(
            f"   refused {took:.1f} s after version 2 was asked for; the client saw "
            f"{failed}/{sent} requests fail meanwhile ({failed / max(sent, 1):.1%})"
        )
        if during.failures:
            print(f"   a failed request: {during.failures[-1]}")
        wait_for("version 1 alone serving again", lambda: self.serving() == "1", timeout=60)
        mark = self.load.snapshot()
        wait_for(
            "200 more requests",
            lambda: self.load is not None and self.load.snapshot().sent >= mark.sent + 200,
            timeout=60,
        )
        after = self.load.snapshot()
        print(
            f"   after the refusal: {len(after.failures) - len(mark.failures)} failures in "
            f"{after.sent - mark.sent} requests, versions {dict(after.versions - mark.versions)}"
        )
        self.k("-n", self.namespace, "get", "servedmodels", "-o", "wide")

    def good_version(self) -> None:
        assert self.load is not None
        step("Publish version 3 (a good copy) and ask for it: promoted step by step")
        add_good_version(self.models_root(), self.models, 3)
        self.set_version(3)
        shares: dict[int, Counter[int]] = {}
        last = self.load.snapshot()
        analysing = 0
        shown: set[tuple[int, str]] = set()
        deadline = time.monotonic() + 240
        while True:
            body = self.sm()
            now = self.load.snapshot()
            if analysing:
                shares.setdefault(analysing, Counter()).update(now.versions - last.versions)
            last = now
            status = body.get("status") or {}
            canary = status.get("canary") or {}
            analysing = int(canary.get("step") or 0) if canary.get("phase") == "Analysing" else 0
            key = (int(canary.get("step") or 0), str(canary.get("phase") or ""))
            if canary and key not in shown:
                shown.add(key)
                print(
                    f"   step {canary.get('step')}/{canary.get('steps')} {canary.get('phase')}: "
                    f"{canary.get('share')}"
                )
                analysis = canary.get("lastAnalysis")
                if analysis:
                    print(f"     last analysis: {analysis['verdict']}: {analysis['message']}")
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
            promoted = status.get("servingVersions") == "3" and ready.get("status") == "True"
            if promoted and not canary and not status.get("rollout"):
                break
            if time.monotonic() > deadline:
                raise DemoError(f"version 3 not promoted in time: {status}")
            # Until the operator takes the new target, status.refused still names version 2.
            refused = status.get("refused") or {}
            if 3 in (refused.get("versions") or []):
                raise DemoError(f"version 3 refused: {refused}")
            time.sleep(0.5)  # narration pace, not synchronisation
        for number, counts in sorted(shares.items()):
            total = sum(counts.values())
            print(
                f"   client's split during step {number}: {counts[3]}/{total} requests "
                f"answered by version 3 ({counts[3] / max(total, 1):.0%})"
            )
        report = self.load.stop()
        print(f"   client overall: {report.summary()}")
        if self.pods is not None:
            self.pods.stop()
        self.k("-n", self.namespace, "get", "servedmodels", "-o", "wide")

    def finish(self) -> None:
        step("Where things stand (the canary pods drain through their grace period)")
        self.k("-n", self.namespace, "get", "servedmodels", "-o", "wide")
        self.k("-n", self.namespace, "get", "deployments,pods")
        print(
            f"\n  export KUBECONFIG={self.kubeconfig}\n"
            f"  kubectl -n {self.namespace} get servedmodel {NAME} -o jsonpath='{{.status}}'\n"
            f"Stop everything: make sim-down"
        )

    def story(self) -> list[Callable[[], None]]:
        return [
            self.start,
            self.storage,
            self.version_1,
            self.bad_version,
            self.good_version,
            self.finish,
        ]

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.load is not None:
                self.load.stop()
            if self.pods is not None:
                self.pods.stop()


def main() -> int:
    """`make demo-canary`."""
    return demo.main(
        CanaryDemo,
        prog="python -m localdev.demo_canary",
        namespace="demo-canary",
        models=REPO_ROOT / ".sim" / "demo-models" / "canary",
        description=__doc__,
    )


if __name__ == "__main__":
    sys.exit(main())
