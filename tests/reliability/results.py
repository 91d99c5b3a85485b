"""What each reliability test tried and what it survived, kept for docs/reliability.md.

Every fault, bad input and security check records one entry: a key, the
table's row title, how many times it was tried, how many of those came out
right, a one-line outcome and optional figures (seconds, counts). Entries go
to ``.sim/reliability-results.json``, merged with what earlier runs wrote, so
`make test` and `make chaos` together fill the table; ``report.py`` turns the
file into docs/reliability.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_FILE = Path(
    os.environ.get("TFSO_RELIABILITY_RESULTS", REPO_ROOT / ".sim" / "reliability-results.json")
)

# Sections of the table, in the order docs/reliability.md shows them.
SECTIONS = ("Faults", "Bad input", "Security")
# Recorded by this process, for the summary at the end of the pytest run.
SESSION: list[Result] = []


@dataclass
class Result:
    """One row of the reliability table."""

    key: str
    section: str
    title: str
    tried: int
    passed: int
    outcome: str
    suite: str  # "make test" or "make chaos"
    figures: dict[str, Any] = field(default_factory=dict)
    bug: str = ""  # set while a known bug keeps the expected outcome from holding
    recorded: str = ""

    @property
    def ok(self) -> bool:
        """Everything tried came out as expected."""
        return self.tried > 0 and self.passed == self.tried and not self.bug

    def line(self) -> str:
        """The line printed to the test log, e.g. `FAULT operator-sigkill-create: 5/5 converged`."""
        tag = {"Faults": "FAULT", "Bad input": "BAD-INPUT", "Security": "SECURITY"}[self.section]
        figures = "".join(f", {k}={_fmt(v)}" for k, v in self.figures.items())
        bug = f" [known bug: {self.bug}]" if self.bug else ""
        return f"{tag} {self.key}: {self.passed}/{self.tried} {self.outcome}{figures}{bug}"


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def record(
    key: str,
    section: str,
    title: str,
    tried: int,
    passed: int,
    outcome: str,
    *,
    suite: str,
    figures: Mapping[str, Any] | None = None,
    bug: str = "",
) -> Result:
    """Print the result line and merge the entry into the results file."""
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    result = Result(
        key=key,
        section=section,
        title=title,
        tried=tried,
        passed=passed,
        outcome=outcome,
        suite=suite,
        figures=dict(figures or {}),
        bug=bug,
        recorded=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    print(result.line(), file=sys.stderr, flush=True)
    SESSION.append(result)
    _merge(result)
    return result


def _merge(result: Result) -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    lock_path = RESULTS_FILE.with_name(RESULTS_FILE.name + ".lock")
    with open(lock_path, "w") as lock:
        # Two pytest sessions may finish tests at the same moment.
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = load_raw()
        data.setdefault("results", {})[result.key] = asdict(result)
        data["machine"] = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        )
        tmp = RESULTS_FILE.with_name(RESULTS_FILE.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, RESULTS_FILE)


def load_raw() -> dict[str, Any]:
    """The results file as stored ({} when absent or unreadable)."""
    try:
        data: dict[str, Any] = json.loads(RESULTS_FILE.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def load() -> list[Result]:
    """Every recorded result."""
    entries = load_raw().get("results") or {}
    known = set(Result.__dataclass_fields__)
    return [Result(**{k: v for k, v in e.items() if k in known}) for e in entries.values()]
