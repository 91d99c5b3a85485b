"""The machine the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

from benchmarks.kubeapi import Api


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _free_g() -> str:
    try:
        return subprocess.run(["free", "-g"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def describe(api: Api | None = None) -> dict[str, Any]:
    """CPU, memory, software versions, and the load when the run started."""
    versions = {}
    for package in ("kopf", "kubernetes", "grpcio"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    if api is not None:
        try:
            versions["kube-apiserver"] = api.get("/version").get("gitVersion", "?")
        except Exception:
            versions["kube-apiserver"] = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": round(_mem_total_gib(), 1),
        "free_g": _free_g().rstrip(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_at_start": list(os.getloadavg()),
    }
