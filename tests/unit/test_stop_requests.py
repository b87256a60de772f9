"""Stop requests before training: raised at once, or held for a safe point in threaded code."""

from __future__ import annotations

import pytest

from snowtrain.trainer import stop_requests


class Stop(Exception):
    pass


def test_outside_a_deferred_region_a_request_raises_at_once() -> None:
    with pytest.raises(Stop):
        stop_requests.deliver(Stop())


def test_inside_one_it_waits_for_check_and_raises_once() -> None:
    first, second = Stop("first"), Stop("second")
    with stop_requests.deferred():
        stop_requests.deliver(first)
        stop_requests.deliver(second)  # a second SIGTERM adds nothing
        with pytest.raises(Stop) as caught:
            stop_requests.check()
        assert caught.value is first
        stop_requests.check()  # raised once: nothing left


def test_a_request_not_checked_raises_when_the_outermost_region_ends() -> None:
    reached = []
    with pytest.raises(Stop), stop_requests.deferred():
        with stop_requests.deferred():
            stop_requests.deliver(Stop())
        reached.append("after the inner region")  # only the outermost end raises it
    assert reached == ["after the inner region"]
    with pytest.raises(Stop):  # and the depth is back to 0: requests raise at once again
        stop_requests.deliver(Stop())


def test_a_region_ending_in_its_own_error_drops_the_request() -> None:
    with pytest.raises(ValueError), stop_requests.deferred():
        stop_requests.deliver(Stop())
        raise ValueError("the data was bad")
    stop_requests.check()  # nothing pending for whoever comes next


def test_an_interruptible_stretch_raises_at_once_and_restores_the_deferral() -> None:
    with stop_requests.deferred():
        with pytest.raises(Stop), stop_requests.interruptible():
            stop_requests.deliver(Stop())
        stop_requests.deliver(Stop("held"))  # deferred again after the stretch
        with pytest.raises(Stop, match="held"):
            stop_requests.check()


def test_an_interruptible_stretch_raises_a_request_that_came_before_it() -> None:
    with stop_requests.deferred():
        stop_requests.deliver(Stop("earlier"))
        with pytest.raises(Stop, match="earlier"), stop_requests.interruptible():
            pytest.fail("the stretch should not start")
