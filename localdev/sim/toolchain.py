"""Build the local control plane from source at pinned versions.

Every binary comes from the Go module proxy through a small Go module of ours
under ``localdev/sim/toolchain/<name>/`` (go.mod and go.sum committed, the tool
recorded with a ``tool`` directive), so the versions are visible in the
repository and ``go build`` is all it takes. Binaries land in a cache outside
the clone, keyed by a hash of those go.mod/go.sum files, the Go version and
the version stamps: a warm machine never rebuilds, not even for CI's fresh
clone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TOOLCHAIN_DIR = Path(__file__).parent / "toolchain"

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"


def _kube_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    stamps = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    # kubectl reads client-go's copy of the version; the servers read component-base's.
    flags = [
        f"-X k8s.io/{pkg}/version.{key}={value}"
        for pkg in ("component-base", "client-go/pkg")
        for key, value in stamps.items()
    ]
    return " ".join(["-s", "-w", *flags])


@dataclass(frozen=True)
class GoTool:
    """One binary built from one of our toolchain modules."""

    binary: str
    module_dir: str
    package: str
    ldflags: str


TOOLS: tuple[GoTool, ...] = (
    GoTool("kube-apiserver", "kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver", _kube_ldflags()),
    GoTool(
        "kube-controller-manager",
        "kubernetes",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        _kube_ldflags(),
    ),
    GoTool("kube-scheduler", "kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler", _kube_ldflags()),
    GoTool("kubectl", "kubernetes", "k8s.io/kubernetes/cmd/kubectl", _kube_ldflags()),
    GoTool("etcd", "etcd", "go.etcd.io/etcd/server/v3", "-s -w"),
    GoTool(
        "kwok",
        "kwok",
        "sigs.k8s.io/kwok/cmd/kwok",
        f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION}",
    ),
    GoTool(
        "helm",
        "helm",
        "helm.sh/helm/v3/cmd/helm",
        f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
    ),
)


def go_version() -> str:
    """Return `go env GOVERSION` (part of the cache key: another Go rebuilds)."""
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def cache_key() -> str:
    """A short hash of everything that determines the binaries' contents."""
    digest = hashlib.sha256()
    digest.update(go_version().encode())
    for tool in TOOLS:
        digest.update(f"{tool.binary}|{tool.package}|{tool.ldflags}".encode())
    for path in sorted(TOOLCHAIN_DIR.glob("*/go.*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """Where built binaries live: outside the clone so fresh clones reuse them."""
    base = os.environ.get("TFSO_SIM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
        "tfserving-operator",
        "sim",
    )
    return Path(base)


def bin_dir() -> Path:
    """The cache folder holding this pin set's binaries."""
    return cache_root() / f"bin-{cache_key()}"


def _go_binary_name(package: str) -> str:
    """The file name `go build -o dir/` gives a main package (skips a /vN suffix)."""
    parts = package.split("/")
    last = parts[-1]
    if len(parts) > 1 and last[:1] == "v" and last[1:].isdigit():
        return parts[-2]
    return last


def missing_binaries(directory: Path) -> list[GoTool]:
    """The tools not yet built into `directory`."""
    return [t for t in TOOLS if not (directory / t.binary).is_file()]


def ensure_binaries(log: bool = True) -> Path:
    """Build whatever binary of the pinned set is missing; return the bin folder.

    Builds into a temporary folder and renames each binary into place, so an
    interrupted build never leaves a half-written binary in the cache.
    """
    target = bin_dir()
    todo = missing_binaries(target)
    if not todo:
        return target
    target.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    by_module: dict[tuple[str, str], list[GoTool]] = {}
    for tool in todo:
        by_module.setdefault((tool.module_dir, tool.ldflags), []).append(tool)
    for (module_dir, ldflags), tools in by_module.items():
        started = time.monotonic()
        if log:
            names = ", ".join(t.binary for t in tools)
            print(
                f"[sim] building {names} (first time on this machine)", file=sys.stderr, flush=True
            )
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(staging) + "/"]
            + [t.package for t in tools],
            cwd=TOOLCHAIN_DIR / module_dir,
            env=env,
            check=True,
        )
        for tool in tools:
            built = staging / _go_binary_name(tool.package)
            if tool.binary != built.name:
                built.rename(staging / tool.binary)
            os.replace(staging / tool.binary, target / tool.binary)
        if log:
            print(f"[sim] built in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    shutil.rmtree(staging, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(ensure_binaries())
