"""The generated docs stay true to their sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from docs.generate_reference import OUT, render
from tfserving_operator.api import GateReason, Reason

TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def _constants(holder: type) -> list[str]:
    return sorted({v for k, v in vars(holder).items() if k.isupper() and isinstance(v, str)})


def test_reference_matches_the_crd() -> None:
    assert OUT.read_text() == render(), "docs/reference.md is stale: run `make docs`"


@pytest.mark.parametrize("reason", _constants(Reason) + _constants(GateReason))
def test_every_reason_is_documented(reason: str) -> None:
    """Condition, gate and Event reasons all come from api.py; each has a row."""
    assert f"`{reason}`" in TROUBLESHOOTING.read_text(), f"{reason} not in troubleshooting.md"
