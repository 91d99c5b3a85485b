"""handlers.stop_everything (kopf cleanup): every step is bounded; one that hangs
is named in the log."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import kopf
import pytest

from tfserving_operator import handlers


class Step:
    def __init__(self, hangs: bool = False) -> None:
        self.hangs = hangs
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.hangs:
            await asyncio.Event().wait()


def test_a_step_that_hangs_is_named_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handlers, "CLEANUP_STEP_SECONDS", 0.05)
    watches, workers, channels = Step(), Step(hangs=True), Step()
    closed: list[bool] = []
    memo = kopf.Memo(
        ctx=SimpleNamespace(stop=workers),
        watches=SimpleNamespace(stop=watches),
        prober=SimpleNamespace(close=channels),
        kube=SimpleNamespace(close=lambda: closed.append(True)),
    )

    async def scenario() -> None:
        async with asyncio.timeout(5):
            await handlers.stop_everything(memo)

    with caplog.at_level(logging.ERROR, logger="tfserving_operator.handlers"):
        asyncio.run(scenario())
    assert (watches.calls, workers.calls, channels.calls, closed) == (1, 1, 1, [True])
    assert caplog.messages == [
        "stopping: the ServedModel workers did not stop within 0.05 s;"
        " the operator exits without them"
    ]
