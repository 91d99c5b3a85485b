"""`make demo-s3`: MNIST served from the local cluster's S3 bucket, narrated.

Starts the local cluster (its S3 store is `rclone serve s3`) and the
operator, trains MNIST version 1, uploads it to a bucket through the S3 API,
serves it from ``s3://mnist-models/mnist`` with a credentials Secret, and
shows the model puller at work: the pod's init containers copy version 1
into the pod before the server starts (run here for real, with the rclone
the image holds), and the MNIST client gets its answers. Then it asks for a
version 3 that was never uploaded and shows it refused in the puller's
words while version 1 keeps serving. The pull time comes from the stand-in
kubelet's log of the init container's run.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from localdev import demo
from localdev.demo import REPO_ROOT, Demo, DemoError, step, wait_for
from localdev.support.s3 import make_bucket, upload_version

BUCKET = "mnist-models"
SECRET = "mnist-s3"


class S3Demo(Demo):
    """The narrated run, with the model in the local S3 store."""

    def storage(self) -> None:
        step(
            "Create the namespace and a Secret with the S3 store's keys (given to the puller only)"
        )
        if self.models.exists():
            shutil.rmtree(self.models)
        self.models.mkdir(parents=True)
        self.k("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=true")
        self.k("create", "namespace", self.namespace)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": self.namespace},
            "stringData": self.cluster.s3_secret_data(),
        }
        path = self.cluster.state_dir / "demo-s3-secret.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(secret))
        self.k("apply", "-f", str(path))
        path.unlink()

    def version_1(self) -> None:
        step("Train MNIST version 1 (100 iterations) and upload it to s3://mnist-models/mnist/1")
        self.train(1, 100)
        make_bucket(self.cluster, BUCKET)
        upload_version(self.cluster, self.models / "1", BUCKET, "mnist", 1)
        print(f"$ rclone copy {self.models / '1'} sim:{BUCKET}/mnist/1")
        step("Serve it from the bucket")
        manifest = {
            "apiVersion": "serving.tfoperator.dev/v1alpha1",
            "kind": "ServedModel",
            "metadata": {"name": "mnist", "namespace": self.namespace},
            "spec": {
                "modelName": "mnist",
                "storage": {
                    "uri": f"s3://{BUCKET}/mnist",
                    "credentials": {"secretName": SECRET},
                },
                "version": 1,
            },
        }
        path = self.cluster.state_dir / "demo-s3-servedmodel.json"
        path.write_text(json.dumps(manifest, indent=1))
        self.k("apply", "-f", str(path))
        wait_for(
            "ServedModel mnist Ready, serving version 1 pulled from the bucket",
            lambda: self.condition("Ready").get("status") == "True" and self.serving() == "1",
            timeout=180,
        )
        pod = self.get_json("pods", "-l", "serving.tfoperator.dev/servedmodel=mnist")["items"][0]
        name = pod["metadata"]["name"]
        print("   The pod's init containers (the model puller):")
        self.k(
            "-n", self.namespace, "get", "pod", name, "-o",
            "jsonpath={range .spec.initContainers[*]}{.name}: {.command} {.args}{'\\n'}{end}",
        )  # fmt: skip
        seconds = pull_seconds(self.cluster.logs / "standin.log", name, "model-pull-1")
        print(f"   pull of version 1 (model-pull-1): {seconds:.2f} s")
        self.k("-n", self.namespace, "get", "servedmodels", "-o", "wide")
        step("Ask it: the MNIST client over gRPC")
        self.client()

    def version_3(self) -> None:
        step("Ask for version 3, which was never uploaded")
        asked = time.monotonic()
        self.set_version(3)
        degraded = self.wait_degraded("version 3 refused with the puller's own words")
        print(f"   refused {time.monotonic() - asked:.1f} s after version 3 was asked for")
        print(f"   Degraded: {degraded['reason']}: {degraded['message']}")
        step("Version 1 keeps serving")
        wait_for("version 1 still serving", lambda: self.serving() == "1", timeout=60)
        self.client()

    def story(self) -> list[Callable[[], None]]:
        """No version 2 here: the story is the pull and its refusal."""
        return [self.start, self.storage, self.version_1, self.version_3, self.finish]


def pull_seconds(log: Path, pod: str, container: str) -> float:
    """How long `container` of `pod` ran, from the stand-in kubelet's log line."""
    pattern = re.compile(
        rf"pod [^ ]+/{re.escape(pod)}: init container {re.escape(container)} "
        r"exited with code 0 after ([0-9.]+) s"
    )
    for line in reversed(log.read_text(errors="replace").splitlines()):
        match = pattern.search(line)
        if match:
            return float(match.group(1))
    raise DemoError(f"no completed run of {container} for pod {pod} in {log}")


def main() -> int:
    """`make demo-s3`."""
    return demo.main(
        S3Demo,
        prog="python -m localdev.demo_s3",
        namespace="demo-s3",
        models=REPO_ROOT / ".sim" / "demo-models" / "mnist-s3",
        description=__doc__,
    )


if __name__ == "__main__":
    sys.exit(main())
