"""The local cluster's S3 store for tests and demos: buckets, uploads, Secrets.

Uploads go through the S3 API with the rclone the cluster runs
(``rclone serve s3``), so what a pod's puller reads is what a user's
``aws s3 cp`` or ``rclone copy`` would have put there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client

from localdev.sim.cluster import SimCluster

REMOTE = "sim"


def rclone(sim: SimCluster, *args: str, timeout: float = 120) -> str:
    """Run the cluster's rclone against its S3 store (remote ``sim:``); return stdout."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(sim.state_dir),
        **sim.s3_rclone_env(REMOTE),
    }
    result = subprocess.run(
        [str(sim.bin / "rclone"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rclone {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def make_bucket(sim: SimCluster, bucket: str) -> None:
    """Create `bucket` (idempotent)."""
    rclone(sim, "mkdir", f"{REMOTE}:{bucket}")


def upload_version(sim: SimCluster, source: Path, bucket: str, prefix: str, version: int) -> None:
    """Upload the version folder `source` as s3://bucket/prefix/version."""
    rclone(sim, "copy", str(source), f"{REMOTE}:{bucket}/{prefix}/{version}")


def create_credentials_secret(
    api_client: Any, sim: SimCluster, namespace: str, name: str, **overrides: str
) -> None:
    """A Secret with the store's keys, endpoint and provider (puller.SECRET_KEYS)."""
    data = {**sim.s3_secret_data(), **overrides}
    body = {"metadata": {"name": name}, "type": "Opaque", "stringData": data}
    client.CoreV1Api(api_client).create_namespaced_secret(namespace, body)
