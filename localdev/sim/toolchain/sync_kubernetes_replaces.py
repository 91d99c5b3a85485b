"""Regenerate the staging-module ``replace`` block of kubernetes/go.mod.

``k8s.io/kubernetes`` points each of its staging modules (k8s.io/api,
k8s.io/client-go, ...) at ``./staging/src/...`` and requires them at v0.0.0,
so another module can only depend on it by replacing every one of them with
the published tag. The list changes between releases, so it is derived from
upstream's own go.mod instead of being typed by hand.

Usage: python sync_kubernetes_replaces.py v1.36.3
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BEGIN = "// BEGIN generated staging replaces"
END = "// END generated staging replaces"


def staging_modules(kube_version: str) -> list[str]:
    """Return the staging module paths that upstream's go.mod replaces locally."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{kube_version}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    upstream = Path(json.loads(out)["GoMod"]).read_text()
    return re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/", upstream, re.M)


def main() -> None:
    kube_version = sys.argv[1]
    staging_version = "v0" + kube_version[2:]  # v1.36.3 -> v0.36.3
    modules = staging_modules(kube_version)
    block = "\n".join(
        [BEGIN, "replace ("] + [f"\t{m} => {m} {staging_version}" for m in modules] + [")", END]
    )
    gomod = Path(__file__).parent / "kubernetes" / "go.mod"
    text = gomod.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    gomod.write_text(text)
    print(f"{len(modules)} staging modules replaced at {staging_version}")


if __name__ == "__main__":
    main()
