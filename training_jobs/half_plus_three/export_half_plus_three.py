"""Export the ``half_plus_three`` demo model: y = 0.5 * x + 3.

The model behind the TF Serving REST examples. With the ``serving_default``
signature taking ``x`` as float32 [None] (one scalar per instance),

    POST /v1/models/half_plus_three:predict  {"instances": [1.0, 2.0, 5.0]}

answers ``{"predictions": [3.5, 4.0, 5.5]}``.

Usage::

    python export_half_plus_three.py --model_dir=./model --model_version=1
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:
    # Run as a plain script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from training_jobs.common import export_util

INPUT_KEY = "x"
OUTPUT_KEY = "y"
_PROG = "export_half_plus_three"


class HalfPlusThree(tf.Module):
    """y = a * x + b with a = 0.5 and b = 3, kept as variables like a trained model."""

    def __init__(self) -> None:
        super().__init__(name="half_plus_three")
        # Variables (not constants) so the export has a variables/ folder
        # like any trained model, which is what the serving path should exercise.
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(3.0, name="b")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=INPUT_KEY)])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return ``{"y": a * x + b}``; a single output keeps REST answers a flat list."""
        return {OUTPUT_KEY: self.a * x + self.b}


def write_saved_model(path: Path) -> None:
    """Write the half_plus_three SavedModel (``serving_default`` signature) at ``path``."""
    module = HalfPlusThree()
    tf.saved_model.save(
        module,
        str(path),
        signatures={tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: module.serve},
    )


def export(model_dir: str | os.PathLike[str], version: int) -> Path:
    """Export as ``model_dir/<version>`` atomically; refuse an existing version."""
    return export_util.atomic_export(model_dir, version, write_saved_model)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog=_PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model_dir", default="./model", help="base path holding the numbered versions"
    )
    parser.add_argument(
        "--model_version", type=int, default=1, help="version number to export (new, > 0)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        path = export(args.model_dir, args.model_version)
    except (export_util.VersionExistsError, ValueError, OSError) as err:
        print(f"{_PROG}: error: {err}", file=sys.stderr)
        return 1
    print(f"Exported version {args.model_version} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
