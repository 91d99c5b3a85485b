"""One TF Serving release, pinned in tfserving_operator/release.py, and all that follows it.

TensorFlow promises graph compatibility within a minor release only: a
SavedModel exported by a newer TensorFlow can fail to load in an older server
("Op type not registered"). So the TensorFlow that trains (training jobs) and
loads (the stand-in, the tests) must be the minor of the model server image
users get by default, and every place that names that image must name the
same release. Each test here fails on a drift, naming the file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tfserving_operator import release, settings

REPO_ROOT = Path(__file__).resolve().parents[2]
MAJOR, MINOR = (int(p) for p in release.TF_MINOR.split("."))
# tensorflow/serving:<version>[-suffix] wherever a file names the image.
IMAGE_MENTION = re.compile(r"tensorflow/serving:(\d+\.\d+(?:\.\d+)?)")
# Files where the image must be the pinned one: what users read and install,
# and what the tests pin (golden renders).
PINNED_TREES = ("README.md", "docs", "charts", "manifests", "crds", "tests/unit/golden", "localdev")
SERVING_MIRROR = Path("/work/.mirror/tensorflow+serving/repo")


def follows_the_minor(requirement: str) -> str | None:
    """Why `requirement` does not bracket exactly the pinned minor (None: it does)."""
    spec = Requirement(requirement).specifier
    # An exact pin (==2.20.0) or a range (>=2.20,<2.21) both qualify.
    inside = [Version(f"{MAJOR}.{MINOR}.{patch}") for patch in range(100)]
    outside = [
        Version(f"{MAJOR}.{MINOR - 1}.99"),
        Version(f"{MAJOR}.{MINOR + 1}.0"),
        Version(f"{MAJOR + 1}.0.0"),
    ]
    if not any(spec.contains(v) for v in inside):
        return f"{requirement!r} refuses TensorFlow {release.TF_MINOR}"
    if any(spec.contains(v) for v in outside):
        return f"{requirement!r} allows another minor than {release.TF_MINOR}"
    return None


def requirements_named(lines: list[str], *names: str) -> list[str]:
    found = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text and Requirement(text).name in names:
            found.append(text)
    return found


def test_the_pin_itself() -> None:
    assert release.TF_SERVING_VERSION == "2.20.0"
    assert f"tensorflow/serving:{release.TF_SERVING_VERSION}" == release.DEFAULT_IMAGE
    assert f"tensorflow/serving:{release.TF_SERVING_VERSION}-gpu" == release.DEFAULT_GPU_IMAGE
    # settings re-exports, never restates.
    assert settings.DEFAULT_IMAGE is release.DEFAULT_IMAGE
    assert settings.DEFAULT_GPU_IMAGE is release.DEFAULT_GPU_IMAGE
    assert settings.Settings().default_image == release.DEFAULT_IMAGE


def test_pyproject_tensorflow_follows_the_release() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    everything = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        everything += extra
    names = ("tensorflow", "tensorflow-cpu")
    pinned = requirements_named(everything, *names)
    assert {Requirement(r).name for r in pinned} >= {"tensorflow"}
    problems = [p for r in pinned if (p := follows_the_minor(r))]
    assert not problems, f"pyproject.toml: {problems}"


def test_training_jobs_tensorflow_follows_the_release() -> None:
    lines = (REPO_ROOT / "training_jobs" / "requirements.txt").read_text().splitlines()
    pinned = requirements_named(lines, "tensorflow", "tensorflow-cpu")
    assert pinned, "training_jobs/requirements.txt names no TensorFlow"
    problems = [p for r in pinned if (p := follows_the_minor(r))]
    assert not problems, f"training_jobs/requirements.txt: {problems}"


def test_training_image_takes_tensorflow_from_the_requirements() -> None:
    """The Dockerfile either installs requirements.txt on a plain Python base, or its
    TensorFlow base image has the pinned minor."""
    dockerfile = (REPO_ROOT / "training_jobs" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert bases, "training_jobs/Dockerfile has no FROM"
    for base in bases:
        match = re.search(r"tensorflow[^:]*:(\d+)\.(\d+)", base)
        if match:
            assert (int(match[1]), int(match[2])) == (MAJOR, MINOR), f"Dockerfile: FROM {base}"
    assert "requirements.txt" in dockerfile


def test_chart_default_images_follow_the_release() -> None:
    """Empty values keep the operator's built-in default; a value naming the
    tensorflow/serving image must name the pinned release."""
    values = yaml.safe_load((REPO_ROOT / "charts/tfserving-operator/values.yaml").read_text())
    operator_values = values.get("operator") or {}
    for key, expected in (
        ("defaultImage", release.DEFAULT_IMAGE),
        ("defaultGpuImage", release.DEFAULT_GPU_IMAGE),
    ):
        value = operator_values.get(key, "")
        assert value in ("", expected), f"values.yaml operator.{key}: {value!r}"


def pinned_files() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", *PINNED_TREES],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO_ROOT / name for name in tracked]


def test_every_mention_of_the_image_names_the_pinned_release() -> None:
    """README, docs, chart, manifests, CRD, golden renders, local tooling."""
    files = pinned_files()
    assert any(f.name == "minimal-hostpath.yaml" for f in files), "the scan missed the goldens"
    seen, stale = 0, []
    for path in files:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for match in IMAGE_MENTION.finditer(text):
            seen += 1
            if match[1] != release.TF_SERVING_VERSION:
                stale.append(f"{path.relative_to(REPO_ROOT)}: {match[0]}")
    assert seen, "no file names the image: the scan looks in the wrong place"
    assert not stale, f"not the pinned tensorflow/serving:{release.TF_SERVING_VERSION}: {stale}"


def test_the_stand_in_takes_its_flags_from_the_release() -> None:
    """localdev/standin/flags.py emulates the pinned server's flag parser: it
    must read the flag table from release.py, not keep a copy."""
    flags_py = REPO_ROOT / "localdev" / "standin" / "flags.py"
    if not flags_py.exists():
        pytest.skip("localdev/standin/flags.py is not there yet")
    tree = ast.parse(flags_py.read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "tfserving_operator.release"
        for alias in node.names
    }
    assert "SERVER_FLAGS" in imported, "flags.py must import release.SERVER_FLAGS"
    assigned = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "SERVER_FLAGS" not in assigned, "flags.py redefines SERVER_FLAGS"


def test_installed_tensorflow_is_the_pinned_minor() -> None:
    """A stale virtualenv trains and loads with another TensorFlow than the
    servers run: every stand-in result would then prove the wrong release."""
    try:
        installed = Version(importlib.metadata.version("tensorflow"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorflow is not installed (the operator alone does not need it)")
    assert (installed.major, installed.minor) == (MAJOR, MINOR), (
        f"tensorflow {installed} is installed, the pin is {release.TF_MINOR}: run `make setup`"
    )


def test_the_serving_api_protos_are_the_makefiles_and_not_older_than_the_release() -> None:
    """tensorflow-serving-api is installed by `make setup` (SERVING_API, --no-deps:
    the release's own 2.20.0 cannot be imported under protobuf's upb runtime).
    Protos only gain fields, so a newer API package speaks the release's wire
    format; an older one might not know what the server sends."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    match = re.search(r"^SERVING_API := tensorflow-serving-api==(\S+)$", makefile, re.MULTILINE)
    assert match, "the Makefile pins no SERVING_API"
    pinned = Version(match[1])
    assert (pinned.major, pinned.minor) >= (MAJOR, MINOR), pinned
    try:
        installed = Version(importlib.metadata.version("tensorflow-serving-api"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorflow-serving-api is not installed")
    assert installed == pinned, f"{installed} installed, the Makefile pins {pinned}: make setup"


def main_cc_flags() -> dict[str, str]:
    """name -> C++ variable of every tensorflow::Flag in main.cc at the pinned tag."""
    source = subprocess.run(
        [
            "git",
            f"--git-dir={SERVING_MIRROR}",
            "show",
            f"{release.TF_SERVING_VERSION}:tensorflow_serving/model_servers/main.cc",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(re.findall(r'tensorflow::Flag\(\s*"(\w+)",\s*&([\w.]+)', source))


def options_types() -> dict[str, str]:
    """Server::Options member -> C++ type, from server.h at the pinned tag."""
    source = subprocess.run(
        [
            "git",
            f"--git-dir={SERVING_MIRROR}",
            "show",
            f"{release.TF_SERVING_VERSION}:tensorflow_serving/model_servers/server.h",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = re.findall(r"^\s*((?:tensorflow::)?\w+)\s+(\w+)(?:\s*=[^;]*)?;", source, re.MULTILINE)
    return {name: ctype for ctype, name in pairs}


CPP_TYPES = {
    "tensorflow::int32": "int32",
    "int64_t": "int64",
    "bool": "bool",
    "float": "float",
    "tensorflow::string": "string",
    "string": "string",
}


@pytest.mark.skipif(not SERVING_MIRROR.exists(), reason="no TF Serving source on this machine")
def test_server_flags_are_main_cc_at_the_pinned_tag() -> None:
    """Every flag and type in release.SERVER_FLAGS, read again from the source."""
    declared = main_cc_flags()
    assert len(declared) >= 40, declared
    types = options_types()
    locals_ = {"display_version", "xla_cpu_compilation_enabled", "xla_gpu_compilation_enabled"}
    expected = {}
    for name, variable in declared.items():
        member = variable.removeprefix("options.")
        ctype = "bool" if member in locals_ else types[member]
        expected[name] = CPP_TYPES[ctype]
    assert expected == release.SERVER_FLAGS
