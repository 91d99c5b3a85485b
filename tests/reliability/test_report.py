"""report.py turns recorded results into the docs/reliability.md table."""

from __future__ import annotations

from tests.reliability.report import EXPECTED, render
from tests.reliability.results import Result


def _result(key: str, section: str, passed: int = 5, bug: str = "") -> Result:
    return Result(
        key=key,
        section=section,
        title=f"title of {key}",
        tried=5,
        passed=passed,
        outcome="converged",
        suite="make chaos",
        figures={"seconds": 1.25, "notes": "left out"},
        bug=bug,
    )


def test_rows_sections_bugs_and_missing_rows() -> None:
    results = [
        _result("operator-sigkill-during-create", "Faults"),
        _result("secret-values", "Security", passed=4, bug="a leak"),
        _result("something-new", "Bad input"),
    ]
    page, missing = render(results, machine="x86_64, 2 CPUs")
    assert "| title of operator-sigkill-during-create | 5 | 5/5 converged | seconds: 1.2 |" in page
    assert "**known bug**: a leak" in page
    assert "* `secret-values`: a leak." in page
    assert "title of something-new" in page
    assert "notes" not in page.split("## Faults")[1].split("## Bad input")[0]
    assert "Last recorded on: x86_64, 2 CPUs." in page
    assert set(missing) == set(EXPECTED) - {"operator-sigkill-during-create", "secret-values"}
    assert "| `etcd-restart` | 0 | not run yet | | |" in page
    # Sections come in order, each row in its own section.
    assert page.index("## Faults") < page.index("## Bad input") < page.index("## Security")
    assert page.index("title of secret-values") > page.index("## Security")
