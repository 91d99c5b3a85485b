"""The local cluster's toolchain bookkeeping: binary names and the cache key."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest

from localdev.sim import toolchain


@pytest.mark.parametrize(
    ("package", "binary"),
    [
        ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
        ("sigs.k8s.io/kwok/cmd/kwok", "kwok"),
        ("helm.sh/helm/v3/cmd/helm", "helm"),
        # A major-version suffix is not the name: `go build` uses the element before it.
        ("go.etcd.io/etcd/server/v3", "server"),
        ("example.com/tool/v12", "tool"),
        # Only v<digits> counts as a version suffix.
        ("example.com/tools/vet", "vet"),
        ("example.com/tools/v", "v"),
        ("example.com/tools/v2beta", "v2beta"),
        ("v2", "v2"),
        ("tool", "tool"),
    ],
)
def test_go_binary_name(package: str, binary: str) -> None:
    assert toolchain._go_binary_name(package) == binary


def test_every_tool_gets_its_own_binary_name() -> None:
    assert len({t.binary for t in toolchain.TOOLS}) == len(toolchain.TOOLS)


@pytest.fixture
def fixed_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the key independent of the Go installed here (and of `go` being installed)."""
    monkeypatch.setattr(toolchain, "go_version", lambda: "go1.99.0")


@pytest.mark.usefixtures("fixed_go")
def test_cache_key_is_stable_and_short() -> None:
    key = toolchain.cache_key()
    assert key == toolchain.cache_key()
    assert len(key) == 16
    int(key, 16)  # hexadecimal


def test_cache_key_follows_the_go_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain, "go_version", lambda: "go1.99.0")
    first = toolchain.cache_key()
    monkeypatch.setattr(toolchain, "go_version", lambda: "go1.99.1")
    assert toolchain.cache_key() != first


@pytest.mark.usefixtures("fixed_go")
def test_cache_key_follows_the_module_files(monkeypatch, tmp_path) -> None:
    original = toolchain.cache_key()
    copy = tmp_path / "toolchain"
    shutil.copytree(toolchain.TOOLCHAIN_DIR, copy)
    monkeypatch.setattr(toolchain, "TOOLCHAIN_DIR", copy)
    # Same files elsewhere: same key (the location is not part of it).
    assert toolchain.cache_key() == original

    go_mods = sorted(copy.glob("*/go.mod"))
    assert go_mods, "no toolchain modules found"
    go_mods[0].write_text(go_mods[0].read_text() + "\n// changed\n")
    assert toolchain.cache_key() != original


@pytest.mark.usefixtures("fixed_go")
def test_cache_key_follows_the_tool_list(monkeypatch) -> None:
    original = toolchain.cache_key()
    first, *rest = toolchain.TOOLS
    changed = dataclasses.replace(first, ldflags=first.ldflags + " -X example.com/x.y=z")
    monkeypatch.setattr(toolchain, "TOOLS", (changed, *rest))
    assert toolchain.cache_key() != original


@pytest.mark.usefixtures("fixed_go")
def test_bin_dir_is_keyed_under_the_cache_root(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TFSO_SIM_CACHE", str(tmp_path))
    assert toolchain.bin_dir() == tmp_path / f"bin-{toolchain.cache_key()}"


@pytest.mark.usefixtures("fixed_go")
def test_a_changed_tool_changes_only_its_own_key(monkeypatch) -> None:
    before = {t.binary: toolchain.tool_key(t) for t in toolchain.TOOLS}
    helm = toolchain.tool("helm")
    changed = dataclasses.replace(helm, ldflags=helm.ldflags + " -X example.com/x.y=z")
    monkeypatch.setattr(
        toolchain, "TOOLS", tuple(changed if t is helm else t for t in toolchain.TOOLS)
    )
    after = {t.binary: toolchain.tool_key(t) for t in toolchain.TOOLS}
    assert {name for name in before if before[name] != after[name]} == {"helm"}


@pytest.mark.usefixtures("fixed_go")
def test_tool_entries_live_under_the_cache_root(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TFSO_SIM_CACHE", str(tmp_path))
    tool = toolchain.TOOLS[0]
    assert toolchain.tool_path(tool) == (
        tmp_path / "tools" / f"{tool.binary}-{toolchain.tool_key(tool)}"
    )


@pytest.mark.usefixtures("fixed_go")
def test_ensure_binaries_links_built_tools_without_building(monkeypatch, tmp_path) -> None:
    """Every tool already in the cache: the set's folder is made of links, no go build."""
    monkeypatch.setenv("TFSO_SIM_CACHE", str(tmp_path))
    for tool in toolchain.TOOLS:
        path = toolchain.tool_path(tool)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tool.binary)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing should be built")

    monkeypatch.setattr(subprocess, "run", no_build)
    folder = toolchain.ensure_binaries(log=False)
    assert folder == toolchain.bin_dir()
    assert sorted(p.name for p in folder.iterdir()) == sorted(t.binary for t in toolchain.TOOLS)
    assert all((folder / t.binary).read_text() == t.binary for t in toolchain.TOOLS)


def test_helm_is_stamped_as_helms_release_build() -> None:
    """helm's Makefile: the version, a clean tree, and the default Kubernetes
    version (for `helm template`/`helm lint`) from the client-go it builds with."""
    helm = toolchain.tool("helm")
    client_go = toolchain.go_mod_requirement("helm", "k8s.io/client-go")
    minor = client_go.split(".")[1]
    assert client_go.startswith("v0.")
    for stamp in (
        f"helm.sh/helm/v3/internal/version.version={toolchain.HELM_VERSION}",
        "helm.sh/helm/v3/internal/version.gitTreeState=clean",
        "helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
        f"helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
        "helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
        f"helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
    ):
        assert f"-X {stamp}" in helm.ldflags, stamp


def test_the_built_helm_reports_its_stamps() -> None:
    binary = toolchain.tool_path(toolchain.tool("helm"))
    if not binary.is_file():
        pytest.skip("helm not built on this machine (make sim-build)")
    out = subprocess.run(
        [str(binary), "version", "--template", "{{.Version}} {{.GitTreeState}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"{toolchain.HELM_VERSION} clean"
