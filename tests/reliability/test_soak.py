"""`make soak SOAK_MINUTES=n`: the soak of soak.py as a test, so the Makefile
runs it through pytest like every other suite (nothing outside tests/ imports
tests/). Deselected unless asked for with `-m soak`."""

from __future__ import annotations

import os

import pytest

from tests.reliability import soak


@pytest.mark.soak
@pytest.mark.timeout(0)  # as long as SOAK_MINUTES says; the soak keeps its own deadline
def test_soak_keeps_every_invariant() -> None:
    args = ["--minutes", os.environ.get("SOAK_MINUTES", "10")]
    if os.environ.get("SOAK_SEED"):
        args += ["--seed", os.environ["SOAK_SEED"]]
    if os.environ.get("SOAK_REPORT"):
        args += ["--report", os.environ["SOAK_REPORT"]]
    assert soak.main(args) == 0, "invariant failures: see the soak report (docs/soak.md)"
