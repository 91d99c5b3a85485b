"""`python -m localdev.sim up|down|status|build` (what `make sim-up` / `make sim-down` run)."""

from __future__ import annotations

import argparse
import sys

from localdev.sim import toolchain
from localdev.sim.cluster import SimCluster, SimError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.sim", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build", "install-crds"])
    parser.add_argument(
        "--no-standin",
        action="store_true",
        help="do not start the stand-in model server (saves TensorFlow's start-up and memory)",
    )
    args = parser.parse_args()
    if args.command == "build":
        print(toolchain.ensure_binaries())
        return 0
    cluster = SimCluster(with_standin=not args.no_standin)
    try:
        if args.command == "up":
            cluster.up()
        elif args.command == "install-crds":
            cluster.install_crds()
        elif args.command == "down":
            cluster.down()
            print("[sim] stopped", file=sys.stderr)
        else:
            for name, state in cluster.status().items():
                print(f"{name:26} {state}")
    except SimError as err:
        print(f"[sim] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
