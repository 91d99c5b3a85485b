"""Atomic, immutable export of numbered SavedModel versions.

TensorFlow Serving watches a base path and loads the highest numeric
sub-folder it finds. Two rules keep that safe:

* A version folder appears complete or not at all. The model is written into a
  hidden staging folder (``.tmp-export-*``, not numeric, so the server ignores
  it) next to the final one and renamed into place; a rename within one file
  system is atomic, so the server never sees half a model.
* A version, once published, never changes. Clients and the operator refer to
  versions by number, so re-exporting under the same number would silently
  swap the model behind them; we refuse instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

STAGING_PREFIX = ".tmp-export-"


class VersionExistsError(FileExistsError):
    """Raised when the target version folder already exists."""


def version_dir(base_dir: str | os.PathLike[str], version: int) -> Path:
    """Return the folder of ``version`` under ``base_dir`` after checking the number.

    Raises:
        ValueError: ``version`` is not a positive integer.
    """
    # bool is an int subclass; True would silently become version 1.
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise ValueError(f"model version must be a positive integer, got {version!r}")
    return Path(base_dir) / str(version)


def ensure_version_absent(base_dir: str | os.PathLike[str], version: int) -> Path:
    """Fail early, before any expensive training, if ``version`` is already published.

    Returns:
        The path the version will be exported to.

    Raises:
        VersionExistsError: the version folder already exists.
        ValueError: ``version`` is not a positive integer.
    """
    target = version_dir(base_dir, version)
    if target.exists():
        raise VersionExistsError(
            f"version {version} already exists at {target}; versions are immutable, "
            "export under a new --model_version"
        )
    return target


def atomic_export(
    base_dir: str | os.PathLike[str],
    version: int,
    write: Callable[[Path], None],
) -> Path:
    """Publish a new model version atomically.

    ``write`` receives a path that does not exist yet (SavedModel builders insist
    on that) inside a staging folder under ``base_dir`` and must create the model
    there. On success the staging copy is renamed to ``base_dir/<version>``; on
    any failure nothing numbered is left behind and the error propagates.

    Returns:
        The published version folder.

    Raises:
        VersionExistsError: the version exists (checked before and at the rename).
        ValueError: ``version`` is not a positive integer.
    """
    target = ensure_version_absent(base_dir, version)
    base = target.parent
    base.mkdir(parents=True, exist_ok=True)
    # Staging lives in base_dir itself so the final rename never crosses a
    # file-system boundary (which would make it a non-atomic copy).
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=base))
    try:
        candidate = staging / "model"
        write(candidate)
        if not candidate.is_dir():
            raise RuntimeError(f"exporter wrote nothing at {candidate}")
        _publish(candidate, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(base)
    return target


def _publish(candidate: Path, target: Path) -> None:
    """Rename ``candidate`` to ``target``, refusing to replace anything.

    rename(2) would silently replace an *empty* directory, so re-check first;
    a non-empty one makes rename fail, which covers a concurrent exporter that
    won the race between the check and the rename.
    """
    if target.exists():
        raise VersionExistsError(f"version folder {target} appeared during export; not replaced")
    try:
        os.rename(candidate, target)
    except OSError as err:
        if target.exists():
            raise VersionExistsError(
                f"version folder {target} appeared during export; not replaced"
            ) from err
        raise


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry so a published version survives a node crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some network file systems refuse fsync on directories; the rename
        # already happened, durability is best effort there.
        pass
    finally:
        os.close(fd)
