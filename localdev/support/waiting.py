"""Wait on conditions, never on the clock.

Every wait names what it waited for, so a timeout reads as a sentence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not become true in time (an AssertionError: tests fail, not error)."""


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy; return that value.

    Exceptions from `probe` count as "not yet" (the object may not exist yet)
    and the last one is shown if time runs out, with `describe()` if given.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as err:
            last_error = err
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            state = f"; state: {describe()}" if describe else ""
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}{detail}{state}")
        time.sleep(interval)
