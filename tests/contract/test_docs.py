"""The generated docs stay true to their sources."""

from __future__ import annotations

from docs.generate_reference import OUT, render


def test_reference_matches_the_crd() -> None:
    assert OUT.read_text() == render(), "docs/reference.md is stale: run `make docs`"
