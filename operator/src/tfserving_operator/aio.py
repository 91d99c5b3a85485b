"""Waiting on an event with a deadline, cancellably (the workers, the stand-in).

asyncio.wait_for(event.wait(), t) on Python 3.11 returns normally when its
task is cancelled just as the event is set (CPython gh-86296, fixed in 3.12):
a loop built on it runs on after its stop, and whoever awaits that stop
waits for ever (the operator's cleanup did). asyncio.timeout does not.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """True once `event` is set, False when `seconds` ran out first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
