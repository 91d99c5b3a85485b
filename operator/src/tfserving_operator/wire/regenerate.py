"""Regenerate ``tfserving_wire_pb2.py`` and ``tfserving_wire_pb2.pyi`` from the .proto.

Run from anywhere, with the dev extras installed (grpcio-tools)::

    python operator/src/tfserving_operator/wire/regenerate.py

The generated files are committed so the operator image needs neither protoc nor
grpcio-tools. ``tests/contract/test_wire_compat.py`` regenerates into a temporary
directory and fails when the committed files are stale.

The .proto is compiled with ``operator/src`` as its include root, so protobuf
registers it as ``tfserving_operator/wire/tfserving_wire.proto``: a name unlikely
to collide with any other file in the default descriptor pool.

The .pyi gets a header that turns off mypy, ruff and ruff-format for it: protoc
writes pre-PEP 604 annotations on long lines, and without stubs for protobuf
(types-protobuf) every message class subclasses ``Any``. Nothing else is edited.

The generated code embeds the protobuf version of the compiler
(``ValidateProtobufRuntimeVersion``) and refuses to import under an older
protobuf runtime, so the runtime's lower bound in pyproject.toml must be at least
the version printed in the generated file's header.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# operator/src: the include root, so the proto's registered name carries the
# package path.
SRC_ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("tfserving_operator/wire/tfserving_wire.proto")
PY_OUT = Path("tfserving_operator/wire/tfserving_wire_pb2.py")
PYI_OUT = Path("tfserving_operator/wire/tfserving_wire_pb2.pyi")

# Keeps the committed stub clean under the project's strict mypy and ruff
# settings without editing what protoc wrote (see the module docstring).
PYI_HEADER = "# mypy: ignore-errors\n# ruff: noqa\n# fmt: off\n"


def generate(out_root: Path) -> list[Path]:
    """Compile the .proto into ``out_root`` and return the generated files' paths.

    ``out_root`` plays the role of ``operator/src``: outputs land under
    ``out_root/tfserving_operator/wire/``. Runs protoc in a subprocess because
    ``python -m grpc_tools.protoc`` adds the well-known types (wrappers.proto) to
    the include path itself, and grpc_tools need not be importable by the caller.
    """
    out_root.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={SRC_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        str(PROTO),
    ]
    # cwd=SRC_ROOT: protoc resolves the relative proto name against the include
    # root and requires the file to be found there.
    subprocess.run(cmd, cwd=SRC_ROOT, check=True, timeout=120)
    pyi = out_root / PYI_OUT
    pyi.write_text(PYI_HEADER + pyi.read_text(encoding="utf-8"), encoding="utf-8")
    return [out_root / PY_OUT, pyi]


def main() -> int:
    """Regenerate the committed files in place and print their paths."""
    for path in generate(SRC_ROOT):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
