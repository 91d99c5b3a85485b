"""Pins how pause.py reads kopf's peering pause against the kopf we install.

kopf offers no hook for its pause; pause.py reads the `operator_paused`
ToggleSet from the root tasks `kopf.spawn_tasks` returns. These tests run
kopf's real tasks (an empty registry, against an API server that is not
there: spawning needs none) and check that the toggles found are the ones
kopf's orchestrator pauses the watch streams with, and that turning them
drives our follower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import kopf
import pytest

from tfserving_operator.pause import PauseFollower, PauseUnavailable, pause_toggles

_EXISTING: set[asyncio.Task[Any]] = set()


class Target:
    """Records what the follower does to it (the real one is reconcile.Context)."""

    def __init__(self) -> None:
        self.pause_source: Callable[[], bool] | None = None
        self.calls: list[str] = []
        self.changed = asyncio.Event()

    @property
    def paused(self) -> bool:
        return self.pause_source is not None and self.pause_source()

    async def pause(self) -> None:
        self.calls.append("pause")
        self.changed.set()

    def resume(self) -> None:
        self.calls.append("resume")
        self.changed.set()


async def _spawn() -> tuple[list[asyncio.Task[Any]], asyncio.Future[None]]:
    global _EXISTING
    _EXISTING = set(asyncio.all_tasks())  # run_tasks cancels every task but these
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    registry = kopf.OperatorRegistry()

    # An API server that is not there: kopf's observers retry in the
    # background; the tasks this test reads run all the same.
    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server="http://127.0.0.1:1", token="none")

    tasks = await kopf.spawn_tasks(
        registry=registry,
        clusterwide=True,
        standalone=True,
        stop_flag=stop,
    )
    return list(tasks), stop


async def _stop(tasks: list[asyncio.Task[Any]], stop: asyncio.Future[None]) -> None:
    stop.set_result(None)
    await kopf.run_tasks(tasks, ignored=_EXISTING)


def _argument(tasks: list[asyncio.Task[Any]], task_name: str, argument: str) -> Any:
    task = next(t for t in tasks if t.get_name() == task_name)
    inner = task.get_coro().cr_frame.f_locals["coro"]  # type: ignore[union-attr]
    return inner.cr_frame.f_locals[argument]


def test_toggles_are_the_orchestrators_and_drive_the_follower() -> None:
    asyncio.run(_toggles_drive_the_follower())


async def _toggles_drive_the_follower() -> None:
    tasks, stop = await _spawn()
    try:
        toggles = pause_toggles(tasks)
        # The same object kopf pauses its watch streams with.
        assert toggles is _argument(tasks, "multidimensional multitasker", "operator_paused")
        assert not toggles.is_on()  # standalone, nothing pauses it yet
        follower = PauseFollower(toggles)
        target = Target()
        follower.attach(target)
        following = asyncio.create_task(follower.run())
        # kopf's peering turns a toggle of this set on (a higher-priority peer).
        conflict = await toggles.make_toggle(False, name="test conflict")
        await conflict.turn_to(True)
        await asyncio.wait_for(target.changed.wait(), timeout=10)
        assert target.calls == ["pause"] and target.paused
        target.changed.clear()
        await conflict.turn_to(False)
        await asyncio.wait_for(target.changed.wait(), timeout=10)
        assert target.calls == ["pause", "resume"] and not target.paused
        following.cancel()
    finally:
        await _stop(tasks, stop)


def test_attach_while_paused_starts_paused() -> None:
    asyncio.run(_attach_while_paused())


async def _attach_while_paused() -> None:
    tasks, stop = await _spawn()
    try:
        toggles = pause_toggles(tasks)
        await toggles.make_toggle(True, name="peering object not seen yet")  # type: ignore[attr-defined]
        target = Target()
        PauseFollower(toggles).attach(target)
        assert target.paused
    finally:
        await _stop(tasks, stop)


def test_no_kopf_task_is_an_error_not_a_silent_standalone() -> None:
    with pytest.raises(PauseUnavailable):
        pause_toggles([])
