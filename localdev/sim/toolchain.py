"""Build the local control plane from source at pinned versions.

Every binary comes from the Go module proxy through a small Go module of ours
under ``localdev/sim/toolchain/<name>/`` (go.mod and go.sum committed, the tool
recorded with a ``tool`` directive), so the versions are visible in the
repository and ``go build`` is all it takes. Binaries land in a cache outside
the clone, each keyed by a hash of its module's go.mod/go.sum, the Go version
and its version stamps: a warm machine never rebuilds, not even for CI's fresh
clone, and a change to one tool rebuilds that tool alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TOOLCHAIN_DIR = Path(__file__).parent / "toolchain"

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
# rclone: the local cluster's S3 server (`rclone serve s3`) and the model
# puller's binary (the release of the image puller.PULLER_IMAGE names).
RCLONE_VERSION = "v1.76.0"
METRICS_SERVER_VERSION = "v0.8.0"


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


def go_mod_requirement(module_dir: str, module: str) -> str:
    """The version of `module` one of our toolchain modules requires (its go.mod)."""
    for line in (TOOLCHAIN_DIR / module_dir / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == module:
            return words[1]
    raise ValueError(f"{module_dir}/go.mod does not require {module}")


def _helm_ldflags() -> str:
    """The stamps helm's own Makefile gives a release build.

    Without them helm reports an empty build and, worse, assumes Kubernetes
    v1.20 for `helm template` and `helm lint`, so a chart with a kubeVersion
    constraint (ours: >=1.30) does not render without --kube-version. Helm's
    Makefile derives that default from the client-go it is built with
    (v0.37 -> Kubernetes 1.37). The git commit of the tag is the one stamp we
    cannot give: the module proxy carries none (see docs/local-cluster.md).
    """
    client_go = go_mod_requirement("helm", "k8s.io/client-go").lstrip("v").split(".")
    k8s_major, k8s_minor = str(int(client_go[0]) + 1), client_go[1]
    flags = [
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [
            f"-X {package}.k8sVersionMajor={k8s_major}",
            f"-X {package}.k8sVersionMinor={k8s_minor}",
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
    GoTool("helm", "helm", "helm.sh/helm/v3/cmd/helm", _helm_ldflags()),
    # Our own main (toolchain/rclone/main.go): only the S3 and local backends
    # and the commands the cluster runs, a fraction of rclone's full build.
    # The release build clears the "DEV" suffix the same way.
    GoTool(
        "rclone",
        "rclone",
        "github.com/tfserving-operator/sim/rclone",
        "-s -w -X github.com/rclone/rclone/fs.VersionSuffix=",
    ),
    # The metrics.k8s.io API for the HPA and `kubectl top`; it reads its version from
    # client-go's copy, as its own Makefile stamps it.
    GoTool(
        "metrics-server",
        "metrics-server",
        "sigs.k8s.io/metrics-server/cmd/metrics-server",
        f"-s -w -X k8s.io/client-go/pkg/version.gitVersion={METRICS_SERVER_VERSION}",
    ),
)


def go_version() -> str:
    """Return `go env GOVERSION` (part of the cache key: another Go rebuilds)."""
    return subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True
    ).stdout.strip()


def tool_key(tool: GoTool) -> str:
    """A short hash of everything that determines one binary's contents.

    Keyed per tool, not per set: adding a tool or re-stamping one rebuilds
    that tool alone (a full control-plane build is about 11 minutes on two
    cores; helm alone is under two).
    """
    digest = hashlib.sha256()
    digest.update(go_version().encode())
    digest.update(f"{tool.binary}|{tool.package}|{tool.ldflags}".encode())
    for path in sorted((TOOLCHAIN_DIR / tool.module_dir).glob("go.*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key() -> str:
    """A short hash over every tool's key: names the folder holding the set."""
    digest = hashlib.sha256()
    for tool in TOOLS:
        digest.update(f"{tool.binary}={tool_key(tool)};".encode())
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


def tool(binary: str) -> GoTool:
    """The pinned tool that builds `binary`."""
    (found,) = (t for t in TOOLS if t.binary == binary)
    return found


def tool_path(tool: GoTool) -> Path:
    """Where one built binary lives, shared by every pin set that holds it."""
    return cache_root() / "tools" / f"{tool.binary}-{tool_key(tool)}"


def missing_binaries(directory: Path) -> list[GoTool]:
    """The tools not yet in `directory`."""
    return [t for t in TOOLS if not (directory / t.binary).is_file()]


def _link(source: Path, destination: Path) -> None:
    """Put `source` at `destination` atomically (a hard link, else a copy)."""
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copy2(source, partial)
    os.replace(partial, destination)


def ensure_binaries(log: bool = True) -> Path:
    """Build whatever binary of the pinned set is missing; return the bin folder.

    Each tool is built into a temporary folder and renamed into its own cache
    entry, so an interrupted build never leaves a half-written binary; the
    set's folder then holds links to those entries.
    """
    target = bin_dir()
    if not missing_binaries(target):
        return target
    _build((tool for tool in TOOLS if not tool_path(tool).is_file()), log=log)
    target.mkdir(parents=True, exist_ok=True)
    for tool in missing_binaries(target):
        _link(tool_path(tool), target / tool.binary)
    return target


def _build(tools: Iterable[GoTool], log: bool = True) -> None:
    """`go build` the tools, one invocation per module and ldflags."""
    by_module: dict[tuple[str, str], list[GoTool]] = {}
    for tool in tools:
        by_module.setdefault((tool.module_dir, tool.ldflags), []).append(tool)
    if not by_module:
        return
    cache_root().mkdir(parents=True, exist_ok=True)
    # A folder of this build's own: several clones may build at once.
    staging = Path(tempfile.mkdtemp(prefix="tools.partial-", dir=cache_root()))
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false")
    for (module_dir, ldflags), group in by_module.items():
        started = time.monotonic()
        if log:
            names = ", ".join(t.binary for t in group)
            print(
                f"[sim] building {names} (first time on this machine)", file=sys.stderr, flush=True
            )
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(staging) + "/"]
            + [t.package for t in group],
            cwd=TOOLCHAIN_DIR / module_dir,
            env=env,
            check=True,
        )
        for tool in group:
            destination = tool_path(tool)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / _go_binary_name(tool.package), destination)
        if log:
            print(f"[sim] built in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    print(ensure_binaries())
