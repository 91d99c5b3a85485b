"""report.py turns recorded results into the docs/reliability.md table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability import report
from tests.reliability.report import EXPECTED, carried, merged, render
from tests.reliability.results import Result


def _result(key: str, section: str, passed: int = 5, bug: str = "", recorded: str = "") -> Result:
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
        recorded=recorded,
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


def test_the_page_carries_its_rows_and_a_new_record_replaces_one() -> None:
    """A row this machine never recorded (the soak, run by hand) survives a
    regeneration; a row recorded now replaces the page's."""
    soak = _result("soak", "Faults", recorded="2026-12-02T01:23:00Z")
    old_etcd = _result("etcd-restart", "Faults", passed=3, recorded="2026-11-30T10:00:00Z")
    page, _ = render([soak, old_etcd])
    assert sorted(carried(page), key=lambda r: r.key) == [old_etcd, soak]
    assert "| `make chaos`, 2026-12-02 |" in page
    new_etcd = _result("etcd-restart", "Faults", recorded="2026-12-03T09:00:00Z")
    rows = {r.key: r for r in merged(carried(page), [new_etcd])}
    assert rows == {"soak": soak, "etcd-restart": new_etcd}
    assert carried("# a page written by hand\n") == []


def test_write_report_keeps_a_row_only_the_old_page_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    soak = _result("soak", "Faults", recorded="2026-12-02T01:23:00Z")
    page, _ = render([soak])
    doc = tmp_path / "reliability.md"
    doc.write_text(page)
    results = tmp_path / "results.json"
    recorded = _result("etcd-restart", "Faults", recorded="2026-12-03T09:00:00Z")
    results.write_text(json.dumps({"results": {"etcd-restart": recorded.__dict__}}))
    monkeypatch.setattr("tests.reliability.results.RESULTS_FILE", results)
    missing = report.write_report(doc)
    assert "soak" not in missing and "etcd-restart" not in missing
    text = doc.read_text()
    assert "title of soak" in text and "title of etcd-restart" in text
    assert {r.key for r in carried(text)} == {"soak", "etcd-restart"}
