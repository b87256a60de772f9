"""Stop requests before training: raised at once, or held for a safe point in threaded code."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from snowtrain.trainer import stop_requests
from tests.fixtures.signals import MainThreadSignals


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


# -- a stream read on the main thread -------------------------------------------------------


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("chunk-download")]


def downloaded_chunks(closed: threading.Event, signals: MainThreadSignals) -> Iterator[int]:
    """Chunks downloaded ahead on a pool and waited for on the reader's thread, as the
    Snowflake connector reads a query's result; ``signals`` run from the second chunk until
    the pool is shut down."""

    def download(i: int) -> int:
        time.sleep(0.001)  # a download's wait, so the reader waits on the pool's futures
        return i

    with ThreadPoolExecutor(2, thread_name_prefix="chunk-download") as pool:
        try:
            ahead = deque(pool.submit(download, i) for i in range(2))
            yield ahead.popleft().result()
            signals.start()  # from the second fetch on, where the reader waits on the pool
            for i in itertools.count(2):
                yield ahead.popleft().result()
                ahead.append(pool.submit(download, i))
        finally:
            time.sleep(0.05)  # cleanup that takes a while: signals keep landing during it
            pool.shutdown()
            signals.stop()
            closed.set()


def test_signals_throughout_a_pooled_stream_stop_it_between_items_and_cleanly() -> None:
    closed, handled, read = threading.Event(), 0, []

    def handler(signum: int, frame: object) -> None:
        nonlocal handled
        handled += 1
        stop_requests.deliver(Stop())

    signals = MainThreadSignals(handler, after=0.05, every=0.001)
    try:
        with (
            pytest.raises(Stop),
            contextlib.closing(
                stop_requests.between_items(downloaded_chunks(closed, signals))
            ) as stream,
        ):
            for item in stream:
                read.append(item)
    finally:
        signals.close()
    assert handled >= 1 and len(read) > 1
    assert read == list(range(len(read)))  # whole items, in order, up to the stop
    assert closed.is_set()
    assert pool_threads() == []


def test_the_first_fetch_of_a_stream_stops_at_once() -> None:
    """Where the query runs, possibly for minutes: no waiting for it to finish."""
    finished = []

    def handler(signum: int, frame: object) -> None:
        stop_requests.deliver(Stop())

    def slow_query() -> Iterator[int]:
        signals.start()
        time.sleep(60)  # a query that runs for a minute: the signal must cut it short
        finished.append(True)
        yield 0

    signals = MainThreadSignals(handler, after=0.05)
    try:
        with pytest.raises(Stop):
            list(stop_requests.between_items(slow_query()))
    finally:
        signals.close()
    assert finished == []


def test_a_region_on_another_thread_leaves_the_main_thread_as_it_was() -> None:
    entered = threading.Event()
    leave = threading.Event()

    def elsewhere() -> None:
        with stop_requests.deferred():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    try:
        entered.wait(10)
        with pytest.raises(Stop):  # signals land on the main thread, which defers nothing
            stop_requests.deliver(Stop())
    finally:
        leave.set()
        thread.join()
