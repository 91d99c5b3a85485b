"""What the benchmarks create: namespaces full of ServedModels, and a real model folder."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.harness import say
from benchmarks.kubeapi import Api
from tfserving_operator import api as names

REPO_ROOT = Path(__file__).resolve().parents[1]
# Shared with the test suites (tests/conftest.py model_store): exported once per machine.
MODELS_ROOT = Path("/tmp/tfso-test-models")
SM_PATH = f"/apis/{names.GROUP}/{names.VERSION}"


def model_base_path() -> Path:
    """A real SavedModel base path (half_plus_three, version 1), exported if missing."""
    base = MODELS_ROOT / "half_plus_three"
    if not (base / "1" / "saved_model.pb").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training_jobs.half_plus_three.export_half_plus_three",
                f"--model_dir={base}",
                "--model_version=1",
            ],
            check=True,
            cwd=REPO_ROOT,
            capture_output=True,
        )
    return base


def servedmodel(name: str, base_path: Path, replicas: int) -> dict[str, Any]:
    """The benchmark's ServedModel: one explicit version from a hostPath folder."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name},
        "spec": {
            "modelName": "half_plus_three",
            "storage": {"hostPath": {"path": str(base_path)}},
            "version": 1,
            "replicas": replicas,
        },
    }


def sm_names(count: int) -> list[str]:
    return [f"m{i:04d}" for i in range(count)]


def create_namespace(api: Api, prefix: str = "bench") -> str:
    """A fresh namespace; returns once its default ServiceAccount exists (pods need it)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sa = api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default", ok=(404,))
        if sa.get("kind") == "ServiceAccount":
            return name
        time.sleep(0.2)
    raise TimeoutError(f"no default ServiceAccount in {name} after 60 s")


def delete_namespace(api: Api, name: str, wait: float = 3600) -> float:
    """Delete a namespace and wait until it is gone (its objects too); seconds taken."""
    started = time.monotonic()
    api.request("DELETE", f"/api/v1/namespaces/{name}", ok=(404,))
    while time.monotonic() - started < wait:
        ns = api.get(f"/api/v1/namespaces/{name}", ok=(404,))
        if ns.get("kind") != "Namespace":
            taken = time.monotonic() - started
            say(f"namespace {name} deleted in {taken:.0f} s")
            return taken
        time.sleep(1.0)
    raise TimeoutError(f"namespace {name} still there after {wait:.0f} s")


def create_servedmodels(
    api: Api,
    namespace: str,
    count: int,
    base_path: Path,
    replicas: int,
    t0: float | None = None,
    threads: int = 8,
) -> dict[str, float]:
    """Create `count` ServedModels concurrently; when each create returned (s since t0)."""
    path = f"{SM_PATH}/namespaces/{namespace}/{names.PLURAL}"
    t0 = time.monotonic() if t0 is None else t0

    def create(name: str) -> tuple[str, float]:
        api.request("POST", path, servedmodel(name, base_path, replicas))
        return name, time.monotonic() - t0

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(create, sm_names(count)))


def patch_servedmodel(api: Api, namespace: str, name: str, patch: dict[str, Any]) -> None:
    api.request(
        "PATCH",
        f"{SM_PATH}/namespaces/{namespace}/{names.PLURAL}/{name}",
        patch,
        content_type="application/merge-patch+json",
    )
