"""The training Job manifest and image: restricted security, the shared model volume, pins."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.tensorflow

JOBS = Path(__file__).resolve().parents[2] / "training_jobs"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((JOBS / "k8s" / "mnist-train-job.yaml").read_text()))
    assert len(documents) == 1
    return documents[0]


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])


def test_job_basics(job: dict[str, Any]) -> None:
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    # A transient failure is retried; a broken job fails within a few tries.
    assert 1 <= spec["backoffLimit"] <= 3
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    resources = _container(job)["resources"]
    assert set(resources) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])


def test_job_is_restricted_compliant(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 1000
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    container = _container(job)["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container["capabilities"]
    assert container.get("privileged", False) is False


def test_job_writes_into_the_served_models_claim(job: dict[str, Any]) -> None:
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert list(claims.values()) == ["mnist-models"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] in claims]
    assert mount["mountPath"] == "/models/mnist"
    assert not mount.get("readOnly", False)
    assert _flags(container)["model_dir"] == mount["mountPath"]


def test_job_name_label_and_version_agree(job: dict[str, Any]) -> None:
    version = _flags(_container(job))["model_version"]
    assert job["metadata"]["name"] == f"mnist-train-v{version}"
    assert job["metadata"]["labels"]["serving.tfoperator.dev/version"] == version


def test_image_is_slim_pinned_and_non_root() -> None:
    dockerfile = (JOBS / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] == "1000"
    pins = dict(
        line.split("==")
        for line in (JOBS / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(pins) == {"tensorflow-cpu", "mlxtend"}
    tf = pytest.importorskip("tensorflow")
    # The image trains with the TensorFlow the tests ran against.
    assert pins["tensorflow-cpu"].split(".")[:2] == tf.__version__.split(".")[:2]
