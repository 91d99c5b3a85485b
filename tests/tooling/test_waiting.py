"""localdev.support.waiting: what a wait counts as "not yet", and what fails it."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from localdev.support.waiting import WaitTimeout, wait_until


class Probe:
    """Raises the given exceptions in turn, then answers `value`."""

    def __init__(self, *errors: BaseException, value: object = "done") -> None:
        self.errors = list(errors)
        self.calls = 0
        self.value = value

    def __call__(self) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def test_a_bug_in_the_probe_fails_the_wait_at_once() -> None:
    probe = Probe(TypeError("'NoneType' object is not subscriptable"))
    with pytest.raises(TypeError):
        wait_until(probe, timeout=60, what="never", interval=0.01)
    assert probe.calls == 1


@pytest.mark.parametrize("error", [AttributeError("x"), AssertionError("x"), ValueError("x")])
def test_other_unexpected_errors_fail_at_once(error: BaseException) -> None:
    probe = Probe(error)
    with pytest.raises(type(error)):
        wait_until(probe, timeout=60, what="never", interval=0.01)
    assert probe.calls == 1


@pytest.mark.parametrize(
    "error",
    [ApiException(status=404), ConnectionRefusedError(), KeyError("status"), IndexError(0)],
)
def test_the_thing_not_being_there_yet_is_not_yet(error: BaseException) -> None:
    probe = Probe(error, error)
    assert wait_until(probe, timeout=60, what="the answer", interval=0.01) == "done"
    assert probe.calls == 3


def test_an_explicit_expected_set_replaces_the_default() -> None:
    probe = Probe(ValueError("half-parsed"))
    assert wait_until(probe, 60, "the answer", interval=0.01, expected=(ValueError,)) == "done"
    with pytest.raises(KeyError):
        wait_until(Probe(KeyError("k")), 60, "never", interval=0.01, expected=(ValueError,))


def test_a_timeout_names_what_was_awaited_and_the_last_error() -> None:
    probe = Probe(*[KeyError("status")] * 1000)
    with pytest.raises(WaitTimeout, match=r"waiting for the status; last error: KeyError"):
        wait_until(probe, timeout=0.05, what="the status", interval=0.01)
