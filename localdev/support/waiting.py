"""Wait on conditions, never on the clock.

Every wait names what it waited for, so a timeout reads as a sentence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

# What a probe may raise while the thing it looks at is not there yet: the
# API server or a model server not answering or answering "not found", a
# field or a list item not written yet, a half-written JSON answer. Anything
# else (a TypeError, an AttributeError, a failed assert in the probe) is a bug
# in the probe and fails the wait at once: counted as "not yet", it would
# read as "the operator did not do it" in a test that expects exactly that.
NOT_YET: tuple[type[BaseException], ...] = (
    ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
    grpc.RpcError,
    LookupError,
    json.JSONDecodeError,
)


class WaitTimeout(AssertionError):
    """A condition did not become true in time (an AssertionError: tests fail, not error)."""


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    describe: Callable[[], str] | None = None,
    expected: tuple[type[BaseException], ...] = NOT_YET,
) -> T:
    """Call `probe` until it returns something truthy; return that value.

    Exceptions of the `expected` types count as "not yet" (the object may not
    exist yet) and the last one is shown if time runs out, with `describe()`
    if given; any other exception from `probe` propagates at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except expected as err:
            last_error = err
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            state = f"; state: {describe()}" if describe else ""
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}{detail}{state}")
        time.sleep(interval)
