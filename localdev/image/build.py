"""Build the operator image with podman, pulling nothing (what `make image` runs).

Three steps, each cached:
1. the base: a Debian bookworm root file system from packages (mmdebstrap,
   variant `extract`: python3.11 and the libraries it links, no shell, no
   package manager), imported into podman; cached in
   ~/.cache/tfserving-operator/image/ under a hash of its recipe;
2. the wheels: operator/requirements-image.txt from PyPI (binary wheels for
   this interpreter, CPython 3.11 on glibc, as in the base), the operator's own
   wheel, and pip's wheel to install them with, in dist/image/;
3. `podman build` of operator/Dockerfile on that base, then `podman save` as
   an OCI archive: dist/tfserving-operator-<version>.oci.tar.

Debian's snapshot archive (snapshot.debian.org) would pin every package
version; it is not reachable from every machine, so the suite is pinned and
the exact package versions that went in are listed in
dist/image/base-packages.txt (and the base's hash changes with TFSO_DEBIAN_MIRROR,
which may name a snapshot URL).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from localdev.image.lock import LOCK_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
DIST = REPO_ROOT / "dist"
STAGE = DIST / "image"
CACHE = Path.home() / ".cache" / "tfserving-operator" / "image"
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"

SUITE = "bookworm"
MIRROR = os.environ.get("TFSO_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3.11-minimal is the interpreter; libpython3.11-stdlib the rest of the
# standard library (ssl, asyncio's selectors, json's speedups, ...);
# libstdc++6 for grpcio's extension (the only library the pinned wheels link
# beyond glibc and libgcc: `readelf -d` of their .so files).
BASE_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
# What the built image must import, on a read-only root, without a network:
# every extension module the operator loads at start.
SMOKE_IMPORTS = (
    "import grpc, kopf, kubernetes, prometheus_client, yaml, tfserving_operator.handlers"
)
# Documentation, manual pages and translations: nothing at run time reads them.
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")
PIP_VERSION = "26.3"
IMAGE_NAME = "localhost/tfserving-operator"


def project_version() -> str:
    """[project].version of pyproject.toml (the image tag and version label)."""
    return str(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])


def podman_env() -> dict[str, str]:
    """The environment podman runs with: our containers.conf, not /etc's."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, capture: bool = False) -> str:
    """Run podman; its output when `capture`."""
    result = subprocess.run(
        ["podman", *args], check=True, env=podman_env(), text=True, capture_output=capture
    )
    return result.stdout if capture else ""


def image_exists(ref: str) -> bool:
    """podman has this image locally."""
    return (
        subprocess.run(
            ["podman", "image", "exists", ref], env=podman_env(), capture_output=True
        ).returncode
        == 0
    )


def base_recipe() -> dict[str, object]:
    """Everything the base depends on: its hash names it."""
    return {
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": BASE_PACKAGES,
        "trim": TRIM,
        "hook": "extract",
    }


def base_image() -> str:
    """The Debian-built base in podman (built and imported unless cached)."""
    digest = hashlib.sha256(json.dumps(base_recipe(), sort_keys=True).encode()).hexdigest()[:12]
    ref = f"localhost/tfserving-operator-base:{SUITE}-{digest}"
    tarball = CACHE / f"base-{digest}.tar"
    packages = CACHE / f"base-{digest}.packages.txt"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        trim = " ".join(f'"$1/{path}"' for path in TRIM)
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=extract",
                f"--include={','.join(BASE_PACKAGES)}",
                # The .debs that went in, before apt's cache is cleaned: the
                # base's bill of materials.
                f"--extract-hook=ls \"$1\"/var/cache/apt/archives/ | grep '\\.deb$' > {packages}",
                f"--extract-hook=rm -rf {trim}",
                "--format=tar",
                SUITE,
                str(tarball.with_suffix(".tmp")),
                MIRROR,
            ],
            check=True,
        )
        tarball.with_suffix(".tmp").rename(tarball)
    if not image_exists(ref):
        podman("import", "--quiet", str(tarball), ref)
    STAGE.mkdir(parents=True, exist_ok=True)
    if packages.exists():
        shutil.copy(packages, STAGE / "base-packages.txt")
    return ref


def wheels() -> Path:
    """dist/image/: the pinned wheels, the operator's wheel, pip.whl, requirements.txt.

    The pinned wheels and pip are downloaded again only when the lock file or
    the pip pin changes; the operator's wheel is built every time.
    """
    wheel_dir = STAGE / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    recipe = LOCK_FILE.read_text() + PIP_VERSION
    stamp = STAGE / f".downloaded-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if not stamp.exists():
        shutil.rmtree(wheel_dir, ignore_errors=True)
        for old_stamp in STAGE.glob(".downloaded-*"):
            old_stamp.unlink()
        wheel_dir.mkdir(parents=True)
        subprocess.run(
            [*pip, "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheel_dir),
             "--requirement", str(LOCK_FILE)],
            check=True,
        )  # fmt: skip
        pip_dir = STAGE / "pip"
        subprocess.run(
            [*pip, "download", "--no-deps", "--only-binary=:all:", "--dest", str(pip_dir),
             f"pip=={PIP_VERSION}"],
            check=True,
        )  # fmt: skip
        (pip_whl,) = pip_dir.glob("pip-*.whl")
        shutil.move(pip_whl, STAGE / "pip.whl")
        shutil.rmtree(pip_dir)
        stamp.touch()
    for old in wheel_dir.glob("tfserving_operator-*.whl"):
        old.unlink()
    # A fresh build directory: setuptools would otherwise reuse build/ leftovers.
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(REPO_ROOT / "operator", source / "operator",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO_ROOT / name, source / name)
        subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheel_dir), str(source)],
                       check=True)  # fmt: skip
    requirements = LOCK_FILE.read_text() + f"tfserving-operator=={project_version()}\n"
    (STAGE / "requirements.txt").write_text(requirements)
    return STAGE


def revision() -> str:
    """The commit the image is built from (with -dirty for uncommitted changes)."""
    git = ["git", "-C", str(REPO_ROOT)]
    rev = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout
    return rev.strip() + ("-dirty" if dirty.strip() else "") if rev.strip() else "unknown"


def source() -> str:
    """Where the source lives: the origin remote's URL, else this checkout."""
    url = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "remote", "get-url", "origin"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return url or f"file://{REPO_ROOT}"


def build(base: str) -> str:
    """podman build of operator/Dockerfile on `base`; the image reference."""
    version = project_version()
    ref = f"{IMAGE_NAME}:{version}"
    podman(
        "build", "--quiet", "--network=none", "--pull=never",
        "--file", str(DOCKERFILE),
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"VERSION={version}",
        "--build-arg", f"REVISION={revision()}",
        "--build-arg", f"SOURCE={source()}",
        "--tag", ref,
        str(REPO_ROOT),
    )  # fmt: skip
    return ref


def smoke(ref: str) -> None:
    """The image starts Python and imports the operator (catches a missing shared library)."""
    podman(
        "run", "--rm", "--network=none", "--read-only", "--entrypoint", "python3.11", ref,
        "-c", SMOKE_IMPORTS,
    )  # fmt: skip


def archive_path() -> Path:
    """dist/tfserving-operator-<version>.oci.tar."""
    return DIST / f"tfserving-operator-{project_version()}.oci.tar"


def save(ref: str) -> Path:
    """The image as an OCI archive (for `skopeo copy oci-archive:... docker://...`)."""
    target = archive_path()
    target.unlink(missing_ok=True)
    podman("save", "--quiet", "--format", "oci-archive", "--output", str(target), ref)
    return target


def image_size(ref: str) -> int:
    """Bytes of the image, uncompressed, as podman counts them."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", ref, capture=True).strip())


def main() -> int:
    """Build, save and report sizes and step times."""
    parser = argparse.ArgumentParser(prog="python -m localdev.image.build", description=__doc__)
    parser.parse_args()
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        print("make image needs podman, runc and mmdebstrap (apt-get install)", file=sys.stderr)
        return 1
    times: dict[str, float] = {}
    started = time.monotonic()
    base = base_image()
    times["base"] = time.monotonic() - started
    mark = time.monotonic()
    wheels()
    times["wheels"] = time.monotonic() - mark
    mark = time.monotonic()
    ref = build(base)
    smoke(ref)
    times["build"] = time.monotonic() - mark
    mark = time.monotonic()
    archive = save(ref)
    times["save"] = time.monotonic() - mark
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items())
    sizes = (image_size(ref), image_size(base), archive.stat().st_size)
    mib = [f"{size / 2**20:.1f} MiB" for size in sizes]
    print(f"[image] {ref}: {mib[0]} (base {mib[1]}); {archive}: {mib[2]}", file=sys.stderr)
    print(f"[image] {time.monotonic() - started:.1f} s: {steps}", file=sys.stderr)
    print(ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
