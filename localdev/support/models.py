"""Model folders for tests: copies of a real SavedModel, and broken versions."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def make_model_dir(
    root: Path, name: str, good: tuple[int, ...], broken: tuple[int, ...] = ()
) -> Path:
    """A fresh base path: `good` versions are half_plus_three, `broken` ones are garbage."""
    base = root / "cases" / f"{name}-{uuid.uuid4().hex[:6]}"
    for version in good:
        add_good_version(root, base, version)
    for version in broken:
        add_broken_version(base, version)
    return base


def add_good_version(root: Path, base: Path, version: int) -> None:
    """Publish a real SavedModel as `version` (copied, then renamed: never half a version)."""
    staging = base / f".tmp-{version}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(root / "half_plus_three" / "1", staging)
    staging.rename(base / str(version))


def add_broken_version(base: Path, version: int) -> None:
    """Publish a version whose saved_model.pb does not parse."""
    target = base / str(version)
    target.mkdir(parents=True)
    (target / "saved_model.pb").write_bytes(b"this is not a SavedModel")
