"""Model folders for tests: copies of a real SavedModel, and broken versions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


# A version whose serving signature names its input "inputs" where every
# earlier version and every client says "x": it loads and answers, but every
# Predict a client sends is INVALID_ARGUMENT ("input tensor alias not found in
# signature"), the regression a canary analysis must catch.
_RENAMED_INPUT = """
import sys
import tensorflow as tf

class Renamed(tf.Module):
    def __init__(self):
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(3.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="inputs")])
    def serve(self, inputs):
        return {"y": self.a * inputs + self.b}

module = Renamed()
tf.saved_model.save(module, sys.argv[1], signatures={"serving_default": module.serve})
"""


def add_renamed_input_version(root: Path, base: Path, version: int) -> None:
    """Publish a SavedModel whose signature input is "inputs", not "x" (exported
    once per machine under `root`, then copied like the good versions)."""
    template = root / "renamed_input" / "1"
    if not (template / "saved_model.pb").exists():
        staging = root / "renamed_input" / f".tmp-{uuid.uuid4().hex[:6]}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run(
            [sys.executable, "-c", _RENAMED_INPUT, str(staging)],
            check=True,
            capture_output=True,
            env=env,
        )
        staging.rename(template)
    target = base / f".tmp-{version}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(template, target)
    target.rename(base / str(version))
