"""Atomic, immutable version export (training_jobs.common.export_util)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training_jobs.common import export_util

pytestmark = pytest.mark.tensorflow


def _write_files(path: Path) -> None:
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"model")
    (path / "variables").mkdir()


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _staging_left(base: Path) -> list[str]:
    return [p.name for p in base.iterdir() if p.name.startswith(export_util.STAGING_PREFIX)]


def test_export_publishes_version_and_cleans_staging(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(path: Path) -> None:
        # Builders require a fresh path; the staging folder must not be the final name.
        assert not path.exists()
        assert path.parent.name.startswith(export_util.STAGING_PREFIX)
        seen.append(path)
        _write_files(path)

    published = export_util.atomic_export(tmp_path / "mnist", 1, write)

    assert published == tmp_path / "mnist" / "1"
    assert (published / "saved_model.pb").read_bytes() == b"model"
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == ["1"]
    assert not seen[0].exists()


def test_second_export_of_same_version_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    base = tmp_path / "mnist"
    export_util.atomic_export(base, 1, _write_files)
    before = _snapshot(base)
    calls: list[Path] = []

    with pytest.raises(export_util.VersionExistsError, match="version 1 already exists"):
        export_util.atomic_export(base, 1, calls.append)

    assert calls == []  # refused before doing any work
    assert _snapshot(base) == before


def test_failure_mid_export_leaves_no_numbered_folder(tmp_path: Path) -> None:
    base = tmp_path / "mnist"

    def write_then_fail(path: Path) -> None:
        _write_files(path)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        export_util.atomic_export(base, 2, write_then_fail)

    assert list(base.iterdir()) == []


def test_exporter_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="wrote nothing"):
        export_util.atomic_export(tmp_path, 1, lambda path: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("concurrent_content", [False, True], ids=["empty", "non-empty"])
def test_version_appearing_during_export_is_not_replaced(
    tmp_path: Path, concurrent_content: bool
) -> None:
    base = tmp_path / "mnist"

    def write_while_another_exporter_wins(path: Path) -> None:
        _write_files(path)
        rival = base / "3"
        rival.mkdir()
        if concurrent_content:
            (rival / "saved_model.pb").write_bytes(b"rival")

    with pytest.raises(export_util.VersionExistsError, match="appeared during export"):
        export_util.atomic_export(base, 3, write_while_another_exporter_wins)

    assert _snapshot(base) == (
        {"3": None, "3/saved_model.pb": b"rival"} if concurrent_content else {"3": None}
    )
    assert _staging_left(base) == []


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0])
def test_version_must_be_a_positive_integer(tmp_path: Path, version: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        export_util.atomic_export(tmp_path, version, _write_files)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_ensure_version_absent_returns_target(tmp_path: Path) -> None:
    assert export_util.ensure_version_absent(tmp_path, 7) == tmp_path / "7"
