"""`make mutation`: mutmut over the operator package, one module at a time.

Usage: python -m localdev.mutation [MODULE ...] [--jobs N]

MODULE is a path under operator/src/tfserving_operator without ".py"
(`kube`, `reconcile`, `wire/client`); none means every module in MODULES.
For each, a staging tree is laid out in .mutation/<module>/ (mutmut 3 only
finds a package under ./, src/ or source/, and ours lives in operator/src/),
mutmut runs there against the tests that need no cluster, and the score and
every surviving mutant's diff go to .mutation/<module>.json; .mutation/report.md
then shows every module run so far (this run's and earlier ones). How to
read it: docs/mutation.md.

Why one module at a time: a full run takes most of an hour on two cores, and
a per-module run can be repeated after adding the tests that kill its
survivors. Each run starts from a fresh staging tree: mutmut 3 re-tests a
mutant when its function changes, not when the tests do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "operator" / "src" / "tfserving_operator"
OUT = REPO / ".mutation"
# The modules the goal covers, weakest first (the order of a first run).
MODULES = (
    "kube",
    "reconcile",
    "wire/client",
    "observe",
    "apply",
    "decide",
    "render",
    "spec",
    "model_config",
)
# Chart tests need helm; the mutants never touch the chart.
TEST_ENV = {"TFSO_SKIP_CHART_TESTS": "1"}
# mutmut's internal helpers, pinned with mutmut itself (pyproject: <4).
LIST_SURVIVORS = """
import json, sys
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.utils.file_utils import walk_mutatable_files
out = {}
for path in walk_mutatable_files():
    data = SourceFileMutationData(path=path)
    data.load()
    for name, code in data.exit_code_by_key.items():
        diff = get_diff_for_mutant(name, path=path) if code == 0 else ""
        out[name] = [code, diff]
json.dump(out, sys.stdout)
"""
# mutmut's exit codes: killed (a test failed), and timeouts (the mutant made a
# test hang: under pytest-timeout that test fails, so the mutant is caught).
KILLED = {1, 3, 37}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}


@dataclass
class Result:
    module: str
    seconds: float
    counts: Counter[str] = field(default_factory=Counter)
    survivors: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def score(self) -> float:
        return 100.0 * self.counts["killed"] / self.total if self.total else 0.0


def stage(module: str) -> Path:
    """Lay out .mutation/<module>/ as mutmut expects: src/tfserving_operator beside tests."""
    work = OUT / module.replace("/", ".")
    if work.exists():
        shutil.rmtree(work)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, work / "src" / "tfserving_operator", ignore=ignore)
    for tree in ("tests", "localdev", "crds"):
        shutil.copytree(REPO / tree, work / tree, ignore=ignore)
    text = (REPO / "pyproject.toml").read_text()
    header = "[tool.mutmut]\n"
    assert header in text, "pyproject.toml has no [tool.mutmut] section"
    only = f'only_mutate = ["src/tfserving_operator/{module}.py"]\n'
    (work / "pyproject.toml").write_text(text.replace(header, header + only, 1))
    return work


def env_for(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The staging root only: the mutated package comes from mutants/src,
    # never from the checkout (or the venv's editable install).
    env["PYTHONPATH"] = str(work)
    env.update(TEST_ENV)
    return env


def run_module(module: str, jobs: int) -> Result:
    work = stage(module)
    started = time.monotonic()
    mutmut = [sys.executable, "-m", "mutmut"]
    run = subprocess.run([*mutmut, "run", "--max-children", str(jobs)], cwd=work, env=env_for(work))
    seconds = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit(f"mutmut failed on {module} (exit {run.returncode}); see above")
    return collect(module, seconds)


def collect(module: str, seconds: float | None = None) -> Result:
    """The outcome of the last run in .mutation/<module>/ (its run time from the
    files it wrote, when not measured)."""
    work = OUT / module.replace("/", ".")
    if seconds is None:
        metas = list((work / "mutants").rglob("*.meta"))
        seconds = max(m.stat().st_mtime for m in metas) - (work / "mutants").stat().st_mtime
    listed = subprocess.run(
        [sys.executable, "-c", LIST_SURVIVORS],
        cwd=work,
        env=env_for(work),
        check=True,
        capture_output=True,
        text=True,
    )
    result = Result(module, seconds)
    for name, (code, diff) in json.loads(listed.stdout).items():
        if code in KILLED or code in TIMEOUT:
            result.counts["killed"] += 1
        elif code in SURVIVED:
            result.counts["survived"] += 1
            result.survivors[name] = diff
        else:
            result.counts[f"other ({code})"] += 1
    return result


def save(result: Result) -> None:
    """Keep one module's result beside the others (the report covers every module run)."""
    data = {
        "module": result.module,
        "seconds": result.seconds,
        "counts": dict(result.counts),
        "survivors": result.survivors,
    }
    (OUT / f"{result.module.replace('/', '.')}.json").write_text(json.dumps(data, indent=1))


def load_all() -> list[Result]:
    """Every module's last result, in MODULES order."""
    results = []
    for module in MODULES:
        path = OUT / f"{module.replace('/', '.')}.json"
        if path.exists():
            data = json.loads(path.read_text())
            results.append(
                Result(data["module"], data["seconds"], Counter(data["counts"]), data["survivors"])
            )
    return results


def write_report(results: list[Result]) -> Path:
    lines = ["# Mutation report (generated by `make mutation`)", ""]
    lines += [
        "| module | killed | survived | other | score | run time |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        other = r.total - r.counts["killed"] - r.counts["survived"]
        lines.append(
            f"| {r.module} | {r.counts['killed']} | {r.counts['survived']} | {other} "
            f"| {r.score:.1f} % | {r.seconds / 60:.1f} min |"
        )
    for r in results:
        lines += ["", f"## {r.module}: surviving mutants", ""]
        for name, diff in sorted(r.survivors.items()):
            lines += [f"### {name}", "", "```diff", diff, "```", ""]
    report = OUT / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--collect", action="store_true", help="only read the last run of each module again"
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    for module in args.modules:
        save(collect(module) if args.collect else run_module(module, args.jobs))
    results = load_all()
    for r in results:
        earlier = "" if r.module in args.modules else "  (an earlier run)"
        print(
            f"{r.module:14} {r.score:5.1f} %  ({r.counts['killed']}/{r.total} killed, "
            f"{r.seconds / 60:.1f} min){earlier}"
        )
    print(f"surviving mutants: {write_report(results)}")


if __name__ == "__main__":
    main()
