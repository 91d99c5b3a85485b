"""Peering pause: while kopf has this replica paused, none of its workers act.

kopf's pause (a higher-priority peer is alive, or the peering object is not
seen yet) stops its watch streams and handler calls only. Each ServedModel's
`Worker` (reconcile.py) is a task of its own with timers: left running, a
paused replica would go on probing, opening gates and writing status next
to the active one. So this module follows kopf's own pause state and stops
every worker when the replica pauses; on resume kopf re-lists the
ServedModels, which starts the workers again. The children's cache is not
kopf's: its streams (watch.py) run on while paused, so a replica that takes
over starts with it current.

kopf keeps that state in a `ToggleSet` (`operator_paused`) which it creates
inside `kopf.spawn_tasks` and hands to its root tasks, and offers no hook
for it. `pause_toggles` reads it from the "daemon killer" root task, whose
job is the same as ours (stop daemons while paused). That reading depends
on kopf internals, so `tests/contract/test_kopf_pause.py` pins it against
the kopf we install: if a kopf upgrade moves it, that test fails, not a
replica in production.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)

# The kopf root task that receives `operator_paused` (kopf/_core/reactor/running.py).
KOPF_TASK_WITH_PAUSE = "daemon killer"


class PauseToggles(Protocol):
    """What we use of kopf's `aiotoggles.ToggleSet`."""

    def is_on(self) -> bool: ...

    async def wait_for(self, state: bool, /) -> None: ...


class Pausable(Protocol):
    """What pauses with the replica (reconcile.Context)."""

    pause_source: Callable[[], bool] | None

    async def pause(self) -> None: ...

    def resume(self) -> None: ...


class PauseUnavailable(RuntimeError):
    """kopf no longer exposes its pause toggles where this module looks."""


def pause_toggles(tasks: Iterable[asyncio.Task[Any]]) -> PauseToggles:
    """kopf's `operator_paused` toggles, from the root tasks `kopf.spawn_tasks` returned."""
    for task in tasks:
        if task.get_name() != KOPF_TASK_WITH_PAUSE:
            continue
        # create_guarded_task wraps the coroutine in aiotasks.guard(coro=...):
        # the guard's frame holds the daemon killer's coroutine, whose frame
        # holds its keyword arguments (started or not).
        guard = task.get_coro()
        frame = getattr(guard, "cr_frame", None)
        inner = frame.f_locals.get("coro") if frame is not None else None
        inner_frame = getattr(inner, "cr_frame", None)
        toggles = inner_frame.f_locals.get("operator_paused") if inner_frame else None
        if toggles is not None and hasattr(toggles, "is_on") and hasattr(toggles, "wait_for"):
            return toggles  # type: ignore[no-any-return]
    raise PauseUnavailable(
        f"kopf's pause toggles not found in its {KOPF_TASK_WITH_PAUSE!r} task: "
        "the installed kopf differs from the one tests/contract/test_kopf_pause.py pins"
    )


class PauseFollower:
    """Pauses and resumes the attached target as kopf pauses and resumes."""

    def __init__(self, toggles: PauseToggles | None = None) -> None:
        # Set once kopf.spawn_tasks has made them (handlers may attach earlier).
        self.toggles = toggles
        self.target: Pausable | None = None
        self.pauses = 0

    def attach(self, target: Pausable) -> None:
        """Follow kopf's state from now on (a replica can start paused): the
        target reads it live, and is stopped and released by run()."""
        target.pause_source = self.is_paused
        self.target = target

    def is_paused(self) -> bool:
        """kopf's pause state now (never paused before kopf's toggles exist)."""
        return self.toggles is not None and self.toggles.is_on()

    async def run(self) -> None:
        """Forever: wait for a pause, stop the target; wait for the resume, release it."""
        if self.toggles is None:
            raise PauseUnavailable("PauseFollower.run() before kopf's toggles were set")
        while True:
            await self.toggles.wait_for(True)
            self.pauses += 1
            if self.target is not None:
                await self.target.pause()
                log.info("peering: paused; every worker stopped until resumed")
            await self.toggles.wait_for(False)
            if self.target is not None:
                log.info("peering: resumed; workers start again from kopf's re-list")
                self.target.resume()
